-- stress/lib.lua: what the stress scenarios share, in the main state and in
-- every thread, pool worker and async loop they start. It is a module on
-- package.path, so a function sent to a thread that has it as an upvalue
-- carries it by name (the thread requires it), not as a copy.
local loom = require "loom"

local lib = {}

-- Under a sanitizer everything runs 5-20 times slower: less work per
-- scenario and longer timeouts. LOOM_SANITIZER is set by the Makefile.
lib.sanitizer = os.getenv("LOOM_SANITIZER")
if lib.sanitizer == "" then lib.sanitizer = nil end

-- STRESS_KNOWN_BUGS=1 also runs the steps that hit the loom bugs listed
-- in docs/guarantees.md (they fail until those are fixed); without it
-- those steps are replaced by their nearest safe variant.
lib.known_bugs = os.getenv("STRESS_KNOWN_BUGS") == "1"

-- The timeout of every blocking call a scenario makes. It is far longer
-- than any wait should take even on a loaded machine, so hitting it means
-- a lost wake-up (or a deadlock), never mere slowness.
lib.T = tonumber(os.getenv("STRESS_TIMEOUT")) or (lib.sanitizer and 90 or 30)

-- splitmix64 on Lua's wrapping 64-bit integers: a seed is an integer and
-- each actor (thread, task, pool task) derives its own from it, so a run
-- is reproducible from one number whatever state the code runs in.
local function mix(z)
  z = z + 0x9E3779B97F4A7C15
  z = (z ~ (z >> 30)) * 0xBF58476D1CE4E5B9
  z = (z ~ (z >> 27)) * 0x94D049BB133111EB
  return z ~ (z >> 31)
end

-- lib.derive(seed, a, b, ...) -> a seed for the actor named by a, b, ...
function lib.derive(seed, ...)
  local z = mix(math.tointeger(seed) or error("seed must be an integer", 2))
  for i = 1, select("#", ...) do
    z = mix(z ~ math.tointeger(select(i, ...)))
  end
  return z & 0x7FFFFFFFFFFF -- 47 bits: prints and parses as a plain integer
end

-- lib.rng(seed) -> r, with r() a float in [0, 1), r(n) an integer in
-- 1..n and r(m, n) one in m..n (like math.random, but one stream per
-- actor, independent of the state it runs in).
function lib.rng(seed)
  local s = math.tointeger(seed)
  return function(m, n)
    s = s + 0x9E3779B97F4A7C15
    local z = s
    z = (z ~ (z >> 30)) * 0xBF58476D1CE4E5B9
    z = (z ~ (z >> 27)) * 0x94D049BB133111EB
    z = z ~ (z >> 31)
    if m == nil then return (z >> 11) * 2.0^-53 end
    if n == nil then m, n = 1, m end
    return m + (z >> 1) % (n - m + 1)
  end
end

function lib.pick(r, list)
  return list[r(#list)]
end

-- A failure inside a scenario: a string error (a thread adds its name and
-- traceback when the main state collects it).
function lib.fail(fmt, ...)
  error(string.format(fmt, ...), 2)
end

function lib.check(cond, fmt, ...)
  if not cond then error(string.format(fmt, ...), 2) end
  return cond
end

-- Item ids: producer p's i-th item is p * ID_SPAN + i.
lib.ID_SPAN = 10000000

-- Queue items of several shapes, so that the slots hold inline scalars,
-- malloc'd strings, encoded messages and (past 4 KB) streamed messages.
-- `shape` is chosen by the producer's rng; `kind` is the queue's class.
local BIG = 700 -- records of a big item: its encoding is well past 4 KB

function lib.make_item(kind, id, shape, prio)
  local v
  if shape == "int" then
    v = id
  elseif shape == "string" then
    v = "item:" .. id .. ":" .. string.rep("x", id % 40) -- short and long
  elseif shape == "table" then
    v = { id = id, tag = "t", list = { id, id + 1, id + 2 } }
  elseif shape == "big" then
    local recs = {}
    for i = 1, BIG do recs[i] = { i, "r" .. i } end
    v = { id = id, recs = recs }
  else
    error("unknown item shape " .. tostring(shape))
  end
  if kind == "PriorityQueue" then return { prio, id, v } end
  return v
end

-- The id of an item made by make_item, after checking that it arrived
-- whole.
function lib.item_id(kind, item)
  if kind == "PriorityQueue" then
    lib.check(type(item) == "table" and math.type(item[1]) == "integer",
      "bad priority item %s", tostring(item))
    local id = item[2]
    lib.check(lib.item_id("Queue", item[3]) == id, "priority item %d: payload of another id", id)
    return id
  end
  local t = type(item)
  if t == "number" then
    return lib.check(math.tointeger(item), "item %s is not an integer", tostring(item))
  elseif t == "string" then
    local id, pad = item:match("^item:(%d+):(x*)$")
    id = lib.check(math.tointeger(tonumber(id)), "bad string item %q", item:sub(1, 60))
    lib.check(#pad == id % 40, "string item %d arrived with %d pad bytes", id, #pad)
    return id
  elseif t == "table" then
    local id = item.id
    lib.check(math.type(id) == "integer", "table item without an id")
    if item.recs then
      local recs = item.recs
      lib.check(#recs == BIG, "big item %d arrived with %d records", id, #recs)
      for i = 1, BIG, 97 do
        lib.check(recs[i][1] == i and recs[i][2] == "r" .. i, "big item %d: record %d damaged", id, i)
      end
    else
      lib.check(item.tag == "t" and item.list[3] == id + 2, "table item %d damaged", id)
    end
    return id
  end
  lib.fail("unexpected item of type %s", t)
end

-- A count of ids seen, kept in the main state: add the lists that
-- consumers return, then check them against what the producers put.
function lib.tally()
  return { seen = {}, n = 0 }
end

function lib.tally_add(tally, ids)
  local seen = tally.seen
  for i = 1, #ids do
    local id = ids[i]
    seen[id] = (seen[id] or 0) + 1
  end
  tally.n = tally.n + #ids
end

-- status[p] is a string with one character per item of producer p: "p"
-- it was put (it must be got exactly once), "n" it was not (the queue was
-- closed: never got), "u" unknown (a batch cut short by close: at most
-- once), "d" put but may be discarded by close(true) (at most once).
-- Raises naming the first id that breaks the rule.
function lib.tally_check(tally, status, what)
  local seen = tally.seen
  local n_got, n_put, n_maybe = 0, 0, 0
  for p, st in pairs(status) do
    for i = 1, #st do
      local id = p * lib.ID_SPAN + i
      local c = st:sub(i, i)
      local got = seen[id] or 0
      if c == "u" or c == "d" then n_maybe = n_maybe + 1 end
      if c == "p" then
        n_put = n_put + 1
        if got ~= 1 then
          lib.fail("%s: item %d (producer %d, #%d) was put and got %d times", what, id, p, i, got)
        end
      elseif c == "n" then
        if got ~= 0 then
          lib.fail("%s: item %d was refused by put (closed) but got %d times", what, id, got)
        end
      elseif got > 1 then
        lib.fail("%s: item %d got %d times", what, id, got)
      end
      n_got = n_got + got
      seen[id] = nil
    end
  end
  local stray = next(seen)
  if stray then lib.fail("%s: item %s was got but never put", what, tostring(stray)) end
  -- for the round's line: got N of M put (+K that close may have taken)
  return string.format("%d/%d%s", n_got, n_put, n_maybe > 0 and ("+" .. n_maybe .. "?") or "")
end

-- Calls that have no timeout of their own (shutdown{wait=true}) run in a
-- helper thread, joined with a timeout: a hang there is a failure too.
function lib.bounded(T, what, fn, ...)
  local t = loom.Thread { target = fn, args = table.pack(...), name = "bounded:" .. what }
  t:start()
  if not t:join(T) then
    lib.fail("%s did not return within %g s", what, T)
  end
  return t:result(0)
end

-- Waits until pred() is true, polling; false when T passed first.
function lib.poll(T, pred, step)
  local deadline = loom.now() + T
  while true do
    if pred() then return true end
    if loom.now() > deadline then return false end
    loom.sleep(step or 0.002)
  end
end

return lib
