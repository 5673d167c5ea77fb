-- Futures beyond one result (csrc/future.c): done-callbacks and where they
-- run, futures crossing threads, loom.as_completed and loom.wait over
-- futures and threads (SEMANTICS 20 and 22). The executor itself is in
-- pool_spec.lua.
--
-- Ordering is done with loom.Event / loom.Queue, never with sleeps; every
-- wait has a timeout.
local loom = require "loom"
local helpers = require "helpers"

-- Functions defined here see busted's environment as _ENV: everything sent
-- to another thread reads only the locals bound here (they cross by name).
local pcall, error, tostring, rawequal, ipairs, coroutine, table =
      pcall, error, tostring, rawequal, ipairs, coroutine, table

local check_env = helpers.check_env

local pack, err_of = helpers.pack, helpers.err_of

local pools, gates, made = {}, {}, {}
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

local function submit(p, fn, ...) return p:submit(check_env(fn), ...) end
local function spawn(fn, ...) return helpers.spawn(check_env(fn), ...) end

-- a named thread, started, joined in after_each
local function named(name, fn, ...)
  local t = loom.Thread{target = check_env(fn), args = table.pack(...), name = name}
  made[#made + 1] = t
  t:start()
  return t
end

local function cleanup()
  for i, g in ipairs(gates) do g:set(); gates[i] = nil end
  for i, p in ipairs(pools) do
    p:shutdown{cancel_futures = true, interrupt = true}
    pools[i] = nil
  end
  for i, t in ipairs(made) do
    if not t:join(20) then t:cancel(); t:join(5) end
    made[i] = nil
  end
  helpers.join_all(20)
end

-- Tells `started` it runs, waits for `gate` (at most 10 s), returns value.
local function blocked(started, gate, value)
  started:put(loom.current_thread().name)
  if not gate:wait(10) then return "gate never opened" end
  return value
end

-- Waits for `gate` (at most 10 s), then returns value.
local function gated(gate, value)
  if not gate:wait(10) then return "gate never opened" end
  return value
end

-- the objects of a list, as indices into `all` (identity, not equality)
local function which(list, all)
  local out = {}
  for i, x in ipairs(list) do
    for k, y in ipairs(all) do
      if rawequal(x, y) then out[i] = k end
    end
  end
  return out
end

describe("futures", function()
  after_each(cleanup)

  describe("add_done_callback", function()
    it("added while pending runs once, in the worker that completes the future", function()
      local p = Pool{max_workers = 1, thread_name_prefix = "cbw"}
      local started, gate, q = loom.Queue(), Gate(), loom.Queue()
      local f = submit(p, blocked, started, gate, "value")
      started:get(5)
      f:add_done_callback(function(fut)
        q:put(loom.current_thread().name)
        q:put(fut:result())
        q:put(fut:done())
      end)
      gate:set()
      assert.are.equal("value", f:result(5))
      assert.are.equal("cbw_0", q:get(5))
      assert.are.equal("value", q:get(5))
      assert.is_true(q:get(5))
      p:shutdown()
      assert.is_true(q:empty(), "the callback ran more than once")
    end)

    it("added while pending is a copy: its upvalues are its own", function()
      local p = Pool{max_workers = 1}
      local started, gate, q = loom.Queue(), Gate(), loom.Queue()
      local f = submit(p, blocked, started, gate, 1)
      started:get(5)
      local count = 0
      f:add_done_callback(function() count = count + 1; q:put(count) end)
      gate:set()
      assert.are.equal(1, q:get(5))
      assert.are.equal(0, count)
    end)

    it("several run in the order they were added", function()
      local p = Pool{max_workers = 1}
      local started, gate, q = loom.Queue(), Gate(), loom.Queue()
      local f = submit(p, blocked, started, gate, 1)
      started:get(5)
      for i = 1, 5 do f:add_done_callback(function() q:put(i) end) end
      gate:set()
      for i = 1, 5 do assert.are.equal(i, q:get(5)) end
      p:shutdown()
      assert.is_true(q:empty())
    end)

    it("see a failed future's error", function()
      local p = Pool{max_workers = 1}
      local started, gate, q = loom.Queue(), Gate(), loom.Queue()
      local f = submit(p, function(s, g)
        s:put(1)
        g:wait(10)
        error({code = 7})
      end, started, gate)
      started:get(5)
      f:add_done_callback(function(fut) q:put(fut:exception()) end)
      gate:set()
      assert.are.same({code = 7}, q:get(5))
    end)

    it("added after completion runs at once, in the caller, as itself (SEMANTICS 20)", function()
      local p = Pool{max_workers = 1}
      local f = submit(p, function() return "v" end)
      assert.are.equal("v", f:result(5))
      local log = {}
      f:add_done_callback(function(g)
        log[#log + 1] = {loom.current_thread().name, rawequal(g, f), (g:result())}
      end)
      assert.are.same({{"MainThread", true, "v"}}, log)
      -- in another thread, at once in that thread
      local t = named("late-adder", function(fut)
        local seen = {}
        fut:add_done_callback(function() seen[1] = loom.current_thread().name end)
        return seen[1]
      end, f)
      assert.are.equal("late-adder", t:result(5))
    end)

    it("runs on cancel(), in the cancelling thread (SEMANTICS 20)", function()
      local p = Pool{max_workers = 1}
      local started, gate, q = loom.Queue(), Gate(), loom.Queue()
      submit(p, blocked, started, gate, "a")
      local b = submit(p, function() return "b" end)
      local c = submit(p, function() return "c" end)
      started:get(5)
      local report = function(fut) q:put(loom.current_thread().name) q:put(fut:cancelled()) end
      b:add_done_callback(report)
      c:add_done_callback(report)
      local t = named("canceller", function(fut) return fut:cancel() end, b)
      assert.is_true(t:result(5))
      assert.are.equal("canceller", q:get(5))
      assert.is_true(q:get(5))
      -- cancel() in this thread: the callback has run when cancel returns
      assert.is_true(c:cancel())
      assert.are.equal("MainThread", q:get(0))
      assert.is_true(q:get(0))
      -- cancelling again runs nothing again
      assert.is_true(c:cancel())
      assert.is_true(b:cancel())
      assert.is_true(q:empty())
    end)

    it("runs on shutdown{cancel_futures=true}, in the thread that shuts down", function()
      local p = Pool{max_workers = 1}
      local started, gate, q = loom.Queue(), Gate(), loom.Queue()
      submit(p, blocked, started, gate, "a")
      local b = submit(p, function() return "b" end)
      started:get(5)
      b:add_done_callback(function(fut) q:put(loom.current_thread().name) q:put(fut:cancelled()) end)
      p:shutdown{cancel_futures = true, wait = false}
      assert.are.equal("MainThread", q:get(0))
      assert.is_true(q:get(0))
    end)

    it("runs in the worker when an interrupted task ends cancelled", function()
      local p = Pool{max_workers = 1, thread_name_prefix = "intcb"}
      local started, q = loom.Queue(), loom.Queue()
      local f = submit(p, function(s) s:put(1) loom.sleep(10) end, started)
      started:get(5)
      f:add_done_callback(function(fut) q:put(loom.current_thread().name) q:put(fut:cancelled()) end)
      assert.is_true(f:interrupt())
      assert.are.equal("intcb_0", q:get(5))
      assert.is_true(q:get(5))
    end)

    it("may wait for another future (no lock is held while it runs)", function()
      local p = Pool{max_workers = 2}
      local started, g1, g2, q = loom.Queue(), Gate(), Gate(), loom.Queue()
      local f1 = submit(p, blocked, started, g1, 1)
      local f2 = submit(p, blocked, started, g2, 2)
      started:get(5); started:get(5)
      f1:add_done_callback(function() q:put(f2:result(5)) end)
      f2:add_done_callback(function() q:put(f1:result(5) + 10) end)
      g1:set()
      assert.are.equal(1, f1:result(5))
      g2:set()
      local got = {q:get(5), q:get(5)}
      table.sort(got)
      assert.are.same({2, 11}, got)
    end)

    it("misuse raises: not a function, a callback that cannot be copied", function()
      local p = Pool{max_workers = 1}
      local started, gate = loom.Queue(), Gate()
      local f = submit(p, blocked, started, gate, 1)
      started:get(5)
      err_of(f.add_done_callback, f, 42)
      err_of(f.add_done_callback, f)
      local co = coroutine.create(function() end)
      assert.matches("cannot copy a coroutine",
        err_of(f.add_done_callback, f, function() return co end), 1, true)
      gate:set()
      assert.are.equal(1, f:result(5))
    end)

    it("an error in a callback is reported on stderr and breaks neither completer nor pool (SEMANTICS 20)", function()
      local out, status = helpers.run_lua([[
        local loom = require "loom"
        local pool = loom.ThreadPoolExecutor{max_workers = 1, thread_name_prefix = "cbpool"}
        local gate = loom.Event()
        local f = pool:submit(function(g) g:wait(10) return 1 end, gate)
        f:add_done_callback(function() error("cb boom before") end)
        gate:set()
        io.stdout:write("result ", f:result(10), "\n")
        io.stdout:write("next ", pool:submit(function() return loom.current_thread().name end):result(10), "\n")
        f:add_done_callback(function() error("cb boom after") end)
        io.stdout:write("still here\n")
        local gate2 = loom.Event()
        local a = pool:submit(function(g) g:wait(10) return "a" end, gate2)
        local b = pool:submit(function() return "b" end)
        b:add_done_callback(function() error("cb boom cancel") end)
        io.stdout:write("cancel ", tostring(b:cancel()), "\n")
        gate2:set()
        io.stdout:write("a ", a:result(10), "\n")
        pool:shutdown()
        io.stdout:write("end\n")
      ]], 60)
      assert.are.equal(0, status, out)
      local _, n = out:gsub("exception calling callback for loom.Future", "")
      assert.are.equal(3, n, out)
      assert.matches("exception calling callback for loom.Future:\n[^\n]*cb boom before", out)
      assert.matches("exception calling callback for loom.Future:\n[^\n]*cb boom after", out)
      assert.matches("exception calling callback for loom.Future:\n[^\n]*cb boom cancel", out)
      for _, line in ipairs{"result 1\n", "next cbpool_0\n", "still here\n", "cancel true\n",
                            "a a\n", "end\n"} do
        assert.matches(line, out, 1, true)
      end
    end)
  end)

  describe("across threads", function()
    it("a future passed to a loom.thread is waited there", function()
      local p = Pool{max_workers = 1}
      local started, gate = loom.Queue(), Gate()
      local f = submit(p, function(s, g) s:put(1) g:wait(10) return 1, nil, "three" end, started, gate)
      local t = spawn(function(fut) return fut:result(5) end, f)
      started:get(5)
      gate:set()
      assert.are.same({n = 3, 1, nil, "three"}, pack(t:result(10)))
    end)

    it("another thread sees states, times out, cannot cancel a running one", function()
      local p = Pool{max_workers = 1}
      local started, gate = loom.Queue(), Gate()
      local f = submit(p, blocked, started, gate, "a")
      started:get(5)
      local t = spawn(function(fut)
        local ok, e = pcall(fut.result, fut, 0.01)
        return ok, loom.is_timeout(e), fut:running(), fut:done(), fut:cancel()
      end, f)
      assert.are.same({n = 5, false, true, true, false, false}, pack(t:result(10)))
      gate:set()
      assert.are.equal("a", f:result(5))
    end)

    it("errors cross to the waiting thread: tables as tables, strings with where they ran", function()
      local p = Pool{max_workers = 1, thread_name_prefix = "xerr"}
      local ft = submit(p, function() error({code = 1}) end)
      local fs = submit(p, function() error("text") end)
      local t = spawn(function(a, b)
        local _, e1 = pcall(a.result, a, 5)
        local _, e2 = pcall(b.result, b, 5)
        return e1, e2
      end, ft, fs)
      local e1, e2 = t:result(10)
      assert.are.same({code = 1}, e1)
      assert.matches("^[^\n]*future_spec%.lua:%d+: text\n%(in thread 'xerr_0'%) stack traceback:", e2)
    end)

    it("a future keeps its identity through queues and threads", function()
      local p = Pool{max_workers = 1}
      local f = submit(p, function() return 1 end)
      local q = loom.Queue()
      q:put(f)
      assert.is_true(rawequal(f, q:get(0)))
      local t = spawn(function(fut) return fut end, f)
      assert.is_true(rawequal(f, t:result(10)))
      assert.are.equal(tostring(f), tostring(t:result(10)))
    end)

    it("a thread blocked in result() wakes and raises when the thread is cancelled", function()
      local p = Pool{max_workers = 1}
      local started, gate = loom.Queue(), Gate()
      local f = submit(p, blocked, started, gate, "a")
      started:get(5)
      local t = spawn(function(fut, s)
        s:put("waiting")
        local ok, e = pcall(fut.result, fut, 10)
        return ok, loom.is_cancelled(e)
      end, f, started)
      assert.are.equal("waiting", started:get(5))
      t:cancel()
      assert.are.same({n = 2, false, true}, pack(t:result(10)))
      assert.is_true(f:running()) -- the task itself is untouched
      gate:set()
      assert.are.equal("a", f:result(5))
    end)
  end)

  describe("as_completed", function()
    it("yields in the order of completion, controlled by events", function()
      local p = Pool{max_workers = 3}
      local ga, gb, gc = Gate(), Gate(), Gate()
      local fa = submit(p, gated, ga, "a")
      local fb = submit(p, gated, gb, "b")
      local fc = submit(p, gated, gc, "c")
      local next_gate = {c = ga, a = gb}
      local order = {}
      gc:set()
      for f in loom.as_completed({fa, fb, fc}, 10) do
        local v = f:result(0)
        order[#order + 1] = v
        assert.is_true(rawequal(f, ({a = fa, b = fb, c = fc})[v]))
        if next_gate[v] then next_gate[v]:set() end
      end
      assert.are.same({"c", "a", "b"}, order)
    end)

    it("yields the futures already done first", function()
      local p = Pool{max_workers = 2}
      local gate = Gate()
      local pending = submit(p, gated, gate, "late")
      local d1 = submit(p, function() return 1 end)
      local d2 = submit(p, function() return 2 end)
      d1:result(5); d2:result(5)
      local got = {}
      for f in loom.as_completed({pending, d1, d2}, 10) do
        got[#got + 1] = f
        if #got == 2 then gate:set() end
      end
      local idx = which(got, {pending, d1, d2})
      assert.are.equal(3, #idx)
      assert.are.equal(1, idx[3])
      table.sort(idx, function(x, y) return x > y end)
      assert.are.same({3, 2, 1}, idx)
    end)

    it("raises is_timeout 'N (of M) futures unfinished' after yielding the finished (SEMANTICS 22)", function()
      local p = Pool{max_workers = 3}
      local gate = Gate()
      local d = submit(p, function() return "d" end)
      local b1 = submit(p, gated, gate, 1)
      local b2 = submit(p, gated, gate, 2)
      d:result(5)
      local got = {}
      local t0 = loom.now()
      local ok, e = pcall(function()
        for f in loom.as_completed({b1, d, b2}, 0.1) do got[#got + 1] = f end
      end)
      local elapsed = loom.now() - t0
      assert.is_false(ok)
      assert.is_true(loom.is_timeout(e), tostring(e))
      assert.are.equal("2 (of 3) futures unfinished", tostring(e))
      assert.are.same({2}, which(got, {b1, d, b2}))
      assert.is_true(elapsed >= 0.08 and elapsed < 5, "elapsed " .. elapsed)
    end)

    it("yields a future given twice once, and counts it once (SEMANTICS 22)", function()
      local p = Pool{max_workers = 2}
      local gate = Gate()
      local a = submit(p, function() return "a" end)
      local b = submit(p, function() return "b" end)
      local n = 0
      for _ in loom.as_completed({a, b, a, a, b}, 10) do n = n + 1 end
      assert.are.equal(2, n)
      local blocked_one = submit(p, gated, gate, "x")
      local e = err_of(function()
        for _ in loom.as_completed({a, blocked_one, blocked_one, a}, 0.05) do end
      end)
      assert.are.equal("1 (of 2) futures unfinished", tostring(e))
    end)

    it("takes loom threads mixed with futures", function()
      local p = Pool{max_workers = 1}
      local gt, gf = Gate(), Gate()
      local t = spawn(gated, gt, "thread")
      local f = submit(p, gated, gf, "future")
      local bad = spawn(function() error("thread failed") end)
      bad:join(10)
      local order = {}
      -- bad is done already; then t, then f
      for x in loom.as_completed({f, t, bad}, 10) do
        order[#order + 1] = x
        if rawequal(x, bad) then gt:set() end
        if rawequal(x, t) then gf:set() end
      end
      assert.are.same({3, 2, 1}, which(order, {f, t, bad}))
      assert.are.equal("thread", t:result(0))
      assert.are.equal("future", f:result(0))
      assert.matches("thread failed", err_of(bad.result, bad, 0), 1, true)
    end)

    it("an empty list yields nothing; timeout 0 yields what is done", function()
      local n = 0
      for _ in loom.as_completed({}) do n = n + 1 end
      for _ in loom.as_completed({}, 0) do n = n + 1 end
      assert.are.equal(0, n)
      local p = Pool{max_workers = 1}
      local a = submit(p, function() return 1 end)
      a:result(5)
      for _ in loom.as_completed({a}, 0) do n = n + 1 end
      assert.are.equal(1, n)
    end)

    it("cancelled futures count as completed", function()
      local p = Pool{max_workers = 1}
      local started, gate = loom.Queue(), Gate()
      local a = submit(p, blocked, started, gate, "a")
      local b = submit(p, function() return "b" end)
      started:get(5)
      b:cancel()
      local got = {}
      for f in loom.as_completed({a, b}, 10) do
        got[#got + 1] = f
        gate:set()
      end
      assert.are.same({2, 1}, which(got, {a, b}))
    end)

    it("misuse raises", function()
      local f = submit(Pool{max_workers = 1}, function() end)
      assert.matches("item 2 is not a loom.Future or loom.Thread: number",
        err_of(loom.as_completed, {f, 5}), 1, true)
      err_of(loom.as_completed, 42)
      err_of(loom.as_completed, {}, -1)
    end)

    it("a thread blocked in as_completed wakes and raises when cancelled", function()
      local p = Pool{max_workers = 1}
      local started, gate = loom.Queue(), Gate()
      local f = submit(p, blocked, started, gate, "a")
      started:get(5)
      local t = spawn(function(fut, s)
        s:put("waiting")
        local ok, e = pcall(function() for _ in loom.as_completed({fut}, 10) do end end)
        return ok, loom.is_cancelled(e)
      end, f, started)
      assert.are.equal("waiting", started:get(5))
      t:cancel()
      assert.are.same({n = 2, false, true}, pack(t:result(10)))
    end)
  end)

  describe("wait", function()
    it("has the return_when constants", function()
      assert.are.equal("FIRST_COMPLETED", loom.FIRST_COMPLETED)
      assert.are.equal("FIRST_EXCEPTION", loom.FIRST_EXCEPTION)
      assert.are.equal("ALL_COMPLETED", loom.ALL_COMPLETED)
    end)

    it("ALL_COMPLETED (the default) returns every future, in input order", function()
      local p = Pool{max_workers = 3}
      local fs = {}
      for i = 1, 6 do fs[i] = submit(p, function(x) return x end, i) end
      local done, not_done = loom.wait(fs)
      assert.are.same({1, 2, 3, 4, 5, 6}, which(done, fs))
      assert.are.same({}, not_done)
      local done2, not_done2 = loom.wait(fs, {return_when = loom.ALL_COMPLETED, timeout = 5})
      assert.are.same({1, 2, 3, 4, 5, 6}, which(done2, fs))
      assert.are.same({}, not_done2)
    end)

    it("returns what is done so far on timeout", function()
      local p = Pool{max_workers = 2}
      local gate = Gate()
      local a = submit(p, gated, gate, "a")
      local b = submit(p, function() return "b" end)
      b:result(5)
      local t0 = loom.now()
      local done, not_done = loom.wait({a, b}, {timeout = 0.05})
      local elapsed = loom.now() - t0
      assert.are.same({2}, which(done, {a, b}))
      assert.are.same({1}, which(not_done, {a, b}))
      assert.is_true(elapsed >= 0.04 and elapsed < 5, "elapsed " .. elapsed)
      done, not_done = loom.wait({a, b}, {timeout = 0})
      assert.are.same({2}, which(done, {a, b}))
      assert.are.same({1}, which(not_done, {a, b}))
    end)

    it("FIRST_COMPLETED returns as soon as one is done", function()
      local p = Pool{max_workers = 3}
      local ga, gb, gc = Gate(), Gate(), Gate()
      local a = submit(p, gated, ga, "a")
      local b = submit(p, gated, gb, "b")
      local c = submit(p, gated, gc, "c")
      local opener = spawn(function(g) g:set() end, gb)
      local done, not_done = loom.wait({a, b, c}, {return_when = loom.FIRST_COMPLETED, timeout = 10})
      opener:join(10)
      assert.are.same({2}, which(done, {a, b, c}))
      assert.are.same({1, 3}, which(not_done, {a, b, c}))
      -- with one already done it returns at once
      done, not_done = loom.wait({a, b, c}, {return_when = "FIRST_COMPLETED"})
      assert.are.same({2}, which(done, {a, b, c}))
      assert.are.same({1, 3}, which(not_done, {a, b, c}))
    end)

    it("FIRST_EXCEPTION returns when one fails", function()
      local p = Pool{max_workers = 3}
      local ga, gb = Gate(), Gate()
      local a = submit(p, gated, ga, "a")
      local b = submit(p, function(g) g:wait(10) error("b failed") end, gb)
      local c = submit(p, function() return "c" end)
      c:result(5)
      gb:set()
      local done, not_done = loom.wait({a, b, c}, {return_when = loom.FIRST_EXCEPTION, timeout = 10})
      assert.are.same({2, 3}, which(done, {a, b, c}))
      assert.are.same({1}, which(not_done, {a, b, c}))
      assert.matches("b failed", b:exception(0), 1, true)
    end)

    it("FIRST_EXCEPTION without a failure waits for all; a cancelled future is no failure", function()
      local p = Pool{max_workers = 2}
      local fs = {}
      for i = 1, 4 do fs[i] = submit(p, function(x) return x end, i) end
      local done, not_done = loom.wait(fs, {return_when = "FIRST_EXCEPTION", timeout = 10})
      assert.are.same({1, 2, 3, 4}, which(done, fs))
      assert.are.same({}, not_done)

      local p1 = Pool{max_workers = 1}
      local started, gate = loom.Queue(), Gate()
      local a = submit(p1, blocked, started, gate, "a")
      local x = submit(p1, function() return "x" end)
      started:get(5)
      assert.is_true(x:cancel())
      local t0 = loom.now()
      done, not_done = loom.wait({a, x}, {return_when = "FIRST_EXCEPTION", timeout = 0.05})
      assert.is_true(loom.now() - t0 >= 0.04, "returned before the timeout")
      assert.are.same({2}, which(done, {a, x}))
      assert.are.same({1}, which(not_done, {a, x}))
    end)

    it("takes threads mixed with futures; a thread that raised is an exception", function()
      local p = Pool{max_workers = 1}
      local gate = Gate()
      local a = submit(p, gated, gate, "a")
      local bad = spawn(function() error("thread failed") end)
      local good = spawn(function() return "ok" end)
      good:join(10)
      local done, not_done = loom.wait({a, bad, good}, {return_when = "FIRST_EXCEPTION", timeout = 10})
      assert.are.same({2, 3}, which(done, {a, bad, good}))
      assert.are.same({1}, which(not_done, {a, bad, good}))
      err_of(bad.result, bad, 0) -- collected
    end)

    it("drops duplicates", function()
      local p = Pool{max_workers = 2}
      local gate = Gate()
      local a = submit(p, function() return "a" end)
      local b = submit(p, gated, gate, "b")
      a:result(5)
      local done, not_done = loom.wait({a, b, a, b, a}, {timeout = 0})
      assert.are.equal(1, #done)
      assert.are.equal(1, #not_done)
      assert.is_true(rawequal(a, done[1]))
      assert.is_true(rawequal(b, not_done[1]))
    end)

    it("an empty list returns two empty lists; misuse raises", function()
      local done, not_done = loom.wait({})
      assert.are.same({}, done)
      assert.are.same({}, not_done)
      local p = Pool{max_workers = 1}
      local a = submit(p, function() return 1 end)
      err_of(loom.wait, {a}, {return_when = "SOMETIMES"})
      err_of(loom.wait, {a}, {timeout = -1})
      err_of(loom.wait, {a}, 5)
      assert.matches("item 1 is not a loom.Future or loom.Thread: string",
        err_of(loom.wait, {"a"}), 1, true)
    end)
  end)
end)
