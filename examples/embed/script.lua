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
