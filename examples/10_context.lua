-- Tip 10: context managers (Python: `with`) release resources even when
-- the code inside fails. Lua 5.4's to-be-closed variables do the same:
--   with lock: ...        ->   local _ <close> = lock:guard() ...
--   with lock: f()        ->   lock:with(f)
local loom = require "loom"

local lock = loom.Lock()

-- 1. A guard is released when its scope ends, normally or by an error.
local function update_resource(fail)
  local _ <close> = lock:guard()
  -- manipulate the shared resource safely here
  if fail then error("something went wrong while holding the lock", 0) end
  return "updated"
end

print("normal exit:", update_resource(false), "| locked after:", lock:locked())
local ok, err = pcall(update_resource, true)
print("error exit:", ok, err, "| locked after:", lock:locked())

-- 2. with(fn, ...) runs fn holding the lock, passes its results back and
--    releases on error too.
print("with:", lock:with(function(a, b) return a + b end, 40, 2), "| locked after:", lock:locked())
ok = pcall(lock.with, lock, function() error("boom") end)
print("with + error:", ok, "| locked after:", lock:locked())

-- 3. The same works across threads: at most two "connections" at a time,
--    guarded by a BoundedSemaphore; the workers that fail still give
--    their slot back, so nothing leaks and nobody waits forever.
local slots = loom.BoundedSemaphore(2)
local stats = loom.shared { busiest = 0, inside = 0 }

local function use_connection(sem, st, id)
  local _ <close> = sem:guard()
  local now = st:incr("inside")
  st:update("busiest", function(b) return math.max(b, now) end)
  loom.sleep(0.01)
  st:incr("inside", -1)
  if id % 3 == 0 then error(("worker %d failed"):format(id), 0) end
  return id
end

local workers = {}
for id = 1, 9 do workers[id] = loom.thread(use_connection, slots, stats, id) end
local failures = 0
for _, t in ipairs(workers) do
  if not pcall(t.result, t) then failures = failures + 1 end
end
print(("workers failed: %d of 9; most connections at once: %d; free slots at the end: %d of 2")
  :format(failures, stats.busiest, slots.value))

-- 4. Your own resources: any value with a __close metamethod.
local function open_resource(name)
  print("open " .. name)
  return setmetatable({ name = name }, {
    __close = function(r, e) print(("close %s (%s)"):format(r.name, e and "on error" or "normally")) end,
  })
end

pcall(function()
  local _ <close> = open_resource("a")
  local _ <close> = open_resource("b")
  error("fail after opening both")
end)
