-- loom.async vs Python 3's asyncio in the same run:
--   N tasks each sleeping 10 ms (wall time; the ideal is just over 10 ms),
--   and the peak memory they need above the bare interpreter (each side
--   measured in its own fresh process);
--   the task switch rate (4 tasks that sleep 0 in a loop);
--   awaiting a pool future from a task: the bridge round trip
--   (async.await(pool:submit(f)) vs loop.run_in_executor).
-- loom and Python take turns for ROUNDS rounds; each row is the median.
local loom = require "loom"
local async = require "loom.async"
local util = require "util"

local ROUNDS = 5

local function sleepers(n)
  local ts = {}
  for i = 1, n do ts[i] = async.spawn(async.sleep, 0.01) end
  for i = 1, n do ts[i]:await() end
end

local function time_sleepers(n)
  local t0 = util.now()
  async.run(sleepers, n)
  return util.now() - t0
end

local function switch_rate()
  local count = 0
  local function spin(each)
    for _ = 1, each do
      async.sleep(0)
      count = count + 1
    end
  end
  local t0 = util.now()
  async.run(function()
    local ts = {}
    for i = 1, 4 do ts[i] = async.spawn(spin, 25000) end
    for i = 1, 4 do ts[i]:await() end
  end)
  return count / (util.now() - t0)
end

local function tiny(x) return x end

local pool = loom.ThreadPoolExecutor { max_workers = 2 }
local function bridge(n)
  return async.run(function()
    async.await(pool:submit(tiny, 0))
    local t0 = util.now()
    for i = 1, n do async.await(pool:submit(tiny, i)) end
    return (util.now() - t0) / n
  end)
end

-- peak resident memory of a fresh process running n sleepers, above the
-- same process before it started them
local function peak_kb(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  p:close()
  return tonumber(out:match("peak_kb%s+(%d+)"))
end

local lua_peak = [[
local function hwm() for l in io.lines("/proc/self/status") do
  local v = l:match("^VmHWM:%s+(%d+)") if v then return tonumber(v) end end end
local async = require "loom.async"
local base = hwm()
async.run(function()
  local ts = {}
  for i = 1, N do ts[i] = async.spawn(async.sleep, 0.01) end
  for i = 1, N do ts[i]:await() end
end)
print("peak_kb", hwm() - base)
]]

local function loom_peak(n)
  local f = os.tmpname()
  local fh = assert(io.open(f, "w"))
  fh:write((lua_peak:gsub("N", tostring(n))))
  fh:close()
  local kb = peak_kb("lua5.4 " .. f)
  os.remove(f)
  return kb
end

local L = { s10k = {}, sw = {}, br = {} }
local P = { s10k = {}, sw = {}, br = {} }
for _ = 1, ROUNDS do
  L.s10k[#L.s10k + 1] = time_sleepers(10000)
  L.sw[#L.sw + 1] = switch_rate()
  L.br[#L.br + 1] = bridge(2000)
  local py = util.python("bench/async_bench.py", "1")
  P.s10k[#P.s10k + 1] = py.sleepers10k
  P.sw[#P.sw + 1] = py.switch_rate
  P.br[#P.br + 1] = py.bridge
end
local loom100k = time_sleepers(100000)
local py100k = util.python("bench/async_bench.py", "0").sleepers100k
pool:shutdown()

local lmem10k, pmem10k = loom_peak(10000), peak_kb("python3 bench/async_bench.py sleepers 10000")
local lmem100k, pmem100k = loom_peak(100000), peak_kb("python3 bench/async_bench.py sleepers 100000")

util.report("loom.async vs asyncio (median of " .. ROUNDS .. " alternating rounds)", {
  { name = "10,000 tasks sleeping 10 ms, wall", unit = "s", loom = util.median(L.s10k), python = util.median(P.s10k) },
  { name = "100,000 tasks sleeping 10 ms, wall", unit = "s", loom = loom100k, python = py100k },
  { name = "10,000 sleepers, peak memory (KB)", unit = "KB", loom = lmem10k, python = pmem10k },
  { name = "100,000 sleepers, peak memory (KB)", unit = "KB", loom = lmem100k, python = pmem100k },
  { name = "task switches (4 tasks, sleep 0)", unit = "sw/s",
    loom = util.median(L.sw), python = util.median(P.sw), higher = true },
  { name = "await a pool future (bridge round trip)", unit = "s",
    loom = util.median(L.br), python = util.median(P.br) },
})
print("")
print("targets: 10k sleepers <= 0.15x asyncio's wall time and <= 0.5x its extra memory;"
  .. " switches >= 20x; bridge >= 5x")
