-- Tip 7: not everything can be async. A task that calls something that
-- blocks (here loom.sleep, Lua's stand-in for time.sleep or a blocking
-- driver call) freezes the whole loop: no other task runs until it
-- returns. async.to_thread moves the blocking call to a pool thread and
-- awaits it, so the loop keeps going. The debug mode names the culprit.
local loom = require "loom"
local async = require "loom.async"
io.stdout:setvbuf("line") -- keep our lines in order with the debug reports

-- A ticker shows whether the loop is alive: it ticks every 50 ms.
local function ticker(stop)
  local ticks = 0
  while not stop:is_set() do
    async.sleep(0.05)
    ticks = ticks + 1
  end
  return ticks
end

local function blocking_io(seconds)
  loom.sleep(seconds) -- blocks the OS thread that runs it
  return "data"
end

local function run(label, fetch)
  return async.run(function()
    local stop = async.Event()
    local tick = async.spawn(ticker, stop)
    local start = loom.now()
    local a, b = async.gather(function() return fetch(0.5) end, function() return fetch(0.5) end)
    local took = loom.now() - start
    stop:set()
    local ticks = tick:await()
    print(("%-22s %s %s in %.1f s, ticker ticked %d times"):format(label, a, b, took, ticks))
    return ticks
  end)
end

async.set_debug(true, 0.2) -- report any task step that holds the loop for 0.2 s or more
local frozen = run("blocking call in task:", blocking_io)
async.set_debug(false)
local alive = run("async.to_thread:", function(s) return async.to_thread(blocking_io, s) end)
print(frozen < alive and "the loop only kept ticking with to_thread"
  or "unexpected: the blocking version ticked as often")
