-- loom.async's primitives (lua/loom/async_sync.lua): Event, Lock,
-- Condition, Semaphore, BoundedSemaphore, Barrier, Queue, LifoQueue,
-- PriorityQueue, for the tasks of one loop. SEMANTICS 1-11 and 14-17 as
-- SEMANTICS 25 carries them over ("mirror the thread versions"), with
-- CPython's test_asyncio/test_locks.py and test_queues.py as the
-- yardstick.
--
-- Order is made with events, futures and loop turns (sleep(0)), never with
-- sleep lengths; every wait is bounded, so a broken implementation fails a
-- spec instead of hanging the suite.
local loom = require "loom"
local async = require "loom.async"
local helpers = require "helpers"

local select, pcall, error, tostring, ipairs = select, pcall, error, tostring, ipairs

local pack, err_of = helpers.pack, helpers.err_of

local turns, run = helpers.turns, helpers.run_bounded

describe("loom.async primitives", function()
  ---------------------------------------------------------------------
  describe("Event", function()
    it("wait returns true at once when set; set wakes every waiter; clear and is_set", function()
      local r = run(function()
        local ev = async.Event()
        local out = { initially = ev:is_set(), str_unset = tostring(ev) }
        local ts = {}
        for i = 1, 3 do ts[i] = async.spawn(function() return ev:wait(), i end) end
        turns()
        out.waiting = not ts[1]:done() and not ts[2]:done() and not ts[3]:done()
        ev:set()
        ev:set() -- twice is harmless
        out.woken = {}
        for i = 1, 3 do out.woken[i] = pack(ts[i]:await()) end
        out.set, out.str_set = ev:is_set(), tostring(ev)
        out.again = ev:wait()
        ev:clear()
        out.cleared = ev:is_set()
        return out
      end)
      assert.is_false(r.initially)
      assert.are.equal("loom.async.Event(unset)", r.str_unset)
      assert.is_true(r.waiting)
      for i = 1, 3 do assert.are.same({ n = 2, true, i }, r.woken[i]) end
      assert.is_true(r.set)
      assert.are.equal("loom.async.Event(set)", r.str_set)
      assert.is_true(r.again)
      assert.is_false(r.cleared)
    end)

    it("a waiter woken by set() returns true even if the event was cleared before it ran (SEMANTICS 4)", function()
      local r = pack(run(function()
        local ev = async.Event()
        local t = async.spawn(function() return ev:wait() end)
        turns()
        ev:set()
        ev:clear()
        return t:await(), ev:is_set()
      end))
      assert.are.same({ n = 2, true, false }, r)
    end)

    it("a cancelled waiter raises a cancellation; the others still wake", function()
      local r = pack(run(function()
        local ev = async.Event()
        local a = async.spawn(function() return ev:wait() end)
        local b = async.spawn(function() return ev:wait() end)
        turns()
        a:cancel()
        local ok, e = pcall(a.await, a)
        ev:set()
        return ok, loom.is_cancelled(e), b:await()
      end))
      assert.are.same({ n = 3, false, true, true }, r)
    end)

    it("a wait bounded with wait_for times out and leaves the event usable", function()
      local r = pack(run(function()
        local ev = async.Event()
        local ok, e = pcall(async.wait_for, function() return ev:wait() end, 0.01)
        local t = async.spawn(function() return ev:wait() end)
        turns()
        ev:set()
        return ok, loom.is_timeout(e), t:await()
      end))
      assert.are.same({ n = 3, false, true, true }, r)
    end)
  end)

  ---------------------------------------------------------------------
  describe("Lock", function()
    it("acquire, locked, release; tostring", function()
      local r = pack(run(function()
        local l = async.Lock()
        local a = l:locked()
        local s1 = tostring(l)
        local got = l:acquire()
        local b = l:locked()
        local s2 = tostring(l)
        l:release()
        return a, s1, got, b, s2, l:locked()
      end))
      assert.are.same({ n = 6, false, "loom.async.Lock(unlocked)", true, true,
                        "loom.async.Lock(locked)", false }, r)
    end)

    it("is FIFO: waiters get it in the order they asked, and a newcomer cannot barge in", function()
      local log = run(function()
        local l = async.Lock()
        local out = {}
        l:acquire()
        local ts = {}
        for i = 1, 4 do
          ts[i] = async.spawn(function()
            l:acquire()
            out[#out + 1] = i
            async.sleep(0)
            l:release()
          end)
        end
        turns()
        l:release() -- handed to waiter 1; the lock stays locked
        local still = l:locked()
        l:acquire() -- waits behind 2, 3 and 4
        out[#out + 1] = "main"
        l:release()
        for i = 1, 4 do ts[i]:await() end
        out[#out + 1] = still
        return out
      end)
      assert.are.same({ 1, 2, 3, 4, "main", true }, log)
    end)

    it("release when unlocked raises", function()
      local r = pack(run(function()
        local l = async.Lock()
        local _, e1 = pcall(l.release, l)
        l:acquire()
        l:release()
        local _, e2 = pcall(l.release, l)
        return e1, e2
      end))
      assert.matches("release unlocked lock", r[1], 1, true)
      assert.matches("release unlocked lock", r[2], 1, true)
    end)

    it("a waiter cancelled while waiting never gets it; the next waiter does", function()
      local r = run(function()
        local l = async.Lock()
        local log = {}
        l:acquire()
        local a = async.spawn(function() l:acquire() log[#log + 1] = "a" l:release() end)
        local b = async.spawn(function() l:acquire() log[#log + 1] = "b" l:release() end)
        turns()
        a:cancel()
        local ok, e = pcall(a.await, a)
        l:release()
        b:await()
        return { ok, loom.is_cancelled(e), log, l:locked() }
      end)
      assert.are.same({ false, true, { "b" }, false }, r)
    end)

    it("a waiter cancelled after the lock was handed to it passes it on (asyncio test_finished_waiter_cancelled)", function()
      local r = run(function()
        local l = async.Lock()
        local log = {}
        l:acquire()
        local a = async.spawn(function() l:acquire() log[#log + 1] = "a" l:release() end)
        local b = async.spawn(function() l:acquire() log[#log + 1] = "b" l:release() end)
        turns()
        l:release() -- handed to a, which has not run yet
        a:cancel()
        local ok, e = pcall(a.await, a)
        b:await()
        return { ok, loom.is_cancelled(e), log, l:locked() }
      end)
      assert.are.same({ false, true, { "b" }, false }, r)
    end)

    it("guard() releases at the end of the scope, also on error; with(fn) too (SEMANTICS 3)", function()
      local obj = {}
      local r = run(function()
        local l = async.Lock()
        local out = {}
        do
          local _ <close> = l:guard()
          out.inside = l:locked()
        end
        out.after = l:locked()
        local ok, e = pcall(function()
          local _ <close> = l:guard()
          error(obj)
        end)
        out.err = not ok and e == obj
        out.after_err = l:locked()
        out.with = pack(l:with(function(a, b) return l:locked(), a + b, nil end, 1, 2))
        local ok2, e2 = pcall(l.with, l, function() error(obj) end)
        out.with_err = not ok2 and e2 == obj
        out.after_with = l:locked()
        out.bad = select(2, pcall(l.with, l, 42))
        return out
      end)
      assert.is_true(r.inside)
      assert.is_false(r.after)
      assert.is_true(r.err)
      assert.is_false(r.after_err)
      assert.are.same({ n = 3, true, 3, nil }, r.with)
      assert.is_true(r.with_err)
      assert.is_false(r.after_with)
      assert.matches("bad argument #1 to 'with'", r.bad, 1, true)
    end)
  end)

  ---------------------------------------------------------------------
  describe("Condition", function()
    it("wait and notify without the lock raise (SEMANTICS 5)", function()
      local r = pack(run(function()
        local c = async.Condition()
        local _, e1 = pcall(c.wait, c)
        local _, e2 = pcall(c.notify, c)
        local _, e3 = pcall(c.notify_all, c)
        local _, e4 = pcall(c.wait_for, c, function() return false end)
        return e1, e2, e3, e4
      end))
      assert.matches("cannot wait on un-acquired lock", r[1], 1, true)
      assert.matches("cannot notify on un-acquired lock", r[2], 1, true)
      assert.matches("cannot notify on un-acquired lock", r[3], 1, true)
      assert.matches("cannot wait on un-acquired lock", r[4], 1, true)
    end)

    it("wait releases the lock while waiting and holds it again when it returns", function()
      local r = run(function()
        local c = async.Condition()
        local log = {}
        local w = async.spawn(function()
          c:acquire()
          log[#log + 1] = "waiting"
          local v = c:wait()
          log[#log + 1] = "woke holding=" .. tostring(c:locked())
          c:release()
          return v
        end)
        turns()
        c:acquire() -- possible: the waiter released it
        log[#log + 1] = "main has it"
        c:notify()
        turns() -- the waiter cannot go on while main holds the lock
        log[#log + 1] = "main releases"
        c:release()
        return { w:await(), log, c:locked() }
      end)
      assert.are.same({ true, { "waiting", "main has it", "main releases", "woke holding=true" }, false }, r)
    end)

    it("notify(n) wakes exactly n waiters, in order; notify() one; notify_all() the rest", function()
      local r = run(function()
        local c = async.Condition()
        local woke = {}
        local ts = {}
        for i = 1, 6 do
          ts[i] = async.spawn(function()
            local _ <close> = c:guard()
            c:wait()
            woke[#woke + 1] = i
          end)
        end
        turns()
        local out = {}
        local function step(f)
          c:acquire()
          f()
          c:release()
          turns(10)
          out[#out + 1] = table.concat(woke, ",")
        end
        step(function() c:notify(2) end)
        step(function() c:notify() end)
        step(function() c:notify(0) end)
        step(function() c:notify_all() end)
        step(function() c:notify_all() end) -- nobody left: a no-op
        for i = 1, 6 do ts[i]:await() end
        return out
      end)
      assert.are.same({ "1,2", "1,2,3", "1,2,3", "1,2,3,4,5,6", "1,2,3,4,5,6" }, r)
    end)

    it("wait_for(pred) returns the predicate's value, at once when it is already true (SEMANTICS 6)", function()
      local r = pack(run(function()
        local c = async.Condition()
        local n = 0
        local w = async.spawn(function()
          local _ <close> = c:guard()
          return c:wait_for(function() return n >= 3 and ("n=" .. n) end)
        end)
        for _ = 1, 3 do
          turns()
          c:acquire()
          n = n + 1
          c:notify_all()
          c:release()
        end
        local v = w:await()
        c:acquire()
        local now = c:wait_for(function() return "already" end)
        c:release()
        return v, now
      end))
      assert.are.same({ n = 2, "n=3", "already" }, r)
    end)

    it("a cancelled wait holds the lock again before it raises", function()
      local r = run(function()
        local c = async.Condition()
        local log = {}
        local w = async.spawn(function()
          c:acquire()
          local ok, e = pcall(c.wait, c)
          log[#log + 1] = "raised holding=" .. tostring(c:locked())
          c:release()
          return ok, loom.is_cancelled(e)
        end)
        turns()
        c:acquire()
        w:cancel()
        turns()
        log[#log + 1] = "main releases"
        c:release()
        local ok, cancelled = w:await()
        return { ok, cancelled, log, c:locked() }
      end)
      assert.are.same({ false, true, { "main releases", "raised holding=true" }, false }, r)
    end)

    it("shares the lock it is given; anything else raises", function()
      local r = pack(run(function()
        local l = async.Lock()
        local c = async.Condition(l)
        c:acquire()
        local shared = l:locked()
        c:release()
        local _, e = pcall(async.Condition, {})
        return shared, l:locked(), e
      end))
      assert.is_true(r[1])
      assert.is_false(r[2])
      assert.matches("bad argument #1 to 'Condition'", r[3], 1, true)
    end)
  end)

  ---------------------------------------------------------------------
  describe("Semaphore and BoundedSemaphore", function()
    it("Semaphore(n): n acquire at once, the next waits for a release; waiters in order", function()
      local r = run(function()
        local s = async.Semaphore(2)
        local out = { s:acquire(), s:acquire(), s:locked(), tostring(s) }
        local log = {}
        local ts = {}
        for i = 1, 3 do ts[i] = async.spawn(function() s:acquire() log[#log + 1] = i end) end
        turns()
        out[#out + 1] = #log
        s:release()
        turns()
        out[#out + 1] = table.concat(log, ",")
        s:release()
        s:release()
        for i = 1, 3 do ts[i]:await() end
        out[#out + 1] = table.concat(log, ",")
        out[#out + 1] = s:locked()
        return out
      end)
      assert.are.same({ true, true, true, "loom.async.Semaphore(value=0)", 0, "1", "1,2,3", true }, r)
    end)

    it("defaults to 1; a negative or non-integer value raises (SEMANTICS 7)", function()
      local r = pack(run(function()
        local s = async.Semaphore()
        s:acquire()
        local locked = s:locked()
        local _, e1 = pcall(async.Semaphore, -1)
        local _, e2 = pcall(async.Semaphore, 1.5)
        local _, e3 = pcall(async.BoundedSemaphore, -1)
        return locked, e1, e2, e3
      end))
      assert.is_true(r[1])
      assert.matches("semaphore initial value must be >= 0", r[2], 1, true)
      assert.matches("semaphore initial value must be >= 0", r[3], 1, true)
      assert.matches("bad argument #1 to 'BoundedSemaphore'", r[4], 1, true)
    end)

    it("release() of a plain Semaphore always increments, above its initial value (SEMANTICS 7)", function()
      local r = pack(run(function()
        local s = async.Semaphore(1)
        s:release()
        s:release()
        local str = tostring(s)
        local n = 0
        for _ = 1, 3 do s:acquire() n = n + 1 end
        return str, n, s:locked()
      end))
      assert.are.same({ n = 3, "loom.async.Semaphore(value=3)", 3, true }, r)
    end)

    it("a BoundedSemaphore released above its initial value raises (SEMANTICS 8)", function()
      local r = pack(run(function()
        local s = async.BoundedSemaphore(2)
        local _, e1 = pcall(s.release, s)
        s:acquire()
        s:release()
        local _, e2 = pcall(s.release, s)
        return e1, e2, tostring(s)
      end))
      assert.matches("Semaphore released too many times", r[1], 1, true)
      assert.matches("Semaphore released too many times", r[2], 1, true)
      assert.are.equal("loom.async.BoundedSemaphore(value=2/2)", r[3])
    end)

    it("a waiter cancelled before or after the hand-over loses no permit", function()
      local r = run(function()
        local s = async.Semaphore(0)
        local log = {}
        local function taker(name) return async.spawn(function() s:acquire() log[#log + 1] = name end) end
        local a, b, c = taker("a"), taker("b"), taker("c")
        turns()
        a:cancel() -- while waiting
        pcall(a.await, a)
        s:release() -- handed to b, which has not run yet
        b:cancel()
        pcall(b.await, b)
        c:await()
        return { log, tostring(s), a:cancelled(), b:cancelled() }
      end)
      assert.are.same({ { "c" }, "loom.async.Semaphore(value=0)", true, true }, r)
    end)

    it("guard() releases at the end of the scope, also on error", function()
      local r = pack(run(function()
        local s = async.BoundedSemaphore(1)
        local inside
        pcall(function()
          local _ <close> = s:guard()
          inside = s:locked()
          error("x")
        end)
        return inside, s:locked()
      end))
      assert.are.same({ n = 2, true, false }, r)
    end)
  end)

  ---------------------------------------------------------------------
  describe("Barrier", function()
    it("each wait of a cycle gets a distinct index 0..n-1; the barrier serves cycle after cycle (SEMANTICS 9)", function()
      local r = run(function()
        local b = async.Barrier(3)
        local cycles = {}
        local ts = {}
        for i = 1, 3 do
          ts[i] = async.spawn(function()
            local got = {}
            for c = 1, 3 do got[c] = b:wait() end
            return got
          end)
        end
        local other = async.Barrier(3)
        local w1, w2 = async.spawn(other.wait, other), async.spawn(other.wait, other)
        turns()
        local waiting = other:n_waiting()
        local third = other:wait()
        local others = w1:await() + w2:await()
        waiting = { waiting, third, others, other:n_waiting() }
        for i = 1, 3 do
          local got = ts[i]:await()
          for c = 1, 3 do
            cycles[c] = cycles[c] or {}
            cycles[c][#cycles[c] + 1] = got[c]
          end
        end
        for c = 1, 3 do table.sort(cycles[c]) end
        return { cycles, b.parties, b:broken(), b:n_waiting(), waiting }
      end)
      assert.are.same({ { { 0, 1, 2 }, { 0, 1, 2 }, { 0, 1, 2 } }, 3, false, 0, { 2, 2, 1, 0 } }, r)
    end)

    it("abort(): the waiters and every later wait raise a broken error (SEMANTICS 10)", function()
      local r = run(function()
        local b = async.Barrier(3)
        local w1 = async.spawn(b.wait, b)
        local w2 = async.spawn(b.wait, b)
        turns()
        b:abort()
        local _, e1 = pcall(w1.await, w1)
        local _, e2 = pcall(w2.await, w2)
        local _, e3 = pcall(b.wait, b)
        return { loom.is_broken(e1), loom.is_broken(e2), loom.is_broken(e3), tostring(e3), b:broken(),
                 tostring(b) }
      end)
      assert.are.same({ true, true, true, "barrier is broken", true,
                        "loom.async.Barrier(0/3 waiting, broken)" }, r)
    end)

    it("reset(): the current waiters raise broken, then the barrier works again (SEMANTICS 10)", function()
      local r = run(function()
        local b = async.Barrier(2)
        local w = async.spawn(b.wait, b)
        turns()
        b:reset()
        local _, e = pcall(w.await, w)
        local broken_after = b:broken()
        local other = async.spawn(b.wait, b)
        local mine = b:wait()
        local theirs = other:await()
        return { loom.is_broken(e), broken_after, mine + theirs }
      end)
      assert.are.same({ true, false, 1 }, r)
    end)

    it("a waiter that is cancelled, or times out, breaks the barrier (SEMANTICS 11)", function()
      local r = run(function()
        local b = async.Barrier(3)
        local w1 = async.spawn(b.wait, b)
        local w2 = async.spawn(b.wait, b)
        turns()
        w1:cancel()
        local _, e1 = pcall(w1.await, w1)
        local _, e2 = pcall(w2.await, w2)
        local b2 = async.Barrier(2)
        local ok3, e3 = pcall(async.wait_for, function() return b2:wait() end, 0.01)
        return { loom.is_cancelled(e1), loom.is_broken(e2), b:broken(), ok3, loom.is_timeout(e3),
                 b2:broken() }
      end)
      assert.are.same({ true, true, true, false, true, true }, r)
    end)

    it("Barrier(n) needs a positive integer", function()
      assert.matches("parties must be >= 1", err_of(async.Barrier, 0), 1, true)
      assert.matches("parties must be >= 1", err_of(async.Barrier, 1.5), 1, true)
      assert.matches("parties must be >= 1", err_of(async.Barrier), 1, true)
      assert.are.equal(0, run(function() return async.Barrier(1):wait() end))
    end)
  end)

  ---------------------------------------------------------------------
  describe("Queue, LifoQueue, PriorityQueue", function()
    it("FIFO, LIFO and priority order (ties in arrival order) hold (SEMANTICS 14)", function()
      local r = run(function()
        local function drain(q)
          local out = {}
          while not q:empty() do
            local v = q:get()
            out[#out + 1] = type(v) == "table" and v[2] or v
          end
          return out
        end
        local fifo, lifo, prio = async.Queue(), async.LifoQueue(), async.PriorityQueue()
        for _, v in ipairs { 3, 1, 2 } do fifo:put(v) lifo:put(v) end
        for _, v in ipairs { { 2, "b1" }, { 1, "a1" }, 0.5, { 2, "b2" }, { 1, "a2" }, { 3, "c" }, { 2, "b3" } } do
          prio:put(v)
        end
        return { drain(fifo), drain(lifo), drain(prio), fifo.kind, lifo.kind, prio.kind }
      end)
      assert.are.same({ { 3, 1, 2 }, { 2, 1, 3 }, { 0.5, "a1", "a2", "b1", "b2", "b3", "c" },
                        "fifo", "lifo", "prio" }, r)
    end)

    it("put_nowait and get_nowait: true | nil, 'full'; the item | nil, 'empty'; qsize, #q, empty, full", function()
      local r = run(function()
        local q = async.Queue(2)
        local out = {}
        out.empty0, out.full0 = q:empty(), q:full()
        out.p1 = pack(q:put_nowait("a"))
        out.p2 = pack(q:put_nowait("b"))
        out.p3 = pack(q:put_nowait("c"))
        out.size, out.len, out.full = q:qsize(), #q, q:full()
        out.str = tostring(q)
        out.g1 = pack(q:get_nowait())
        out.g2 = pack(q:get_nowait())
        out.g3 = pack(q:get_nowait())
        local unbounded = async.Queue()
        for i = 1, 1000 do unbounded:put_nowait(i) end
        out.unbounded = { #unbounded, unbounded:full(), unbounded.maxsize }
        return out
      end)
      assert.is_true(r.empty0)
      assert.is_false(r.full0)
      assert.are.same({ n = 1, true }, r.p1)
      assert.are.same({ n = 1, true }, r.p2)
      assert.are.same({ n = 2, nil, "full" }, r.p3)
      assert.are.same({ 2, 2, true }, { r.size, r.len, r.full })
      assert.are.equal("loom.async.Queue(fifo, 2 items)", r.str)
      assert.are.same({ n = 1, "a" }, r.g1)
      assert.are.same({ n = 1, "b" }, r.g2)
      assert.are.same({ n = 2, nil, "empty" }, r.g3)
      assert.are.same({ 1000, false, 0 }, r.unbounded)
    end)

    it("get waits for a put; put waits for room while full, putters in order", function()
      local r = run(function()
        local q = async.Queue(1)
        local log = {}
        local getter = async.spawn(function() return q:get() end)
        turns()
        local waited = not getter:done()
        q:put("x")
        local got = getter:await()
        q:put("first")
        local ps = {}
        for i = 1, 3 do ps[i] = async.spawn(function() q:put("p" .. i) log[#log + 1] = "put p" .. i end) end
        turns()
        local blocked = #log
        local items = {}
        for _ = 1, 4 do items[#items + 1] = q:get() end
        for i = 1, 3 do ps[i]:await() end
        return { waited, got, blocked, items, log }
      end)
      assert.are.same({ true, "x", 0, { "first", "p1", "p2", "p3" }, { "put p1", "put p2", "put p3" } }, r)
    end)

    it("get(timeout) and put(v, timeout) give nil, 'timeout' (SEMANTICS 15)", function()
      local r = run(function()
        local q = async.Queue(1)
        local g = pack(q:get(0.01))
        local g0 = pack(q:get(0))
        q:put("a")
        local p = pack(q:put("b", 0.01))
        local p0 = pack(q:put("b", 0))
        return { g, g0, p, p0, q:get_nowait(), q:qsize() }
      end)
      assert.are.same({ { n = 2, nil, "timeout" }, { n = 2, nil, "timeout" },
                        { n = 2, nil, "timeout" }, { n = 2, nil, "timeout" }, "a", 0 }, r)
    end)

    it("a negative timeout raises (SEMANTICS 15)", function()
      local r = pack(run(function()
        local q = async.Queue(1)
        local ok1, e1 = pcall(q.get, q, -1)
        q:put(1)
        local ok2, e2 = pcall(q.put, q, 2, -1)
        return ok1, tostring(e1), ok2, tostring(e2)
      end))
      assert.is_false(r[1])
      assert.matches("timeout must be a non-negative number", r[2], 1, true)
      assert.is_false(r[3])
      assert.matches("timeout must be a non-negative number", r[4], 1, true)
    end)

    it("a get that timed out leaves no waiter behind: a later get receives the next item", function()
      local r = pack(run(function()
        local q = async.Queue()
        q:get(0) -- times out at once
        local g = async.spawn(function() return q:get() end)
        turns()
        q:put_nowait("item")
        local ok, v = pcall(async.wait_for, g, 1)
        return ok, v, q:qsize()
      end))
      assert.are.same({ n = 3, true, "item", 0 }, r)
    end)

    it("a put that timed out leaves no waiter behind: a later put gets the room", function()
      local r = pack(run(function()
        local q = async.Queue(1)
        q:put("a")
        q:put("b", 0) -- times out at once
        local p = async.spawn(function() return q:put("c") end)
        turns()
        local first = q:get_nowait()
        local ok, v = pcall(async.wait_for, p, 1)
        return first, ok, v, q:get_nowait()
      end))
      assert.are.same({ n = 4, "a", true, true, "c" }, r)
    end)

    it("a getter cancelled after an item was meant for it loses no item (asyncio test_get_cancelled_race)", function()
      local r = pack(run(function()
        local q = async.Queue()
        local a = async.spawn(function() return q:get() end)
        local b = async.spawn(function() return q:get() end)
        turns()
        q:put_nowait("only") -- a's turn, but a has not run yet
        a:cancel()
        local ok, e = pcall(a.await, a)
        return ok, loom.is_cancelled(e), b:await(), q:qsize()
      end))
      assert.are.same({ n = 4, false, true, "only", 0 }, r)
    end)

    it("a cancelled put puts nothing; a cancelled get takes nothing", function()
      local r = pack(run(function()
        local q = async.Queue(1)
        q:put("a")
        local p = async.spawn(function() return q:put("never") end)
        turns()
        p:cancel()
        local okp, ep = pcall(p.await, p)
        local first = q:get_nowait()
        local second, why = q:get_nowait()
        local g = async.spawn(function() return q:get() end)
        turns()
        g:cancel()
        local okg = pcall(g.await, g)
        q:put("later")
        return okp, loom.is_cancelled(ep), first, second, why, okg, q:get_nowait()
      end))
      assert.are.same({ n = 7, false, true, "a", nil, "empty", false, "later" }, r)
    end)

    it("task_done and join (SEMANTICS 16)", function()
      local r = run(function()
        local q = async.Queue()
        local out = { q:join() } -- nothing unfinished: at once
        for i = 1, 3 do q:put(i) end
        local j = async.spawn(function() q:join() return "joined" end)
        local worker = async.spawn(function()
          for _ = 1, 3 do
            q:get()
            async.sleep(0)
            q:task_done()
          end
        end)
        worker:await()
        out[#out + 1] = j:await()
        out[#out + 1] = q:join() -- again
        out[#out + 1] = select(2, pcall(q.task_done, q))
        q:put("a")
        q:put("b")
        q:task_done(2)
        out[#out + 1] = q:join()
        out[#out + 1] = select(2, pcall(q.task_done, q, 1))
        return out
      end)
      assert.is_true(r[1])
      assert.are.equal("joined", r[2])
      assert.is_true(r[3])
      assert.matches("task_done() called too many times", r[4], 1, true)
      assert.is_true(r[5])
      assert.matches("task_done() called too many times", r[6], 1, true)
    end)

    it("close: puts raise; gets drain what is left, then report closed (SEMANTICS 17)", function()
      local r = run(function()
        local q = async.Queue()
        q:put(1)
        q:put(2)
        q:close()
        local out = { q:is_closed(), tostring(q) }
        local _, e1 = pcall(q.put, q, 3)
        local _, e2 = pcall(q.put_nowait, q, 3)
        out[#out + 1] = loom.is_closed(e1)
        out[#out + 1] = loom.is_closed(e2)
        out[#out + 1] = q:get()
        out[#out + 1] = q:get_nowait()
        out[#out + 1] = pack(q:get())
        out[#out + 1] = pack(q:get_nowait())
        out[#out + 1] = pack(q:get(0.01))
        return out
      end)
      assert.are.same({ true, "loom.async.Queue(fifo, 2 items, closed)", true, true, 1, 2,
                        { n = 2, nil, "closed" }, { n = 2, nil, "closed" }, { n = 2, nil, "closed" } }, r)
    end)

    it("close wakes the blocked getters (closed) and putters (raise) at once (SEMANTICS 17)", function()
      local r = run(function()
        local empty, full = async.Queue(), async.Queue(1)
        full:put("x")
        local g1 = async.spawn(function() return empty:get() end)
        local g2 = async.spawn(function() return empty:get(5) end)
        local p1 = async.spawn(function() return full:put("y") end)
        local p2 = async.spawn(function() return full:put("z", 5) end)
        turns()
        local t0 = loom.now()
        empty:close()
        full:close()
        local out = { pack(g1:await()), pack(g2:await()) }
        local _, e1 = pcall(p1.await, p1)
        local _, e2 = pcall(p2.await, p2)
        out[#out + 1] = loom.is_closed(e1)
        out[#out + 1] = loom.is_closed(e2)
        out[#out + 1] = full:get()
        out[#out + 1] = loom.now() - t0 < 1
        return out
      end)
      assert.are.same({ { n = 2, nil, "closed" }, { n = 2, nil, "closed" }, true, true, "x", true }, r)
    end)

    it("close(immediate) drops the items and lets join return", function()
      local r = pack(run(function()
        local q = async.Queue()
        for i = 1, 3 do q:put(i) end
        q:get()
        q:task_done()
        local j = async.spawn(function() return q:join() end)
        turns()
        local waited = not j:done()
        q:close(true)
        return waited, j:await(), q:qsize(), select(2, q:get_nowait())
      end))
      assert.are.same({ n = 4, true, true, 0, "closed" }, r)
    end)

    it("iter() yields the items until cannot put into a closed queue and drained", function()
      local r = run(function()
        local q = async.Queue(2)
        local producer = async.spawn(function()
          for i = 1, 5 do q:put(i) end
          q:close()
        end)
        local got = {}
        for v in q:iter() do got[#got + 1] = v end
        producer:await()
        return got
      end)
      assert.are.same({ 1, 2, 3, 4, 5 }, r)
    end)

    it("misuse raises: nil items, bad priorities, a bad maxsize", function()
      local r = pack(run(function()
        local q = async.Queue()
        local _, e1 = pcall(q.put, q, nil)
        local _, e2 = pcall(q.put_nowait, q, nil)
        local pq = async.PriorityQueue()
        local _, e3 = pcall(pq.put, pq, "high")
        local _, e4 = pcall(pq.put, pq, { "high" })
        local _, e5 = pcall(async.Queue, 1.5)
        return e1, e2, e3, e4, e5, pq:qsize()
      end))
      assert.matches("cannot put nil into a queue", r[1], 1, true)
      assert.matches("cannot put nil into a queue", r[2], 1, true)
      assert.matches("priority", r[3], 1, true)
      assert.matches("priority", r[4], 1, true)
      assert.matches("maxsize must be an integer", r[5], 1, true)
      assert.are.equal(0, r[6])
    end)
  end)
end)
