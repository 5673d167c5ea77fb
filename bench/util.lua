-- Shared by the benchmarks: timing, running the Python peer in the same
-- run, and printing loom and Python side by side as ratios.
local loom = require "loom"
local util = {}

util.now = loom.now

-- Best wall time in seconds of `reps` runs of fn (fn may return a time to
-- use instead of its own measured span).
function util.best(reps, fn)
  local best = math.huge
  for _ = 1, reps do
    local t0 = loom.now()
    local own = fn()
    local dt = own or (loom.now() - t0)
    if dt < best then best = dt end
  end
  return best
end

-- The median and the least of a list of numbers.
function util.median(xs)
  local s = table.move(xs, 1, #xs, 1, {})
  table.sort(s)
  local n = #s
  return n % 2 == 1 and s[(n + 1) // 2] or (s[n // 2] + s[n // 2 + 1]) / 2
end

function util.min(xs)
  return math.min(table.unpack(xs))
end

-- Runs a Python 3 script (a path under bench/) and returns the numbers it
-- prints as "name value" lines, keyed by name.
function util.python(script, args)
  local p = assert(io.popen("python3 " .. script .. " " .. (args or "") .. " 2>&1"))
  local out = {}
  for line in p:lines() do
    local k, v = line:match("^(%S+)%s+([%d%.eE+-]+)$")
    if k then out[k] = tonumber(v) else io.stderr:write("python: ", line, "\n") end
  end
  p:close()
  return out
end

local function fmt(v, unit)
  if v == nil then return "n/a" end
  if unit == "s" then
    if v < 1e-6 then return string.format("%.0f ns", v * 1e9) end
    if v < 1e-3 then return string.format("%.2f us", v * 1e6) end
    if v < 1 then return string.format("%.2f ms", v * 1e3) end
    return string.format("%.2f s", v)
  end
  if v >= 1e6 then return string.format("%.2fM %s", v / 1e6, unit) end
  if v >= 1e3 then return string.format("%.1fk %s", v / 1e3, unit) end
  return string.format("%.2f %s", v, unit)
end

-- rows: { {name=, unit="s"|"msg/s"|"x", loom=, python=, higher=bool}, ... }
-- Prints a table; the ratio says how many times better loom is (time:
-- python/loom; throughput or speedup: loom/python).
function util.report(title, rows)
  print("")
  print("## " .. title)
  print("")
  print(string.format("| %-44s | %14s | %14s | %12s |", "workload", "loom", "python3", "loom vs py"))
  print("|" .. string.rep("-", 46) .. "|" .. string.rep("-", 16) .. "|" ..
        string.rep("-", 16) .. "|" .. string.rep("-", 14) .. "|")
  for _, r in ipairs(rows) do
    local ratio = "n/a"
    if r.loom and r.python and r.loom > 0 and r.python > 0 then
      local x = r.higher and r.loom / r.python or r.python / r.loom
      ratio = string.format("%.2fx", x)
    end
    print(string.format("| %-44s | %14s | %14s | %12s |", r.name,
      fmt(r.loom, r.unit), fmt(r.python, r.unit), ratio))
  end
  io.stdout:flush()
end

return util
