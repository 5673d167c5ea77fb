-- Tip 9: handling errors from concurrent code (Python: try/except around
-- future.result()). An error inside a thread is kept with its traceback;
-- result() raises it again in the caller, where pcall catches it.
local loom = require "loom"

local function risky(n)
  if n % 2 == 1 then error(("odd input %d"):format(n)) end
  return n * 10
end

for n = 1, 2 do
  local t = loom.thread(risky, n)
  local ok, res = pcall(t.result, t)
  if ok then
    print(("task %d gave %d"):format(n, res))
  else
    print(("Caught an error: %s"):format(res:match("^[^\n]*")))
  end
end

-- Error values need not be strings: a table arrives as it was raised.
local t = loom.thread(function() error({ code = 404, what = "not found" }) end)
local _, e = pcall(t.result, t)
print(("Caught error table: code=%d what=%s"):format(e.code, e.what))

-- Timeouts are errors you can recognise.
local slow = loom.thread(loom.sleep, 0.5)
local ok2, e2 = pcall(slow.result, slow, 0.01)
print("timed out:", not ok2 and loom.is_timeout(e2))
slow:join()

-- A thread can be cancelled; its blocking loom calls raise a cancellation
-- error, which it may catch to clean up.
local sleeper = loom.thread(function()
  local _, e3 = pcall(loom.sleep, 60)
  return loom.is_cancelled(e3) and "cleaned up after cancel" or "not cancelled"
end)
sleeper:cancel()
print(sleeper:result())
