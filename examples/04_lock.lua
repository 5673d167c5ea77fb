-- Tip 4: a lock around a shared resource (Python: threading.Lock + `with`).
-- Lua has no `with`; a to-be-closed guard does the same job:
--   with lock: ...        ->   local _ <close> = lock:guard() ...
local loom = require "loom"

-- The article's example: only one thread prints at a time.
local lock = loom.Lock()

local function safe_print(number)
  local _ <close> = lock:guard() -- released at the end of the scope
  print(("Safe print: %d"):format(number))
end

safe_print(1)
safe_print(2)

-- Why it matters. Threads share no memory in loom, so shared state lives
-- in a loom.shared table. Reading a value and writing it back are two
-- separate steps: two threads can read the same old value, and one of the
-- two increments is lost.
local THREADS, N = 4, 5000
local counter = loom.shared { n = 0 }

local function unsafe_increment(c, n)
  for _ = 1, n do
    local v = c.n
    loom.sleep(0) -- let another thread run here, as a busy machine would
    c.n = v + 1
  end
end

local function locked_increment(c, n, lk)
  for _ = 1, n do
    local _ <close> = lk:guard() -- the read and the write become one step
    local v = c.n
    loom.sleep(0)
    c.n = v + 1
  end
end

local function run(fn, ...)
  counter.n = 0
  local threads = {}
  for i = 1, THREADS do threads[i] = loom.thread(fn, counter, N, ...) end
  for _, t in ipairs(threads) do t:join() end
  return counter.n
end

local expected = THREADS * N
local racy = run(unsafe_increment)
print(("without a lock: %d of %d (%d updates lost)"):format(racy, expected, expected - racy))
local safe = run(locked_increment, lock)
print(("with a lock: %d of %d"):format(safe, expected))

-- For a single counter the shared table has an atomic operation that
-- needs no lock at all.
local function atomic_increment(c, n)
  for _ = 1, n do c:incr("n") end
end
print(("with s:incr: %d of %d"):format(run(atomic_increment), expected))
