-- loom.async (csrc/loop.c, lua/loom/async.lua): running a loop, sleeping,
-- tasks, cancellation, gather, wait_for, wait, as_completed, timeout,
-- shield, task groups, the bridges to threads and pools, the debug mode
-- and many tasks at once. SEMANTICS 23-26; CPython's test_asyncio
-- (test_tasks, test_waitfor, test_timeouts, test_taskgroups) is the
-- yardstick. The async primitives are in async_sync_spec.lua.
--
-- Order is made with events and futures, never with sleep lengths; sleep
-- lengths only order timers among themselves (0.01 before 0.02). Every
-- wait is bounded, so a broken implementation fails a spec instead of
-- hanging the suite.
local loom = require "loom"
local async = require "loom.async"
local helpers = require "helpers"

-- A spec file's _ENV is busted's environment: functions sent to another
-- thread read only these locals (they cross by name) or are rebound to
-- the real globals with helpers.globals. Tasks run in this state and may
-- use anything.
local _, _, table, select, type, pcall, error, tostring =
      math, string, table, select, type, pcall, error, tostring
local ipairs, _, require, _ = ipairs, pairs, require, collectgarbage

local check_env, globals = helpers.check_env, helpers.globals

local pack, err_of = helpers.pack, helpers.err_of

-- Pools made here are shut down in after_each, after every gate opened.
local pools, gates = {}, {}
local function Pool(n, prefix)
  local p = loom.ThreadPoolExecutor { max_workers = n, thread_name_prefix = prefix }
  pools[#pools + 1] = p
  return p
end
local function Gate()
  local e = loom.Event()
  gates[#gates + 1] = e
  return e
end
local function cleanup()
  for i, g in ipairs(gates) do g:set(); gates[i] = nil end
  for i, p in ipairs(pools) do
    p:shutdown { cancel_futures = true }
    pools[i] = nil
  end
  helpers.join_all(20)
end

local function spawn_thread(fn, ...) return helpers.spawn(check_env(fn), ...) end

-- Inside a task: waits (without blocking the loop) until a thread event
-- is set; false after `limit` seconds.
local function poll(ev, limit)
  local deadline = loom.now() + (limit or 10)
  while not ev:is_set() do
    if loom.now() > deadline then return false end
    async.sleep(0.001)
  end
  return true
end

local STUCK = "can never happen"

describe("loom.async", function()
  after_each(cleanup)

  ---------------------------------------------------------------------
  describe("run", function()
    it("returns the main task's results, nils included, and passes its arguments", function()
      local r = pack(async.run(function(...) return select("#", ...), ... end, 1, nil, "x", nil))
      assert.are.same({ n = 5, 4, 1, nil, "x", nil }, r)
      assert.are.same({ n = 0 }, pack(async.run(function() end)))
      assert.are.same({ n = 2, "a", "b" }, pack(async.run(function()
        async.sleep(0.001)
        return "a", "b"
      end)))
    end)

    it("re-raises the main task's error: a value as it is, a string with the task's traceback", function()
      local obj = { code = 7 }
      assert.are.equal(obj, err_of(async.run, function() async.sleep(0) error(obj) end))
      local s = err_of(async.run, function() error("plain boom") end)
      assert.are.equal("string", type(s))
      assert.matches("plain boom", s, 1, true)
      assert.matches("stack traceback", s, 1, true)
      local le = err_of(async.run, function() error(loom.error("timeout", "mine")) end)
      assert.is_true(loom.is_timeout(le))
      assert.are.equal("mine", tostring(le))
    end)

    it("the error of an awaited task reaches run's caller", function()
      local obj = {}
      assert.are.equal(obj, err_of(async.run, function()
        return async.spawn(function() async.sleep(0.001) error(obj) end):await()
      end))
    end)

    it("inside a running loop raises, from the main task and from any task; the loop goes on", function()
      local r = pack(async.run(function()
        local ok1, e1 = pcall(async.run, function() return 1 end)
        local t = async.spawn(function() return pcall(async.run, function() end) end)
        local ok2, e2 = t:await()
        return ok1, tostring(e1), ok2, tostring(e2), async.sleep(0.001, "still running")
      end))
      assert.is_false(r[1])
      assert.matches("async.run cannot be called from a running loop", r[2], 1, true)
      assert.is_false(r[3])
      assert.matches("async.run cannot be called from a running loop", r[4], 1, true)
      assert.are.equal("still running", r[5])
    end)

    it("runs again on the same thread after a loop ended, failed or got stuck", function()
      assert.are.equal(1, async.run(function() return 1 end))
      err_of(async.run, function() error("x") end)
      err_of(async.run, function() async.Future():await() end)
      assert.are.equal(2, async.run(function() async.sleep(0.001) return 2 end))
      assert.is_nil(async.current_task())
    end)

    it("a main task waiting for what can never happen makes run raise instead of hanging", function()
      local msg = "async.run: the main task waits for something that can never happen " ..
                  "(no task is ready, no timer is set, no other thread will wake it)"
      -- a future nobody sets
      assert.matches(msg, tostring(err_of(async.run, function() async.Future():await() end)), 1, true)
      -- an async Event nobody sets
      assert.matches(STUCK, tostring(err_of(async.run, function() async.Event():wait() end)), 1, true)
      -- a task that is itself stuck, with other tasks that end first
      local e = err_of(async.run, function()
        async.spawn(async.sleep, 0.01)
        local inner = async.spawn(function() async.Future():await() end)
        return inner:await()
      end)
      assert.matches(STUCK, tostring(e), 1, true)
      -- a lock the task holds itself
      assert.matches(STUCK, tostring(err_of(async.run, function()
        local l = async.Lock()
        l:acquire()
        l:acquire()
      end)), 1, true)
    end)

    it("when main ends, the tasks still running are cancelled and run to their end", function()
      local log, bg, never, stuck = {}, nil, nil, nil
      local ran = false
      assert.are.equal("main done", async.run(function()
        bg = async.spawn(function()
          local ok, e = pcall(async.sleep, 10)
          log[#log + 1] = (not ok and loom.is_cancelled(e)) and "cancelled" or "slept"
          async.sleep(0.01) -- its clean-up may still suspend
          log[#log + 1] = "cleaned up"
          return "bg returned"
        end)
        stuck = async.spawn(function() async.Future():await() end)
        async.sleep(0)
        never = async.spawn(function() ran = true end) -- not started when main ends
        return "main done"
      end))
      assert.are.same({ "cancelled", "cleaned up" }, log)
      assert.is_true(bg:done())
      assert.is_false(bg:cancelled())
      assert.are.equal("bg returned", bg:result())
      assert.is_true(stuck:cancelled())
      assert.is_true(never:cancelled())
      assert.is_false(ran)
    end)

    -- Runs a loop that signals `mine`, waits (without blocking its loop)
    -- until the other loop signalled `theirs`, then sums n sleeping tasks.
    local function ping_pong(mine, theirs, n)
      local as = require "loom.async"
      local lm = require "loom"
      return as.run(function()
        mine:set()
        local deadline = lm.now() + 10
        while not theirs:is_set() do
          if lm.now() > deadline then error("the other loop never ran") end
          as.sleep(0.001)
        end
        local ts = {}
        for i = 1, n do ts[i] = as.spawn(function() as.sleep(0.002) return i end) end
        local sum = 0
        for i = 1, n do sum = sum + ts[i]:await() end
        return sum, as.current_task():get_name()
      end)
    end
    ping_pong = globals(ping_pong)

    it("works inside a loom thread, and loops in two threads run at the same time", function()
      local a, b = loom.Event(), loom.Event()
      local ta = spawn_thread(ping_pong, a, b, 100)
      local tb = spawn_thread(ping_pong, b, a, 200)
      assert.are.same({ n = 2, 5050, "main" }, pack(ta:result(20)))
      assert.are.same({ n = 2, 20100, "main" }, pack(tb:result(20)))
    end)

    it("a loop in a thread runs while the main thread's loop runs", function()
      local a, b = loom.Event(), loom.Event()
      local t = spawn_thread(ping_pong, a, b, 10)
      local r = pack(ping_pong(b, a, 20))
      assert.are.same({ n = 2, 210, "main" }, r)
      assert.are.same({ n = 2, 55, "main" }, pack(t:result(20)))
    end)

    it("works inside pool workers, two loops at once, and again in the same worker", function()
      local pool = Pool(2)
      local a, b = loom.Event(), loom.Event()
      local fa = pool:submit(ping_pong, a, b, 30)
      local fb = pool:submit(ping_pong, b, a, 40)
      assert.are.same({ n = 2, 465, "main" }, pack(fa:result(20)))
      assert.are.same({ n = 2, 820, "main" }, pack(fb:result(20)))
      local again = pool:submit(ping_pong, loom.Event(), a, 10)
      assert.are.same({ n = 2, 55, "main" }, pack(again:result(20)))
    end)
  end)

  ---------------------------------------------------------------------
  describe("sleep", function()
    it("returns its value argument, also for sleep(0); nil without one", function()
      local t = {}
      local r = pack(async.run(function()
        return async.sleep(0, "zero"), async.sleep(0.001, t), async.sleep(0.001), async.sleep(0)
      end))
      assert.are.equal("zero", r[1])
      assert.are.equal(t, r[2])
      assert.is_nil(r[3])
      assert.is_nil(r[4])
    end)

    it("outside a task raises, also in a coroutine inside a task", function()
      assert.are.equal("async.sleep must be called from a task (inside async.run)",
        err_of(async.sleep, 0))
      assert.are.equal("async.await must be called from a task (inside async.run)",
        err_of(async.await, 1))
      local e = async.run(function()
        local co = coroutine.wrap(function() return pcall(async.sleep, 0) end)
        local ok, err = co()
        assert.is_false(ok)
        return err
      end)
      assert.matches("async.sleep must be called from a task", e, 1, true)
    end)

    it("a negative, NaN or non-number length raises", function()
      local r = pack(async.run(function()
        local _, e1 = pcall(async.sleep, -0.001)
        local _, e2 = pcall(async.sleep, 0 / 0)
        local ok3 = pcall(async.sleep, "soon")
        local ok4 = pcall(async.sleep)
        return e1, e2, ok3, ok4
      end))
      assert.matches("sleep length must be non-negative", r[1], 1, true)
      assert.matches("sleep length must be non-negative", r[2], 1, true)
      assert.is_false(r[3])
      assert.is_false(r[4])
    end)

    it("timers fire in the order of their deadlines; equal ones in the order they were set", function()
      local out = async.run(function()
        local log, ts = {}, {}
        for i, d in ipairs { 0.03, 0.01, 0.02, 0.01 } do
          ts[i] = async.spawn(function() async.sleep(d) log[#log + 1] = d .. "#" .. i end)
          async.sleep(0) -- each starts (and sets its timer) before the next is made
        end
        for _, t in ipairs(ts) do t:await() end
        return log
      end)
      assert.are.same({ "0.01#2", "0.01#4", "0.02#3", "0.03#1" }, out)
    end)

    it("sleep(0) lets the other ready tasks run, in turn", function()
      local log = async.run(function()
        local l = {}
        local function worker(name)
          for i = 1, 3 do
            l[#l + 1] = name .. i
            async.sleep(0)
          end
        end
        local a, b = async.spawn(worker, "a"), async.spawn(worker, "b")
        a:await()
        b:await()
        return l
      end)
      assert.are.same({ "a1", "b1", "a2", "b2", "a3", "b3" }, log)
    end)

    it("timers that fell due while a task blocked the loop wake their tasks at once", function()
      local r = async.run(function()
        local t0 = loom.now()
        local fired = {}
        local a = async.spawn(function() async.sleep(0.01) fired[#fired + 1] = loom.now() - t0 end)
        local b = async.spawn(function() async.sleep(0.02) fired[#fired + 1] = loom.now() - t0 end)
        async.sleep(0) -- both timers are set
        loom.sleep(0.05) -- the loop is blocked past both
        async.sleep(1) -- a later timer must not hold the overdue ones back
        a:await()
        b:await()
        return { #fired, fired[1] < 0.5 or fired[1], fired[2] < 0.5 or fired[2] }
      end)
      assert.are.same({ 2, true, true }, r)
    end)

    it("never ends before its time (ms resolution, rounded up), also when other tasks ran before the loop polled", function()
      local early = async.run(function()
        local bad = {}
        -- a task that keeps the loop's thread busy for 0.5 ms after the
        -- sleep set its timer and before the loop polls
        local function spin() local t = loom.now() while loom.now() - t < 0.0005 do end end
        for k = 1, 40 do
          local d = k % 2 == 0 and 0.0018 or 0.0025
          if k > 10 then async.spawn(spin) end
          local t0 = loom.now()
          async.sleep(d)
          local took = loom.now() - t0
          if took < d then bad[#bad + 1] = ("%.4f s slept %.6f s"):format(d, took) end
        end
        return bad
      end)
      assert.are.same({}, early)
    end)
  end)

  ---------------------------------------------------------------------
  describe("tasks", function()
    it("spawn schedules a task that starts at the loop's next turn, with its arguments", function()
      local r = pack(async.run(function()
        local started = false
        local t = async.spawn(function(a, b, c) started = true return a + b, c end, 2, 3, nil)
        local before = started
        local x, y = t:await()
        return before, x, y, started, async.create_task == async.spawn
      end))
      assert.are.same({ n = 5, false, 5, nil, true, true }, r)
    end)

    it("spawn and Future outside a loop raise", function()
      assert.matches("needs a running loop", err_of(async.spawn, function() end), 1, true)
      assert.matches("needs a running loop", err_of(async.Future), 1, true)
      async.run(function() assert.has_error(function() async.spawn(42) end) end)
    end)

    it("await gives every result, nils included, as often as asked; result() too", function()
      local r = async.run(function()
        local t = async.spawn(function() async.sleep(0.001) return 1, nil, 3, nil end)
        local a = pack(t:await())
        local b = pack(async.await(t))
        local c = pack(t:result())
        return { a, b, c }
      end)
      for i = 1, 3 do assert.are.same({ n = 4, 1, nil, 3, nil }, r[i]) end
    end)

    it("a task cannot await itself; a non-awaitable raises", function()
      local r = pack(async.run(function()
        local me = async.current_task()
        local _, e1 = pcall(async.await, me)
        local _, e2 = pcall(async.await, 42)
        local _, e3 = pcall(async.await, {})
        return tostring(e1), tostring(e2), tostring(e3)
      end))
      assert.matches("a task cannot await itself", r[1], 1, true)
      assert.matches("awaitable", r[2], 1, true)
      assert.matches("awaitable", r[3], 1, true)
    end)

    it("result() and exception() of a pending task raise 'invalid state'", function()
      local r = pack(async.run(function()
        local ev = async.Event()
        local t = async.spawn(function() ev:wait() return "late" end)
        local _, e1 = pcall(t.result, t)
        local _, e2 = pcall(t.exception, t)
        local d = t:done()
        ev:set()
        return tostring(e1), tostring(e2), d, t:await(), t:done()
      end))
      assert.matches("invalid state", r[1], 1, true)
      assert.matches("invalid state", r[2], 1, true)
      assert.is_false(r[3])
      assert.are.equal("late", r[4])
      assert.is_true(r[5])
    end)

    it("a failed task: await and result() re-raise its error, exception() returns it", function()
      local obj = { "task error" }
      local r = pack(async.run(function()
        local t = async.spawn(function() async.sleep(0) error(obj) end)
        local ok1, e1 = pcall(t.await, t)
        local ok2, e2 = pcall(t.result, t)
        return ok1, e1, ok2, e2, t:exception(), t:done(), t:cancelled()
      end))
      assert.are.same({ n = 7, false, obj, false, obj, obj, true, false }, r)
      assert.are.equal(obj, r[2])
      assert.are.equal(obj, r[5])
    end)

    it("exception() of a finished task returns nothing", function()
      local n = async.run(function()
        local t = async.spawn(function() return 1 end)
        t:await()
        return select("#", t:exception())
      end)
      assert.are.equal(0, n)
    end)

    it("a cancelled task: result(), exception() and await raise a cancelled error", function()
      local r = pack(async.run(function()
        local t = async.spawn(async.sleep, 10)
        async.sleep(0)
        t:cancel("gone")
        local _, e1 = pcall(t.await, t)
        local _, e2 = pcall(t.result, t)
        local _, e3 = pcall(t.exception, t)
        return e1, e2, e3, t:done(), t:cancelled()
      end))
      for i = 1, 3 do
        assert.is_true(loom.is_cancelled(r[i]))
        assert.are.equal("gone", tostring(r[i]))
      end
      assert.is_true(r[4])
      assert.is_true(r[5])
    end)

    it("names: Task-N by default, main for the main task; set_name, get_name, tostring", function()
      local r = async.run(function()
        local ev = async.Event()
        local a = async.spawn(function() ev:wait() return 1 end)
        local b = async.spawn(function() ev:wait() error("failed on purpose", 0) end)
        local c = async.spawn(function() async.Event():wait() end)
        local out = { main = async.current_task():get_name(), a = a:get_name(), b = b:get_name() }
        b:set_name("worker")
        out.b2 = b:get_name()
        out.pending = tostring(b)
        ev:set()
        a:await()
        pcall(b.await, b)
        c:cancel()
        pcall(c.await, c)
        out.finished, out.failed, out.cancelled = tostring(a), tostring(b), tostring(c)
        out.main_str = tostring(async.current_task())
        return out
      end)
      assert.are.equal("main", r.main)
      local na = tonumber(r.a:match("^Task%-(%d+)$"))
      local nb = tonumber(r.b:match("^Task%-(%d+)$"))
      assert.is_truthy(na)
      assert.is_truthy(nb)
      assert.is_true(nb > na)
      assert.are.equal("worker", r.b2)
      assert.are.equal("loom.async.Task(worker, pending)", r.pending)
      assert.are.equal("loom.async.Task(" .. r.a .. ", finished)", r.finished)
      assert.are.equal("loom.async.Task(worker, failed)", r.failed)
      assert.matches("^loom%.async%.Task%(Task%-%d+, cancelled%)$", r.cancelled)
      assert.are.equal("loom.async.Task(main, pending)", r.main_str)
    end)

    it("current_task is the running task; nil outside a loop", function()
      assert.is_nil(async.current_task())
      local r = pack(async.run(function()
        local main = async.current_task()
        local t
        t = async.spawn(function() return async.current_task() == t end)
        return main:get_name(), t:await(), async.current_task() == main
      end))
      assert.are.same({ n = 3, "main", true, true }, r)
      assert.is_nil(async.current_task())
    end)

    it("a loop Future: set_result with several values, set_exception, cancel, invalid states", function()
      local r = async.run(function()
        local out = {}
        local f = async.Future()
        out.pending = tostring(f)
        out.early = tostring(err_of(f.result, f))
        local w = async.spawn(function() return f:await() end)
        async.sleep(0)
        f:set_result(1, nil, 3)
        out.waited = pack(w:await())
        out.result = pack(f:result())
        out.again = tostring(err_of(f.set_result, f, 2))
        out.finished = tostring(f)
        local g = async.Future()
        local obj = {}
        g:set_exception(obj)
        out.exc_is_obj = g:exception() == obj and err_of(g.await, g) == obj
        local h = async.Future()
        out.cancel1, out.cancel2 = h:cancel("no"), h:cancel()
        out.cerr = err_of(h.result, h)
        out.cancelled = h:cancelled()
        out.cstr = tostring(h)
        return out
      end)
      assert.are.equal("loom.async.Future(pending)", r.pending)
      assert.matches("invalid state", r.early, 1, true)
      assert.are.same({ n = 3, 1, nil, 3 }, r.waited)
      assert.are.same({ n = 3, 1, nil, 3 }, r.result)
      assert.matches("invalid state", r.again, 1, true)
      assert.are.equal("loom.async.Future(finished)", r.finished)
      assert.is_true(r.exc_is_obj)
      assert.is_true(r.cancel1)
      assert.is_false(r.cancel2)
      assert.is_true(loom.is_cancelled(r.cerr))
      assert.are.equal("no", tostring(r.cerr))
      assert.is_true(r.cancelled)
      assert.are.equal("loom.async.Future(cancelled)", r.cstr)
    end)

    it("add_done_callback: cb(task) runs in the loop after the task ends, in the order added", function()
      local r = async.run(function()
        local log = {}
        local go = async.Event()
        local t = async.spawn(function() go:wait() return "v" end)
        local all = async.Future()
        t:add_done_callback(function(x) log[#log + 1] = { "a", x == t, x:result() } end)
        t:add_done_callback(function(x) log[#log + 1] = { "b", x:done() } end)
        t:add_done_callback(function() all:set_result() end)
        async.sleep(0)
        local before = #log
        go:set()
        all:await()
        return { before, log }
      end)
      assert.are.same({ 0, { { "a", true, "v" }, { "b", true } } }, r)
    end)

    it("add_done_callback: on a failed and a cancelled task; added after the end it runs soon, not inside the call", function()
      local r = async.run(function()
        local log = {}
        local failed = async.spawn(function() error({ "x" }) end)
        local cancelled = async.spawn(async.sleep, 10)
        local f1, f2 = async.Future(), async.Future()
        failed:add_done_callback(function(x) log[#log + 1] = "failed:" .. x:exception()[1] f1:set_result() end)
        cancelled:add_done_callback(function(x) log[#log + 1] = "cancelled:" .. tostring(x:cancelled()) f2:set_result() end)
        async.sleep(0)
        cancelled:cancel()
        f1:await()
        f2:await()
        local late = async.Future()
        local ran_inside = false
        failed:add_done_callback(function() ran_inside = true late:set_result("late ran") end)
        local inside = ran_inside
        return { log, inside, late:await() }
      end)
      table.sort(r[1])
      assert.are.same({ { "cancelled:true", "failed:x" }, false, "late ran" }, r)
    end)

    it("an error inside a done callback is reported on stderr and the loop goes on", function()
      local out, status = helpers.run_lua([[
        local async = require "loom.async"
        print(async.run(function()
          local t = async.spawn(function() return 1 end)
          t:add_done_callback(function() error("callback boom") end)
          local f = async.Future()
          t:add_done_callback(function() f:set_result("next callback ran") end)
          local r = f:await()
          return r, async.sleep(0.01, "loop alive"), t:result()
        end))
      ]], 30)
      assert.are.equal(0, status)
      assert.matches("loom.async: exception in a done callback:", out, 1, true)
      assert.matches("callback boom", out, 1, true)
      assert.matches("next callback ran\tloop alive\t1", out, 1, true)
    end)

    it("a failed task whose error nobody retrieved is reported when collected", function()
      local out, status = helpers.run_lua([[
        local async = require "loom.async"
        async.run(function()
          local t = async.spawn(function() error("nobody looks") end)
          t:set_name("forgotten")
          local u = async.spawn(function() error("somebody looks") end)
          u:set_name("retrieved")
          async.sleep(0.01)
          pcall(u.result, u)
          local w = async.spawn(function() error("awaited") end)
          w:set_name("awaited")
          pcall(w.await, w)
        end)
        collectgarbage() collectgarbage()
        print("end")
      ]], 30)
      assert.are.equal(0, status)
      assert.matches("Task exception was never retrieved (task 'forgotten')", out, 1, true)
      assert.matches("nobody looks", out, 1, true)
      assert.not_matches("task 'retrieved'", out, 1, true)
      assert.not_matches("'awaited'", out, 1, true)
      assert.matches("end", out, 1, true)
    end)
  end)

  ---------------------------------------------------------------------
  describe("cancellation", function()
    it("is raised at the task's next suspension point, not before", function()
      local log = async.run(function()
        local l = {}
        local t = async.spawn(function()
          async.current_task():cancel()
          l[#l + 1] = "after cancel()"
          local ok, e = pcall(async.sleep, 0)
          l[#l + 1] = ok and "slept" or (loom.is_cancelled(e) and "cancelled at sleep")
          return "caught"
        end)
        local v = t:await()
        l[#l + 1] = v
        return l
      end)
      assert.are.same({ "after cancel()", "cancelled at sleep", "caught" }, log)
    end)

    it("a task that catches it, cleans up (suspending) and returns finishes normally", function()
      local r = pack(async.run(function()
        local started = async.Event()
        local t = async.spawn(function()
          started:set()
          local ok, e = pcall(async.sleep, 10)
          async.sleep(0.005) -- clean-up may suspend again
          return ok, loom.is_cancelled(e) and tostring(e)
        end)
        started:wait()
        local c = t:cancel("stop")
        local a, b = t:await()
        return c, a, b, t:cancelled(), t:done()
      end))
      assert.are.same({ n = 5, true, false, "stop", false, true }, r)
    end)

    it("a task that ends with it is cancelled; its awaiter gets the message", function()
      local r = pack(async.run(function()
        local started = async.Event()
        local cleaned = false
        local t = async.spawn(function()
          started:set()
          local _, e = pcall(async.sleep, 10)
          async.sleep(0.001)
          cleaned = true
          error(e, 0)
        end)
        started:wait()
        t:cancel("stop now")
        local ok, e = pcall(t.await, t)
        return ok, loom.is_cancelled(e), tostring(e), t:cancelled(), cleaned
      end))
      assert.are.same({ n = 5, false, true, "stop now", true, true }, r)
    end)

    it("without a message the error says 'cancelled'", function()
      local e = async.run(function()
        local t = async.spawn(async.sleep, 10)
        async.sleep(0)
        t:cancel()
        return select(2, pcall(t.await, t))
      end)
      assert.is_true(async.is_cancelled(e))
      assert.are.equal("cancelled", tostring(e))
    end)

    it("a task cancelled before it starts never runs; cancel() of a done task returns false", function()
      local ran = false
      local r = pack(async.run(function()
        local t = async.spawn(function() ran = true end)
        local c1 = t:cancel("early")
        local ok, e = pcall(t.await, t)
        local d = async.spawn(function() return 1 end)
        d:await()
        return c1, ok, tostring(e), t:cancelled(), t:cancel(), d:cancel(), d:cancelled()
      end))
      assert.are.same({ n = 7, true, false, "early", true, false, false, false }, r)
      assert.is_false(ran)
    end)

    it("cancel() twice before delivery is one cancellation; each cancel() says true", function()
      local r = pack(async.run(function()
        local n = 0
        local t = async.spawn(function()
          for _ = 1, 3 do
            local ok = pcall(async.sleep, 10)
            if not ok then n = n + 1 end
            if n == 1 then break end
          end
          async.sleep(0.01)
          return n
        end)
        async.sleep(0)
        local a, b = t:cancel(), t:cancel()
        return a, b, t:await()
      end))
      assert.are.same({ n = 3, true, true, 1 }, r)
    end)

    it("cancelling a task that awaits another task cancels that one; the waiter ends as it did", function()
      local r = pack(async.run(function()
        local inner = async.spawn(async.sleep, 10)
        local outer = async.spawn(function() return inner:await() end)
        async.sleep(0)
        outer:cancel("why")
        local ok, e = pcall(outer.await, outer)
        local _, ie = pcall(inner.await, inner)
        return ok, loom.is_cancelled(e), tostring(e), outer:cancelled(), inner:cancelled(), tostring(ie)
      end))
      assert.are.same({ n = 6, false, true, "why", true, true, "why" }, r)
    end)

    it("cancelling a task that awaits a loop future cancels the future", function()
      local r = pack(async.run(function()
        local f = async.Future()
        local t = async.spawn(function() return f:await() end)
        async.sleep(0)
        t:cancel()
        local ok = pcall(t.await, t)
        return ok, f:cancelled(), t:cancelled()
      end))
      assert.are.same({ n = 3, false, true, true }, r)
    end)

    it("when the awaited task swallows the cancellation, the waiter goes on with its result", function()
      local r = pack(async.run(function()
        local inner = async.spawn(function()
          local ok = pcall(async.sleep, 10)
          return ok and "slept" or "swallowed"
        end)
        local outer = async.spawn(function() return "outer got " .. inner:await() end)
        async.sleep(0)
        outer:cancel()
        return outer:await(), outer:cancelled(), inner:cancelled()
      end))
      assert.are.same({ n = 3, "outer got swallowed", false, false }, r)
    end)

    it("a task may catch several cancellations and then return (asyncio test_cancel_task_ignoring)", function()
      local r = pack(async.run(function()
        local step = async.Event()
        local t = async.spawn(function()
          local caught = 0
          for _ = 1, 2 do
            step:set()
            local ok = pcall(async.sleep, 10)
            if not ok then caught = caught + 1 end
            step:clear()
          end
          return 42, caught
        end)
        for _ = 1, 2 do
          step:wait()
          async.sleep(0)
          t:cancel()
          async.sleep(0)
        end
        local a, b = t:await()
        return a, b, t:cancelled()
      end))
      assert.are.same({ n = 3, 42, 2, false }, r)
    end)

    it("uncancel() takes back a cancellation not delivered yet", function()
      local r = pack(async.run(function()
        local me = async.current_task()
        me:cancel()
        local had = me:uncancel()
        local slept = async.sleep(0.001, "slept")
        return had, slept, me:uncancel()
      end))
      assert.are.same({ n = 3, 0, "slept", 0 }, r)
    end)

    it("a task that cancels itself and then returns without suspending ends cancelled (asyncio test_cancel_at_end)", function()
      local r = pack(async.run(function()
        local t
        t = async.spawn(function()
          t:cancel()
          return 12
        end)
        local ok, e = pcall(t.await, t)
        return ok, loom.is_cancelled(e), t:cancelled(), t:cancel()
      end))
      assert.are.same({ n = 4, false, true, true, false }, r)
    end)
  end)

  ---------------------------------------------------------------------
  describe("gather (SEMANTICS 23)", function()
    it("returns the first result of each in argument order, whatever order they finish in", function()
      local r = pack(async.run(function()
        return async.gather(
          async.spawn(function() async.sleep(0.03) return "a", "dropped" end),
          function() async.sleep(0.01) return "b" end,
          function() return nil end,
          async.spawn(function() async.sleep(0.02) return "d" end))
      end))
      assert.are.same({ n = 4, "a", "b", nil, "d" }, r)
    end)

    it("takes tasks, loop futures, functions, pool futures and threads", function()
      local pool = Pool(1)
      local r = pack(async.run(function()
        local f = async.Future()
        async.spawn(function() async.sleep(0.005) f:set_result("future") end)
        return async.gather(
          async.spawn(function() return "task" end),
          f,
          function() return "function" end,
          pool:submit(function(x) return x end, "pool"),
          spawn_thread(function() return "thread" end))
      end))
      assert.are.same({ n = 5, "task", "future", "function", "pool", "thread" }, r)
    end)

    it("with nothing to wait for returns nothing", function()
      assert.are.same({ n = 0 }, pack(async.run(function() return async.gather() end)))
      assert.are.same({ n = 0 }, pack(async.run(function()
        return async.gather({ return_exceptions = true })
      end)))
    end)

    it("the first error propagates at once; the other children keep running", function()
      local r = pack(async.run(function()
        local slow = async.spawn(function() async.sleep(0.04) return "slow" end)
        local second = async.spawn(function() async.sleep(0.02) error({ "second" }) end)
        local ok, e = pcall(async.gather, slow,
          function() async.sleep(0.01) error({ "first" }) end, second)
        local slow_done = slow:done()
        local v = slow:await()
        local _, e2 = pcall(second.await, second)
        return ok, e[1], slow_done, v, slow:cancelled(), e2[1]
      end))
      assert.are.same({ n = 6, false, "first", false, "slow", false, "second" }, r)
    end)

    it("return_exceptions: errors and cancellations come back in place", function()
      local r = pack(async.run(function()
        local c = async.spawn(async.sleep, 10)
        async.sleep(0)
        c:cancel("c went")
        return async.gather(
          function() async.sleep(0.01) return 1 end,
          function() error({ "x" }) end,
          c,
          function() return 4 end,
          { return_exceptions = true })
      end))
      assert.are.equal(4, r.n)
      assert.are.equal(1, r[1])
      assert.are.same({ "x" }, r[2])
      assert.is_true(loom.is_cancelled(r[3]))
      assert.are.equal("c went", tostring(r[3]))
      assert.are.equal(4, r[4])
    end)

    it("a child cancelled makes gather raise a cancelled error; the other children go on", function()
      local r = pack(async.run(function()
        local c = async.spawn(async.sleep, 10)
        local other = async.spawn(async.sleep, 0.01, "other")
        async.sleep(0)
        c:cancel()
        local ok, e = pcall(async.gather, other, c)
        local _, v = pcall(other.await, other) -- the other child goes on (asyncio)
        return ok, loom.is_cancelled(e), v, other:cancelled()
      end))
      assert.are.same({ n = 4, false, true, "other", false }, r)
    end)

    it("cancelling the task that gathers cancels the children", function()
      local r = pack(async.run(function()
        local a = async.spawn(async.sleep, 10)
        local b = async.spawn(async.sleep, 10)
        local g = async.spawn(async.gather, a, b, function() return async.sleep(10) end)
        async.sleep(0)
        g:cancel()
        local ok, e = pcall(g.await, g)
        pcall(a.await, a)
        pcall(b.await, b)
        return ok, loom.is_cancelled(e), g:cancelled(), a:cancelled(), b:cancelled()
      end))
      assert.are.same({ n = 5, false, true, true, true, true }, r)
    end)

    it("the same task given twice gives its result twice", function()
      local r = pack(async.run(function()
        local t = async.spawn(async.sleep, 0.001, "twice")
        return async.gather(t, t)
      end))
      assert.are.same({ n = 2, "twice", "twice" }, r)
    end)

    it("a bad argument raises", function()
      local e = async.run(function() return select(2, pcall(async.gather, function() end, 42)) end)
      assert.matches("bad argument #2 to 'gather'", e, 1, true)
    end)
  end)

  ---------------------------------------------------------------------
  describe("wait_for (SEMANTICS 24)", function()
    it("returns every result of x when it ends in time; a nil timeout waits as long as needed", function()
      local r = pack(async.run(function()
        local a, b = async.wait_for(function() async.sleep(0.01) return 1, 2 end, 1)
        local c = async.wait_for(async.spawn(async.sleep, 0.02, "no limit"), nil)
        local d = async.wait_for(function() return "bare" end)
        return a, b, c, d
      end))
      assert.are.same({ n = 4, 1, 2, "no limit", "bare" }, r)
    end)

    it("a timeout cancels x, waits until it has finished cancelling, then raises a timeout error", function()
      local r = async.run(function()
        local log = {}
        local t = async.spawn(function()
          local ok, e = pcall(async.sleep, 10)
          log[#log + 1] = ok and "slept" or "caught"
          async.sleep(0.01)
          log[#log + 1] = "cleaned up"
          error(e, 0)
        end)
        local ok, e = pcall(async.wait_for, t, 0.01)
        log[#log + 1] = "wait_for raised"
        return { ok, loom.is_timeout(e), tostring(e), t:cancelled(), log }
      end)
      assert.are.same({ false, true, "timed out after 0.01 seconds", true,
                        { "caught", "cleaned up", "wait_for raised" } }, r)
    end)

    it("a timeout <= 0 on a task that has not started never starts it", function()
      for _, timeout in ipairs { 0, -1 } do
        local ran = false
        local r = pack(async.run(function()
          local t = async.spawn(function() ran = true end)
          local ok, e = pcall(async.wait_for, t, timeout)
          local ok2, e2 = pcall(async.wait_for, function() ran = true end, timeout)
          return ok, loom.is_timeout(e), t:cancelled(), ok2, loom.is_timeout(e2)
        end))
        assert.are.same({ n = 5, false, true, true, false, true }, r)
        assert.is_false(ran)
      end
    end)

    it("a timeout <= 0 on a done task or future returns its result at once", function()
      local r = pack(async.run(function()
        local f = async.Future()
        f:set_result("done", 2)
        local t = async.spawn(function() return "task" end)
        t:await()
        local a, b = async.wait_for(f, 0)
        return a, b, async.wait_for(t, -1)
      end))
      assert.are.same({ n = 3, "done", 2, "task" }, r)
    end)

    it("a timeout <= 0 on a started task cancels it and waits for it", function()
      for _, timeout in ipairs { 0, -1 } do
        local r = pack(async.run(function()
          local running
          local started = async.Event()
          local t = async.spawn(function()
            running = true
            started:set()
            local ok, e = pcall(async.sleep, 10)
            async.sleep(0.001)
            running = false
            if not ok then error(e, 0) end
            return "done"
          end)
          started:wait()
          local ok, e = pcall(async.wait_for, t, timeout)
          return ok, loom.is_timeout(e), t:done(), t:cancelled(), running
        end))
        assert.are.same({ n = 5, false, true, true, true, false }, r)
      end
    end)

    it("when x swallows the cancellation and returns a value, that value is returned", function()
      local r = pack(async.run(function()
        local v = async.wait_for(function()
          local ok = pcall(async.sleep, 10)
          if not ok then return 42 end
          return "slept"
        end, 0.01)
        local w = async.wait_for(function() -- cancelled, then ends after a clean-up
          pcall(async.sleep, 10)
          async.sleep(0.005)
          return "cleaned", "up"
        end, 0.01)
        return v, w
      end))
      assert.are.same({ n = 2, 42, "cleaned" }, r)
    end)

    it("when x raises another error while cancelling, that error propagates", function()
      local obj = { "during cancel" }
      local r = pack(async.run(function()
        local t = async.spawn(function()
          pcall(async.sleep, 10)
          error(obj)
        end)
        local ok, e = pcall(async.wait_for, t, 0.01)
        return ok, e == obj, loom.is_timeout(e), t:cancelled()
      end))
      assert.are.same({ n = 4, false, true, false, false }, r)
    end)

    it("x's own error before the timeout propagates as it is", function()
      local e = async.run(function()
        return select(2, pcall(async.wait_for, function() error({ "own" }) end, 1))
      end)
      assert.are.same({ "own" }, e)
    end)

    it("cancelling the waiter cancels x, with a timeout and without one", function()
      for _, timeout in ipairs { 60, false } do
        local r = pack(async.run(function()
          local x = async.spawn(function() async.Future():await() end)
          local w = async.spawn(async.wait_for, x, timeout or nil)
          async.sleep(0)
          w:cancel()
          local ok, e = pcall(w.await, w)
          return ok, loom.is_cancelled(e), w:cancelled(), x:cancelled()
        end))
        assert.are.same({ n = 4, false, true, true, true }, r)
      end
    end)

    it("a waiter cancelled before it starts never touches x, which goes on", function()
      local r = pack(async.run(function()
        local x = async.spawn(function()
          local ok = pcall(async.sleep, 0.02)
          return ok and 42 or "x was cancelled"
        end)
        local w = async.spawn(async.wait_for, x, 0.01)
        w:cancel()
        local ok, e = pcall(w.await, w)
        return ok, loom.is_cancelled(e), x:await(), x:cancelled()
      end))
      assert.are.same({ n = 4, false, true, 42, false }, r)
    end)

    it("x ending in time leaves no cancellation behind (asyncio issue 86296)", function()
      local r = pack(async.run(function()
        local v = async.wait_for(function() return "quick" end, 0.01)
        local w = async.wait_for(async.spawn(async.sleep, 0.005, "also"), 0.02)
        local slept = async.sleep(0.04, "slept past both timeouts")
        return v, w, slept
      end))
      assert.are.same({ n = 3, "quick", "also", "slept past both timeouts" }, r)
    end)

    it("a future set before the deadline gives its result; a future timed out is cancelled", function()
      local r = pack(async.run(function()
        local f = async.Future()
        async.spawn(function() async.sleep(0.01) f:set_result("ok") end)
        local v = async.wait_for(f, 0.5)
        local g = async.Future()
        local ok, e = pcall(async.wait_for, g, 0.01)
        return v, ok, loom.is_timeout(e), g:cancelled()
      end))
      assert.are.same({ n = 4, "ok", false, true, true }, r)
    end)

    it("a bad timeout raises", function()
      local e = async.run(function() return select(2, pcall(async.wait_for, function() end, "1")) end)
      assert.matches("bad argument #2 to 'wait_for'", e, 1, true)
    end)
  end)

  ---------------------------------------------------------------------
  describe("wait", function()
    it("ALL_COMPLETED (the default): every task done, in input order; errors are not raised", function()
      local r = async.run(function()
        local a = async.spawn(async.sleep, 0.02, "a")
        local f = async.Future()
        async.spawn(function() async.sleep(0.01) f:set_result("f") end)
        local done, pending = async.wait({ a, function() error({ "b" }) end, f })
        return { #done, #pending, done[1] == a, done[2]:exception()[1], done[3] == f,
                 a:result(), f:result() }
      end)
      assert.are.same({ 3, 0, true, "b", true, "a", "f" }, r)
    end)

    it("FIRST_COMPLETED returns once one is done; the others stay pending and running", function()
      local r = async.run(function()
        local slow1 = async.spawn(async.sleep, 0.05, "slow1")
        local fast = async.spawn(async.sleep, 0.01, "fast")
        local slow2 = async.spawn(async.sleep, 0.05, "slow2")
        local done, pending = async.wait({ slow1, fast, slow2 }, { return_when = "FIRST_COMPLETED" })
        local out = { #done, done[1] == fast, #pending, pending[1] == slow1, pending[2] == slow2,
                      slow1:done() }
        out[#out + 1] = slow1:await()
        out[#out + 1] = slow2:await()
        return out
      end)
      assert.are.same({ 1, true, 2, true, true, false, "slow1", "slow2" }, r)
    end)

    it("FIRST_EXCEPTION returns at the first error, with what finished before it", function()
      local r = async.run(function()
        local fast = async.spawn(async.sleep, 0.01, "fast")
        local bad = async.spawn(function() async.sleep(0.02) error({ "bad" }) end)
        local slow = async.spawn(async.sleep, 10)
        local done, pending = async.wait({ fast, bad, slow }, { return_when = "FIRST_EXCEPTION" })
        local out = { #done, done[1] == fast, done[2] == bad, #pending, pending[1] == slow }
        slow:cancel()
        pcall(slow.await, slow)
        return out
      end)
      assert.are.same({ 2, true, true, 1, true }, r)
    end)

    it("FIRST_EXCEPTION without errors waits for all; a cancelled task is not an error", function()
      local r = async.run(function()
        local c = async.spawn(async.sleep, 10)
        async.sleep(0)
        c:cancel()
        local done, pending = async.wait({ c, async.spawn(async.sleep, 0.01), async.spawn(async.sleep, 0.02) },
          { return_when = "FIRST_EXCEPTION" })
        return { #done, #pending }
      end)
      assert.are.same({ 3, 0 }, r)
    end)

    it("a timeout returns what finished; the rest keep running, not cancelled", function()
      local r = async.run(function()
        local fast = async.spawn(async.sleep, 0.01, "fast")
        local slow = async.spawn(async.sleep, 0.2, "slow")
        local done, pending = async.wait({ fast, slow }, { timeout = 0.05 })
        return { #done, done[1] == fast, #pending, pending[1] == slow, slow:done(),
                 slow:await(), slow:cancelled() }
      end)
      assert.are.same({ 1, true, 1, true, false, "slow", false }, r)
    end)

    it("drops duplicates, spawns functions, and accepts done tasks", function()
      local r = async.run(function()
        local t = async.spawn(async.sleep, 0.01, "t")
        local d = async.spawn(function() return "d" end)
        d:await()
        local done, pending = async.wait({ t, d, t, function() return "fn" end, d })
        return { #done, #pending, done[1] == t, done[2] == d, done[3]:result() }
      end)
      assert.are.same({ 3, 0, true, true, "fn" }, r)
    end)

    it("cancelling the task that waits does not cancel the tasks waited for", function()
      local r = pack(async.run(function()
        local a = async.spawn(async.sleep, 0.02, "a")
        local w = async.spawn(async.wait, { a })
        async.sleep(0)
        w:cancel()
        local ok, e = pcall(w.await, w)
        return ok, loom.is_cancelled(e), a:await(), a:cancelled()
      end))
      assert.are.same({ n = 4, false, true, "a", false }, r)
    end)

    it("a bad return_when or list raises", function()
      local r = pack(async.run(function()
        local _, e1 = pcall(async.wait, {}, { return_when = "SOMETIMES" })
        local _, e2 = pcall(async.wait, 42)
        return e1, e2
      end))
      assert.matches("invalid return_when 'SOMETIMES'", r[1], 1, true)
      assert.matches("bad argument #1 to 'wait'", r[2], 1, true)
    end)
  end)

  ---------------------------------------------------------------------
  describe("as_completed", function()
    it("yields the tasks in the order they finish; errors come out of result()", function()
      local r = async.run(function()
        local out = {}
        local list = {
          async.spawn(async.sleep, 0.03, "c"),
          async.spawn(async.sleep, 0.01, "a"),
          async.spawn(function() async.sleep(0.02) error({ "b failed" }) end),
        }
        for t in async.as_completed(list) do
          local ok, v = pcall(t.result, t)
          out[#out + 1] = ok and v or v[1]
        end
        return out
      end)
      assert.are.same({ "a", "b failed", "c" }, r)
    end)

    it("tasks done before the call come first; a task given twice is yielded once", function()
      local r = async.run(function()
        local out = {}
        local late = async.spawn(async.sleep, 0.01, "late")
        local early = async.spawn(function() return "early" end)
        early:await()
        for t in async.as_completed({ late, early, late, function() return "fn" end }) do
          out[#out + 1] = t:result()
        end
        return out
      end)
      assert.are.same({ "early", "fn", "late" }, r)
    end)

    it("on timeout raises 'N (of M) futures unfinished' after yielding those that finished", function()
      local r = async.run(function()
        local out = {}
        local slow1 = async.spawn(async.sleep, 10)
        local slow2 = async.spawn(async.sleep, 10)
        local ok, e = pcall(function()
          for t in async.as_completed({ slow1, async.spawn(async.sleep, 0.01, "fast"), slow2 }, 0.05) do
            out[#out + 1] = t:result()
          end
        end)
        local still = not slow1:done() and not slow2:done()
        slow1:cancel()
        slow2:cancel()
        return { ok, loom.is_timeout(e), tostring(e), out, still }
      end)
      assert.are.same({ false, true, "2 (of 3) futures unfinished", { "fast" }, true }, r)
    end)

    it("an empty list yields nothing", function()
      local n = async.run(function()
        local k = 0
        for _ in async.as_completed({}) do k = k + 1 end
        for _ in async.as_completed({}, 0.01) do k = k + 1 end
        return k
      end)
      assert.are.equal(0, n)
    end)
  end)

  ---------------------------------------------------------------------
  describe("timeout (SEMANTICS 25)", function()
    it("on expiry the body sees a cancellation and the scope raises a timeout error; expired() says so", function()
      local r = async.run(function()
        local cm, body_saw
        local ok, e = pcall(function()
          local t <close> = async.timeout(0.01)
          cm = t
          local ok2, e2 = pcall(async.sleep, 10)
          body_saw = not ok2 and loom.is_cancelled(e2)
          error(e2, 0)
        end)
        return { ok, loom.is_timeout(e), tostring(e), body_saw, cm:expired() }
      end)
      assert.are.same({ false, true, "timed out after 0.01 seconds", true, true }, r)
    end)

    it("a scope that ends in time does not expire, and leaves no cancellation behind", function()
      local r = pack(async.run(function()
        local cm
        do
          local t <close> = async.timeout(0.02)
          cm = t
          async.sleep(0.001)
        end
        local slept = async.sleep(0.05, "slept past the deadline")
        return cm:expired(), slept
      end))
      assert.are.same({ n = 2, false, "slept past the deadline" }, r)
    end)

    it("timeout(nil) never expires", function()
      local r = pack(async.run(function()
        local t <close> = async.timeout(nil)
        async.sleep(0.01)
        return t:expired(), "done"
      end))
      assert.are.same({ n = 2, false, "done" }, r)
    end)

    it("timeout(0) and a negative one expire at the first suspension, even sleep(0)", function()
      for _, d in ipairs { 0, -11 } do
        for _, s in ipairs { 0, 10 } do
          local r = pack(async.run(function()
            local cm
            local ok, e = pcall(function()
              local t <close> = async.timeout(d)
              cm = t
              async.sleep(s)
            end)
            return ok, loom.is_timeout(e), cm:expired()
          end))
          assert.are.same({ n = 3, false, true, true }, r)
        end
      end
    end)

    it("an error of the body passes through and expired() stays false", function()
      local obj = {}
      local r = pack(async.run(function()
        local cm
        local ok, e = pcall(function()
          local t <close> = async.timeout(0.01)
          cm = t
          error(obj)
        end)
        return ok, e == obj, cm:expired()
      end))
      assert.are.same({ n = 3, false, true, false }, r)
    end)

    it("an error raised while cancelling at expiry passes through, not a timeout", function()
      local obj = {}
      local r = pack(async.run(function()
        local ok, e = pcall(function()
          local _ <close> = async.timeout(0.01)
          local ok2 = pcall(async.sleep, 1)
          if not ok2 then error(obj) end
        end)
        return ok, e == obj, loom.is_timeout(e)
      end))
      assert.are.same({ n = 3, false, true, false }, r)
    end)

    it("a cancellation from elsewhere stays a cancellation when the timeout has not expired", function()
      local r = pack(async.run(function()
        local cm
        local ok, e = pcall(function()
          local t <close> = async.timeout(10)
          cm = t
          async.current_task():cancel("not the timeout")
          async.sleep(10)
        end)
        return ok, loom.is_cancelled(e), tostring(e), cm:expired()
      end))
      assert.are.same({ n = 4, false, true, "not the timeout", false }, r)
    end)

    it("a task that caught its timeout is not cancelled", function()
      local r = pack(async.run(function()
        local t = async.spawn(function()
          local ok, e = pcall(function()
            local _ <close> = async.timeout(0.001)
            async.sleep(10)
          end)
          return ok, loom.is_timeout(e), async.sleep(0.005, "goes on")
        end)
        local a, b, c = t:await()
        return a, b, c, t:cancelled()
      end))
      assert.are.same({ n = 4, false, true, "goes on", false }, r)
    end)

    it("nested: the inner one expiring raises at the inner scope; the outer goes on", function()
      local r = pack(async.run(function()
        local outer_cm, inner_cm
        local ok_inner, e_inner
        do
          local o <close> = async.timeout(10)
          outer_cm = o
          ok_inner, e_inner = pcall(function()
            local i <close> = async.timeout(0.01)
            inner_cm = i
            async.sleep(10)
          end)
          async.sleep(0.001)
        end
        return ok_inner, loom.is_timeout(e_inner), inner_cm:expired(), outer_cm:expired()
      end))
      assert.are.same({ n = 4, false, true, true, false }, r)
    end)

    it("nested: after the inner one's timeout, the outer one still interrupts the next wait", function()
      local r = pack(async.run(function()
        local t0 = loom.now()
        local ok, e = pcall(function()
          local _ <close> = async.timeout(0.05)
          pcall(function()
            local _ <close> = async.timeout(0.01)
            async.sleep(1)
          end)
          async.sleep(1) -- interrupted by the outer one
        end)
        return ok, loom.is_timeout(e), loom.now() - t0 < 0.5
      end))
      assert.are.same({ n = 3, false, true, true }, r)
    end)

    it("nested with the same deadline: the inner scope passes the cancellation on, the outer raises the timeout (asyncio test_nested_timeouts)", function()
      local r = pack(async.run(function()
        local t0 = loom.now()
        local outer_cm, inner_cm, inner_err
        local ok, e = pcall(function()
          local o <close> = async.timeout(0.01)
          outer_cm = o
          local ok2, e2 = pcall(function()
            local i <close> = async.timeout(0.01)
            inner_cm = i
            async.sleep(1)
          end)
          inner_err = e2
          -- only a timeout of the inner scope is handled here
          if not ok2 and not loom.is_timeout(e2) then error(e2, 0) end
          async.sleep(1) -- must be interrupted: the outer timeout expired too
        end)
        return ok, loom.is_timeout(e), outer_cm:expired(), inner_cm:expired(), loom.now() - t0 < 0.5,
               loom.is_cancelled(inner_err)
      end))
      assert.are.same({ n = 6, false, true, true, true, true, true }, r)
    end)

    it("nested, both expired at once while the loop was busy: the outer one still stops the task (asyncio test_nested_timeouts_loop_busy)", function()
      local r = pack(async.run(function()
        local t0 = loom.now()
        local inner_raised
        local outer_cm
        local ok, e = pcall(function()
          local o <close> = async.timeout(0.02)
          outer_cm = o
          local ok2, e2 = pcall(function()
            local _ <close> = async.timeout(0.01)
            async.sleep(0) -- both timeouts are armed
            loom.sleep(0.05) -- the loop is busy past both deadlines
            async.sleep(1)
          end)
          inner_raised = loom.is_timeout(e2) and "timeout" or loom.is_cancelled(e2) and "cancelled"
          -- only a timeout of the inner scope is handled here
          if not ok2 and not loom.is_timeout(e2) then error(e2, 0) end
          async.sleep(1) -- must be interrupted: the outer timeout expired
        end)
        return ok, loom.is_timeout(e), outer_cm:expired(), loom.now() - t0 < 0.5, inner_raised
      end))
      assert.are.same({ false, true, true, true }, { r[1], r[2], r[3], r[4] })
    end)

    it("the deadline counts from the call of async.timeout, not from the loop's next turn", function()
      local r = pack(async.run(function()
        local cm
        local took
        local ok, e = pcall(function()
          local t <close> = async.timeout(0.1)
          cm = t
          loom.sleep(0.15) -- the loop is busy past the deadline
          local t0 = loom.now()
          local _, e2 = pcall(async.sleep, 1) -- the deadline passed: interrupted at once
          took = loom.now() - t0
          error(e2, 0)
        end)
        return ok, loom.is_timeout(e), cm:expired(), took < 0.05 or took
      end))
      assert.are.same({ n = 4, false, true, true, true }, r)
    end)

    it("a timeout in the clean-up after a caught cancellation still works (asyncio test_timeout_after_cancellation)", function()
      local r = pack(async.run(function()
        local me = async.current_task()
        me:cancel()
        local caught = not pcall(async.sleep, 1)
        local ok, e = pcall(function()
          local _ <close> = async.timeout(0)
          async.sleep(1)
        end)
        return caught, ok, loom.is_timeout(e)
      end))
      assert.are.same({ n = 3, true, false, true }, r)
    end)

    it("outside a task, or with a bad delay, raises", function()
      assert.matches("async.timeout must be used inside a task", err_of(async.timeout, 1), 1, true)
      local e = async.run(function() return select(2, pcall(async.timeout, "1")) end)
      assert.matches("bad argument #1 to 'timeout'", e, 1, true)
    end)
  end)

  ---------------------------------------------------------------------
  describe("shield", function()
    it("cancelling the task that awaits a shield leaves the inner task running", function()
      local r = pack(async.run(function()
        local release = async.Event()
        local inner = async.spawn(function() release:wait() return "inner done" end)
        local waiter = async.spawn(function() return async.await(async.shield(inner)) end)
        async.sleep(0)
        waiter:cancel()
        local ok, e = pcall(waiter.await, waiter)
        local inner_still = not inner:done()
        release:set()
        return ok, loom.is_cancelled(e), waiter:cancelled(), inner_still, inner:await(), inner:cancelled()
      end))
      assert.are.same({ n = 6, false, true, true, true, "inner done", false }, r)
    end)

    it("cancelling the shield itself does not cancel the inner task", function()
      local r = pack(async.run(function()
        local inner = async.spawn(async.sleep, 0.01, "kept")
        local s = async.shield(inner)
        local c = s:cancel()
        return c, s:cancelled(), inner:await(), inner:cancelled()
      end))
      assert.are.same({ n = 4, true, true, "kept", false }, r)
    end)

    it("mirrors the inner result, error and cancellation", function()
      local obj = {}
      local r = pack(async.run(function()
        local a = async.await(async.shield(async.spawn(function() async.sleep(0.001) return 1, 2 end)))
        local ok, e = pcall(async.await, async.shield(async.spawn(function() async.sleep(0.001) error(obj) end)))
        local inner = async.spawn(async.sleep, 10)
        local s = async.shield(inner)
        async.sleep(0)
        inner:cancel()
        local ok2, e2 = pcall(async.await, s)
        return a, ok, e == obj, ok2, loom.is_cancelled(e2), s:cancelled()
      end))
      assert.are.same({ n = 6, 1, false, true, false, true, true }, r)
    end)

    it("takes functions and done tasks", function()
      local r = pack(async.run(function()
        local d = async.spawn(function() return "done already" end)
        d:await()
        return async.await(async.shield(d)), async.await(async.shield(function() return "fn" end))
      end))
      assert.are.same({ n = 2, "done already", "fn" }, r)
    end)
  end)

  ---------------------------------------------------------------------
  describe("task groups (SEMANTICS 26)", function()
    it("<close> form: the end of the scope waits for every child", function()
      local r = pack(async.run(function()
        local t1, t2, t3
        do
          local g <close> = async.group()
          t1 = g:spawn(function() async.sleep(0.02) return 42 end)
          t2 = g:spawn(function(x) async.sleep(0.01) return x end, 11)
          async.sleep(0.015)
          t3 = g:spawn(function() async.sleep(0.01) return "late" end) -- spawned mid-way
        end
        return t1:done() and t2:done() and t3:done(), t1:result(), t2:result(), t3:result()
      end))
      assert.are.same({ n = 4, true, 42, 11, "late" }, r)
    end)

    it("function form: waits for every child and returns the body's results", function()
      local r = pack(async.run(function()
        local t1
        local a, b = async.group(function(g)
          t1 = g:spawn(function() async.sleep(0.01) return "child" end)
          g:spawn(function() async.sleep(0.02) end)
          return "body", 2
        end)
        return a, b, t1:done(), t1:result()
      end))
      assert.are.same({ n = 4, "body", 2, true, "child" }, r)
    end)

    it("a child cancelled on its own does not fail the group", function()
      local r = pack(async.run(function()
        local t1, t2
        do
          local g <close> = async.group()
          t1 = g:spawn(async.sleep, 10)
          t2 = g:spawn(async.sleep, 0.02, 11)
          async.sleep(0.001)
          t1:cancel()
        end
        return t1:cancelled(), t2:result(), async.sleep(0.001, "not cancelled")
      end))
      assert.are.same({ n = 3, true, 11, "not cancelled" }, r)
    end)

    it("<close> form: a child's error cancels the siblings and the body; one group error is raised", function()
      local r = async.run(function()
        local log, sib = {}, nil
        local ok, e = pcall(function()
          local g <close> = async.group()
          g:spawn(function() async.sleep(0.01) error("child failed", 0) end)
          sib = g:spawn(function()
            local _, e2 = pcall(async.sleep, 10)
            log[#log + 1] = "sibling " .. (loom.is_cancelled(e2) and "cancelled" or "slept")
            error(e2, 0)
          end)
          local _, e3 = pcall(async.sleep, 10)
          log[#log + 1] = "body " .. (loom.is_cancelled(e3) and "cancelled" or "slept")
          error(e3, 0)
        end)
        pcall(sib.await, sib)
        log[#log + 1] = "after"
        return { ok, async.is_group_error(e), e.kind, #e.errors, e.errors[1], tostring(e),
                 sib:cancelled(), log, async.sleep(0.001, "the task goes on") }
      end)
      assert.is_false(r[1])
      assert.is_true(r[2])
      assert.are.equal("group", r[3])
      assert.are.equal(1, r[4])
      assert.matches("^child failed", r[5])
      assert.matches("^1 error in a task group: child failed", r[6])
      assert.is_true(r[7])
      assert.are.same({ "sibling cancelled", "body cancelled", "after" }, r[8])
      assert.are.equal("the task goes on", r[9])
    end)

    it("function form: a child's error cancels the siblings and the body, and waits for their clean-up", function()
      local r = async.run(function()
        local log, sib = {}, nil
        local ok, e = pcall(async.group, function(g)
          g:spawn(function() async.sleep(0.01) error("child failed", 0) end)
          sib = g:spawn(function()
            local _, e2 = pcall(async.sleep, 10)
            async.sleep(0.01)
            log[#log + 1] = "sibling cleaned up"
            error(e2, 0)
          end)
          local _, e3 = pcall(async.sleep, 10)
          log[#log + 1] = "body " .. (loom.is_cancelled(e3) and "cancelled" or "slept")
          error(e3, 0)
        end)
        log[#log + 1] = "group raised"
        return { ok, async.is_group_error(e), #e.errors, e.errors[1], sib:cancelled(), log,
                 async.sleep(0.001, "the task goes on") }
      end)
      assert.is_false(r[1])
      assert.is_true(r[2])
      assert.are.equal(1, r[3])
      assert.matches("^child failed", r[4])
      assert.is_true(r[5])
      assert.are.same({ "body cancelled", "sibling cleaned up", "group raised" }, r[6])
      assert.are.equal("the task goes on", r[7])
    end)

    it("errors of several children are collected in the order they happened", function()
      for _, form in ipairs { "close", "function" } do
        local e = async.run(function()
          local function body(g)
            g:spawn(function() async.sleep(0.01) error("A failed", 0) end)
            g:spawn(function()
              pcall(async.sleep, 10)
              error("B failed while cancelling", 0)
            end)
            g:spawn(function() async.sleep(10) end)
          end
          return select(2, pcall(function()
            if form == "function" then return async.group(body) end
            local g <close> = async.group()
            body(g)
          end))
        end)
        assert.is_true(async.is_group_error(e), form)
        assert.are.equal(2, #e.errors, form)
        assert.matches("^A failed", e.errors[1])
        assert.matches("^B failed while cancelling", e.errors[2])
        assert.matches("^2 errors in a task group: A failed.*; B failed while cancelling", tostring(e))
      end
    end)

    it("a body error cancels the children and comes in the group error", function()
      for _, form in ipairs { "close", "function" } do
        local r = async.run(function()
          local t1, t2
          local function body(g)
            t1 = g:spawn(async.sleep, 1)
            t2 = g:spawn(async.sleep, 2)
            async.sleep(0.001)
            error("body failed", 0)
          end
          local ok, e = pcall(function()
            if form == "function" then return async.group(body) end
            local g <close> = async.group()
            body(g)
          end)
          pcall(t1.await, t1)
          pcall(t2.await, t2)
          return { ok, async.is_group_error(e), e.errors and #e.errors, e.errors and e.errors[1],
                   t1:cancelled(), t2:cancelled() }
        end)
        assert.are.same({ false, true, 1, "body failed", true, true }, r, form)
      end
    end)

    it("function form: when the body fails, the children have finished when the group raises", function()
      local r = async.run(function()
        local t1
        local ok, e = pcall(async.group, function(g)
          t1 = g:spawn(function()
            local _, e2 = pcall(async.sleep, 1)
            async.sleep(0.005)
            error(e2, 0)
          end)
          async.sleep(0.001)
          error("body failed", 0)
        end)
        return { ok, async.is_group_error(e), t1:done(), t1:cancelled() }
      end)
      assert.are.same({ false, true, true, true }, r)
    end)

    it("cancelling the task while its body waits cancels the children; the task ends cancelled", function()
      for _, form in ipairs { "close", "function" } do
        local r = async.run(function()
          local num, kids = 0, {}
          local function foo()
            local ok, e = pcall(async.sleep, 5)
            if not ok then num = num + 1 end
            error(e, 0)
          end
          local function body(g)
            for i = 1, 5 do kids[i] = g:spawn(foo) end
            local ok, e = pcall(async.sleep, 10)
            if not ok then num = num + 10 end
            error(e, 0)
          end
          local runner = async.spawn(function()
            if form == "function" then return async.group(body) end
            local g <close> = async.group()
            body(g)
          end)
          async.sleep(0.01)
          runner:cancel("test")
          local ok, e = pcall(runner.await, runner)
          for i = 1, 5 do pcall(kids[i].await, kids[i]) end
          return { ok, loom.is_cancelled(e), tostring(e), runner:cancelled(), num }
        end)
        assert.are.same({ false, true, "test", true, 15 }, r, form)
      end
    end)

    for _, form in ipairs { "close", "function" } do
      it("cancelling the task while the group waits for its children cancels them all (asyncio test_cancellation), " ..
         form .. " form", function()
        local r = async.run(function()
          local num = 0
          local function foo()
            local ok, e = pcall(async.sleep, 1)
            if not ok then num = num + 1 error(e, 0) end
          end
          local runner = async.spawn(function()
            if form == "function" then
              return async.group(function(g) for _ = 1, 5 do g:spawn(foo) end end)
            end
            local g <close> = async.group()
            for _ = 1, 5 do g:spawn(foo) end
          end)
          async.sleep(0.01)
          local t0 = loom.now()
          runner:cancel("test")
          local ok, e = pcall(runner.await, runner)
          return { ok, loom.is_cancelled(e), tostring(e), runner:cancelled(), num,
                   loom.now() - t0 < 0.5 }
        end)
        assert.are.same({ false, true, "test", true, 5, true }, r, form)
      end)
    end

    it("the body caught its cancellation and raised another error: a group error with it (asyncio test_taskgroup_18)", function()
      local r = async.run(function()
        local runner = async.spawn(function()
          local _ <close> = async.group()
          local ok = pcall(async.sleep, 10)
          if not ok then error("raised instead", 0) end
        end)
        async.sleep(0.01)
        runner:cancel()
        local ok, e = pcall(runner.await, runner)
        return { ok, async.is_group_error(e), e.errors and e.errors[1] }
      end)
      assert.are.same({ false, true, "raised instead" }, r)
    end)

    it("nested groups: an outer child's error stops the body while it waits in an inner group", function()
      local r = async.run(function()
        local reached = false
        local t0 = loom.now()
        local ok, e = pcall(async.group, function(g1)
          g1:spawn(function() async.sleep(0.01) error("outer child", 0) end)
          async.group(function(g2) g2:spawn(async.sleep, 1) end)
          reached = true
        end)
        return { ok, async.is_group_error(e), e.errors and #e.errors,
                 e.errors and e.errors[1]:match("^outer child") ~= nil, reached, loom.now() - t0 < 0.5 }
      end)
      assert.are.same({ false, true, 1, true, false, true }, r)
    end)

    it("nested groups: an inner group's error is one error of the outer group (asyncio test_taskgroup_14)", function()
      local r = async.run(function()
        local outer_child
        local ok, e = pcall(function()
          local g1 <close> = async.group()
          outer_child = g1:spawn(async.sleep, 1)
          local g2 <close> = async.group()
          g2:spawn(function() async.sleep(0.01) error("inner child", 0) end)
        end)
        pcall(outer_child.await, outer_child)
        local inner = e.errors and e.errors[1]
        return { ok, async.is_group_error(e), #e.errors, async.is_group_error(inner),
                 inner and inner.errors[1]:match("^inner child") ~= nil, outer_child:cancelled() }
      end)
      assert.are.same({ false, true, 1, true, true, true }, r)
    end)

    it("spawn on a finished group or one shutting down raises; group outside a task raises", function()
      local r = pack(async.run(function()
        local saved
        async.group(function(g) saved = g end)
        local _, e1 = pcall(saved.spawn, saved, function() end)
        local e2
        pcall(async.group, function(g)
          g:spawn(function() error("boom", 0) end)
          pcall(async.sleep, 10)
          e2 = select(2, pcall(g.spawn, g, function() end))
        end)
        local _, e3 = pcall(async.group, 42)
        return tostring(e1), tostring(e2), tostring(e3)
      end))
      assert.matches("task group is finished", r[1], 1, true)
      assert.matches("task group is shutting down", r[2], 1, true)
      assert.matches("bad argument #1 to 'group'", r[3], 1, true)
      assert.matches("async.group must be used inside a task", err_of(async.group), 1, true)
      assert.is_false(async.is_group_error({ kind = "group" }))
      assert.is_false(async.is_group_error(loom.error("timeout")))
    end)
  end)

  ---------------------------------------------------------------------
  describe("bridges to threads and pools", function()
    -- A ticker task counts loop turns; the other thread waits for `gate`,
    -- which the ticker opens after 5 ticks: the await returns only if the
    -- loop kept running while the task waited.
    local function with_ticker(gate, body)
      local ticks, stop = 0, false
      local ticker = async.spawn(function()
        while not stop do
          async.sleep(0.001)
          ticks = ticks + 1
          if ticks == 5 then gate:set() end
        end
      end)
      local r = pack(body())
      stop = true
      ticker:await()
      return ticks, table.unpack(r, 1, r.n)
    end

    it("awaiting a pool future does not block the loop", function()
      local pool = Pool(1)
      local gate = Gate()
      local r = pack(async.run(function()
        return with_ticker(gate, function()
          return async.await(pool:submit(function(g, x)
            if not g:wait(10) then return "the loop was blocked" end
            return x * 2, "second"
          end, gate, 21))
        end)
      end))
      assert.is_true(r[1] >= 5)
      assert.are.same({ 42, "second" }, { r[2], r[3] })
    end)

    it("awaiting a loom.Thread does not block the loop", function()
      local gate = Gate()
      local r = pack(async.run(function()
        return with_ticker(gate, function()
          local t = spawn_thread(function(g)
            if not g:wait(10) then return "the loop was blocked" end
            return "thread", 2
          end, gate)
          return async.await(t)
        end)
      end))
      assert.is_true(r[1] >= 5)
      assert.are.same({ "thread", 2 }, { r[2], r[3] })
    end)

    it("to_thread runs on another OS thread without blocking the loop", function()
      local gate = Gate()
      local lm = loom
      local r = pack(async.run(function()
        return with_ticker(gate, function()
          return async.to_thread(function(g, a, b)
            if not g:wait(10) then return "the loop was blocked" end
            return a .. b, lm.current_thread().name
          end, gate, "to_", "thread")
        end)
      end))
      assert.is_true(r[1] >= 5)
      assert.are.equal("to_thread", r[2])
      assert.matches("^async_to_thread", r[3])
    end)

    it("run_in runs on the given pool", function()
      local pool = Pool(1, "mine")
      local lm = loom
      local r = pack(async.run(function()
        return async.run_in(pool, function(a, b) return a + b, lm.current_thread().name end, 1, 2)
      end))
      assert.are.equal(3, r[1])
      assert.matches("^mine", r[2])
    end)

    it("errors of pool work and threads are raised by await", function()
      local pool = Pool(1)
      local r = pack(async.run(function()
        local _, e1 = pcall(async.await, pool:submit(function() error("pool boom", 0) end))
        local _, e2 = pcall(async.to_thread, function() error({ code = 5 }) end)
        local _, e3 = pcall(async.await, spawn_thread(function() error("thread boom", 0) end))
        return e1, e2, e3
      end))
      assert.matches("pool boom", tostring(r[1]), 1, true)
      assert.are.equal(5, r[2].code)
      assert.matches("thread boom", tostring(r[3]), 1, true)
    end)

    it("a main task awaiting only another thread is not taken for a deadlock", function()
      local pool = Pool(1)
      local r = async.run(function()
        return async.await(pool:submit(function(s) local lm = require "loom" lm.sleep(s) return "late" end, 0.05))
      end)
      assert.are.equal("late", r)
      -- and a done future or finished thread gives its result at once
      local f = pool:submit(function() return "done" end)
      f:result(10)
      local t = spawn_thread(function() return "joined" end)
      t:join(10)
      assert.are.same({ n = 2, "done", "joined" },
        pack(async.run(function() return async.await(f), async.await(t) end)))
    end)

    it("cancelling a task that awaits a queued pool future cancels that future; it never runs", function()
      local pool = Pool(1)
      local gate, started, ran = Gate(), loom.Event(), loom.Event()
      local blocker = pool:submit(function(g, s) s:set() return g:wait(10) end, gate, started)
      local queued = pool:submit(function(flag) flag:set() return "ran" end, ran)
      local r = pack(async.run(function()
        assert.is_true(poll(started))
        local t = async.spawn(async.await, queued)
        async.sleep(0)
        t:cancel()
        local ok, e = pcall(t.await, t)
        return ok, loom.is_cancelled(e), t:cancelled(), queued:cancelled()
      end))
      assert.are.same({ n = 4, false, true, true, true }, r)
      gate:set()
      assert.is_true(blocker:result(10))
      pool:shutdown { wait = true }
      assert.is_false(ran:is_set())
    end)

    it("wait_for on a queued pool future: the timeout cancels that future", function()
      local pool = Pool(1)
      local gate, started, ran = Gate(), loom.Event(), loom.Event()
      pool:submit(function(g, s) s:set() return g:wait(10) end, gate, started)
      local queued = pool:submit(function(flag) flag:set() return "ran" end, ran)
      local r = pack(async.run(function()
        assert.is_true(poll(started))
        local ok, e = pcall(async.wait_for, queued, 0.01)
        return ok, loom.is_timeout(e), queued:cancelled()
      end))
      assert.are.same({ n = 3, false, true, true }, r)
      gate:set()
      pool:shutdown { wait = true }
      assert.is_false(ran:is_set())
    end)

    it("cancelling a task that awaits running pool work or a thread lets that work finish", function()
      local pool = Pool(1)
      local gate, started = Gate(), loom.Event()
      local running = pool:submit(function(g, s) s:set() g:wait(10) return "finished" end, gate, started)
      local th = spawn_thread(function(g) g:wait(10) return "thread finished" end, gate)
      local r = pack(async.run(function()
        assert.is_true(poll(started))
        local t1 = async.spawn(async.await, running)
        local t2 = async.spawn(async.await, th)
        async.sleep(0)
        t1:cancel()
        t2:cancel()
        local ok1 = pcall(t1.await, t1)
        local ok2 = pcall(t2.await, t2)
        return ok1, ok2, t1:cancelled(), t2:cancelled(), running:cancelled()
      end))
      assert.are.same({ n = 5, false, false, true, true, false }, r)
      gate:set()
      assert.are.equal("finished", running:result(10))
      assert.are.equal("thread finished", th:result(10))
    end)

    it("many tasks await pool futures at once; each gets its own result", function()
      local pool = Pool(2)
      local sum = async.run(function()
        local ts = {}
        for i = 1, 50 do
          ts[i] = async.spawn(async.await, pool:submit(function(x) return x * x end, i))
        end
        local s = 0
        for i = 1, 50 do s = s + ts[i]:await() end
        return s
      end)
      assert.are.equal(42925, sum)
    end)
  end)

  ---------------------------------------------------------------------
  describe("debug mode", function()
    local code = [[
      local loom = require "loom"
      local async = require "loom.async"
      %s
      async.run(function()
        local hog = async.spawn(function()
          async.sleep(0)
          loom.sleep(0.2)
          async.sleep(0)
          return 1
        end)
        hog:set_name("hog")
        local ender = async.spawn(function()
          async.sleep(0)
          loom.sleep(0.2)
        end)
        ender:set_name("ender")
        local quick = async.spawn(function() for _ = 1, 3 do async.sleep(0.001) end end)
        quick:set_name("quick")
        hog:await(); ender:await(); quick:await()
      end)
      print("done")
    ]]

    it("LOOM_ASYNC_DEBUG=1 reports a task step that blocked the loop, with its name and place", function()
      local out, status = helpers.run_lua(code:format(""), 30, "export LOOM_ASYNC_DEBUG=1")
      assert.are.equal(0, status)
      assert.matches("loom.async: task 'hog' blocked the loop for 0%.%d%d%d seconds " ..
                     "%(a step that ended at [^\n]*:9%)", out)
      assert.matches("loom.async: task 'ender' blocked the loop for 0%.%d%d%d seconds " ..
                     "%(a step that ran to the end of the function at [^\n]*:13%)", out)
      assert.not_matches("'quick'", out, 1, true)
      assert.not_matches("'main'", out, 1, true)
      assert.matches("done", out, 1, true)
    end)

    it("async.set_debug(true, s) does the same from code; set_debug(false) and the default report nothing", function()
      local out = helpers.run_lua(code:format("async.set_debug(true, 0.05)"), 30, "unset LOOM_ASYNC_DEBUG")
      assert.matches("loom.async: task 'hog' blocked the loop for 0%.%d%d%d seconds", out)
      assert.matches("loom.async: task 'ender' blocked the loop", out, 1, true)
      local off = helpers.run_lua(code:format("async.set_debug(true) async.set_debug(false)"), 30,
                                  "unset LOOM_ASYNC_DEBUG")
      assert.not_matches("blocked the loop", off, 1, true)
      assert.matches("done", off, 1, true)
      local default = helpers.run_lua(code:format(""), 30, "unset LOOM_ASYNC_DEBUG")
      assert.not_matches("blocked the loop", default, 1, true)
      assert.matches("done", default, 1, true)
    end)

    it("a threshold in LOOM_ASYNC_DEBUG is honoured", function()
      local out = helpers.run_lua(code:format(""), 30, "export LOOM_ASYNC_DEBUG=0.5")
      assert.not_matches("blocked the loop", out, 1, true)
      assert.matches("done", out, 1, true)
      local low = helpers.run_lua(code:format(""), 30, "export LOOM_ASYNC_DEBUG=0.05")
      assert.matches("loom.async: task 'hog' blocked the loop", low, 1, true)
    end)

    it("set_debug with a bad threshold raises", function()
      assert.has_error(function() async.set_debug(true, 0) end)
      assert.has_error(function() async.set_debug(true, -1) end)
    end)
  end)

  ---------------------------------------------------------------------
  describe("many tasks", function()
    it("10,000 sleeping tasks all finish, and gather gives all their results", function()
      local n = 10000
      local r = pack(async.run(function()
        local ts = {}
        for i = 1, n do
          ts[i] = async.spawn(function() async.sleep((i % 10) * 0.001) return i end)
        end
        local all = pack(async.gather(table.unpack(ts)))
        local sum = 0
        for i = 1, n do sum = sum + ts[i]:await() end
        local ok = all.n == n
        for i = 1, n do if all[i] ~= i then ok = false end end
        return sum, ok
      end))
      assert.are.same({ n = 2, n * (n + 1) // 2, true }, r)
    end)

    -- (2,000, not 10,000: under ThreadSanitizer the start of that many
    -- waiters takes seconds)
    it("2,000 tasks waiting on one Event all wake when it is set", function()
      local n = 2000
      local woke = async.run(function()
        local ev = async.Event()
        local count = 0
        local ts = {}
        for i = 1, n do ts[i] = async.spawn(function() ev:wait() count = count + 1 end) end
        async.sleep(0)
        ev:set()
        for i = 1, n do ts[i]:await() end
        return count
      end)
      assert.are.equal(n, woke)
    end)
  end)
end)
