-- stress/queues.lua: producers and consumers on every queue kind, bounded
-- and unbounded, with put/put_nowait/put_many and get/get_nowait/get_many,
-- close and close(true) while they run, cancelled consumers, and
-- loom.select over several queues with several selectors. Every item has a
-- unique id; the main state counts what the consumers got against what the
-- producers put.
local loom = require "loom"
local lib = require "stress.lib"

local KINDS = { "Queue", "LifoQueue", "PriorityQueue", "SimpleQueue" }

-- The shape of the next item: mostly scalars, some strings and tables,
-- now and then a big (streamed) one when `big` allows.
local function shape_of(r, shapes, big)
  if big and r(64) == 1 then return "big" end
  return shapes[r(#shapes)]
end

-- A put that raised because the queue is closed, or because this thread
-- was cancelled: the producer stops there. Anything else is a failure.
local function stopped(err)
  if loom.is_closed(err) or loom.is_cancelled(err) then return true end
  error(err, 0)
end

-- Puts items p*ID_SPAN + 1 .. + n into queue q. Returns the status string
-- lib.tally_check reads (one character per item). A put that raised
-- (closed, cancelled) put nothing: "n"; a batch that raised may have put
-- part of itself: "u".
local function producer(q, kind, p, n, seed, T, shapes, big)
  local r = lib.rng(seed)
  local st = {}
  local i = 1
  local closed = false
  local function item(k)
    return lib.make_item(kind, p * lib.ID_SPAN + k, shape_of(r, shapes, big), r(0, 9))
  end
  while i <= n do
    local op = r(10)
    if closed then
      st[i] = "n"; i = i + 1
    elseif op <= 2 then
      local k = math.min(n - i + 1, r(1, 32))
      local items = {}
      for j = 1, k do items[j] = item(i + j - 1) end
      local ok, res, why, cnt = pcall(q.put_many, q, items, T)
      if not ok then
        stopped(res)
        -- a batch cut by close or cancel: some of it may have gone in
        for j = i, i + k - 1 do st[j] = "u" end
        closed = true
      elseif not res then
        lib.fail("put_many: %s after %g s with %d of %d items in", why, T, cnt, k)
      else
        for j = i, i + k - 1 do st[j] = "p" end
      end
      i = i + k
    elseif op <= 4 then
      local v = item(i)
      local last = loom.now()
      while true do
        local ok, res, why = pcall(q.put_nowait, q, v)
        if not ok then
          stopped(res)
          st[i] = "n"; closed = true; break
        elseif res then
          st[i] = "p"; break
        end
        lib.check(why == "full", "put_nowait: %s", tostring(why))
        if loom.now() - last > T then lib.fail("put_nowait: still full after %g s", T) end
        local slept, err = pcall(loom.sleep, 0.0002)
        if not slept then
          stopped(err)
          st[i] = "n"; closed = true; break
        end
      end
      i = i + 1
    else
      local ok, res, why = pcall(q.put, q, item(i), T)
      if not ok then
        stopped(res)
        st[i] = "n"; closed = true
      elseif not res then
        lib.fail("put: %s after %g s", tostring(why), T)
      else
        st[i] = "p"
      end
      i = i + 1
    end
  end
  return table.concat(st)
end

-- Gets from q until it is closed and drained (or this thread is
-- cancelled): returns the ids got, and whether it was cancelled.
local function consumer(q, kind, seed, T)
  local r = lib.rng(seed)
  local tracked = kind ~= "SimpleQueue"
  local got = {}
  local function take(v)
    got[#got + 1] = lib.item_id(kind, v)
    if tracked then q:task_done() end
  end
  local ok, err = pcall(function()
    local idle = loom.now()
    while true do
      local op = r(10)
      if op <= 2 then
        local items, cnt = q:get_many(r(1, 16), T)
        if items == nil then
          if cnt == "closed" then return end
          lib.fail("get_many: %s after %g s", tostring(cnt), T)
        end
        lib.check(cnt >= 1 and cnt == #items, "get_many returned %d items, count %s", #items, cnt)
        for j = 1, cnt do take(items[j]) end
      elseif op <= 3 then
        local v, why = q:get_nowait()
        if v ~= nil then
          take(v); idle = loom.now()
        elseif why == "closed" then
          return
        else
          lib.check(why == "empty", "get_nowait: %s", tostring(why))
          if loom.now() - idle > T then lib.fail("get_nowait: empty for %g s", T) end
          loom.sleep(0.0002)
        end
      else
        local v, why = q:get(T)
        if v == nil then
          if why == "closed" then return end
          lib.fail("get: %s after %g s", tostring(why), T)
        end
        take(v)
      end
    end
  end)
  if not ok then
    if loom.is_cancelled(err) then return got, true end
    error(err, 0)
  end
  return got, false
end

-- Takes what is left (after cancelled consumers) until closed.
local function drain(q, kind, tally)
  local ids = {}
  while true do
    local v, why = q:get_nowait()
    if v == nil then
      lib.check(why == "closed", "draining a closed queue: %s", tostring(why))
      break
    end
    ids[#ids + 1] = lib.item_id(kind, v)
    if kind ~= "SimpleQueue" then q:task_done() end
  end
  lib.tally_add(tally, ids)
end

local function new_queue(ctx, kind, maxsize)
  if kind == "SimpleQueue" then return ctx:own_queue(loom.SimpleQueue()) end
  return ctx:own_queue(loom[kind](maxsize))
end

local function pick_shapes(ctx)
  return ctx:pick { { "int" }, { "int" }, { "int", "string" }, { "int", "string", "table" } }
end

local mpmc = { name = "queue_mpmc" }
function mpmc.run(ctx)
  local kind = ctx:param("kind", ctx:pick(KINDS))
  local maxsize = kind == "SimpleQueue" and 0 or ctx:param("max", ctx:pick { 0, 0, 1, 2, 8, 64 })
  local P = ctx:param("P", ctx:int(1, 4))
  local C = ctx:param("C", ctx:int(1, 4))
  local shapes = pick_shapes(ctx)
  local big = ctx:chance(0.3)
  local n = ctx:n(big and ctx:pick { 300, 1000 } or ctx:pick { 2000, 10000, 30000 }, 20)
  ctx:param("n", P .. "x" .. n)
  ctx:param("shapes", table.concat(shapes, "+") .. (big and "+big" or ""))
  local mode = ctx:param("close", ctx:pick { "after", "after", "mid", "immediate" })
  local cancel_one = ctx:pick { false, false, false, "consumer", "producer" }
  -- the last consumer cancelled would leave a bounded queue full
  if cancel_one == "consumer" and C < 2 then cancel_one = false end
  if cancel_one then ctx:param("cancel", cancel_one) end
  local T = ctx.T

  local q = new_queue(ctx, kind, maxsize)
  local consumers, producers = {}, {}
  for c = 1, C do consumers[c] = ctx:spawn(consumer, q, kind, ctx:sub(), T) end
  for p = 1, P do producers[p] = ctx:spawn(producer, q, kind, p, n, ctx:sub(), T, shapes, big) end
  if cancel_one then
    loom.sleep(ctx.rng() * 0.02)
    local list = cancel_one == "consumer" and consumers or producers
    list[ctx:int(1, #list)]:cancel()
  end
  if mode ~= "after" then
    loom.sleep(ctx.rng() * 0.05)
    q:close(mode == "immediate")
  end
  local status = {}
  for p = 1, P do status[p] = ctx:result(producers[p]) end
  if mode == "after" then q:close() end
  local tally = lib.tally()
  for c = 1, C do lib.tally_add(tally, (ctx:result(consumers[c]))) end
  drain(q, kind, tally)
  if mode == "immediate" then
    for p = 1, P do status[p] = status[p]:gsub("p", "d") end
  end
  ctx:param("got", lib.tally_check(tally, status, kind))
  lib.check(q:qsize() == 0, "%d items left in a drained queue", q:qsize())
  if kind ~= "SimpleQueue" then
    lib.check(q:join(T), "join() not done %g s after every item was marked done", T)
  end
end

-- loom.select: each selector waits on a list of the queues (the first
-- on all of them, the others on random lists, duplicates allowed), and
-- plain getters share some queues with them.
local function selector(qs, kinds, seed, T)
  local r = lib.rng(seed)
  local kind_of = {}
  for i, q in ipairs(qs) do kind_of[q] = kinds[i] end
  local got = {}
  local ok, err = pcall(function()
    while true do
      local q, v
      if r(8) == 1 then
        q, v = loom.select(qs, 0) -- a poll
        if q == nil and v == "timeout" then q, v = loom.select(qs, T) end
      else
        q, v = loom.select(qs, T)
      end
      if q == nil then
        if v == "closed" then break end
        lib.fail("select: %s after %g s", tostring(v), T)
      end
      local kind = lib.check(kind_of[q], "select returned a queue not in its list")
      got[#got + 1] = lib.item_id(kind, v)
      if kind ~= "SimpleQueue" then q:task_done() end
    end
  end)
  if not ok then
    if loom.is_cancelled(err) then return got, true end
    error(err, 0)
  end
  -- closed means every queue of the list is closed and drained
  for _, q in ipairs(qs) do
    lib.check(q:is_closed() and q:qsize() == 0, "select said closed, but a queue is open or has items")
  end
  return got, false
end

-- A producer that spreads its items over the queues; when the queue it
-- chose is closed, it tries the others.
local function spreader(qs, kinds, p, n, seed, T, shapes)
  local r = lib.rng(seed)
  local st = {}
  local open = {}
  for i = 1, #qs do open[i] = i end
  for i = 1, n do
    st[i] = "n"
    while #open > 0 do
      local k = r(#open)
      local qi = open[k]
      local kind = kinds[qi]
      local v = lib.make_item(kind, p * lib.ID_SPAN + i, shape_of(r, shapes, false), r(0, 9))
      local ok, res, why = pcall(qs[qi].put, qs[qi], v, T)
      if ok then
        if not res then lib.fail("put: %s after %g s", tostring(why), T) end
        st[i] = "p"
        break
      end
      if not loom.is_closed(res) then error(res, 0) end
      table.remove(open, k)
    end
  end
  return table.concat(st)
end

local sel = { name = "select_mpmc" }
function sel.run(ctx)
  local K = ctx:param("queues", ctx:int(2, 5))
  local qs, kinds, names = {}, {}, {}
  for i = 1, K do
    kinds[i] = ctx:pick(KINDS)
    local maxsize = kinds[i] == "SimpleQueue" and 0 or ctx:pick { 0, 1, 4, 32 }
    qs[i] = new_queue(ctx, kinds[i], maxsize)
    names[i] = kinds[i]:gsub("Queue", "Q") .. (maxsize > 0 and ("(" .. maxsize .. ")") or "")
  end
  ctx:param("kinds", table.concat(names, ","))
  local S = ctx:param("selectors", ctx:int(1, 4))
  local G = ctx:param("getters", ctx:int(0, 2))
  local P = ctx:param("P", ctx:int(1, 4))
  local n = ctx:n(ctx:pick { 1000, 5000, 15000 }, 20)
  ctx:param("n", P .. "x" .. n)
  local shapes = pick_shapes(ctx)
  local mode = ctx:param("close", ctx:pick { "after", "after", "mid" })
  local T = ctx.T

  local consumers = {}
  for s = 1, S do
    local list, lkinds = {}, {}
    if s == 1 then
      for i = 1, K do list[i], lkinds[i] = qs[i], kinds[i] end
    else
      for j = 1, ctx:int(1, K + 1) do
        local i = ctx:int(1, K)
        list[j], lkinds[j] = qs[i], kinds[i]
      end
    end
    consumers[#consumers + 1] = ctx:spawn(selector, list, lkinds, ctx:sub(), T)
  end
  local getters = {}
  for _ = 1, G do
    local i = ctx:int(1, K)
    getters[#getters + 1] = { i, ctx:spawn(consumer, qs[i], kinds[i], ctx:sub(), T) }
  end
  local producers = {}
  for p = 1, P do
    producers[p] = ctx:spawn(spreader, qs, kinds, p, n, ctx:sub(), T, shapes)
  end
  if S >= 2 and ctx:chance(0.3) then
    -- not the first: it alone waits on every queue, so bounded queues
    -- would fill up and hold the producers
    ctx:param("cancel", "selector")
    loom.sleep(ctx.rng() * 0.01)
    consumers[ctx:int(2, S)]:cancel()
  end
  local order = {}
  for i = 1, K do order[i] = i end
  for i = K, 2, -1 do
    local j = ctx:int(1, i)
    order[i], order[j] = order[j], order[i]
  end
  if mode == "mid" then
    for _, i in ipairs(order) do
      loom.sleep(ctx.rng() * 0.02)
      qs[i]:close()
    end
  end
  local status = {}
  for p = 1, P do status[p] = ctx:result(producers[p]) end
  if mode == "after" then
    for _, i in ipairs(order) do
      if ctx:chance(0.5) then loom.sleep(ctx.rng() * 0.005) end
      qs[i]:close()
    end
  end
  local tally = lib.tally()
  for _, t in ipairs(consumers) do lib.tally_add(tally, (ctx:result(t))) end
  for _, g in ipairs(getters) do
    local ids, cancelled = ctx:result(g[2])
    lib.check(not cancelled, "a getter was cancelled")
    lib.tally_add(tally, ids)
  end
  -- what a cancelled selector left behind
  for i = 1, K do drain(qs[i], kinds[i], tally) end
  ctx:param("got", lib.tally_check(tally, status, "select"))
  for i = 1, K do
    lib.check(qs[i]:qsize() == 0, "queue %d: %d items left after select drained it", i, qs[i]:qsize())
    if kinds[i] ~= "SimpleQueue" then
      lib.check(qs[i]:join(T), "queue %d: join() not done after every item was marked done", i)
    end
  end
end

return { mpmc, sel }
