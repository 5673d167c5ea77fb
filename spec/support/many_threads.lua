-- Starts and joins N threads in sequence (default 10,000); run under
-- valgrind by `make valgrind` to show that threads leak nothing.
local loom = require "loom"
local n = tonumber(arg[1]) or 10000
local function f(i) return i * 2 end
for i = 1, n do
  local t = loom.thread(f, i)
  assert(t:result() == i * 2)
end
print("threads started and joined:", n)
