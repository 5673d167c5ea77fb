-- loom.ThreadPoolExecutor vs Python 3's concurrent.futures.ThreadPoolExecutor
-- in the same run, both with max_workers = 2, the same functions and input:
--   (a) the submit -> result round trip of a tiny task (double(x) = x * 2),
--   (b) 100,000 tiny tasks submitted, then all their results collected,
--   (c) map over 100,000 items, every result consumed in order,
--   (d) a CPU-bound map (a prime count per item) on the 2 workers against
--       the same work done serially (Python's threads share the GIL).
-- loom and Python take turns, round by round, so that both meet the same
-- spells of load on this shared machine; each row is a median.
local loom = require "loom"
local util = require "util"

local TRIP_ROUNDS, TRIPS = 5, 2000  -- (a): median of every trip
local BULK_ROUNDS, BULK_N = 5, 100000 -- (b), (c): median of the rounds
local CPU_ROUNDS, PRIMES_N, CPU_ITEMS = 5, 50000, 8 -- (d): median speedup

-- Defined once, upvalues only the globals: the pool sends the code of
-- such a function to each worker once, and afterwards only the arguments.
local function double(x) return x * 2 end

local function count_primes(n)
  local c = 0
  for i = 2, n do
    local p, d = true, 2
    while d * d <= i do
      if i % d == 0 then p = false; break end
      d = d + 1
    end
    if p then c = c + 1 end
  end
  return c
end

local pool <close> = loom.ThreadPoolExecutor { max_workers = 2 }
-- the peer of Python's warm-up: both workers started, code loaded
do
  local fs = {}
  for i = 1, 100 do fs[i] = pool:submit(double, i) end
  for i = 1, 100 do fs[i]:result() end
  pool:submit(count_primes, 10):result()
end

local function py(mode, args)
  return util.python("bench/pool_bench.py", mode .. " " .. args)
end

-- (a) round trip
local trips, py_trips = {}, {}
for _ = 1, TRIP_ROUNDS do
  for i = 1, TRIPS do
    local t0 = util.now()
    pool:submit(double, i):result()
    trips[#trips + 1] = util.now() - t0
  end
  local r = py("trip", TRIPS)
  for i = 1, TRIPS do py_trips[#py_trips + 1] = r["trip" .. i] end
end

-- (b) a burst of tasks: all submitted, then all results collected
local function burst(n)
  local fs = {}
  local t0 = util.now()
  for i = 1, n do fs[i] = pool:submit(double, i) end
  local s = 0
  for i = 1, n do s = s + fs[i]:result() end
  local dt = util.now() - t0
  assert(s == n * (n + 1))
  return dt
end

-- (c) map
local items = {}
for i = 1, BULK_N do items[i] = i end
local function map(xs)
  local t0 = util.now()
  local s = 0
  for _, v in pool:map(double, xs) do s = s + v end
  local dt = util.now() - t0
  assert(s == #xs * (#xs + 1))
  return dt
end

local bursts, py_bursts, maps, py_maps = {}, {}, {}, {}
for _ = 1, BULK_ROUNDS do
  collectgarbage()
  bursts[#bursts + 1] = BULK_N / burst(BULK_N)
  py_bursts[#py_bursts + 1] = BULK_N / py("burst", BULK_N .. " 1").burst1
  collectgarbage()
  maps[#maps + 1] = map(items)
  py_maps[#py_maps + 1] = py("map", BULK_N .. " 1").map1
end

-- (d) CPU-bound: serial, then the same items mapped on the pool
local cpu_items = {}
for i = 1, CPU_ITEMS do cpu_items[i] = PRIMES_N end
local speedups, py_speedups = {}, {}
for _ = 1, CPU_ROUNDS do
  local t0 = util.now()
  local serial = {}
  for i, n in ipairs(cpu_items) do serial[i] = count_primes(n) end
  local t_serial = util.now() - t0
  t0 = util.now()
  for i, c in pool:map(count_primes, cpu_items) do assert(c == serial[i]) end
  speedups[#speedups + 1] = t_serial / (util.now() - t0)
  local r = py("cpu", PRIMES_N .. " " .. CPU_ITEMS)
  py_speedups[#py_speedups + 1] = r.serial / r.parallel
end
pool:shutdown()

-- util.report's table with a column for each row's target
local function fmt(v, unit)
  if v == nil then return "n/a" end
  if unit == "s" then
    if v < 1e-3 then return string.format("%.2f us", v * 1e6) end
    if v < 1 then return string.format("%.2f ms", v * 1e3) end
    return string.format("%.2f s", v)
  end
  if v >= 1e6 then return string.format("%.2fM %s", v / 1e6, unit) end
  if v >= 1e3 then return string.format("%.1fk %s", v / 1e3, unit) end
  return string.format("%.2f %s", v, unit)
end

local rows = {
  { name = "(a) submit -> result round trip, median", unit = "s",
    loom = util.median(trips), python = util.median(py_trips), target = 10 },
  { name = "(b) 100k tiny tasks submitted, then results", unit = "tasks/s",
    loom = util.median(bursts), python = util.median(py_bursts), higher = true, target = 25 },
  { name = "(c) map over 100k items", unit = "s",
    loom = util.median(maps), python = util.median(py_maps), target = 25 },
  { name = "(d) CPU-bound map, 2 workers vs serial", unit = "x",
    loom = util.median(speedups), python = util.median(py_speedups), higher = true,
    target = 1.9, target_on_loom = true },
}

print("")
print("## Thread pool: loom.ThreadPoolExecutor vs concurrent.futures (max_workers=2)")
print("")
print(string.format("| %-44s | %14s | %14s | %12s | %-18s |",
  "workload", "loom", "python3", "loom vs py", "target"))
print("|" .. string.rep("-", 46) .. "|" .. string.rep("-", 16) .. "|" ..
      string.rep("-", 16) .. "|" .. string.rep("-", 14) .. "|" .. string.rep("-", 20) .. "|")
for _, r in ipairs(rows) do
  local ratio = r.higher and r.loom / r.python or r.python / r.loom
  local measured = r.target_on_loom and r.loom or ratio
  local target = string.format(">= %gx%s: %s", r.target, r.target_on_loom and " loom" or "",
    measured >= r.target and "met" or "MISSED")
  print(string.format("| %-44s | %14s | %14s | %12s | %-18s |", r.name,
    fmt(r.loom, r.unit), fmt(r.python, r.unit), string.format("%.2fx", ratio), target))
end
print("")
print(("(a): median of %d alternating rounds of %d trips each; (b), (c): median of %d " ..
       "alternating rounds; (d): %d items, each count_primes(%d), median of %d rounds of " ..
       "serial then pool:map (Python: executor.map)"):format(TRIP_ROUNDS, TRIPS, BULK_ROUNDS,
       CPU_ITEMS, PRIMES_N, CPU_ROUNDS))
local function list(xs, scale)
  local t = {}
  for i, x in ipairs(xs) do t[i] = string.format(scale and "%.0f" or "%.2f", x / (scale or 1)) end
  return table.concat(t, " ")
end
print(("(b) tasks/s of each round, thousands: loom %s; python3 %s"):format(
  list(bursts, 1e3), list(py_bursts, 1e3)))
print(("(d) speedup of each round: loom %s; python3 %s"):format(list(speedups), list(py_speedups)))
io.stdout:flush()
