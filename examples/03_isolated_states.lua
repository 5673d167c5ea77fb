-- Tip 3: Python reaches for multiprocessing to get separate interpreters.
-- Every loom thread already is one: its own lua_State, its own globals,
-- nothing shared unless you share it on purpose (queues, loom.shared...).
local loom = require "loom"

counter = 0 -- a global of the main state

local function worker(num)
  counter = (counter or 0) + 100 * num -- this thread's own global
  print(("Worker: %d (its own counter = %d)"):format(num, counter))
  loom.sleep(0.2)
  return counter
end

local threads = {}
for i = 0, 3 do
  threads[#threads + 1] = loom.thread(worker, i)
end
local results = {}
for i, t in ipairs(threads) do results[i] = t:result() end

print("results: " .. table.concat(results, ", "))
print("main state's counter is still " .. counter)
