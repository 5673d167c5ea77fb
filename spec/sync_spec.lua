-- loom.Lock, RLock, Condition, Semaphore, BoundedSemaphore, Event, Barrier,
-- Timer, and the guard()/with() of lock-like objects (SEMANTICS.md 1-11).
local loom = require "loom"
local helpers = require "helpers"

-- Functions defined in a spec file see busted's environment as _ENV, not
-- the global table; a thread body (or Barrier action) reading a global
-- would try to copy busted itself. Thread bodies here read only locals:
-- the standard names they need are bound here and cross by name.
local pcall, error, tostring = pcall, error, tostring

local check_env = helpers.check_env

local function spawn(fn, ...) return helpers.spawn(check_env(fn), ...) end

local TSAN = os.getenv("LOOM_SANITIZER") ~= nil
local STRESS_THREADS = 8
local STRESS_N = TSAN and 5000 or 100000

-- Polls pred (a cheap observation of another thread's progress) until it
-- holds; bounded.
local function eventually(pred, timeout)
  local deadline = loom.now() + (timeout or 10)
  while not pred() do
    if loom.now() > deadline then error("condition not reached in time", 2) end
    loom.sleep(0.001)
  end
end

-- Calls fn and returns the error it raised (fails if it did not).
local function error_of(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return err
end

local function elapsed(fn)
  local t0 = loom.now()
  local r = table.pack(fn())
  return loom.now() - t0, table.unpack(r, 1, r.n)
end

-- Starts fn(started, ...) in a thread; fn sets `started` just before it
-- blocks. Cancels it and checks it raises the cancellation error promptly.
local function assert_cancellable(fn, ...)
  local started = loom.Event()
  local t = spawn(fn, started, ...)
  assert.is_true(started:wait(10))
  local t0 = loom.now()
  t:cancel()
  assert.is_true(t:join(10))
  assert.is_true(loom.now() - t0 < 5)
  local ok, err = pcall(t.result, t)
  assert.is_false(ok)
  assert.is_true(loom.is_cancelled(err), tostring(err))
end

after_each(function() helpers.join_all() end)

describe("loom.Lock", function()
  it("acquires, releases and reports locked()", function()
    local l = loom.Lock()
    assert.is_false(l:locked())
    assert.is_true(l:acquire())
    assert.is_true(l:locked())
    l:release()
    assert.is_false(l:locked())
    assert.matches("loom.Lock", tostring(l))
  end)

  it("acquire(false) on a held lock returns false at once", function()
    local l = loom.Lock()
    l:acquire()
    local dt, ok = elapsed(function() return l:acquire(false) end)
    assert.is_false(ok)
    assert.is_true(dt < 0.5)
    l:release()
    assert.is_true(l:acquire(false))
    l:release()
  end)

  it("acquire(true, t) returns false after about t seconds", function()
    local l = loom.Lock()
    l:acquire()
    local dt, ok = elapsed(function() return l:acquire(true, 0.05) end)
    assert.is_false(ok)
    assert.is_true(dt >= 0.049, "too early: " .. dt)
    assert.is_true(dt < 1, "too late: " .. dt)
    assert.is_false(l:acquire(true, 0))
    l:release()
    assert.is_true(l:acquire(true, 0))
    l:release()
  end)

  it("raises on a negative timeout and on a timeout without blocking", function()
    local l = loom.Lock()
    assert.matches("non%-negative", tostring(error_of(l.acquire, l, true, -1)))
    assert.matches("non%-blocking", tostring(error_of(l.acquire, l, false, 1)))
    assert.is_false(l:locked())
  end)

  it("raises when releasing an unlocked lock", function()
    local l = loom.Lock()
    assert.matches("release unlocked lock", tostring(error_of(l.release, l)))
  end)

  it("may be released by another thread", function()
    local l = loom.Lock()
    l:acquire()
    spawn(function(lk) lk:release() end, l):join(10)
    assert.is_false(l:locked())
  end)

  it("hands over to a thread blocked in acquire", function()
    local l, started = loom.Lock(), loom.Event()
    l:acquire()
    local t = spawn(function(lk, ev)
      ev:set()
      local ok = lk:acquire(true, 10)
      lk:release()
      return ok
    end, l, started)
    assert.is_true(started:wait(10))
    l:release()
    assert.is_true(t:result(10))
  end)

  it("wakes a blocked acquire when its thread is cancelled", function()
    local l = loom.Lock()
    l:acquire()
    assert_cancellable(function(started, lk)
      started:set()
      lk:acquire(true, 30)
    end, l)
    l:release()
  end)

  it("is shared by reference across threads", function()
    local l = loom.Lock()
    local same = spawn(function(a, b) return a == b end, l, l):result(10)
    assert.is_true(same)
    spawn(function(lk) lk:acquire() end, l):join(10)
    assert.is_true(l:locked())
  end)
end)

describe("loom.RLock", function()
  it("is re-entrant for its owner", function()
    local r = loom.RLock()
    assert.is_true(r:acquire())
    assert.is_true(r:acquire(false))
    assert.is_true(r:is_owned())
    r:release()
    assert.is_true(r:locked())
    r:release()
    assert.is_false(r:locked())
    assert.is_false(r:is_owned())
  end)

  it("raises when released unheld or by a non-owner", function()
    local r = loom.RLock()
    assert.matches("un%-acquired", tostring(error_of(r.release, r)))
    r:acquire()
    local ok, err = spawn(function(rl)
      return pcall(rl.release, rl)
    end, r):result(10)
    assert.is_false(ok)
    assert.matches("un%-acquired", tostring(err))
    assert.is_true(r:is_owned())
    r:release()
  end)

  it("blocks other threads until fully released", function()
    local r = loom.RLock()
    r:acquire()
    r:acquire()
    local got = spawn(function(rl) return rl:acquire(false) end, r):result(10)
    assert.is_false(got)
    r:release()
    got = spawn(function(rl) return rl:acquire(true, 0.02) end, r):result(10)
    assert.is_false(got)
    r:release()
    got = spawn(function(rl)
      local ok = rl:acquire(true, 10)
      rl:release()
      return ok
    end, r):result(10)
    assert.is_true(got)
  end)

  it("checks its arguments like Lock", function()
    local r = loom.RLock()
    error_of(r.acquire, r, true, -0.5)
    error_of(r.acquire, r, false, 0)
  end)

  it("wakes a blocked acquire when its thread is cancelled", function()
    local r = loom.RLock()
    r:acquire()
    assert_cancellable(function(started, rl)
      started:set()
      rl:acquire()
    end, r)
    r:release()
  end)
end)

describe("guards and with()", function()
  local kinds = {
    Lock = function() return loom.Lock() end,
    RLock = function() return loom.RLock() end,
    Condition = function() return loom.Condition() end,
    ["Condition(Lock)"] = function() return loom.Condition(loom.Lock()) end,
    Semaphore = function() return loom.Semaphore(1) end,
    BoundedSemaphore = function() return loom.BoundedSemaphore(1) end,
  }
  for name, make in pairs(kinds) do
    it(name .. ": <close> guard releases at scope end and on error", function()
      local o = make()
      do
        local _ <close> = o:guard()
        assert.is_false(spawn(function(x) return x:acquire(false) end, o):result(10))
      end
      assert.is_true(o:acquire(false))
      o:release()
      local ok, err = pcall(function()
        local _ <close> = o:guard()
        error({ tag = "mine" })
      end)
      assert.is_false(ok)
      assert.are.equal("mine", err.tag)
      assert.is_true(o:acquire(false))
      o:release()
    end)

    it(name .. ": with(fn, ...) returns fn's results and releases on error", function()
      local o = make()
      local a, b = o:with(function(x, y)
        assert.is_false(spawn(function(z) return z:acquire(false) end, o):result(10))
        return x + y, "two"
      end, 1, 2)
      assert.are.equal(3, a)
      assert.are.equal("two", b)
      local err = loom.error("timeout", "inner")
      local ok, e = pcall(o.with, o, function() error(err) end)
      assert.is_false(ok)
      assert.is_true(loom.is_timeout(e))
      assert.is_true(o:acquire(false))
      o:release()
    end)
  end

  it("a guard can be released early, once", function()
    local l = loom.Lock()
    local g = l:guard()
    g:release()
    assert.is_false(l:locked())
    g:release()
    assert.is_false(l:locked())
  end)

  it("a <close> guard on a lock released inside the scope raises", function()
    local l = loom.Lock()
    local ok, err = pcall(function()
      local _ <close> = l:guard()
      l:release()
    end)
    assert.is_false(ok)
    assert.matches("release unlocked lock", tostring(err))
  end)
end)

describe("loom.Condition", function()
  it("defaults to an RLock and accepts a Lock or RLock", function()
    local c = loom.Condition()
    assert.matches("loom.RLock", tostring(c.lock))
    local l = loom.Lock()
    assert.are.equal(l, loom.Condition(l).lock)
    error_of(loom.Condition, {})
    error_of(loom.Condition, loom.Event())
  end)

  it("wait and notify without the lock raise", function()
    local c = loom.Condition()
    assert.matches("un%-acquired", tostring(error_of(c.wait, c, 0.01)))
    assert.matches("un%-acquired", tostring(error_of(c.notify, c)))
    assert.matches("un%-acquired", tostring(error_of(c.notify_all, c)))
  end)

  it("wait(t) returns false after about t seconds, holding the lock again", function()
    for _, c in ipairs { loom.Condition(), loom.Condition(loom.Lock()) } do
      c:acquire()
      local dt, ok = elapsed(function() return c:wait(0.05) end)
      assert.is_false(ok)
      assert.is_true(dt >= 0.049 and dt < 1, "dt " .. dt)
      assert.is_true(c.lock:locked())
      c:release()
      error_of(c.wait, c, -1)
    end
  end)

  it("wait releases every level of an RLock and restores them", function()
    local c = loom.Condition()
    local s = loom.shared { flag = false }
    local t = spawn(function(cond, sh)
      cond:acquire()
      sh.flag = true
      cond:notify()
      cond:release()
    end, c, s)
    c:acquire()
    c:acquire()
    assert.is_truthy(c:wait_for(function() return s.flag end, 10))
    c:release()
    assert.is_true(c.lock:is_owned())
    c:release()
    assert.is_false(c.lock:locked())
    t:join(10)
  end)

  it("notify(n) wakes exactly n waiters and notify_all the rest", function()
    local lock = loom.RLock()
    local c, ready = loom.Condition(lock), loom.Condition(lock)
    local s = loom.shared { entered = 0, woke = 0 }
    for _ = 1, 5 do
      spawn(function(cond, rdy, sh)
        cond:acquire()
        sh:incr("entered")
        rdy:notify_all()
        local ok = cond:wait(30)
        sh:incr("woke")
        rdy:notify_all()
        cond:release()
        return ok
      end, c, ready, s)
    end
    c:acquire()
    assert.is_true(ready:wait_for(function() return s.entered == 5 end, 10))
    c:notify(2)
    assert.is_true(ready:wait_for(function() return s.woke >= 2 end, 10))
    assert.are.equal(2, s.woke)
    c:notify(0)
    c:notify_all()
    assert.is_true(ready:wait_for(function() return s.woke == 5 end, 10))
    c:release()
  end)

  it("wait_for returns the predicate's last value", function()
    local c = loom.Condition()
    c:acquire()
    assert.are.equal("yes", c:wait_for(function() return "yes" end))
    local n = 0
    local dt, v = elapsed(function()
      return c:wait_for(function() n = n + 1; return false end, 0.05)
    end)
    assert.is_false(v)
    assert.is_true(n >= 2)
    assert.is_true(dt >= 0.049 and dt < 1)
    assert.is_nil(c:wait_for(function() return nil end, 0))
    c:release()
  end)

  it("a cancelled waiter raises, holding the lock again", function()
    local c = loom.Condition()
    -- if wait did not take the lock back, the guard's release would raise
    -- "cannot release un-acquired lock" instead of the cancellation error
    assert_cancellable(function(started, cond)
      local _ <close> = cond:guard()
      started:set()
      cond:wait(30)
    end, c)
    assert.is_true(c:acquire(false))
    c:release()
  end)
end)

describe("loom.Semaphore", function()
  it("counts acquires and releases", function()
    local s = loom.Semaphore(2)
    assert.is_true(s:acquire())
    assert.is_true(s:acquire(false))
    assert.is_false(s:acquire(false))
    assert.are.equal(0, s.value)
    local dt, ok = elapsed(function() return s:acquire(true, 0.05) end)
    assert.is_false(ok)
    assert.is_true(dt >= 0.049 and dt < 1)
    s:release(2)
    assert.are.equal(2, s.value)
    s:release()
    assert.are.equal(3, s.value) -- a plain Semaphore always increments
    assert.are.equal(1, loom.Semaphore().value)
  end)

  it("checks its arguments", function()
    assert.matches(">= 0", tostring(error_of(loom.Semaphore, -1)))
    local s = loom.Semaphore(0)
    assert.matches("one or more", tostring(error_of(s.release, s, 0)))
    error_of(s.acquire, s, true, -1)
    error_of(s.acquire, s, false, 1)
  end)

  it("release(n) wakes n blocked acquirers", function()
    local s, started = loom.Semaphore(0), loom.Semaphore(0)
    local ts = {}
    for i = 1, 3 do
      ts[i] = spawn(function(sem, st)
        st:release()
        return sem:acquire(true, 30)
      end, s, started)
    end
    for _ = 1, 3 do assert.is_true(started:acquire(true, 10)) end
    s:release(3)
    for i = 1, 3 do assert.is_true(ts[i]:result(10)) end
    assert.are.equal(0, s.value)
  end)

  it("BoundedSemaphore raises when released above its initial value", function()
    local b = loom.BoundedSemaphore(2)
    assert.matches("too many", tostring(error_of(b.release, b)))
    b:acquire()
    b:acquire()
    assert.matches("too many", tostring(error_of(b.release, b, 3)))
    b:release(2)
    assert.matches("too many", tostring(error_of(b.release, b)))
    assert.are.equal(2, b.value)
    assert.matches("loom.BoundedSemaphore", tostring(b))
  end)

  it("wakes a blocked acquire when its thread is cancelled", function()
    assert_cancellable(function(started, sem)
      started:set()
      sem:acquire()
    end, loom.Semaphore(0))
  end)
end)

describe("loom.Event", function()
  it("set, clear, is_set and wait", function()
    local e = loom.Event()
    assert.is_false(e:is_set())
    local dt, ok = elapsed(function() return e:wait(0.05) end)
    assert.is_false(ok)
    assert.is_true(dt >= 0.049 and dt < 1)
    e:set()
    assert.is_true(e:is_set())
    assert.is_true(e:wait())
    assert.is_true(e:wait(0))
    e:clear()
    assert.is_false(e:is_set())
    assert.is_false(e:wait(0))
    error_of(e.wait, e, -1)
  end)

  it("set() wakes every waiter", function()
    local e, started = loom.Event(), loom.Semaphore(0)
    local ts = {}
    for i = 1, 4 do
      ts[i] = spawn(function(ev, st) st:release(); return ev:wait(30) end, e, started)
    end
    for _ = 1, 4 do assert.is_true(started:acquire(true, 10)) end
    e:set()
    for i = 1, 4 do assert.is_true(ts[i]:result(10)) end
  end)

  it("wait returns true when set while waiting, even if cleared again", function()
    local e, started = loom.Event(), loom.Event()
    local t = spawn(function(ev, st) st:set(); return ev:wait(30) end, e, started)
    assert.is_true(started:wait(10))
    local deadline = loom.now() + 10
    while t:is_alive() and loom.now() < deadline do
      e:set()
      e:clear()
      loom.sleep(0.001)
    end
    assert.is_true(t:result(10))
    assert.is_false(e:is_set())
  end)

  it("wakes a waiter when its thread is cancelled", function()
    assert_cancellable(function(started, ev)
      started:set()
      ev:wait()
    end, loom.Event())
  end)
end)

describe("loom.Barrier", function()
  it("checks its arguments and exposes parties", function()
    error_of(loom.Barrier, 0)
    error_of(loom.Barrier, 2, 42)
    error_of(loom.Barrier, 2, nil, -1)
    local b = loom.Barrier(3)
    assert.are.equal(3, b.parties)
    assert.are.equal(0, b.n_waiting)
    assert.is_false(b.broken)
    assert.are.equal(0, loom.Barrier(1):wait())
  end)

  it("gives each waiter a distinct index and runs the action once per cycle", function()
    local count = loom.shared { n = 0 }
    local n = 4
    local b = loom.Barrier(n, function() count:incr("n") end)
    local ts = {}
    for i = 1, n - 1 do
      ts[i] = spawn(function(bar, cycles)
        local idx = {}
        for c = 1, cycles do idx[c] = bar:wait(30) end
        return idx
      end, b, 3)
    end
    local mine = {}
    for c = 1, 3 do mine[c] = b:wait(30) end
    for c = 1, 3 do
      local seen = { [mine[c]] = true }
      for i = 1, n - 1 do
        local idx = ts[i]:result(10)[c]
        assert.is_nil(seen[idx])
        assert.is_true(idx >= 0 and idx < n)
        seen[idx] = true
      end
    end
    assert.are.equal(3, count.n)
    assert.is_false(b.broken)
  end)

  it("abort() breaks the barrier for every waiter", function()
    local b = loom.Barrier(3)
    local ts = {}
    for i = 1, 2 do ts[i] = spawn(function(bar) return bar:wait(30) end, b) end
    eventually(function() return b.n_waiting == 2 end)
    b:abort()
    for i = 1, 2 do
      local ok, err = pcall(ts[i].result, ts[i], 10)
      assert.is_false(ok)
      assert.is_true(loom.is_broken(err), tostring(err))
    end
    assert.is_true(b.broken)
    assert.is_true(loom.is_broken(error_of(b.wait, b)))
  end)

  it("a timeout breaks it, the barrier's default timeout too", function()
    local b = loom.Barrier(2, nil, 0.05)
    local dt, err = elapsed(function() return error_of(b.wait, b) end)
    assert.is_true(loom.is_broken(err))
    assert.is_true(dt >= 0.049 and dt < 1)
    assert.is_true(b.broken)

    local b2 = loom.Barrier(3)
    local t = spawn(function(bar) return pcall(bar.wait, bar, 30) end, b2)
    eventually(function() return b2.n_waiting == 1 end)
    assert.is_true(loom.is_broken(error_of(b2.wait, b2, 0.02)))
    local ok, e = t:result(10)
    assert.is_false(ok)
    assert.is_true(loom.is_broken(e))
  end)

  it("reset() breaks current waiters and makes it usable again", function()
    local b = loom.Barrier(2)
    local t = spawn(function(bar) return pcall(bar.wait, bar, 30) end, b)
    eventually(function() return b.n_waiting == 1 end)
    b:reset()
    local ok, e = t:result(10)
    assert.is_false(ok)
    assert.is_true(loom.is_broken(e))
    b:abort()
    assert.is_true(b.broken)
    b:reset()
    assert.is_false(b.broken)
    local t2 = spawn(function(bar) return bar:wait(30) end, b)
    local mine = b:wait(30)
    assert.are.same({ 0, 1 }, (function()
      local x = { mine, t2:result(10) }
      table.sort(x)
      return x
    end)())
  end)

  it("an error in the action reaches its thread and breaks the others", function()
    local b = loom.Barrier(2, function() error("action failed", 0) end)
    local t = spawn(function(bar) return pcall(bar.wait, bar, 30) end, b)
    local ok, err = pcall(b.wait, b, 30)
    local tok, terr = t:result(10)
    -- exactly one of the two ran the action
    if ok == false and err == "action failed" then
      assert.is_false(tok)
      assert.is_true(loom.is_broken(terr))
    else
      assert.are.equal("action failed", terr)
      assert.is_true(loom.is_broken(err))
    end
    assert.is_true(b.broken)
  end)

  -- issue #14.6: the action's own wait(timeout) waited for the action to
  -- end, i.e. for ever.
  it("wait(timeout) from its own action times out and breaks it, as in Python", function()
    local is_broken = loom.is_broken
    local holder = loom.shared()
    -- the action finds the barrier in holder.b, its timeout in holder.t
    local action = function()
      local bar = holder.b
      local ok, err = pcall(bar.wait, bar, holder.t)
      holder.inner = ok and "returned" or is_broken(err) and "broken" or tostring(err)
    end
    local function run(b, t)
      holder.b, holder.t, holder.inner = b, t, nil
      local th = spawn(function(bar) return pcall(bar.wait, bar, 30) end, b)
      local done = th:join(5)
      if not done then th:cancel() end
      assert.is_true(done, "the action's wait never returned")
      return th:result(10)
    end
    -- its own timeout
    local b = loom.Barrier(1, action)
    local dt, ok, err = elapsed(function() return run(b, 0.05) end)
    assert.are.equal("broken", holder.inner)
    assert.is_false(ok) -- the barrier broke: the outer wait raises too
    assert.is_true(is_broken(err), tostring(err))
    assert.is_true(b.broken)
    assert.is_true(dt >= 0.049 and dt < 5)
    -- the barrier's default timeout
    local b2 = loom.Barrier(1, action, 0.02)
    assert.is_false(run(b2, nil))
    assert.are.equal("broken", holder.inner)
    -- no timeout at all: it would never return, so it raises at once
    local b3 = loom.Barrier(1, action)
    assert.are.same({ true, 0 }, { run(b3, nil) })
    assert.matches("its own action", holder.inner)
    assert.is_false(b3.broken)
    b:reset() -- usable again
    assert.is_false(run(b, 0))
    assert.are.equal("broken", holder.inner)
  end)

  it("a cancelled waiter raises and breaks the barrier", function()
    local b = loom.Barrier(2)
    assert_cancellable(function(started, bar)
      started:set()
      bar:wait()
    end, b)
    assert.is_true(b.broken)
  end)
end)

-- issue #14.7: what Python's reprs show (RLock count=2, a Condition's
-- lock, a BoundedSemaphore's bound).
describe("tostring", function()
  it("shows an RLock's count, a Condition's lock and a BoundedSemaphore's bound", function()
    local r = loom.RLock()
    assert.matches("^loom%.RLock %(unlocked, count=0%): ", tostring(r))
    r:acquire(); r:acquire()
    assert.matches("^loom%.RLock %(locked by this thread, count=2%): ", tostring(r))
    local seen = spawn(function(rl) return tostring(rl) end, r):result(10)
    assert.matches("^loom%.RLock %(locked by thread %d+, count=2%): ", seen)

    local c = loom.Condition(r)
    assert.matches("^loom%.Condition %(loom%.RLock %(locked by this thread, count=2%), waiters=0%): ",
                   tostring(c))
    r:release(); r:release()
    local c2 = loom.Condition(loom.Lock())
    assert.matches("^loom%.Condition %(loom%.Lock %(unlocked%), waiters=0%): ", tostring(c2))
    local waiter = spawn(function(cond)
      cond:acquire()
      local ok = cond:wait(30)
      cond:release()
      return ok
    end, c2)
    -- the waiter counts from when it is queued (its lock may still be
    -- held for a moment then)
    eventually(function() return tostring(c2):find("waiters=1", 1, true) ~= nil end)
    c2:acquire(); c2:notify(); c2:release()
    assert.is_true(waiter:result(10))

    local b = loom.BoundedSemaphore(3)
    b:acquire()
    assert.matches("^loom%.BoundedSemaphore %(value=2/3%): ", tostring(b))
    assert.matches("^loom%.Semaphore %(value=2%): ", tostring(loom.Semaphore(2)))
  end)
end)

describe("loom.Timer", function()
  it("calls fn with its arguments after the interval", function()
    local t0 = loom.now()
    local t = loom.Timer(0.05, function(a, b) return a .. b end, "x", "y")
    t:start()
    assert.are.equal("xy", t:result(10))
    assert.is_true(loom.now() - t0 >= 0.049)
    assert.is_false(t:is_alive())
    assert.matches("already started", tostring(error_of(t.start, t)))
  end)

  it("does not call fn once cancelled", function()
    local s = loom.shared { called = false }
    local t = loom.Timer(30, function(sh) sh.called = true end, s)
    t:start()
    t:cancel()
    assert.is_true(t:join(10))
    assert.is_false(s.called)
    local t2 = loom.Timer(0, function(sh) sh.called = true end, s)
    t2:cancel()
    t2:start()
    t2:join(10)
    assert.is_false(s.called)
  end)

  it("checks its arguments", function()
    error_of(loom.Timer, -1, print)
    error_of(loom.Timer, 1, 42)
    error_of(loom.Timer(1, print).join, loom.Timer(1, print))
  end)

  it("shows only its documented members and protects its metatable", function()
    local t = loom.Timer(0, function() end)
    assert.are.equal("loom.Timer", getmetatable(t))
    assert.matches("cannot change a protected metatable", tostring(error_of(setmetatable, t, {})))
    assert.is_nil(next(t))
    for _, k in ipairs { "interval", "fn", "args", "finished", "thread", "function" } do
      assert.is_nil(t[k], k)
    end
    for _, k in ipairs { "start", "cancel", "join", "result", "is_alive" } do
      assert.are.equal("function", type(t[k]), k)
    end
    assert.is_nil(t.name)
    assert.is_false(t.daemon)
    assert.matches("cannot set field 'thread' of a loom%.Timer", tostring(error_of(function() t.thread = 1 end)))
    assert.matches("cannot set field 'finished' of a loom%.Timer",
                   tostring(error_of(function() t.finished = loom.Event() end)))
    assert.matches("^loom%.Timer%(0, initial%)$", tostring(t))
  end)

  it("gives its name and daemon flag to its thread; daemon is set before start only", function()
    local t = loom.Timer(0, function()
      local me = loom.current_thread()
      return me.name, me.daemon
    end)
    t.name = "tick"
    t.daemon = true
    assert.are.equal("tick", t.name)
    t:start()
    assert.are.same({ "tick", true }, { t:result(10) })
    assert.are.equal("tick", t.name)
    assert.is_true(t.daemon)
    assert.matches("cannot set daemon status of a started timer",
                   tostring(error_of(function() t.daemon = false end)))
    t.name = "renamed" -- as a Thread's, at any time
    assert.are.equal("renamed", t.name)
    assert.matches("^loom%.Timer%(0, stopped%)$", tostring(t))
  end)
end)

describe("stress: " .. STRESS_THREADS .. " threads x " .. STRESS_N .. " increments", function()
  local function run(body, prim)
    local s = loom.shared { n = 0 }
    local ts = {}
    for i = 1, STRESS_THREADS do ts[i] = spawn(body, prim, s, STRESS_N) end
    for i = 1, STRESS_THREADS do
      assert.is_true(ts[i]:join(600))
      ts[i]:result()
    end
    assert.are.equal(STRESS_THREADS * STRESS_N, s.n)
  end

  it("under a Lock", function()
    run(function(l, s, n)
      for _ = 1, n do
        l:acquire()
        s.n = s.n + 1
        l:release()
      end
    end, loom.Lock())
  end)

  it("under an RLock (taken twice)", function()
    run(function(l, s, n)
      for _ = 1, n do
        l:acquire()
        l:acquire()
        s.n = s.n + 1
        l:release()
        l:release()
      end
    end, loom.RLock())
  end)

  it("under a Semaphore(1)", function()
    run(function(sem, s, n)
      for _ = 1, n do
        sem:acquire()
        s.n = s.n + 1
        sem:release()
      end
    end, loom.Semaphore(1))
  end)

  it("with s:incr", function()
    run(function(_, s, n)
      for _ = 1, n do s:incr("n") end
    end, false)
  end)
end)
