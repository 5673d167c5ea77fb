-- stress/misuse.lua: bad input from several threads at once, on objects
-- other threads keep using correctly. Every misuse must raise a Lua error
-- (never crash), and right after it the same object must work, from this
-- thread and the others, within the timeout: an error raised while a
-- mutex is held, or a wake-up lost on the error path, shows up as a
-- timeout here.
local loom = require "loom"
local lib = require "stress.lib"

local function deep(n)
  local t = {}
  local cur = t
  for _ = 1, n do
    local nxt = {}
    cur[1] = nxt
    cur = nxt
  end
  return t
end

-- Each entry: the object it touches, the misuse (must raise), the use
-- that must work after it.
local function cases(o, T, id)
  local co = coroutine.create(print)
  local function roundtrip(q, v)
    lib.check(q:put(v, T), "put timed out")
    local got, why = q:get(T)
    lib.check(got ~= nil, "get after a misuse: %s", tostring(why))
  end
  return {
    { function() o.q:put(nil) end, function() roundtrip(o.q, id) end },
    { function() o.q:put(co) end, function() roundtrip(o.q, id) end },
    { function() o.q:put({ a = { b = co } }) end, function() roundtrip(o.q, id) end },
    { function() o.q:put(deep(2000)) end, function() roundtrip(o.q, id) end },
    { function() o.q:put(1, -1) end, function() roundtrip(o.q, id) end },
    { function() o.q:get(0 / 0) end, function() roundtrip(o.q, id) end },
    { function() o.q:get_many(0) end, function() roundtrip(o.q, id) end },
    { function() o.pq:put("no priority") end, function() roundtrip(o.pq, { 1, id }) end },
    { function() o.pq:put({ "x" }) end, function() roundtrip(o.pq, { 2, id }) end },
    { function() loom.select({}) end, function() roundtrip(o.q, id) end },
    { function() loom.select({ o.q, {} }) end, function() roundtrip(o.q, id) end },
    { function() o.rlock:release() end, function()
        lib.check(o.rlock:acquire(true, T), "rlock acquire timed out"); o.rlock:release() end },
    { function() o.rlock:acquire(false, 1) end, function()
        lib.check(o.rlock:acquire(true, T), "rlock acquire timed out"); o.rlock:release() end },
    { function() o.cond:wait(0.001) end, function()
        local _ <close> = o.cond:guard(); o.cond:notify(); o.cond:wait(0) end },
    { function() o.cond:notify() end, function()
        local _ <close> = o.cond:guard(); o.cond:notify_all() end },
    { function() o.sem:release(0) end, function()
        lib.check(o.sem:acquire(true, T), "semaphore acquire timed out"); o.sem:release() end },
    { function() o.sem:acquire(true, -1) end, function()
        lib.check(o.sem:acquire(true, T), "semaphore acquire timed out"); o.sem:release() end },
    { function() o.ev:wait(-1) end, function() o.ev:wait(0) end },
    { function() o.s[{}] = 1 end, function() o.s:incr("n") end },
    { function() o.s.x = co end, function() o.s:incr("n") end },
    { function() o.s.update = 1 end, function() o.s:incr("n") end },
    { function() o.s:incr("str") end, function() o.s:incr("n") end },
    { function() o.s:update("k", function() error("inside update") end) end,
      function() o.s:with(function() o.s:incr("n") end) end },
    { function() o.s:with(function() error("inside with") end) end,
      function() local _ <close> = o.s:guard(); o.s:incr("n") end },
    { function() o.pool:submit(42) end, function()
        lib.check(o.pool:submit(function(x) return x end, id):result(T) == id, "pool") end },
    { function() o.pool:submit(print, co) end, function()
        lib.check(o.pool:submit(function(x) return x end, id):result(T) == id, "pool") end },
    { function() o.pool:submit(math.abs, 1):result(-1) end, function()
        lib.check(o.pool:submit(function(x) return x end, id):result(T) == id, "pool") end },
    { function() loom.thread(42) end, function()
        lib.check(loom.thread(math.abs, -id):result(T) == id, "thread") end },
    { function() loom.thread(print, co) end, function()
        lib.check(loom.thread(math.abs, -id):result(T) == id, "thread") end },
    { function() loom.current_thread():join() end, function() end },
    { function() loom.copy(co) end, function() lib.check(loom.copy(id) == id, "copy") end },
    { function() loom.Barrier(0) end, function() end },
    { function() loom.Semaphore(-1) end, function() end },
    { function() loom.Queue(1.5) end, function() end },
    { function() loom.sleep(-1) end, function() end },
  }
end

local function abuser(o, n, seed, T, id)
  local r = lib.rng(seed)
  local list = cases(o, T, id)
  local raised = 0
  for _ = 1, n do
    local c = list[r(#list)]
    local ok, err = pcall(c[1])
    if ok then lib.fail("a misuse did not raise") end
    lib.check(type(err) == "string" or loom.is_error(err), "a misuse raised a %s", type(err))
    raised = raised + 1
    c[2]()
    -- tostring of every object never raises
    for _, v in pairs(o) do tostring(v) end
  end
  return raised
end

local scen = { name = "misuse" }
function scen.run(ctx)
  local o = {
    q = ctx:own_queue(loom.Queue()),
    pq = ctx:own_queue(loom.PriorityQueue()),
    rlock = loom.RLock(),
    cond = loom.Condition(loom.RLock()),
    sem = loom.BoundedSemaphore(2),
    ev = ctx:own_event(loom.Event()),
    s = loom.shared { n = 0, str = "abc" },
    pool = ctx:own_pool(loom.ThreadPoolExecutor { max_workers = 2 }),
  }
  local W = ctx:param("threads", ctx:int(2, 5))
  local n = ctx:param("n", ctx:n(ctx:pick { 100, 500 }, 20))
  local ts = {}
  for i = 1, W do ts[i] = ctx:spawn(abuser, o, n, ctx:sub(), ctx.T, i) end
  local raised = 0
  for i = 1, W do raised = raised + ctx:result(ts[i]) end
  lib.check(raised == W * n, "%d misuses raised of %d", raised, W * n)
  lib.check(o.q:qsize() == 0 and o.pq:qsize() == 0, "items left in the queues")
  lib.check(not o.rlock:locked(), "the RLock is still held")
  lib.check(o.sem.value == 2, "semaphore value %d", o.sem.value)
  lib.check(o.s:get("str") == "abc", "a failed incr changed the value")
  lib.check(o.s:get("k") == nil and o.s:get("x") == nil, "a failed update or assignment stored something")
  lib.bounded(ctx.T, "pool shutdown", function(p) p:shutdown() end, o.pool)
end

return { scen }
