-- stress/async.lua: loom.async loops in several loom threads, bridged to
-- the threads around them. Producer threads feed a loom queue that tasks
-- of every loop drain with async.get (some through a short wait_for, so
-- that gets are cancelled while items arrive); the tasks forward each
-- item with async.put into a small bounded queue that plain threads
-- drain; other tasks await pool futures (await, wait_for with a timeout
-- that cancels them, gather, run_in), loom threads and to_thread, and
-- pass items through async queues. Both queues must deliver every item
-- exactly once, and every pool future's done-callback must run once.
local loom = require "loom"
local lib = require "stress.lib"

local function ptask(id, d)
  if d > 0 then require("loom").sleep(d) end
  return id, id * 2
end

local function small(x)
  return x + 1
end

-- The body of one loop thread: returns the ids its tasks got from q_in,
-- the keys of the pool futures it made, and counts for the round's line.
local function loop_thread(q_in, kind, q_out, pool, cbs, L, K, J, seed, T)
  local async = require "loom.async"
  local r = lib.rng(seed)
  return async.run(function()
    local got, keys = {}, {}
    local stats = { cancelled_gets = 0, timeouts = 0 }
    local consumers = {}
    for c = 1, K do
      local cr = lib.rng(lib.derive(seed, c))
      consumers[c] = async.spawn(function()
        while true do
          local v, why
          if cr(4) == 1 then
            -- a get cancelled by its timeout must take nothing
            local ok, a, b = pcall(async.wait_for, function() return async.get(q_in) end,
                                   cr() * 0.002)
            if ok then
              v, why = a, b
            elseif loom.is_timeout(a) then
              stats.cancelled_gets = stats.cancelled_gets + 1
              why = "again"
            else
              error(a, 0)
            end
          else
            v, why = async.get(q_in, T)
          end
          if v ~= nil then
            local id = lib.item_id(kind, v)
            got[#got + 1] = id
            local ok, err = async.put(q_out, id, T)
            if not ok then lib.fail("async.put: %s after %g s", tostring(err), T) end
          elseif why == "closed" then
            break
          elseif why ~= "again" then
            lib.fail("async.get: %s after %g s", tostring(why), T)
          end
          if cr(16) == 1 then async.sleep(0) end
        end
      end)
    end

    -- pool futures, awaited in several ways
    local workers = {}
    for j = 1, J do
      workers[j] = async.spawn(function()
        local key = L * 100000 + j
        local d = r(3) == 1 and r() * 0.002 or 0
        local f = pool:submit(ptask, key, d)
        keys[#keys + 1] = key
        f:add_done_callback(function() cbs:incr(key) end)
        local how = r(5)
        if how == 1 then
          local a, b = async.await(f)
          lib.check(a == key and b == key * 2, "await of a pool future: %s", tostring(a))
        elseif how == 2 then
          local ok, a = pcall(async.wait_for, f, r() * 0.002)
          if ok then
            lib.check(a == key, "wait_for of a pool future: %s", tostring(a))
          else
            lib.check(loom.is_timeout(a), "wait_for raised %s", tostring(a))
            stats.timeouts = stats.timeouts + 1
          end
        elseif how == 3 then
          local a = async.gather(f, function() return small(key) end)
          lib.check(a == key, "gather: %s", tostring(a))
          async.await(f)
        elseif how == 4 then
          lib.check(async.run_in(pool, small, key) == key + 1, "run_in")
          async.await(f)
        else
          local t = loom.thread(small, key)
          lib.check(async.await(t) == key + 1, "await of a loom.Thread")
          if r(4) == 1 then lib.check(async.to_thread(small, key) == key + 1, "to_thread") end
          async.await(f)
        end
      end)
    end

    -- async primitives between tasks of this loop
    local aq = async.Queue(r(0, 3))
    local lock = async.Lock()
    local sum = 0
    local feeders = async.spawn(function()
      for i = 1, 20 do aq:put(i) end
      aq:close()
    end)
    local eaters = {}
    for e = 1, 2 do
      eaters[e] = async.spawn(function()
        for v in aq:iter() do
          local _ <close> = lock:guard()
          local s = sum
          async.sleep(0)
          sum = s + v
        end
      end)
    end

    for _, t in ipairs(consumers) do t:await() end
    for _, t in ipairs(workers) do t:await() end
    feeders:await()
    for _, t in ipairs(eaters) do t:await() end
    lib.check(sum == 210, "async queue and lock: sum %d", sum)
    return got, keys, stats
  end)
end

local function producer(q, kind, p, n, seed, T)
  local r = lib.rng(seed)
  for i = 1, n do
    local id = p * lib.ID_SPAN + i
    local ok, why = q:put(lib.make_item(kind, id, r(3) == 1 and "table" or "int", r(0, 9)), T)
    if not ok then lib.fail("put: %s after %g s", tostring(why), T) end
  end
  return string.rep("p", n)
end

local function drainer(q, T)
  local got = {}
  while true do
    local v, why = q:get(T)
    if v == nil then
      if why == "closed" then return got end
      lib.fail("get: %s after %g s", tostring(why), T)
    end
    got[#got + 1] = v
  end
end

local scen = { name = "async_bridge" }
function scen.run(ctx)
  local T = ctx.T
  local kind = ctx:param("kind", ctx:pick { "Queue", "LifoQueue", "PriorityQueue", "SimpleQueue" })
  local q_in = kind == "SimpleQueue" and loom.SimpleQueue() or loom[kind](ctx:pick { 0, 1, 4, 64 })
  ctx:own_queue(q_in)
  local q_out = ctx:own_queue(loom.Queue(ctx:pick { 1, 4, 0 }))
  local pool = ctx:own_pool(loom.ThreadPoolExecutor { max_workers = ctx:int(1, 3) })
  local cbs = loom.shared {}
  local L = ctx:param("loops", ctx:int(1, 3))
  local K = ctx:param("getters", ctx:int(1, 4))
  local J = ctx:param("futures", ctx:n(ctx:pick { 10, 100 }, 4))
  local P = ctx:param("P", ctx:int(1, 3))
  local n = ctx:n(ctx:pick { 200, 2000 }, 10)
  ctx:param("n", P .. "x" .. n)
  local D = ctx:int(1, 2)

  local loops = {}
  for l = 1, L do
    loops[l] = ctx:spawn(loop_thread, q_in, kind, q_out, pool, cbs, l, K, J, ctx:sub(), T)
  end
  local drainers = {}
  for d = 1, D do drainers[d] = ctx:spawn(drainer, q_out, T) end
  local producers = {}
  for p = 1, P do producers[p] = ctx:spawn(producer, q_in, kind, p, n, ctx:sub(), T) end
  local status = {}
  for p = 1, P do status[p] = ctx:result(producers[p]) end
  q_in:close()
  local tally_in, keys, cancelled_gets, timeouts = lib.tally(), {}, 0, 0
  for l = 1, L do
    local got, ks, stats = ctx:result(loops[l])
    lib.tally_add(tally_in, got)
    for _, k in ipairs(ks) do keys[#keys + 1] = k end
    cancelled_gets = cancelled_gets + stats.cancelled_gets
    timeouts = timeouts + stats.timeouts
  end
  q_out:close()
  local tally_out = lib.tally()
  for d = 1, D do lib.tally_add(tally_out, ctx:result(drainers[d])) end
  ctx:param("got", lib.tally_check(tally_in, status, "async.get"))
  lib.tally_check(tally_out, status, "async.put")
  ctx:param("cancelled_gets", cancelled_gets)
  ctx:param("future_timeouts", timeouts)
  lib.check(#keys == L * J, "%d pool futures made, expected %d", #keys, L * J)
  local function counted()
    local c = 0
    for _, k in ipairs(keys) do c = c + cbs:get(k, 0) end
    return c
  end
  lib.check(lib.poll(T, function() return counted() >= #keys end),
    "%d of %d done-callbacks ran", counted(), #keys)
  loom.sleep(0.005)
  for _, k in ipairs(keys) do
    lib.check(cbs:get(k, 0) == 1, "pool future %d: done-callback ran %d times", k, cbs:get(k, 0))
  end
  lib.bounded(T, "pool shutdown", function(p) p:shutdown() end, pool)
end

return { scen }
