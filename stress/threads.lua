-- stress/threads.lua: thread churn. Many short threads of every kind:
-- ones that return values (nils included), raise tables or strings, sleep,
-- block on an event or a queue until they are cancelled, spin in pure Lua
-- under cancel_hook, start and join children of their own, or join a
-- sibling. Each one's result (or error) must be what its kind says, and
-- none may be left running.
local loom = require "loom"
local lib = require "stress.lib"

local function body(kind, id, ev, q, sibling, T)
  local loom = require "loom"
  if kind == "values" then
    return id, nil, "x" .. id, nil
  elseif kind == "table_error" then
    error({ id = id })
  elseif kind == "string_error" then
    error("failed " .. id)
  elseif kind == "sleep" then
    loom.sleep(0.001 * (id % 5))
    return id
  elseif kind == "block_event" then
    -- cancelled while it waits; catches it and returns
    local ok, err = pcall(ev.wait, ev, T)
    if ok then error("the event wait returned " .. tostring(err)) end
    if not loom.is_cancelled(err) then error(err, 0) end
    return "cancelled", id
  elseif kind == "block_queue" then
    -- cancelled while it waits; the cancellation escapes
    local v, why = q:get(T)
    error("the get returned " .. tostring(v) .. ", " .. tostring(why))
  elseif kind == "spin" then
    -- cancel_hook stops this loop
    local x = 0
    local deadline = loom.now() + T
    while true do
      x = x + 1
      if x % 100000 == 0 and loom.now() > deadline then error("the hook never fired") end
    end
  elseif kind == "children" then
    local ts = {}
    for i = 1, 3 do ts[i] = loom.thread(function(a) return a * 2 end, id + i) end
    local sum = 0
    for i = 1, 3 do
      if not ts[i]:join(T) then error("a child did not end") end
      sum = sum + ts[i]:result()
    end
    return sum
  elseif kind == "join_sibling" then
    if sibling == nil then return id end
    if not sibling:join(T) then error("the sibling did not end") end
    return id
  end
  error("unknown kind " .. kind)
end

local KINDS = { "values", "values", "table_error", "string_error", "sleep", "block_event",
                "block_queue", "spin", "children", "join_sibling" }

local scen = { name = "thread_churn" }
function scen.run(ctx)
  local T = ctx.T
  local N = ctx:param("threads", ctx:n(ctx:pick { 20, 100, 300 }, 10))
  local ev = ctx:own_event(loom.Event()) -- never set: waiters are cancelled
  local q = ctx:own_queue(loom.Queue())
  local list = {}
  local prev
  local counts = {}
  for i = 1, N do
    local kind = ctx:pick(KINDS)
    counts[kind] = (counts[kind] or 0) + 1
    local t = loom.Thread { target = body, args = { kind, i, ev, q, prev, T, n = 6 },
                            name = "churn-" .. i, cancel_hook = kind == "spin" }
    if ctx:chance(0.1) then t.name = "renamed-" .. i end
    t:start()
    ctx.threads[#ctx.threads + 1] = t
    list[i] = { t = t, kind = kind, id = i }
    prev = t
    if ctx:chance(0.05) then collectgarbage("step") end
  end
  -- cancel the blocked ones (some before they block)
  for _, e in ipairs(list) do
    if e.kind == "block_event" or e.kind == "block_queue" or e.kind == "spin" then
      if ctx:chance(0.5) then loom.sleep(0.0005) end
      e.t:cancel()
    end
  end
  for _, e in ipairs(list) do
    local t, id = e.t, e.id
    lib.check(t:join(T), "thread %d (%s) still running after %g s", id, e.kind, T)
    lib.check(not t:is_alive(), "thread %d joined but alive", id)
    local r = table.pack(pcall(t.result, t, 0))
    local ok, a, b, c, d = r[1], r[2], r[3], r[4], r[5]
    if e.kind == "values" then
      lib.check(ok and r.n == 5 and a == id and b == nil and c == "x" .. id and d == nil,
        "thread %d: values %s %s %s %s (n=%d)", id, tostring(a), tostring(b), tostring(c),
        tostring(d), r.n - 1)
    elseif e.kind == "table_error" then
      lib.check(not ok and type(a) == "table" and a.id == id, "thread %d: table error %s", id,
        tostring(a))
    elseif e.kind == "string_error" then
      lib.check(not ok and type(a) == "string" and a:find("failed " .. id, 1, true)
        and a:find(t.name, 1, true), "thread %d: string error %s", id, tostring(a))
    elseif e.kind == "sleep" or e.kind == "join_sibling" then
      lib.check(ok and a == id, "thread %d (%s): %s", id, e.kind, tostring(a))
    elseif e.kind == "block_event" then
      lib.check(ok and a == "cancelled" and b == id, "thread %d: %s", id, tostring(a))
    elseif e.kind == "block_queue" or e.kind == "spin" then
      lib.check(not ok and loom.is_cancelled(a), "thread %d (%s): %s", id, e.kind, tostring(a))
    elseif e.kind == "children" then
      lib.check(ok and a == 6 * id + 12, "thread %d: children gave %s", id, tostring(a))
    end
  end
  lib.check(q:qsize() == 0, "the queue got items")
end

return { scen }
