-- The executor (csrc/pool.c, lua/loom/pool.lua) and the futures it makes
-- (csrc/future.c): construction, lazy workers, worker state, initializers,
-- submit/result, errors, timeouts, cancel and interrupt, map, shutdown,
-- exit rules and SEMANTICS 18, 19 and 21. Callbacks, as_completed and
-- loom.wait are in future_spec.lua.
--
-- Ordering is done with loom.Event / loom.Queue, never with sleeps; every
-- wait has a timeout, so a broken implementation fails a spec instead of
-- hanging the suite.
local loom = require "loom"
local helpers = require "helpers"

-- Functions defined in a spec file see busted's environment as _ENV, not
-- the global table. Everything sent to a worker reads only locals bound
-- here (they cross by name) or has its _ENV rebound to the real globals
-- with helpers.globals (then globals are the worker's own globals).
local math, table, select, type, pcall, error, tostring =
      math, table, select, type, pcall, error, tostring
local setmetatable, rawequal, coroutine, ipairs, pairs, collectgarbage =
      setmetatable, rawequal, coroutine, ipairs, pairs, collectgarbage

local check_env = helpers.check_env
local globals = helpers.globals

local pack, err_of = helpers.pack, helpers.err_of

-- Every pool made here is shut down in after_each (cancelling what is
-- queued, interrupting what runs), after every gate was opened.
local pools, gates = {}, {}
local function Pool(opts)
  local p = loom.ThreadPoolExecutor(opts)
  pools[#pools + 1] = p
  return p
end

local function Gate()
  local e = loom.Event()
  gates[#gates + 1] = e
  return e
end

local function submit(p, fn, ...)
  return p:submit(check_env(fn), ...)
end

local function cleanup()
  for i, g in ipairs(gates) do g:set(); gates[i] = nil end
  for i, p in ipairs(pools) do
    p:shutdown{cancel_futures = true, interrupt = true}
    pools[i] = nil
  end
  helpers.join_all(20)
end

-- A task that tells `started` it runs (with its worker's name), then
-- waits for `gate` (at most 10 s) and returns `value`.
local function blocked(started, gate, value)
  started:put(loom.current_thread().name)
  if not gate:wait(10) then return "gate never opened" end
  return value
end

local function name_of_worker() return loom.current_thread().name end

local FUT = "^loom%.Future%((.-)%): 0x%x+$"

describe("ThreadPoolExecutor", function()
  after_each(cleanup)

  describe("constructor", function()
    it("max_workers <= 0 raises (SEMANTICS 18)", function()
      for _, n in ipairs{0, -1, -100} do
        local e = err_of(loom.ThreadPoolExecutor, {max_workers = n})
        assert.matches("max_workers must be greater than 0", e, 1, true)
      end
    end)

    it("a non-integer max_workers raises", function()
      for _, v in ipairs{1.5, "lots", true, {}} do
        local e = err_of(loom.ThreadPoolExecutor, {max_workers = v})
        assert.matches("field 'max_workers' must be an integer", e, 1, true)
      end
    end)

    it("bad field types raise, naming the field", function()
      assert.matches("field 'thread_name_prefix' must be a string",
        err_of(loom.ThreadPoolExecutor, {thread_name_prefix = {}}), 1, true)
      assert.matches("field 'initializer' must be a function",
        err_of(loom.ThreadPoolExecutor, {initializer = "init"}), 1, true)
      assert.matches("field 'initargs' must be a table",
        err_of(loom.ThreadPoolExecutor, {initializer = function() end, initargs = 3}), 1, true)
      assert.matches("initargs without an initializer",
        err_of(loom.ThreadPoolExecutor, {initargs = {1}}), 1, true)
      assert.matches("table expected",
        err_of(loom.ThreadPoolExecutor, "4"), 1, true)
    end)

    it("a number thread_name_prefix raises like any non-string", function()
      assert.matches("field 'thread_name_prefix' must be a string",
        err_of(loom.ThreadPoolExecutor, {thread_name_prefix = 42}), 1, true)
    end)

    it("an initializer or initargs that cannot be copied raises at once", function()
      local co = coroutine.create(function() end)
      assert.matches("cannot copy a coroutine",
        err_of(loom.ThreadPoolExecutor, {initializer = function() return co end}), 1, true)
      assert.matches("cannot copy a coroutine",
        err_of(loom.ThreadPoolExecutor, {initializer = function() end, initargs = {co}}), 1, true)
    end)

    it("max_workers is kept; the default is min(32, cpus + 4)", function()
      assert.are.equal(3, Pool{max_workers = 3}.max_workers)
      assert.are.equal(math.min(32, loom.cpu_count() + 4), Pool().max_workers)
      assert.are.equal(math.min(32, loom.cpu_count() + 4), Pool{}.max_workers)
      assert.is_nil(Pool{}.nonexistent)
    end)

    it("tostring shows state, workers and queue; no worker before a submit", function()
      local p = Pool{max_workers = 3}
      assert.are.equal("loom.ThreadPoolExecutor(running, 0/3 workers, 0 queued)", tostring(p))
      p:shutdown()
      assert.are.equal("loom.ThreadPoolExecutor(shut down, 0/3 workers, 0 queued)", tostring(p))
    end)
  end)

  describe("workers", function()
    it("start lazily: a second worker only while the first is busy", function()
      local p = Pool{max_workers = 4, thread_name_prefix = "lazy"}
      local started, gate = loom.Queue(), Gate()
      local a = submit(p, blocked, started, gate, "a")
      assert.are.equal("lazy_0", started:get(5))
      assert.are.equal("loom.ThreadPoolExecutor(running, 1/4 workers, 0 queued)", tostring(p))
      -- the only worker is busy: the next task needs (and gets) a new one
      local b = submit(p, name_of_worker)
      assert.are.equal("lazy_1", b:result(5))
      assert.are.equal("loom.ThreadPoolExecutor(running, 2/4 workers, 0 queued)", tostring(p))
      gate:set()
      assert.are.equal("a", a:result(5))
      p:shutdown()
      assert.are.equal("loom.ThreadPoolExecutor(shut down, 0/4 workers, 0 queued)", tostring(p))
    end)

    it("never more than max_workers: extra tasks wait in the queue", function()
      local p = Pool{max_workers = 2, thread_name_prefix = "two"}
      local started, gate = loom.Queue(), Gate()
      local a = submit(p, blocked, started, gate, "a")
      local b = submit(p, blocked, started, gate, "b")
      local names = {started:get(5), started:get(5)}
      table.sort(names)
      assert.are.same({"two_0", "two_1"}, names)
      local c = submit(p, name_of_worker)
      assert.are.equal("loom.ThreadPoolExecutor(running, 2/2 workers, 1 queued)", tostring(p))
      assert.is_false(c:running())
      assert.is_false(c:done())
      assert.are.equal("pending", tostring(c):match(FUT))
      gate:set()
      assert.matches("^two_[01]$", c:result(5))
      assert.are.same({"a", "b"}, {a:result(5), b:result(5)})
    end)

    it("the default name prefix is ThreadPoolExecutor-N, distinct per pool", function()
      local p1, p2 = Pool{max_workers = 1}, Pool{max_workers = 1}
      local n1 = submit(p1, name_of_worker):result(5)
      local n2 = submit(p2, name_of_worker):result(5)
      local k1 = n1:match("^ThreadPoolExecutor%-(%d+)_0$")
      local k2 = n2:match("^ThreadPoolExecutor%-(%d+)_0$")
      assert.is_not_nil(k1, n1)
      assert.is_not_nil(k2, n2)
      assert.are_not.equal(k1, k2)
    end)

    it("a worker is a loom thread, not the main thread", function()
      local p = Pool{max_workers = 1, thread_name_prefix = "who"}
      local f = submit(p, function()
        local me = loom.current_thread()
        return me.name, rawequal(me, loom.main_thread()), math.type(me.ident), loom.get_ident() == me.ident
      end)
      assert.are.same({n = 4, "who_0", false, "integer", true}, pack(f:result(5)))
    end)

    it("keep their state between tasks (globals set by a task stay)", function()
      local p = Pool{max_workers = 1}
      local set = globals(function(v) kept_value = v; counter = (counter or 0) + 1 end)
      local get = globals(function() return kept_value, counter end)
      submit(p, set, "first"):result(5)
      submit(p, set, "second"):result(5)
      assert.are.same({n = 2, "second", 2}, pack(submit(p, get):result(5)))
    end)

    it("a task's error does not end its worker", function()
      local p = Pool{max_workers = 1, thread_name_prefix = "survivor"}
      local set = globals(function() survived = "yes" end)
      submit(p, set):result(5)
      local bad = submit(p, function() error("boom") end)
      err_of(bad.result, bad, 5)
      local f = submit(p, globals(function() return survived, require("loom").current_thread().name end))
      assert.are.same({n = 2, "yes", "survivor_0"}, pack(f:result(5)))
      assert.are.equal("loom.ThreadPoolExecutor(running, 1/1 workers, 0 queued)", tostring(p))
    end)
  end)

  describe("initializer", function()
    it("sets up globals that every task of that worker sees", function()
      local p = Pool{max_workers = 1,
                     initializer = globals(function() BASE = 100; COUNT = 0 end)}
      local task = globals(function() COUNT = COUNT + 1; return BASE + COUNT end)
      assert.are.equal(101, submit(p, task):result(5))
      assert.are.equal(102, submit(p, task):result(5))
      assert.are.equal(103, submit(p, task):result(5))
    end)

    it("gets initargs, nils included (initargs.n)", function()
      local p = Pool{max_workers = 1,
                     initializer = globals(function(...) INIT = table.pack(...) end),
                     initargs = {"a", nil, 3, nil, n = 4}}
      local f = submit(p, globals(function() return INIT.n, INIT[1], INIT[2], INIT[3], INIT[4] end))
      assert.are.same({n = 5, 4, "a", nil, 3, nil}, pack(f:result(5)))
    end)

    it("runs once in each worker, before its first task", function()
      local inits = loom.Queue()
      local p = Pool{max_workers = 2, thread_name_prefix = "ini",
                     initializer = function(q) q:put(loom.current_thread().name) end,
                     initargs = {inits}}
      local started, gate = loom.Queue(), Gate()
      local a = submit(p, blocked, started, gate, 1)
      local b = submit(p, blocked, started, gate, 2)
      started:get(5); started:get(5)
      gate:set()
      a:result(5); b:result(5)
      for i = 1, 20 do submit(p, function(x) return x end, i):result(5) end
      p:shutdown()
      local names = {}
      while not inits:empty() do names[#names + 1] = inits:get(0) end
      table.sort(names)
      assert.are.same({"ini_0", "ini_1"}, names)
    end)

    it("failing breaks the pool: queued futures fail with is_broken, then submit raises it", function()
      local gate = Gate()
      local p = Pool{max_workers = 1,
                     initializer = function(g) g:wait(10); error("init boom") end,
                     initargs = {gate}}
      -- all three are queued while the initializer waits
      local fs = {submit(p, function() return 1 end), submit(p, function() return 2 end),
                  submit(p, function() return 3 end)}
      gate:set()
      for _, f in ipairs(fs) do
        local e = err_of(f.result, f, 5)
        assert.is_true(loom.is_broken(e), tostring(e))
        assert.matches("a thread initializer failed, the pool is not usable anymore: ", tostring(e), 1, true)
        assert.matches("init boom", tostring(e), 1, true)
        assert.is_true(f:done())
        assert.is_false(f:cancelled())
        assert.are.equal("finished, error", tostring(f):match(FUT))
        assert.is_true(loom.is_broken(f:exception(0)))
      end
      local e = err_of(p.submit, p, function() end)
      assert.is_true(loom.is_broken(e), tostring(e))
      assert.matches("init boom", tostring(e), 1, true)
      p:shutdown()
      assert.are.equal("loom.ThreadPoolExecutor(broken, 0/1 workers, 0 queued)", tostring(p))
    end)
  end)

  describe("submit and result", function()
    it("returns every value, nils in the middle and at the end included", function()
      local p = Pool{max_workers = 2}
      assert.are.same({n = 4, 1, nil, "x", nil},
        pack(submit(p, function() return 1, nil, "x", nil end):result(5)))
      assert.are.same({n = 0}, pack(submit(p, function() end):result(5)))
      assert.are.same({n = 1, nil}, pack(submit(p, function() return nil end):result(5)))
      assert.are.same({n = 1, 42}, pack(submit(p, function() return 42 end):result(5)))
      local many = pack(submit(p, function()
        local t = {}
        for i = 1, 200 do t[i] = i end
        return table.unpack(t)
      end):result(5))
      assert.are.equal(200, many.n)
      assert.are.equal(200, many[200])
    end)

    it("passes arguments, nils included, and copies tables", function()
      local p = Pool{max_workers = 2}
      local f = submit(p, function(...) return select("#", ...), ... end, nil, 2, nil)
      assert.are.same({n = 4, 3, nil, 2, nil}, pack(f:result(5)))
      local t = {a = {b = 1}, list = {1, 2, 3}}
      local g = submit(p, function(x) x.a.b = 99; x.list[4] = 4; return x end, t)
      assert.are.same({a = {b = 99}, list = {1, 2, 3, 4}}, g:result(5))
      assert.are.same({a = {b = 1}, list = {1, 2, 3}}, t)
    end)

    it("a function whose only upvalue is the globals runs as often as submitted (code cache)", function()
      local p = Pool{max_workers = 3}
      local double = globals(function(x) return x * 2 end)
      local fs = {}
      for i = 1, 50 do fs[i] = p:submit(double, i) end
      for i = 1, 50 do assert.are.equal(2 * i, fs[i]:result(5)) end
      local two = globals(function(a, b) return a .. b end)
      assert.are.equal("xy", p:submit(two, "x", "y"):result(5))
      assert.are.equal(0, select("#", p:submit(globals(function() end)):result(5)))
    end)

    it("loom objects cross by reference", function()
      local p = Pool{max_workers = 1}
      local q = loom.Queue()
      submit(p, function(queue) queue:put("from the worker") end, q):result(5)
      assert.are.equal("from the worker", q:get(0))
      local f = submit(p, function(queue) return queue end, q)
      assert.is_true(rawequal(q, f:result(5)))
    end)

    it("result() can be called again and gives the same values", function()
      local p = Pool{max_workers = 1}
      local f = submit(p, function() return {a = 1}, "s" end)
      assert.are.same({n = 2, {a = 1}, "s"}, pack(f:result(5)))
      assert.are.same({n = 2, {a = 1}, "s"}, pack(f:result(5)))
      assert.are.same({n = 2, {a = 1}, "s"}, pack(f:result()))
    end)

    it("misuse raises: no function, an argument or result that cannot be copied", function()
      local p = Pool{max_workers = 1}
      err_of(p.submit, p)
      err_of(p.submit, p, 42)
      err_of(p.submit, p, "print")
      assert.matches("loom.ThreadPoolExecutor expected", err_of(p.submit, {}, function() end), 1, true)
      local co = coroutine.create(function() end)
      assert.are.equal("cannot copy a coroutine at args[1]",
        err_of(p.submit, p, function(x) return x end, co))
      assert.are.equal("cannot copy a coroutine at target.<upvalue co>",
        err_of(p.submit, p, function() return co end))
      -- a result that cannot be copied fails the future, not the worker
      local f = submit(p, function() return coroutine.create(function() end) end)
      local e = err_of(f.result, f, 5)
      assert.matches("^cannot copy a coroutine at results", e)
      assert.are.equal(7, submit(p, function() return 7 end):result(5))
    end)
  end)

  describe("errors", function()
    it("a string error gets the worker's name and traceback", function()
      local p = Pool{max_workers = 1, thread_name_prefix = "err"}
      local function inner_failure() error("boom") end
      local f = submit(p, function() inner_failure() end)
      local e = err_of(f.result, f, 5)
      assert.are.equal("string", type(e))
      assert.matches("^[^\n]*pool_spec%.lua:%d+: boom\n%(in thread 'err_0'%) stack traceback:\n", e)
      assert.matches("inner_failure", e, 1, true)
      -- the traceback ends with the task, not the worker's C loop
      assert.is_nil(e:match("%[C%]: in %?$"), e)
      local _, n = e:gsub("stack traceback:", "")
      assert.are.equal(1, n)
      -- the same value again, and from exception()
      assert.are.equal(e, err_of(f.result, f, 5))
      assert.are.equal(e, f:exception(5))
    end)

    it("a level-0 string error and a runtime error", function()
      local p = Pool{max_workers = 1, thread_name_prefix = "rt"}
      local f = submit(p, function() error("plain", 0) end)
      assert.matches("^plain\n%(in thread 'rt_0'%) stack traceback:", err_of(f.result, f, 5))
      local g = submit(p, function() local x = nil; return x.field end)
      local e = err_of(g.result, g, 5)
      assert.matches("attempt to index", e, 1, true)
      assert.matches("(in thread 'rt_0')", e, 1, true)
    end)

    it("a table error comes back with the same contents (and metatable)", function()
      local p = Pool{max_workers = 1}
      local f = submit(p, function() error({code = 42, msg = "bad", nested = {1, 2}}) end)
      assert.are.same({code = 42, msg = "bad", nested = {1, 2}}, err_of(f.result, f, 5))
      assert.are.same({code = 42, msg = "bad", nested = {1, 2}}, err_of(f.result, f, 5))
      assert.are.same({code = 42, msg = "bad", nested = {1, 2}}, f:exception(5))
      local g = submit(p, function()
        error(setmetatable({why = "x"}, {__tostring = function(s) return "E:" .. s.why end}))
      end)
      assert.are.equal("E:x", tostring(err_of(g.result, g, 5)))
    end)

    it("other error values come back unchanged", function()
      local p = Pool{max_workers = 1}
      local f = submit(p, function() error(42) end)
      assert.are.equal(42, err_of(f.result, f, 5))
      local g = submit(p, function() error(false) end)
      assert.are.equal(false, err_of(g.result, g, 5))
    end)

    it("exception() gives nothing for a task that succeeded", function()
      local p = Pool{max_workers = 1}
      local f = submit(p, function() return 1 end)
      assert.are.equal(0, select("#", f:exception(5)))
      assert.are.equal("finished, ok", tostring(f):match(FUT))
      local g = submit(p, function() return nil, nil end)
      assert.are.equal(0, select("#", g:exception(5)))
    end)

    it("a task waiting for its own future raises instead of deadlocking", function()
      local p = Pool{max_workers = 1}
      local box = loom.Queue()
      local f = submit(p, function(q)
        local me = q:get(5)
        local ok, e = pcall(me.result, me, 1)
        local ok2, e2 = pcall(me.exception, me, 1)
        return ok, tostring(e), ok2, tostring(e2)
      end, box)
      box:put(f)
      local ok, e, ok2, e2 = f:result(5)
      assert.is_false(ok)
      assert.matches("a task cannot wait for its own future (it would deadlock)", e, 1, true)
      assert.is_false(ok2)
      assert.matches("it would deadlock", e2, 1, true)
    end)
  end)

  describe("timeouts", function()
    it("result(t) and exception(t) on an unfinished future raise is_timeout (SEMANTICS 19)", function()
      local p = Pool{max_workers = 1}
      local started, gate = loom.Queue(), Gate()
      local f = submit(p, blocked, started, gate, "late")
      local pending = submit(p, function() return "p" end)
      started:get(5)
      local t0 = loom.now()
      local e = err_of(f.result, f, 0.05)
      local elapsed = loom.now() - t0
      assert.is_true(loom.is_timeout(e))
      assert.is_false(loom.is_cancelled(e))
      assert.are.equal("future did not finish in 0.05 seconds", tostring(e))
      assert.is_true(elapsed >= 0.04 and elapsed < 5, "elapsed " .. elapsed)
      assert.is_true(loom.is_timeout(err_of(f.result, f, 0)))
      assert.is_true(loom.is_timeout(err_of(f.exception, f, 0)))
      assert.is_true(loom.is_timeout(err_of(pending.result, pending, 0)))
      assert.is_true(loom.is_timeout(err_of(pending.exception, pending, 0.01)))
      -- a timeout changes nothing
      assert.is_true(f:running())
      gate:set()
      assert.are.equal("late", f:result(5))
      assert.are.equal("p", pending:result(5))
    end)

    it("a negative or NaN timeout is misuse", function()
      local p = Pool{max_workers = 1}
      local f = submit(p, function() return 1 end)
      f:result(5)
      local e = err_of(f.result, f, -1)
      assert.is_false(loom.is_timeout(e))
      assert.matches("timeout must be a non-negative number", tostring(e), 1, true)
      err_of(f.result, f, 0 / 0)
      err_of(f.exception, f, -1)
    end)
  end)

  describe("states and cancel", function()
    it("pending -> running -> finished, as done/running/cancelled and tostring show", function()
      local p = Pool{max_workers = 1}
      local started, gate = loom.Queue(), Gate()
      local a = submit(p, blocked, started, gate, "a")
      local b = submit(p, function() return "b" end)
      started:get(5)
      assert.are.same({true, false, false}, {a:running(), a:done(), a:cancelled()})
      assert.are.equal("running", tostring(a):match(FUT))
      assert.are.same({false, false, false}, {b:running(), b:done(), b:cancelled()})
      assert.are.equal("pending", tostring(b):match(FUT))
      gate:set()
      assert.are.equal("b", b:result(5))
      assert.are.same({false, true, false}, {a:running(), a:done(), a:cancelled()})
      assert.are.equal("finished, ok", tostring(a):match(FUT))
      local c = submit(p, function() error("x") end)
      c:exception(5)
      assert.are.equal("finished, error", tostring(c):match(FUT))
    end)

    it("cancel() succeeds only while pending or already cancelled (SEMANTICS 19)", function()
      local p = Pool{max_workers = 1}
      local started, gate, ran = loom.Queue(), Gate(), loom.Queue()
      local a = submit(p, blocked, started, gate, "a")
      local b = submit(p, function(q) q:put("b ran") return "b" end, ran)
      local c = submit(p, function(q) q:put("c ran") return "c" end, ran)
      started:get(5)
      assert.is_false(a:cancel()) -- running
      assert.is_true(a:running())
      assert.is_true(b:cancel())
      assert.are.same({false, true, true}, {b:running(), b:done(), b:cancelled()})
      assert.are.equal("cancelled", tostring(b):match(FUT))
      assert.is_true(b:cancel()) -- again: still cancelled
      gate:set()
      assert.are.equal("a", a:result(5))
      assert.are.equal("c", c:result(5))
      assert.is_false(a:cancel()) -- finished
      assert.is_false(c:cancel())
      assert.is_false(a:cancelled())
      p:shutdown()
      -- b never ran
      assert.are.equal("c ran", ran:get(0))
      assert.is_true(ran:empty())
    end)

    it("result() and exception() of a cancelled future raise is_cancelled", function()
      local p = Pool{max_workers = 1}
      local started, gate = loom.Queue(), Gate()
      submit(p, blocked, started, gate, "a")
      local b = submit(p, function() return "b" end)
      started:get(5)
      assert.is_true(b:cancel())
      local e = err_of(b.result, b, 5)
      assert.is_true(loom.is_cancelled(e))
      assert.is_false(loom.is_timeout(e))
      assert.are.equal("future was cancelled", tostring(e))
      assert.is_true(loom.is_cancelled(err_of(b.exception, b, 5)))
      assert.is_true(loom.is_cancelled(err_of(b.result, b)))
      assert.is_true(loom.is_cancelled(err_of(b.result, b, 0)))
    end)
  end)

  describe("interrupt", function()
    local function check_interrupted(f)
      local e = err_of(f.result, f, 5)
      assert.is_true(loom.is_cancelled(e), tostring(e))
      assert.is_true(f:cancelled())
      assert.is_true(f:done())
      assert.is_false(f:running())
      assert.are.equal("cancelled", tostring(f):match(FUT))
    end

    -- the next task on the same (single) worker runs, blocking calls
    -- included: the interruption was for the previous task only
    local function after(started)
      started:put(loom.current_thread().name)
      loom.sleep(0.001)
      return loom.Event():wait(0.001), loom.current_thread().name
    end

    it("stops a task blocked in loom.sleep; the worker runs the next task", function()
      local p = Pool{max_workers = 1, thread_name_prefix = "int"}
      local started = loom.Queue()
      local f = submit(p, function(q) q:put("in") loom.sleep(10) return "slept" end, started)
      local nxt = submit(p, after, loom.Queue())
      assert.are.equal("in", started:get(5))
      local t0 = loom.now()
      assert.is_true(f:interrupt())
      check_interrupted(f)
      assert.are.same({n = 2, false, "int_0"}, pack(nxt:result(5)))
      assert.is_true(loom.now() - t0 < 5)
      assert.are.equal("loom.ThreadPoolExecutor(running, 1/1 workers, 0 queued)", tostring(p))
    end)

    it("stops a task blocked in ev:wait and in q:get", function()
      local p = Pool{max_workers = 1, thread_name_prefix = "int"}
      local started, never = loom.Queue(), Gate()
      local f = submit(p, function(q, ev) q:put("in") return ev:wait(10) end, started, never)
      assert.are.equal("in", started:get(5))
      assert.is_true(f:interrupt())
      check_interrupted(f)
      local g = submit(p, function(q, empty) q:put("in") return empty:get(10) end, started, loom.Queue())
      assert.are.equal("in", started:get(5))
      assert.is_true(g:interrupt())
      check_interrupted(g)
      assert.are.same({n = 2, false, "int_0"}, pack(submit(p, after, started):result(5)))
    end)

    it("with cancel_hook=true stops a pure-Lua loop", function()
      local p = Pool{max_workers = 1, cancel_hook = true, thread_name_prefix = "hook"}
      local started = loom.Queue()
      local f = submit(p, function(q)
        q:put("in")
        local x, deadline = 0, loom.now() + 10
        while loom.now() < deadline do
          for _ = 1, 1000 do x = x + 1 end
        end
        return "never interrupted"
      end, started)
      assert.are.equal("in", started:get(5))
      assert.is_true(f:interrupt())
      check_interrupted(f)
      assert.are.same({n = 2, false, "hook_0"}, pack(submit(p, after, started):result(5)))
    end)

    it("a task that catches the interruption finishes normally with its values", function()
      local p = Pool{max_workers = 1}
      local started = loom.Queue()
      local f = submit(p, function(q)
        q:put("in")
        local ok, e = pcall(loom.sleep, 10)
        return "caught", ok, loom.is_cancelled(e)
      end, started)
      assert.are.equal("in", started:get(5))
      assert.is_true(f:interrupt())
      assert.are.same({n = 3, "caught", false, true}, pack(f:result(5)))
      assert.is_false(f:cancelled())
      assert.are.equal("finished, ok", tostring(f):match(FUT))
      assert.matches("^ThreadPoolExecutor%-%d+_0$", select(2, submit(p, after, started):result(5)))
    end)

    it("on a pending future is cancel(); on a finished one returns false", function()
      local p = Pool{max_workers = 1}
      local started, gate = loom.Queue(), Gate()
      local a = submit(p, blocked, started, gate, "a")
      local b = submit(p, function() return "b" end)
      started:get(5)
      assert.is_true(b:interrupt())
      assert.is_true(b:cancelled())
      assert.is_true(b:interrupt()) -- already cancelled
      gate:set()
      assert.are.equal("a", a:result(5))
      assert.is_false(a:interrupt())
      assert.is_false(a:cancelled())
      assert.are.equal("a", a:result(5))
    end)
  end)

  describe("map", function()
    it("yields i, result in input order whatever the order of completion (SEMANTICS 21)", function()
      local p = Pool{max_workers = 3}
      local last_done = Gate()
      -- item 1 finishes only after item 3 did
      local function fn(x)
        if x == 1 then last_done:wait(10) end
        if x == 3 then last_done:set() end
        return x * 10
      end
      local out = {}
      for i, r in p:map(check_env(fn), {1, 2, 3}, {chunksize = 1}) do
        out[#out + 1] = {i, r}
      end
      assert.are.same({{1, 10}, {2, 20}, {3, 30}}, out)
    end)

    it("yields every result of an item, nils included", function()
      local p = Pool{max_workers = 2}
      local function fn(x)
        if x == 2 then return end
        if x == 3 then return x end
        return x, nil, x * 10, nil
      end
      local out = {}
      local step, s, c, closer = p:map(check_env(fn), {1, 2, 3, 4}, {chunksize = 2})
      while true do
        local r = pack(step(s, c))
        if r[1] == nil then break end
        out[#out + 1] = r
      end
      assert.is_nil((step(s, c))) -- and stays ended
      local _ <close> = closer
      assert.are.same({{n = 5, 1, 1, nil, 10, nil}, {n = 1, 2}, {n = 2, 3, 3},
                       {n = 5, 4, 4, nil, 40, nil}}, out)
    end)

    it("an empty table yields nothing; an iterator function is read to its end", function()
      local p = Pool{max_workers = 2}
      local n = 0
      for _ in p:map(function(x) return x end, {}) do n = n + 1 end
      assert.are.equal(0, n)
      local k = 0
      local function five() k = k + 1; if k <= 5 then return k end end
      local out = {}
      for i, r in p:map(function(x) return -x end, five) do out[i] = r end
      assert.are.same({-1, -2, -3, -4, -5}, out)
    end)

    it("re-raises a task's error at its item, after the earlier items", function()
      local p = Pool{max_workers = 2, thread_name_prefix = "map"}
      for _, cs in ipairs{1, 3, 20} do
        local got = {}
        local ok, e = pcall(function()
          for i, r in p:map(function(x)
            if x == 6 then error("bad item " .. x) end
            return x * 2
          end, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, {chunksize = cs}) do
            got[#got + 1] = {i, r}
          end
        end)
        assert.is_false(ok)
        assert.are.same({{1, 2}, {2, 4}, {3, 6}, {4, 8}, {5, 10}}, got)
        assert.are.equal("string", type(e))
        assert.matches("^[^\n]*pool_spec%.lua:%d+: bad item 6\n%(in thread 'map_%d'%) stack traceback:", e)
      end
    end)

    it("re-raises a table error as the same table", function()
      local p = Pool{max_workers = 2}
      local got = {}
      local ok, e = pcall(function()
        for i in p:map(function(x)
          if x == 3 then error({item = x, why = "odd"}) end
          return x
        end, {1, 2, 3, 4}, {chunksize = 1}) do
          got[#got + 1] = i
        end
      end)
      assert.is_false(ok)
      assert.are.same({1, 2}, got)
      assert.are.same({item = 3, why = "odd"}, e)
    end)

    it("honours its timeout for the whole iteration (SEMANTICS 21)", function()
      local p = Pool{max_workers = 2}
      local gate = Gate()
      local got = {}
      local t0 = loom.now()
      local ok, e = pcall(function()
        for _, r in p:map(function(x)
          if x == 2 then gate:wait(10) end
          return x
        end, {1, 2, 3}, {timeout = 0.2, chunksize = 1}) do
          got[#got + 1] = r
        end
      end)
      local elapsed = loom.now() - t0
      assert.is_false(ok)
      assert.is_true(loom.is_timeout(e), tostring(e))
      assert.are.same({1}, got)
      assert.is_true(elapsed >= 0.15 and elapsed < 5, "elapsed " .. elapsed)
    end)

    it("chunksize sets how many items go in one task", function()
      local p = Pool{max_workers = 1}
      local started, gate = loom.Queue(), Gate()
      local a = submit(p, blocked, started, gate, "a")
      started:get(5)
      local items = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
      local double = check_env(function(x) return 2 * x end)
      -- 10 items in chunks of 3: 4 tasks (within the default buffersize 4)
      local it1 = table.pack(p:map(double, items, {chunksize = 3}))
      assert.are.equal("loom.ThreadPoolExecutor(running, 1/1 workers, 4 queued)", tostring(p))
      -- in chunks of 5: 2 more tasks
      local it2 = table.pack(p:map(double, items, {chunksize = 5}))
      assert.are.equal("loom.ThreadPoolExecutor(running, 1/1 workers, 6 queued)", tostring(p))
      -- buffersize 2 with chunks of 1: only 2 tasks until results are taken
      local it3 = table.pack(p:map(double, items, {chunksize = 1, buffersize = 2}))
      assert.are.equal("loom.ThreadPoolExecutor(running, 1/1 workers, 8 queued)", tostring(p))
      gate:set()
      assert.are.equal("a", a:result(5))
      for _, it in ipairs{it1, it2, it3} do
        local out = {}
        for i, r in table.unpack(it, 1, it.n) do out[i] = r end
        assert.are.same({2, 4, 6, 8, 10, 12, 14, 16, 18, 20}, out)
      end
    end)

    it("pulls from an endless iterator only as results are taken (buffersize)", function()
      local p = Pool{max_workers = 2}
      local pulled = 0
      local function endless() pulled = pulled + 1; return pulled end
      local double = check_env(function(x) return 2 * x end)
      local n = 0
      for i, r in p:map(double, endless, {chunksize = 1, buffersize = 3}) do
        n = n + 1
        assert.are.equal(n, i)
        assert.are.equal(2 * i, r)
        assert.are.equal(i + 3, pulled)
        if i == 25 then break end
      end
      assert.are.equal(25, n)
      assert.are.equal(28, pulled)
    end)

    it("default chunks of an iterator grow 1, 2, 4, ... and stay bounded", function()
      local p = Pool{max_workers = 2}
      local pulled = 0
      local function endless() pulled = pulled + 1; return pulled end
      local expect = {7, 15, 15, 31, 31, 31, 31, 63, 63, 63}
      for i, r in p:map(check_env(function(x) return x end), endless, {buffersize = 2}) do
        assert.are.equal(i, r)
        assert.are.equal(expect[i], pulled, "after item " .. i)
        if i == 10 then break end
      end
      assert.are.equal(63, pulled)
    end)

    it("break cancels the chunks that have not started", function()
      local p = Pool{max_workers = 1}
      local started, gate = loom.Queue(), Gate()
      local function fn(x)
        if x == 1 then return 1 end
        started:put(x)
        gate:wait(10)
        return x
      end
      -- leaving the loop after one item is the point
      for i in p:map(check_env(fn), {1, 2, 3, 4, 5, 6}, {chunksize = 1, buffersize = 10}) do -- luacheck: ignore 512
        assert.are.equal(1, i)
        assert.are.equal(2, started:get(5)) -- item 2 runs, 3..6 wait
        break
      end
      gate:set()
      p:shutdown()
      assert.is_true(started:empty(), "a chunk ran after the loop was left")
    end)

    it("an error in the loop body cancels the chunks that have not started", function()
      local p = Pool{max_workers = 1}
      local started, gate = loom.Queue(), Gate()
      local function fn(x)
        if x == 1 then return 1 end
        started:put(x)
        gate:wait(10)
        return x
      end
      local ok, e = pcall(function()
        for _ in p:map(check_env(fn), {1, 2, 3, 4, 5}, {chunksize = 1}) do
          assert.are.equal(2, started:get(5))
          error({"leaving"})
        end
      end)
      assert.is_false(ok)
      assert.are.same({"leaving"}, e)
      gate:set()
      p:shutdown()
      assert.is_true(started:empty(), "a chunk ran after the loop was left")
    end)

    it("misuse raises", function()
      local p = Pool{max_workers = 1}
      local id = function(x) return x end
      assert.matches("function expected", err_of(p.map, p, 42, {}), 1, true)
      assert.matches("table or function expected", err_of(p.map, p, id, 42), 1, true)
      assert.matches("table expected", err_of(p.map, p, id, {}, 5), 1, true)
      assert.matches("field 'chunksize' must be a positive integer",
        err_of(p.map, p, id, {}, {chunksize = 0}), 1, true)
      assert.matches("field 'buffersize' must be a positive integer",
        err_of(p.map, p, id, {}, {buffersize = 1.5}), 1, true)
      assert.matches("field 'timeout' must be a non-negative number",
        err_of(p.map, p, id, {}, {timeout = -1}), 1, true)
      p:shutdown()
      assert.is_true(loom.is_shutdown(err_of(p.map, p, id, {1})))
    end)

    it("runs 1000 items on 4 workers in order", function()
      local p = Pool{max_workers = 4}
      local items = {}
      for i = 1, 1000 do items[i] = i end
      local n, sum = 0, 0
      for i, r in p:map(check_env(function(x) return x * x end), items) do
        n = n + 1
        assert.are.equal(n, i)
        assert.are.equal(i * i, r)
        sum = sum + r
      end
      assert.are.equal(1000, n)
      assert.are.equal(1000 * 1001 * 2001 // 6, sum)
    end)
  end)

  describe("shutdown", function()
    it("wait=true returns once running and queued work is done", function()
      local p = Pool{max_workers = 1}
      local fs = {
        submit(p, function() loom.sleep(0.05) return 1 end),
        submit(p, function() return 2 end),
        submit(p, function() return 3 end),
      }
      p:shutdown()
      for i, f in ipairs(fs) do
        assert.is_true(f:done())
        assert.is_false(f:cancelled())
        assert.are.equal(i, f:result(0))
      end
      assert.are.equal("loom.ThreadPoolExecutor(shut down, 0/1 workers, 0 queued)", tostring(p))
      p:shutdown() -- again: nothing to do
      p:shutdown{wait = false}
    end)

    it("submit after shutdown raises is_shutdown (SEMANTICS 18)", function()
      local p = Pool{max_workers = 1}
      p:shutdown()
      local e = err_of(p.submit, p, function() end)
      assert.is_true(loom.is_shutdown(e))
      assert.is_false(loom.is_broken(e))
      assert.are.equal("cannot schedule new futures after shutdown", tostring(e))
      local p2 = Pool{max_workers = 1}
      p2:shutdown{wait = false}
      assert.is_true(loom.is_shutdown(err_of(p2.submit, p2, function() end)))
    end)

    it("cancel_futures=true cancels queued work and lets running work finish (SEMANTICS 21)", function()
      local p = Pool{max_workers = 1}
      local started, gate = loom.Queue(), Gate()
      local a = submit(p, blocked, started, gate, "a")
      local b = submit(p, function() return "b" end)
      local c = submit(p, function() return "c" end)
      started:get(5)
      -- b's cancellation opens the gate, from inside shutdown
      b:add_done_callback(function() gate:set() end)
      p:shutdown{cancel_futures = true}
      assert.are.equal("a", a:result(0))
      assert.is_true(b:cancelled())
      assert.is_true(c:cancelled())
      assert.is_true(loom.is_cancelled(err_of(c.result, c, 0)))
      assert.are.equal("loom.ThreadPoolExecutor(shut down, 0/1 workers, 0 queued)", tostring(p))
    end)

    it("wait=false returns at once; queued work still runs", function()
      local p = Pool{max_workers = 1}
      local started, gate = loom.Queue(), Gate()
      local a = submit(p, blocked, started, gate, "a")
      local b = submit(p, function() return "b" end)
      started:get(5)
      local t0 = loom.now()
      p:shutdown{wait = false}
      assert.is_true(loom.now() - t0 < 1)
      assert.is_true(a:running())
      assert.is_false(b:done())
      assert.matches("^loom%.ThreadPoolExecutor%(shut down, 1/1 workers, 1 queued%)$", tostring(p))
      assert.is_true(loom.is_shutdown(err_of(p.submit, p, function() end)))
      gate:set()
      assert.are.equal("a", a:result(5))
      assert.are.equal("b", b:result(5))
    end)

    it("interrupt=true interrupts running tasks; queued ones still run", function()
      local p = Pool{max_workers = 1}
      local started = loom.Queue()
      local a = submit(p, function(q) q:put("in") loom.sleep(10) return "slept" end, started)
      local b = submit(p, function() return "b" end)
      started:get(5)
      local t0 = loom.now()
      p:shutdown{interrupt = true}
      assert.is_true(loom.now() - t0 < 5)
      assert.is_true(a:cancelled())
      assert.is_true(loom.is_cancelled(err_of(a.result, a, 0)))
      assert.are.equal("b", b:result(0))
    end)

    it("a task cannot shut its own pool down with wait=true; wait=false works", function()
      local p = Pool{max_workers = 1}
      local f = submit(p, function(pool)
        local ok, e = pcall(pool.shutdown, pool)
        local ok2 = pcall(pool.shutdown, pool, {wait = false})
        return ok, tostring(e), ok2
      end, p)
      local ok, e, ok2 = f:result(5)
      assert.is_false(ok)
      assert.matches("a task cannot shut down its own pool with wait=true (it would wait for itself)", e, 1, true)
      assert.is_true(ok2)
      assert.is_true(loom.is_shutdown(err_of(p.submit, p, function() end)))
    end)

    it("a <close> variable shuts the pool down with wait=true", function()
      local f, keep
      do
        local p <close> = loom.ThreadPoolExecutor{max_workers = 1}
        keep = p
        f = submit(p, function() loom.sleep(0.05) return "done" end)
      end
      assert.is_true(f:done())
      assert.are.equal("done", f:result(0))
      assert.are.equal("loom.ThreadPoolExecutor(shut down, 0/1 workers, 0 queued)", tostring(keep))
      assert.is_true(loom.is_shutdown(err_of(keep.submit, keep, function() end)))
    end)

    it("bad options raise", function()
      local p = Pool{max_workers = 1}
      assert.matches("table expected", err_of(p.shutdown, p, "now"), 1, true)
      assert.matches("field 'wait' must be a boolean", err_of(p.shutdown, p, {wait = 1}), 1, true)
      assert.matches("field 'cancel_futures' must be a boolean",
        err_of(p.shutdown, p, {cancel_futures = "yes"}), 1, true)
    end)

    it("dropping every reference shuts down without waiting; queued work still runs", function()
      local started, gate = loom.Queue(), Gate()
      local function make()
        local p = loom.ThreadPoolExecutor{max_workers = 1}
        return submit(p, blocked, started, gate, "a"),
               submit(p, function() return "b", loom.current_thread() end)
      end
      local a, b = make()
      started:get(5)
      collectgarbage()
      collectgarbage()
      gate:set()
      assert.are.equal("a", a:result(5))
      local v, worker = b:result(5)
      assert.are.equal("b", v)
      -- the pool was shut down: its worker ends once the queue is empty
      assert.is_true(worker:join(5))
    end)
  end)

  describe("at exit", function()
    it("work queued on a pool never shut down is finished before the process ends", function()
      local out, status = helpers.run_lua([[
        local loom = require "loom"
        local pool = loom.ThreadPoolExecutor{max_workers = 1}
        local gate = loom.Event()
        pool:submit(function(g) g:wait(10) io.stdout:write("task 1\n") end, gate)
        for i = 2, 5 do
          pool:submit(function(k) io.stdout:write("task " .. k .. "\n") end, i)
        end
        io.stdout:write("main done\n")
        io.stdout:flush()
        gate:set()
      ]], 60)
      assert.are.equal(0, status, out)
      assert.are.equal("main done\ntask 1\ntask 2\ntask 3\ntask 4\ntask 5\n", out)
    end)

    it("shutdown{wait=false} with a task blocked for ever still lets the process exit", function()
      local t0 = loom.now()
      local out, status = helpers.run_lua([[
        local loom = require "loom"
        local pool = loom.ThreadPoolExecutor{max_workers = 2}
        local started = loom.Queue()
        pool:submit(function(q) q:put(1) loom.Event():wait() end, started)
        pool:submit(function(q) q:put(2) while true do end end, started)
        started:get(10); started:get(10)
        pool:shutdown{wait = false}
        print("bye")
      ]], 60)
      local elapsed = loom.now() - t0
      assert.are.equal(0, status, out)
      assert.are.equal("bye\n", out)
      assert.is_true(elapsed < 20, "exit took " .. elapsed .. " s")
    end)

    it("a pool's results are collected by a script that exits right after", function()
      local out, status = helpers.run_lua([[
        local loom = require "loom"
        local pool = loom.ThreadPoolExecutor{max_workers = 4}
        local fs = {}
        for i = 1, 40 do fs[i] = pool:submit(function(x) return x * x end, i) end
        local sum = 0
        for i = 1, 40 do sum = sum + fs[i]:result(10) end
        print(sum)
      ]], 60)
      assert.are.equal(0, status, out)
      assert.are.equal("22140\n", out)
    end)
  end)

  describe("tasks using the pool and futures", function()
    it("a task may submit to its own pool and wait for that future", function()
      local p = Pool{max_workers = 2, thread_name_prefix = "nest"}
      local f = submit(p, function(pool)
        local inner = pool:submit(function() return "inner", loom.current_thread().name end)
        local v, where = inner:result(5)
        return v, where, loom.current_thread().name
      end, p)
      local v, inner_where, outer_where = f:result(5)
      assert.are.equal("inner", v)
      assert.are.same({"nest_0", "nest_1"}, {outer_where, inner_where})
    end)

    it("a task may return its own future, and raise it inside an error", function()
      local p = Pool{max_workers = 1}
      local box = loom.Queue()
      local f = submit(p, function(q) local me = q:get(5) return me, {me = me} end, box)
      box:put(f)
      local me, t = f:result(5)
      assert.is_true(rawequal(f, me))
      assert.is_true(rawequal(f, t.me))
      local g = submit(p, function(q) local mine = q:get(5) error({me = mine}) end, box)
      box:put(g)
      assert.is_true(rawequal(g, err_of(g.result, g, 5).me))
      f, g, me, t = nil, nil, nil, nil -- luacheck: ignore 311 (dropped before collecting)
      collectgarbage()
      collectgarbage()
    end)
  end)

  describe("races", function()
    it("interrupt() racing with the end of a task never reaches the next task", function()
      local p = Pool{max_workers = 1}
      local quick = function(i) return i end
      local next_task = function()
        local ok, e = pcall(loom.sleep, 0)
        local ok2 = pcall(loom.Event().wait, loom.Event(), 0)
        return ok and ok2 and "clean" or tostring(e)
      end
      for i = 1, 300 do
        local f = submit(p, quick, i)
        local g = submit(p, next_task)
        if i % 3 == 0 then f:result(5) end
        f:interrupt()
        assert.are.equal("clean", g:result(5))
        if f:cancelled() then
          assert.is_true(loom.is_cancelled(err_of(f.result, f, 5)))
        else
          assert.are.equal(i, f:result(5))
        end
      end
    end)

    it("a callback added while the future completes runs exactly once", function()
      local p = Pool{max_workers = 2}
      local q = loom.Queue()
      local fs = {}
      for i = 1, 300 do
        local f = submit(p, function(x) return x end, i)
        f:add_done_callback(function(fut) q:put(fut:result()) end)
        fs[i] = f
      end
      for i = 1, 300 do fs[i]:result(5) end
      local seen, n = {}, 0
      for _ = 1, 300 do
        local v = q:get(5)
        assert.is_nil(seen[v], "callback ran twice for " .. tostring(v))
        seen[v] = true
        n = n + 1
      end
      assert.are.equal(300, n)
      p:shutdown()
      assert.is_true(q:empty())
    end)

    it("cancel() racing with a worker starting the task: exactly one wins", function()
      local p = Pool{max_workers = 2}
      local ran = loom.Queue()
      local fs = {}
      for i = 1, 300 do
        fs[i] = submit(p, function(q, x) q:put(x) return x end, ran, i)
        if i % 2 == 0 then fs[i]:cancel() end
      end
      p:shutdown()
      local did = {}
      while not ran:empty() do did[ran:get(0)] = true end
      for i, f in ipairs(fs) do
        assert.is_true(f:done())
        if f:cancelled() then
          assert.is_nil(did[i], "a cancelled task ran: " .. i)
        else
          assert.is_true(did[i], "a task neither ran nor was cancelled: " .. i)
          assert.are.equal(i, f:result(0))
        end
      end
    end)
  end)

  describe("many tasks", function()
    it("1000 tasks on 4 workers: nothing lost or duplicated", function()
      local p = Pool{max_workers = 4, thread_name_prefix = "many"}
      local sink = loom.Queue()
      local closure = function(q, x) q:put(x) return x, loom.current_thread().name end
      local cached = globals(function(q, x) q:put(x) return x, require("loom").current_thread().name end)
      check_env(closure)
      local fs = {}
      for i = 1, 1000 do
        fs[i] = p:submit(i % 2 == 0 and closure or cached, sink, i)
      end
      local names = {}
      for i, f in ipairs(fs) do
        local v, name = f:result(30)
        assert.are.equal(i, v)
        names[name] = true
      end
      for name in pairs(names) do assert.matches("^many_[0-3]$", name) end
      local seen, n = {}, 0
      while true do
        local v = sink:get_nowait()
        if v == nil then break end
        assert.is_nil(seen[v], "duplicated " .. tostring(v))
        seen[v] = true
        n = n + 1
      end
      assert.are.equal(1000, n)
      assert.matches("^loom%.ThreadPoolExecutor%(running, [1-4]/4 workers, 0 queued%)$", tostring(p))
    end)
  end)
end)
