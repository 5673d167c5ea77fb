-- Locks and friends, loom vs Python 3's threading in the same run:
--   uncontended Lock / RLock acquire+release, and a <close> guard scope,
--   a Lock contended by 2 threads (time per acquire+release),
--   ping-pong between two threads over two Events and over two
--   Semaphores (time per round trip),
--   a shared counter bumped by 2 threads (loom: s:incr; Python: a dict
--   item under a Lock, the usual way).
local loom = require "loom"
local util = require "util"

local N = tonumber(os.getenv("SYNC_BENCH_N")) or 1000000
local CONTENDED = N // 2     -- per thread
local BOUNCES = N // 20

local function per_op(reps, n, fn)
  return util.best(reps, fn) / n
end

local uncontended_lock = per_op(3, N, function()
  local l = loom.Lock()
  for _ = 1, N do
    l:acquire()
    l:release()
  end
end)

local uncontended_rlock = per_op(3, N, function()
  local l = loom.RLock()
  for _ = 1, N do
    l:acquire()
    l:release()
  end
end)

local guard_scope = per_op(3, N, function()
  local l = loom.Lock()
  for _ = 1, N do
    local _ <close> = l:guard()
  end
end)

local function hammer(l, n, go)
  go:wait()
  for _ = 1, n do
    l:acquire()
    l:release()
  end
end

local contended = util.best(3, function()
  local l, go = loom.Lock(), loom.Event()
  local a = loom.thread(hammer, l, CONTENDED, go)
  local b = loom.thread(hammer, l, CONTENDED, go)
  local t0 = util.now()
  go:set()
  a:join()
  b:join()
  return util.now() - t0
end) / (2 * CONTENDED)

local function event_echo(ping, pong, n)
  for _ = 1, n do
    ping:wait()
    ping:clear()
    pong:set()
  end
end

local event_pingpong = util.best(3, function()
  local ping, pong = loom.Event(), loom.Event()
  local t = loom.thread(event_echo, ping, pong, BOUNCES)
  local t0 = util.now()
  for _ = 1, BOUNCES do
    ping:set()
    pong:wait()
    pong:clear()
  end
  local dt = util.now() - t0
  t:join()
  return dt / BOUNCES
end)

local function sem_echo(ping, pong, n)
  for _ = 1, n do
    ping:acquire()
    pong:release()
  end
end

local sem_pingpong = util.best(3, function()
  local ping, pong = loom.Semaphore(0), loom.Semaphore(0)
  local t = loom.thread(sem_echo, ping, pong, BOUNCES)
  local t0 = util.now()
  for _ = 1, BOUNCES do
    ping:release()
    pong:acquire()
  end
  local dt = util.now() - t0
  t:join()
  return dt / BOUNCES
end)

local function bump(s, n, go)
  go:wait()
  for _ = 1, n do s:incr("n") end
end

local shared_incr = util.best(3, function()
  local s, go = loom.shared { n = 0 }, loom.Event()
  local a = loom.thread(bump, s, CONTENDED, go)
  local b = loom.thread(bump, s, CONTENDED, go)
  local t0 = util.now()
  go:set()
  a:join()
  b:join()
  assert(s.n == 2 * CONTENDED)
  return util.now() - t0
end) / (2 * CONTENDED)

local py = util.python("bench/sync_bench.py",
  string.format("%d %d %d", N, CONTENDED, BOUNCES))

util.report("Locks, events, semaphores, shared counters", {
  { name = "uncontended Lock acquire + release", unit = "s",
    loom = uncontended_lock, python = py.uncontended_lock },
  { name = "uncontended RLock acquire + release", unit = "s",
    loom = uncontended_rlock, python = py.uncontended_rlock },
  { name = "guard scope (<close>; Python: with lock)", unit = "s",
    loom = guard_scope, python = py.guard_scope },
  { name = "Lock contended by 2 threads, per acq+rel", unit = "s",
    loom = contended, python = py.contended },
  { name = "Event ping-pong round trip (2 threads)", unit = "s",
    loom = event_pingpong, python = py.event_pingpong },
  { name = "Semaphore ping-pong round trip (2 threads)", unit = "s",
    loom = sem_pingpong, python = py.sem_pingpong },
  { name = "shared counter, 2 threads, per increment", unit = "s",
    loom = shared_incr, python = py.shared_incr },
})
print("")
print("(shared counter: loom s:incr on a loom.shared; Python: `with lock: d['n'] += 1`. " ..
      "Python's threads take turns on the GIL; loom's run at once on separate cores.)")
