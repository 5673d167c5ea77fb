-- Tip 6: asyncio's gather and sleep. Coroutines are loom.async's tasks:
-- no keyword is needed, async.sleep suspends the task that calls it, and
-- the loop runs the others meanwhile. Three one-second hellos take about
-- one second, not three.
local loom = require "loom"
local async = require "loom.async"

local function hello(i)
  print(("Hello %d"):format(i))
  async.sleep(1) -- asynchronous wait: the other tasks run
  print(("Bye %d"):format(i))
  return i
end

local function main()
  local tasks = {}
  for i = 0, 2 do tasks[#tasks + 1] = async.spawn(hello, i) end
  return async.gather(table.unpack(tasks))
end

local start = loom.now()
local a, b, c = async.run(main)
local took = loom.now() - start
print(("gathered %d %d %d in %.1f s (three sleeps of 1 s, run at once)"):format(a, b, c, took))

-- A little more: results arrive as tasks finish, and a timeout cancels
-- what takes too long (asyncio.as_completed, asyncio.wait_for).
async.run(function()
  local tasks = {
    async.spawn(async.sleep, 0.3, "slow"),
    async.spawn(async.sleep, 0.1, "fast"),
    async.spawn(async.sleep, 0.2, "medium"),
  }
  for t in async.as_completed(tasks) do print("finished: " .. t:result()) end
  local _, err = pcall(async.wait_for, function() async.sleep(5) end, 0.1)
  print(("wait_for: %s (timeout: %s)"):format(tostring(err), tostring(loom.is_timeout(err))))
end)
