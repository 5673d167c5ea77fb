-- Tip 2: the GIL. In Python, CPU-bound threads take turns on one core, so
-- two threads are no faster than one. A loom thread runs its own Lua state
-- on its own core: the same CPU-bound function really runs in parallel.
local loom = require "loom"

local function count_primes(from, to)
  local n = 0
  for i = from, to do
    local prime = i > 1
    for d = 2, math.floor(math.sqrt(i)) do
      if i % d == 0 then prime = false; break end
    end
    if prime then n = n + 1 end
  end
  return n
end

local N = tonumber(arg and arg[1]) or 300000

-- The classic GIL demo: the same job twice, one after the other...
local t0 = loom.now()
local r1, r2 = count_primes(1, N), count_primes(1, N)
local serial_time = loom.now() - t0

-- ...and the same two jobs on two threads at once.
t0 = loom.now()
local a = loom.thread(count_primes, 1, N)
local b = loom.thread(count_primes, 1, N)
local p1, p2 = a:result(), b:result()
local parallel_time = loom.now() - t0

print(("primes up to %d: %d and %d serially, %d and %d on 2 threads"):format(N, r1, r2, p1, p2))
print(("serial %.3f s, 2 threads %.3f s: speedup %.2fx on %d cores"):format(
  serial_time, parallel_time, serial_time / parallel_time, loom.cpu_count()))
