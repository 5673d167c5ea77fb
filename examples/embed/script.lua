-- Run by examples/embed/host: threads use the host's own library, which the
-- host's hook put into every thread state.
local loom = require "loom"

local threads = {}
for i = 1, 4 do
  threads[i] = loom.thread(function(n)
    return HOST_NAME .. ": " .. host.record("thread " .. n)
  end, i)
end
local lines = {}
for i, t in ipairs(threads) do lines[i] = t:result() end
table.sort(lines)
for _, l in ipairs(lines) do print(l) end
print(host.record("main"))

-- A pool sized by the host (loom_set_default_workers(2)); its workers get
-- the host's library from the same hook.
local pool <close> = loom.ThreadPoolExecutor{}
local function worker_has_host() return HOST_NAME ~= nil and host ~= nil end
local ok = true
for _, r in pool:map(worker_has_host, {1, 2, 3, 4}) do ok = ok and r end
print(("pool: %d workers, host library in workers: %s"):format(pool.max_workers, tostring(ok)))

-- The host's userdata cross threads: points are copied, a tally is shared.
local tally = host.tally()
local function walk(t, p, steps)
  for _ = 1, steps do t:add() end
  return host.point(p.x + steps, p.y * 2) -- a new point goes back
end
local futures = {}
for i = 1, 4 do futures[i] = pool:submit(walk, tally, host.point(i, i), 1000) end
local moved = {}
for i, f in ipairs(futures) do moved[i] = tostring(f:result()) end
print(("tally after 4 x 1000 adds in the pool: %d"):format(tally:value()))
print("points back from the pool: " .. table.concat(moved, " "))
