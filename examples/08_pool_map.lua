-- Tip 8: concurrent.futures (Python: ThreadPoolExecutor, executor.map).
-- loom.ThreadPoolExecutor is the same executor: map gives the results in
-- the order of the input, submit gives a Future, and `<close>` is the
-- `with` block (it waits for the work, then stops the workers). Each
-- worker is a loom thread with its own Lua state, so a CPU-bound map
-- really runs on several cores, which Python's thread pool cannot do.
local loom = require "loom"

local function worker(n)
  return n * n
end

do
  local executor <close> = loom.ThreadPoolExecutor() -- with ThreadPoolExecutor() as executor:
  local results = {}
  for _, r in executor:map(worker, { 0, 1, 2, 3, 4 }) do results[#results + 1] = r end
  print("[" .. table.concat(results, ", ") .. "]") -- print(list(results)): the squares

  -- submit gives a Future: the result, or the task's error, when it is done
  local future = executor:submit(worker, 12)
  print("submit(worker, 12) -> " .. future:result())
end

-- A little more: CPU-bound work. A plain Lua loop per job, four jobs, done
-- one after the other and then mapped on a pool of 2 workers.
local function busy_sum(n)
  local s = 0
  for i = 1, n do s = s + i % 7 end
  return s
end

local N = tonumber(arg and arg[1]) or 4000000
local jobs = { N, N, N, N }

local t0 = loom.now()
local serial = {}
for i, n in ipairs(jobs) do serial[i] = busy_sum(n) end
local serial_time = loom.now() - t0

local pooled = {}
local pool <close> = loom.ThreadPoolExecutor { max_workers = 2 }
t0 = loom.now()
for i, s in pool:map(busy_sum, jobs) do pooled[i] = s end
local pool_time = loom.now() - t0

print(("4 jobs of busy_sum(%d): serial %s, pool %s"):format(
  N, table.concat(serial, " "), table.concat(pooled, " ")))
print(("serial %.3f s, pool of 2 workers %.3f s: speedup %.2fx on %d cores" ..
       " (Python's thread pool: about 1x)"):format(
  serial_time, pool_time, serial_time / pool_time, loom.cpu_count()))
