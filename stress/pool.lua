-- stress/pool.lua: ThreadPoolExecutor and futures. Tasks of every kind
-- (values, errors, sleeps, tasks blocked on a gate, pure-Lua loops, tasks
-- that wait for another pool) are submitted while map() runs beside them;
-- futures are cancelled and interrupted at random, waited for from other
-- threads with as_completed, and the pool is shut down mid-flight in one
-- of several ways. Every future carries a done-callback that counts in a
-- shared table: each must run exactly once, and each future must end
-- finished or cancelled as its history allows.
local loom = require "loom"
local lib = require "stress.lib"

-- The task: only globals as upvalues, so the pool caches its code.
local function task(kind, id, arg, gate, other, T)
  local loom = require "loom"
  if kind == "value" then
    return id, id * 2
  elseif kind == "error" then
    error({ id = id, what = "boom" })
  elseif kind == "serror" then
    error("boom " .. id)
  elseif kind == "sleep" then
    loom.sleep(arg)
    return id, id * 2
  elseif kind == "block" then
    if not gate:wait(T) then error("the gate never opened") end
    return id, id * 2
  elseif kind == "spin" then
    local x = 0
    for i = 1, arg do x = x + i % 7 end
    return id, id * 2
  elseif kind == "init" then
    if STRESS_INIT ~= "ready" then error("the initializer did not run in this worker") end
    return id, id * 2
  elseif kind == "nested" then
    local f = other:submit(function(x) return x end, id)
    return f:result(T), id * 2
  end
  error("unknown task kind " .. tostring(kind))
end

local function init(v)
  STRESS_INIT = v
end

local function square(x)
  return x * x
end

-- Another thread waits for some of the futures: each must be yielded once.
local function watcher(fs, T)
  local loom = require "loom"
  local seen, n = {}, 0
  for f in loom.as_completed(fs, T) do
    if seen[f] then error("as_completed yielded a future twice") end
    if not f:done() then error("as_completed yielded an unfinished future") end
    seen[f] = true
    n = n + 1
  end
  return n
end

-- What result() of future i must give, given what was done to it.
local function check_outcome(f, info)
  local ok, a, b = pcall(f.result, f, 0)
  if f:cancelled() then
    lib.check(not ok and loom.is_cancelled(a), "future %d: cancelled but result() %s",
      info.id, ok and "returned" or ("raised " .. tostring(a)))
    lib.check(info.may_cancel, "future %d cancelled though nothing cancelled it", info.id)
    return "cancelled"
  end
  lib.check(not info.must_cancel, "future %d: cancel() returned true but it is not cancelled", info.id)
  lib.check(f:done(), "future %d not done", info.id)
  if info.kind == "error" then
    lib.check(not ok and type(a) == "table" and a.id == info.id and a.what == "boom",
      "future %d: expected its table error, got %s", info.id, tostring(a))
    return "error"
  elseif info.kind == "serror" then
    lib.check(not ok and type(a) == "string" and a:find("boom " .. info.id, 1, true),
      "future %d: expected its string error, got %s", info.id, tostring(a))
    return "error"
  end
  -- an interrupted task that caught nothing ends cancelled (handled
  -- above); one that finished first gives its values
  lib.check(ok, "future %d (%s) failed: %s", info.id, info.kind, tostring(a))
  lib.check(a == info.id and b == info.id * 2, "future %d returned %s, %s", info.id,
    tostring(a), tostring(b))
  return "ok"
end

local scen = { name = "pool_futures" }
function scen.run(ctx)
  local T = ctx.T
  local W = ctx:param("workers", ctx:int(1, 6))
  local hook = ctx:chance(0.3)
  local with_init = ctx:chance(0.3)
  local pool = ctx:own_pool(loom.ThreadPoolExecutor {
    max_workers = W, cancel_hook = hook,
    initializer = with_init and init or nil, initargs = with_init and { "ready" } or nil })
  local other = ctx:own_pool(loom.ThreadPoolExecutor { max_workers = ctx:int(1, 2) })
  local gate = ctx:own_event(loom.Event())
  local N = ctx:param("tasks", ctx:n(ctx:pick { 50, 300, 1500 }, 10))
  local kinds = { "value", "value", "value", "error", "serror", "sleep", "block", "spin", "nested" }
  if with_init then kinds[#kinds + 1] = "init" end
  local cbs = loom.shared { bad = 0 }
  local fs, infos = {}, {}
  local shutdown_mode = ctx:param("shutdown", ctx:pick {
    "wait", "cancel", "interrupt", "interrupt_only", "nowait", "drop", "close" })

  -- tasks blocked on the gate come only after map() (they would hold
  -- every worker and starve it until the gate opens at shutdown)
  local function submit(i, blocking)
    local kind = kinds[ctx:int(1, #kinds)]
    if kind == "spin" and not hook then kind = "value" end
    if kind == "block" and not blocking then kind = "sleep" end
    local arg = kind == "sleep" and ctx.rng() * 0.003 or kind == "spin" and ctx:int(1000, 200000) or nil
    local f = pool:submit(task, kind, i, arg, gate, other, T)
    fs[i], infos[i] = f, { id = i, kind = kind }
    f:add_done_callback(function(fut)
      if not fut:done() then cbs:incr("bad") end
      cbs:incr(i)
    end)
  end

  -- a map beside the submits
  local map_items, map_break = {}, ctx:chance(0.3) and ctx:int(1, 50) or nil
  for i = 1, ctx:int(0, 200) do map_items[i] = i end
  local opts = { timeout = T }
  if ctx:chance(0.5) then opts.chunksize = ctx:int(1, 16) end
  if ctx:chance(0.5) then opts.buffersize = ctx:int(1, 8) end

  local half = N // 2
  for i = 1, half do submit(i) end
  local watch = ctx:spawn(watcher, { table.unpack(fs, 1, math.min(half, 50)) }, T)
  -- cancel and interrupt some
  for _ = 1, ctx:int(0, N // 4) do
    local i = ctx:int(1, half)
    local info = infos[i]
    if ctx:chance(0.5) then
      info.may_cancel = true
      if fs[i]:cancel() then info.must_cancel = true end
    else
      info.may_cancel = true
      fs[i]:interrupt()
    end
  end
  local mapped = 0
  for i, r in pool:map(square, map_items, opts) do
    lib.check(i == mapped + 1 and r == i * i, "map yielded %s, %s after item %d", tostring(i),
      tostring(r), mapped)
    mapped = i
    if i == map_break then break end
  end
  lib.check(mapped == (map_break and math.min(map_break, #map_items) or #map_items),
    "map stopped after %d of %d items", mapped, #map_items)
  for i = half + 1, N do submit(i, true) end
  if ctx:chance(0.5) then
    local done = loom.wait(fs, { timeout = 0, return_when = ctx:pick {
      loom.FIRST_COMPLETED, loom.FIRST_EXCEPTION, loom.ALL_COMPLETED } })
    lib.check(type(done) == "table", "loom.wait returned no list")
  end

  -- shut down while tasks are queued and running
  local cancel_all = shutdown_mode == "cancel" or shutdown_mode == "interrupt"
  local interrupt = shutdown_mode == "interrupt" or shutdown_mode == "interrupt_only"
  if cancel_all or interrupt then
    for _, info in ipairs(infos) do info.may_cancel = true end
  end
  if not interrupt then gate:set() end
  if shutdown_mode == "interrupt_only" then
    -- queued tasks still run after the interruption: the gate opens soon
    loom.Timer(0.02, function(ev) ev:set() end, gate):start()
  end
  if shutdown_mode == "nowait" then
    pool:shutdown { wait = false, cancel_futures = ctx:chance(0.5) }
    for _, info in ipairs(infos) do info.may_cancel = true end
  elseif shutdown_mode == "drop" then
    ctx.pools[1], pool = nil, nil
    collectgarbage()
    collectgarbage()
  elseif shutdown_mode == "close" then
    lib.bounded(T, "a <close> pool", function(p) local _ <close> = p end, pool)
  else
    lib.bounded(T, "shutdown", function(p, opts)
      p:shutdown(opts)
    end, pool, { wait = true, cancel_futures = cancel_all, interrupt = interrupt })
  end
  if pool then
    local ok, err = pcall(pool.submit, pool, task, "value", 0)
    lib.check(not ok and loom.is_shutdown(err), "submit after shutdown: %s", tostring(err))
  end
  gate:set()
  local done, not_done = loom.wait(fs, { timeout = T })
  lib.check(#not_done == 0, "%d futures not done %g s after shutdown", #not_done, T)
  lib.check(#done == N, "loom.wait returned %d of %d futures", #done, N)
  lib.check(ctx:result(watch) == math.min(half, 50), "the watcher missed futures")

  -- callbacks: each exactly once (they may still be running just after
  -- the futures are done)
  local function counted()
    local n = 0
    for i = 1, N do n = n + cbs:get(i, 0) end
    return n
  end
  lib.check(lib.poll(T, function() return counted() >= N end),
    "%d of %d done-callbacks ran", counted(), N)
  loom.sleep(0.005)
  local outcome = { ok = 0, error = 0, cancelled = 0 }
  for i = 1, N do
    local c = cbs:get(i, 0)
    lib.check(c == 1, "future %d: its done-callback ran %d times", i, c)
    local o = check_outcome(fs[i], infos[i])
    outcome[o] = outcome[o] + 1
  end
  lib.check(cbs.bad == 0, "%d callbacks saw a future that was not done", cbs.bad)
  ctx:param("outcome", string.format("%d ok, %d err, %d cancelled", outcome.ok, outcome.error,
    outcome.cancelled))
  if pool then lib.bounded(T, "shutdown again", function(p) p:shutdown() end, pool) end
  lib.bounded(T, "shutdown of the other pool", function(p) p:shutdown() end, other)
end

return { scen }
