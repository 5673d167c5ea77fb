-- Queues, loom vs Python 3's queue.Queue in the same run:
--   1 producer thread -> 1 consumer thread of 1,000,000 integers (msg/s),
--   the same with 100-byte strings,
--   a ping-pong between two threads over two queues (time per round trip),
--   an uncontended put+get in one thread,
--   batches: put_many/get_many of 1,000 items (Python: a list of 1,000
--   items as one message, the usual way to batch with queue.Queue).
local loom = require "loom"
local util = require "util"

local N = tonumber(os.getenv("QUEUE_BENCH_N")) or 1000000
local BOUNCES = 100000
local UNCONTENDED = 1000000
local BATCH = 1000
local STR = string.rep("x", 100)

local function producer(q, n, item)
  if item then
    for _ = 1, n do q:put(item) end
  else
    for i = 1, n do q:put(i) end
  end
end

-- 1 -> 1: a producer thread, the consumer is this thread
local function one_to_one(item)
  return N / util.best(3, function()
    local q = loom.Queue()
    local t0 = util.now()
    local t = loom.thread(producer, q, N, item)
    for _ = 1, N do q:get() end
    local dt = util.now() - t0
    t:join()
    return dt
  end)
end

local int_rate = one_to_one(nil)
local str_rate = one_to_one(STR)

local function echo(inq, outq, n)
  for _ = 1, n do outq:put(inq:get()) end
end

local pingpong = util.best(3, function()
  local ping, pong = loom.Queue(), loom.Queue()
  local t = loom.thread(echo, ping, pong, BOUNCES)
  ping:put(0); pong:get() -- both sides running
  local t0 = util.now()
  for i = 2, BOUNCES do
    ping:put(i)
    pong:get()
  end
  local dt = util.now() - t0
  t:join()
  return dt / (BOUNCES - 1)
end)

local uncontended = util.best(3, function()
  local q = loom.Queue()
  local t0 = util.now()
  for i = 1, UNCONTENDED do
    q:put(i)
    q:get()
  end
  return (util.now() - t0) / UNCONTENDED
end)

local function batch_producer(q, n, batch)
  local items = {}
  for i = 1, batch do items[i] = i end
  for _ = 1, n // batch do q:put_many(items) end
end

local batch_rate = N / util.best(3, function()
  local q = loom.Queue(16 * BATCH)
  local t0 = util.now()
  local t = loom.thread(batch_producer, q, N, BATCH)
  local got = 0
  while got < N do
    local _, n = q:get_many(BATCH)
    got = got + n
  end
  local dt = util.now() - t0
  t:join()
  return dt
end)

local py = util.python("bench/queue_bench.py",
  string.format("%d %d %d %d", N, BOUNCES, UNCONTENDED, BATCH))

util.report("Queues", {
  { name = "1 -> 1, 1M integers", unit = "msg/s", loom = int_rate,
    python = py.int_rate, higher = true },
  { name = "1 -> 1, 1M 100-byte strings", unit = "msg/s", loom = str_rate,
    python = py.str_rate, higher = true },
  { name = "ping-pong round trip (two threads, 2 queues)", unit = "s",
    loom = pingpong, python = py.pingpong },
  { name = "uncontended put + get, one thread", unit = "s",
    loom = uncontended, python = py.uncontended },
  { name = "batches of 1000 vs Python per-item put/get", unit = "msg/s",
    loom = batch_rate, python = py.int_rate, higher = true },
  { name = "batches of 1000 vs Python put(list of 1000)", unit = "msg/s",
    loom = batch_rate, python = py.batch_rate, higher = true },
})
print("")
print("(batches: Python puts a list of 1000 items as one message; loom copies " ..
      "each item. Unbounded queues except the batch row (maxsize 16000).)")
