-- Faults (issue #14): a thread that calls os.exit, the main state ending
-- while daemon threads block in every kind of wait, a task that never
-- ends while its pool shuts down, and the volumes (100,000 pool tasks,
-- 10,000 threads). Each case runs in a child process, bounded in time.
local helpers = require "helpers"

local function no_timeout(out, status)
  assert.are_not.equal(124, status, "the child hit the timeout:\n" .. out)
end

describe("faults #subprocess", function()
  it("os.exit in a thread ends the whole process at once, with its status", function()
    local out, status = helpers.run_lua([[
local loom = require "loom"
local q = loom.Queue()
local lock = loom.Lock()
lock:acquire()
-- others are blocked on a queue and a lock when the process ends
loom.thread(function(qq) qq:get() end, q)
loom.thread(function(l) l:acquire() end, lock)
loom.thread(function() loom.sleep(0.05) os.exit(7) end)
q:get() -- never returns
print("NOT REACHED")
]], 30)
    no_timeout(out, status)
    assert.are.equal(7, status, out)
    assert.is_nil(out:find("NOT REACHED", 1, true), out)
  end)

  it("the main script ends while daemon threads block on queues, locks, events, futures, threads and loops", function()
    local out, status = helpers.run_lua([[
local loom = require "loom"
local async = require "loom.async"
local q, lock, ev = loom.Queue(1), loom.Lock(), loom.Event()
lock:acquire()
q:put("full")
local pool = loom.ThreadPoolExecutor { max_workers = 1 }
local never = pool:submit(function(e) e:wait() end, ev) -- runs until ev is set: never
local waiters = {
  function(qq) qq:put("more") end,                -- a put on a full queue
  function(l) l:acquire() end,                    -- a held lock
  function(e) e:wait() end,                       -- an event never set
  function(f) f:result() end,                     -- a future never done
  function(e) local a = require "loom.async"      -- a loop awaiting a thread queue
    a.run(function() a.get(loom.Queue()) end) end,
}
local args = { q, lock, ev, never, ev }
for i, fn in ipairs(waiters) do
  loom.Thread { target = fn, args = { args[i] }, daemon = true }:start()
end
loom.sleep(0.1)
pool:shutdown { wait = false }
print("MAIN END")
]], 30)
    no_timeout(out, status)
    assert.are.equal(0, status, out)
    assert.matches("MAIN END", out, 1, true)
  end)

  it("a task that never ends while its pool shuts down: interrupt stops it (with cancel_hook), wait=false leaves it", function()
    local out, status = helpers.run_lua([[
local loom = require "loom"
local pool = loom.ThreadPoolExecutor { max_workers = 1, cancel_hook = true }
local started = loom.Event()
local f = pool:submit(function(s) s:set() while true do end end, started)
assert(started:wait(10))
local t0 = loom.now()
pool:shutdown { wait = true, interrupt = true }
print("SHUTDOWN", loom.now() - t0 < 5, f:done(), f:cancelled())

local pool2 = loom.ThreadPoolExecutor { max_workers = 1 }
local started2 = loom.Event()
pool2:submit(function(s) s:set() while true do loom.sleep(0.01) end end, started2)
assert(started2:wait(10))
pool2:shutdown { wait = false } -- returns; the worker becomes a daemon
print("MAIN END")
]], 30)
    no_timeout(out, status)
    assert.are.equal(0, status, out)
    assert.matches("SHUTDOWN\ttrue\ttrue\ttrue", out, 1, true)
    assert.matches("MAIN END", out, 1, true)
  end)

  it("100,000 pool tasks all complete exactly once", function()
    local out, status = helpers.run_lua([[
local loom = require "loom"
local pool <close> = loom.ThreadPoolExecutor { max_workers = 2 }
local fs = {}
for i = 1, 100000 do fs[i] = pool:submit(function(x) return x * 2 end, i) end
local sum, done = 0, 0
for i = 1, 100000 do
  sum = sum + fs[i]:result()
  if fs[i]:done() then done = done + 1 end
end
print("SUM", sum, done)
]], 120)
    no_timeout(out, status)
    assert.are.equal(0, status, out)
    assert.matches("SUM\t10000100000\t100000", out, 1, true)
  end)

  it("10,000 threads started and joined", function()
    local out, status = helpers.run_lua([[
local loom = require "loom"
local total = 0
for i = 1, 10000 do total = total + loom.thread(function(x) return x end, i):result() end
print("TOTAL", total)
]], 120)
    no_timeout(out, status)
    assert.are.equal(0, status, out)
    assert.matches("TOTAL\t50005000", out, 1, true)
  end)
end)
