-- Tip 1: threads, start and join (Python: threading.Thread).
local loom = require "loom"

local function say_hello(name)
  print(("Hello, %s!"):format(name))
  loom.sleep(0.5) -- stands in for slow work
end

-- Create the threads (Thread{target=, args=} is threading.Thread(...)).
local thread1 = loom.Thread { target = say_hello, args = { "World" } }
local thread2 = loom.Thread { target = say_hello, args = { "Lua" } }

-- Start them: both greet at once, then both sleep at the same time.
local t0 = loom.now()
thread1:start()
thread2:start()

-- Wait until both have finished.
thread1:join()
thread2:join()

print(("All done in %.1f s (two 0.5 s sleeps, side by side)."):format(loom.now() - t0))

-- loom.thread(fn, ...) creates and starts in one go, and a thread is also a
-- future: result() gives back what its function returned.
local t = loom.thread(function(a, b) return a + b end, 20, 22)
print("The answer from a thread:", t:result())
