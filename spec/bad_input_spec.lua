-- Misuse of the public API gives Lua's standard message, from functions
-- written in C (luaL_argerror, luaL_typeerror) and in Lua (lua/loom/
-- argcheck.lua) alike: "bad argument #1 to 'with' (function expected, got
-- nil)". Every call here fails before it could block; the few that would
-- wait for ever if their check went missing run in a thread, joined with
-- a timeout. loom.async has specs of its own.
local loom = require "loom"
local helpers = require "helpers"

-- thread bodies read only locals (see sync_spec.lua)
local pcall, tostring, error = pcall, tostring, error

local NaN = 0 / 0
local function f() end

-- The message fn raised, without the "file:line: " of its position.
local function message(fn)
  local ok, e = pcall(fn)
  assert.is_false(ok, "expected an error")
  return (tostring(e):gsub("^[^\n:]+:%d+: ", ""))
end

-- Checks each case {label, fn, message} (fn is not a tail call, so that a
-- function written in Lua keeps its name, as in normal use).
local function check(cases)
  for _, c in ipairs(cases) do
    assert.are.equal(c[3], message(c[2]), c[1])
  end
end

-- Runs body(...) in a thread; returns the message it raised (bounded).
local function in_thread(body, ...)
  local t = helpers.spawn(helpers.check_env(function(...)
    local ok, e = pcall(body, ...)
    if ok then return "no error" end
    return (tostring(e):gsub("^[^\n:]+:%d+: ", ""))
  end), ...)
  return t:result(10)
end

after_each(function() helpers.join_all(10) end)

describe("bad input", function()
  it("to loom.thread and loom.Thread", function()
    check {
      { "thread()", function() loom.thread() end,
        "bad argument #1 to 'thread' (function expected, got no value)" },
      { "thread(42)", function() loom.thread(42) end,
        "bad argument #1 to 'thread' (function expected, got number)" },
      { "Thread(1)", function() loom.Thread(1) end,
        "bad argument #1 to 'Thread' (table expected, got number)" },
      { "Thread{}", function() loom.Thread {} end,
        "bad argument #1 to 'Thread' (field 'target' must be a function)" },
      { "args = 1", function() loom.Thread { target = f, args = 1 } end,
        "bad argument #1 to 'Thread' (field 'args' must be a table)" },
      { "args.n = 'x'", function() loom.Thread { target = f, args = { n = "x" } } end,
        "bad argument #1 to 'Thread' (field 'args.n' must be an integer from 0 to 100000)" },
      { "args.n = -1", function() loom.Thread { target = f, args = { n = -1 } } end,
        "bad argument #1 to 'Thread' (field 'args.n' must be an integer from 0 to 100000)" },
      { "name = {}", function() loom.Thread { target = f, name = {} } end,
        "bad argument #1 to 'Thread' (field 'name' must be a string)" },
    }
  end)

  it("to Thread methods and fields", function()
    local t = loom.thread(f)
    assert.is_true(t:join(10))
    check {
      { "join(-1)", function() t:join(-1) end,
        "bad argument #1 to 'join' (timeout must be a non-negative number)" },
      { "join(NaN)", function() t:join(NaN) end,
        "bad argument #1 to 'join' (timeout must be a non-negative number)" },
      { "join('x')", function() t:join("x") end,
        "bad argument #1 to 'join' (number expected, got string)" },
      { "result(-1)", function() t:result(-1) end,
        "bad argument #1 to 'result' (timeout must be a non-negative number)" },
      { "result(NaN)", function() t:result(NaN) end,
        "bad argument #1 to 'result' (timeout must be a non-negative number)" },
      { "t.join(1)", function() t.join(1) end,
        "bad argument #1 to 'join' (loom.Thread expected, got number)" },
      { "t.cancel(nil)", function() t.cancel(nil) end,
        "bad argument #1 to 'cancel' (loom.Thread expected, got nil)" },
      { "t.name = {}", function() t.name = {} end,
        "bad argument #3 to 'newindex' (string expected, got table)" },
      { "t.daemon = 1", function() t.daemon = 1 end,
        "bad argument #3 to 'newindex' (boolean expected, got number)" },
    }
  end)

  it("to Lock, RLock, Condition, Semaphore and BoundedSemaphore", function()
    local objects = {
      { "loom.Lock", loom.Lock() }, { "loom.RLock", loom.RLock() },
      { "loom.Condition", loom.Condition() }, { "loom.Semaphore", loom.Semaphore() },
      { "loom.Semaphore", loom.BoundedSemaphore() },
    }
    for _, o in ipairs(objects) do
      local name, x = o[1], o[2]
      check {
        { name .. ":with(nil)", function() x:with(nil) end,
          "bad argument #1 to 'with' (function expected, got nil)" },
        { name .. ":with(1)", function() x:with(1) end,
          "bad argument #1 to 'with' (function expected, got number)" },
        { name .. ":with()", function() x:with() end,
          "bad argument #1 to 'with' (function expected, got no value)" },
        { name .. ":acquire(true, -1)", function() x:acquire(true, -1) end,
          "bad argument #2 to 'acquire' (timeout must be a non-negative number)" },
        { name .. ":acquire(true, NaN)", function() x:acquire(true, NaN) end,
          "bad argument #2 to 'acquire' (timeout must be a non-negative number)" },
        { name .. ":acquire(true, 'x')", function() x:acquire(true, "x") end,
          "bad argument #2 to 'acquire' (number expected, got string)" },
        { name .. ":acquire(false, 1)", function() x:acquire(false, 1) end,
          "bad argument #2 to 'acquire' (can't specify a timeout for a non-blocking call)" },
        { name .. ".acquire(1)", function() x.acquire(1) end,
          "bad argument #1 to 'acquire' (" .. name .. " expected, got number)" },
        { name .. ".release(nil)", function() x.release(nil) end,
          "bad argument #1 to 'release' (" .. name .. " expected, got nil)" },
        { name .. ".guard({})", function() x.guard({}) end,
          "bad argument #1 to 'guard' (" .. name .. " expected, got table)" },
      }
      assert.is_true(x:acquire(false)) -- nothing was left held
      x:release()
    end
  end)

  it("to Condition", function()
    local c = loom.Condition()
    check {
      { "Condition(1)", function() loom.Condition(1) end,
        "bad argument #1 to 'Condition' (loom.Lock or loom.RLock expected, got number)" },
      { "wait_for(nil)", function() c:wait_for(nil) end,
        "bad argument #1 to 'wait_for' (function expected, got nil)" },
      { "wait_for(1)", function() c:wait_for(1) end,
        "bad argument #1 to 'wait_for' (function expected, got number)" },
      { "notify('x')", function() c:notify("x") end,
        "bad argument #1 to 'notify' (number expected, got string)" },
    }
    -- these would wait for a notify that never comes if unchecked
    local body = function(cond, timeout, pred)
      local _ <close> = cond:guard()
      if pred then cond:wait_for(pred, timeout) else cond:wait(timeout) end
    end
    local never = function() return false end
    assert.are.equal("bad argument #1 to 'wait' (timeout must be a non-negative number)",
                     in_thread(body, c, -1))
    assert.are.equal("bad argument #1 to 'wait' (timeout must be a non-negative number)",
                     in_thread(body, c, NaN))
    assert.are.equal("bad argument #1 to 'wait' (number expected, got string)",
                     in_thread(body, c, "x"))
    assert.are.equal("bad argument #2 to 'wait_for' (timeout must be a non-negative number)",
                     in_thread(body, c, -1, never))
    assert.are.equal("bad argument #2 to 'wait_for' (timeout must be a non-negative number)",
                     in_thread(body, c, NaN, never))
    assert.is_true(c:acquire(true, 1))
    c:release()
  end)

  it("to Semaphore and BoundedSemaphore", function()
    local s = loom.Semaphore(1)
    check {
      { "Semaphore('x')", function() loom.Semaphore("x") end,
        "bad argument #1 to 'Semaphore' (number expected, got string)" },
      { "Semaphore(-1)", function() loom.Semaphore(-1) end,
        "bad argument #1 to 'Semaphore' (semaphore initial value must be >= 0)" },
      { "Semaphore(1.5)", function() loom.Semaphore(1.5) end,
        "bad argument #1 to 'Semaphore' (number has no integer representation)" },
      { "Semaphore(NaN)", function() loom.Semaphore(NaN) end,
        "bad argument #1 to 'Semaphore' (number has no integer representation)" },
      { "BoundedSemaphore({})", function() loom.BoundedSemaphore({}) end,
        "bad argument #1 to 'BoundedSemaphore' (number expected, got table)" },
      { "BoundedSemaphore(-2)", function() loom.BoundedSemaphore(-2) end,
        "bad argument #1 to 'BoundedSemaphore' (semaphore initial value must be >= 0)" },
      { "release(0)", function() s:release(0) end,
        "bad argument #1 to 'release' (n must be one or more)" },
      { "release('x')", function() s:release("x") end,
        "bad argument #1 to 'release' (number expected, got string)" },
    }
    assert.are.equal(1, s.value)
  end)

  it("to Event", function()
    local ev = loom.Event()
    ev:set() -- an unchecked wait returns at once
    check {
      { "wait(-1)", function() ev:wait(-1) end,
        "bad argument #1 to 'wait' (timeout must be a non-negative number)" },
      { "wait(NaN)", function() ev:wait(NaN) end,
        "bad argument #1 to 'wait' (timeout must be a non-negative number)" },
      { "wait('x')", function() ev:wait("x") end,
        "bad argument #1 to 'wait' (number expected, got string)" },
      { "ev.set(1)", function() ev.set(1) end,
        "bad argument #1 to 'set' (loom.Event expected, got number)" },
      { "ev.is_set(loom.Lock())", function() ev.is_set(loom.Lock()) end,
        "bad argument #1 to 'is_set' (loom.Event expected, got loom.Lock)" },
    }
  end)

  it("to Barrier", function()
    local b = loom.Barrier(1) -- an unchecked wait returns at once
    check {
      { "Barrier()", function() loom.Barrier() end,
        "bad argument #1 to 'Barrier' (number expected, got no value)" },
      { "Barrier(0)", function() loom.Barrier(0) end,
        "bad argument #1 to 'Barrier' (parties must be >= 1)" },
      { "Barrier(2, 1)", function() loom.Barrier(2, 1) end,
        "bad argument #2 to 'Barrier' (function expected, got number)" },
      { "Barrier(2, nil, -1)", function() loom.Barrier(2, nil, -1) end,
        "bad argument #3 to 'Barrier' (timeout must be a non-negative number)" },
      { "Barrier(2, nil, NaN)", function() loom.Barrier(2, nil, NaN) end,
        "bad argument #3 to 'Barrier' (timeout must be a non-negative number)" },
      { "wait(-1)", function() b:wait(-1) end,
        "bad argument #1 to 'wait' (timeout must be a non-negative number)" },
      { "wait(NaN)", function() b:wait(NaN) end,
        "bad argument #1 to 'wait' (timeout must be a non-negative number)" },
      { "wait('x')", function() b:wait("x") end,
        "bad argument #1 to 'wait' (number expected, got string)" },
      { "b.reset(1)", function() b.reset(1) end,
        "bad argument #1 to 'reset' (loom.Barrier expected, got number)" },
    }
    assert.is_false(b.broken)
  end)

  it("to loom.Timer and its methods", function()
    local t = loom.Timer(0, f)
    check {
      { "Timer()", function() loom.Timer() end,
        "bad argument #1 to 'Timer' (number expected, got nil)" },
      { "Timer(1)", function() loom.Timer(1) end,
        "bad argument #2 to 'Timer' (function expected, got nil)" },
      { "Timer(-1, f)", function() loom.Timer(-1, f) end,
        "bad argument #1 to 'Timer' (interval must be a non-negative number)" },
      { "Timer(NaN, f)", function() loom.Timer(NaN, f) end,
        "bad argument #1 to 'Timer' (interval must be a non-negative number)" },
      { "Timer('x', f)", function() loom.Timer("x", f) end,
        "bad argument #1 to 'Timer' (number expected, got string)" },
      { "t.start(1)", function() t.start(1) end,
        "bad argument #1 to 'start' (loom.Timer expected, got number)" },
      { "t.cancel({})", function() t.cancel({}) end,
        "bad argument #1 to 'cancel' (loom.Timer expected, got table)" },
      { "t.daemon = 1", function() t.daemon = 1 end,
        "bad argument #3 to 'newindex' (boolean expected, got number)" },
      { "t.name = {}", function() t.name = {} end,
        "bad argument #3 to 'newindex' (string expected, got table)" },
      { "t.other = 1", function() t.other = 1 end, "cannot set field 'other' of a loom.Timer" },
    }
    t:start()
    check {
      { "join(-1)", function() t:join(-1) end,
        "bad argument #1 to 'join' (timeout must be a non-negative number)" },
      { "join(NaN)", function() t:join(NaN) end,
        "bad argument #1 to 'join' (timeout must be a non-negative number)" },
      { "result('x')", function() t:result("x") end,
        "bad argument #1 to 'result' (number expected, got string)" },
      { "t.join(2)", function() t.join(2) end,
        "bad argument #1 to 'join' (loom.Timer expected, got number)" },
    }
    assert.is_true(t:join(10))
  end)

  it("to the queues", function()
    for _, name in ipairs { "Queue", "LifoQueue", "PriorityQueue", "SimpleQueue" } do
      local q = loom[name]()
      q:put(1) -- an unchecked get returns at once
      local cases = {
        { name .. ":put(nil)", function() q:put(nil) end,
          "bad argument #1 to 'put' (cannot put nil into a queue)" },
        { name .. ":put(1, -1)", function() q:put(1, -1) end,
          "bad argument #2 to 'put' (timeout must be a non-negative number)" },
        { name .. ":put(1, 'x')", function() q:put(1, "x") end,
          "bad argument #2 to 'put' (number expected, got string)" },
        { name .. ":put_nowait(nil)", function() q:put_nowait(nil) end,
          "bad argument #1 to 'put_nowait' (cannot put nil into a queue)" },
        { name .. ":get(-1)", function() q:get(-1) end,
          "bad argument #1 to 'get' (timeout must be a non-negative number)" },
        { name .. ":get(NaN)", function() q:get(NaN) end,
          "bad argument #1 to 'get' (timeout must be a non-negative number)" },
        { name .. ":get('x')", function() q:get("x") end,
          "bad argument #1 to 'get' (number expected, got string)" },
        { name .. ":get_many()", function() q:get_many() end,
          "bad argument #1 to 'get_many' (number expected, got no value)" },
        { name .. ":get_many(0)", function() q:get_many(0) end,
          "bad argument #1 to 'get_many' (count must be at least 1)" },
        { name .. ":get_many(1, NaN)", function() q:get_many(1, NaN) end,
          "bad argument #2 to 'get_many' (timeout must be a non-negative number)" },
        { name .. ":put_many(1)", function() q:put_many(1) end,
          "bad argument #1 to 'put_many' (table expected, got number)" },
        { name .. ":put_many({}, -1)", function() q:put_many({}, -1) end,
          "bad argument #2 to 'put_many' (timeout must be a non-negative number)" },
        -- one check for the methods all the kinds share: any queue will do
        { name .. ".get(1)", function() q.get(1) end,
          "bad argument #1 to 'get' (loom.Queue expected, got number)" },
      }
      if name ~= "SimpleQueue" then
        cases[#cases + 1] = { name .. ":task_done(0)", function() q:task_done(0) end,
          "bad argument #1 to 'task_done' (count must be at least 1)" }
        cases[#cases + 1] = { name .. ":task_done('x')", function() q:task_done("x") end,
          "bad argument #1 to 'task_done' (number expected, got string)" }
      end
      check(cases)
      assert.are.equal(1, q:get(1))
      if name ~= "SimpleQueue" then -- nothing unfinished: an unchecked join returns
        q:task_done()
        check {
          { name .. ":join(-1)", function() q:join(-1) end,
            "bad argument #1 to 'join' (timeout must be a non-negative number)" },
          { name .. ":join(NaN)", function() q:join(NaN) end,
            "bad argument #1 to 'join' (timeout must be a non-negative number)" },
        }
      end
    end
  end)

  it("to the queue constructors", function()
    check {
      { "Queue('x')", function() loom.Queue("x") end,
        "bad argument #1 to 'Queue' (number expected, got string)" },
      { "Queue(1.5)", function() loom.Queue(1.5) end,
        "bad argument #1 to 'Queue' (number has no integer representation)" },
      { "LifoQueue({})", function() loom.LifoQueue({}) end,
        "bad argument #1 to 'LifoQueue' (number expected, got table)" },
      { "PriorityQueue(NaN)", function() loom.PriorityQueue(NaN) end,
        "bad argument #1 to 'PriorityQueue' (number has no integer representation)" },
    }
  end)

  it("to loom.select", function()
    local q = loom.Queue()
    q:put(1)
    check {
      { "select()", function() loom.select() end,
        "bad argument #1 to 'select' (table expected, got no value)" },
      { "select({})", function() loom.select({}) end,
        "bad argument #1 to 'select' (select needs at least one queue)" },
      { "select({1})", function() loom.select({ 1 }) end,
        "bad argument #1 to 'select' (queues[1] is number, not a loom queue)" },
      { "select({q}, -1)", function() loom.select({ q }, -1) end,
        "bad argument #2 to 'select' (timeout must be a non-negative number)" },
      { "select({q}, NaN)", function() loom.select({ q }, NaN) end,
        "bad argument #2 to 'select' (timeout must be a non-negative number)" },
      { "select({q}, 'x')", function() loom.select({ q }, "x") end,
        "bad argument #2 to 'select' (number expected, got string)" },
    }
    assert.are.equal(1, q:get(1))
  end)

  it("to loom.shared", function()
    local s = loom.shared { k = 1 }
    check {
      { "shared(1)", function() loom.shared(1) end,
        "bad argument #1 to 'shared' (table expected, got number)" },
      { "update(k, nil)", function() s:update("k", nil) end,
        "bad argument #2 to 'update' (function expected, got nil)" },
      { "update(k, 1)", function() s:update("k", 1) end,
        "bad argument #2 to 'update' (function expected, got number)" },
      { "with(nil)", function() s:with(nil) end,
        "bad argument #1 to 'with' (function expected, got nil)" },
      { "incr(k, 'x')", function() s:incr("k", "x") end,
        "bad argument #2 to 'incr' (number expected, got string)" },
      { "get()", function() s:get() end, "bad argument #1 to 'get' (value expected)" },
      { "s.get(1, 'k')", function() s.get(1, "k") end,
        "bad argument #1 to 'get' (loom.shared expected, got number)" },
    }
    -- nothing was left owned: another thread can still take the table
    assert.are.equal("2", in_thread(function(sh)
      sh:update("k", function(v) return v + 1 end)
      error(sh.k, 0)
    end, s))
  end)

  it("to ThreadPoolExecutor and its methods", function()
    local p <close> = loom.ThreadPoolExecutor { max_workers = 1 }
    check {
      { "Pool(1)", function() loom.ThreadPoolExecutor(1) end,
        "bad argument #1 to 'ThreadPoolExecutor' (table expected, got number)" },
      { "max_workers = 'x'", function() loom.ThreadPoolExecutor { max_workers = "x" } end,
        "bad argument #1 to 'ThreadPoolExecutor' (field 'max_workers' must be an integer)" },
      { "max_workers = NaN", function() loom.ThreadPoolExecutor { max_workers = NaN } end,
        "bad argument #1 to 'ThreadPoolExecutor' (field 'max_workers' must be an integer)" },
      { "max_workers = 0", function() loom.ThreadPoolExecutor { max_workers = 0 } end,
        "bad argument #1 to 'ThreadPoolExecutor' (max_workers must be greater than 0)" },
      { "initializer = 1", function() loom.ThreadPoolExecutor { initializer = 1 } end,
        "bad argument #1 to 'ThreadPoolExecutor' (field 'initializer' must be a function)" },
      { "initargs = 1", function() loom.ThreadPoolExecutor { initializer = f, initargs = 1 } end,
        "bad argument #1 to 'ThreadPoolExecutor' (field 'initargs' must be a table)" },
      { "initargs.n = 'x'", function()
          loom.ThreadPoolExecutor { initializer = f, initargs = { n = "x" } }
        end,
        "bad argument #1 to 'ThreadPoolExecutor' (field 'initargs.n' must be an integer from 0 to 1000)" },
      { "thread_name_prefix = 1", function() loom.ThreadPoolExecutor { thread_name_prefix = 1 } end,
        "bad argument #1 to 'ThreadPoolExecutor' (field 'thread_name_prefix' must be a string)" },
      { "submit()", function() p:submit() end,
        "bad argument #1 to 'submit' (function expected, got no value)" },
      { "submit(1)", function() p:submit(1) end,
        "bad argument #1 to 'submit' (function expected, got number)" },
      { "p.submit(1, f)", function() p.submit(1, f) end,
        "bad argument #1 to 'submit' (loom.ThreadPoolExecutor expected, got number)" },
      { "map(nil, {})", function() p:map(nil, {}) end,
        "bad argument #1 to 'map' (function expected, got nil)" },
      { "map(f, 1)", function() p:map(f, 1) end,
        "bad argument #2 to 'map' (table or function expected, got number)" },
      { "map(f, {}, 1)", function() p:map(f, {}, 1) end,
        "bad argument #3 to 'map' (table expected, got number)" },
      { "map timeout = -1", function() p:map(f, {}, { timeout = -1 }) end,
        "bad argument #3 to 'map' (field 'timeout' must be a non-negative number)" },
      { "map timeout = NaN", function() p:map(f, {}, { timeout = NaN }) end,
        "bad argument #3 to 'map' (field 'timeout' must be a non-negative number)" },
      { "map chunksize = 0", function() p:map(f, {}, { chunksize = 0 }) end,
        "bad argument #3 to 'map' (field 'chunksize' must be a positive integer)" },
      { "map buffersize = 1.5", function() p:map(f, {}, { buffersize = 1.5 }) end,
        "bad argument #3 to 'map' (field 'buffersize' must be a positive integer)" },
      { "p.map(1, f, {})", function() p.map(1, f, {}) end,
        "bad argument #1 to 'map' (loom.ThreadPoolExecutor expected, got number)" },
      { "p.map(loom.Lock(), f, {})", function() p.map(loom.Lock(), f, {}) end,
        "bad argument #1 to 'map' (loom.ThreadPoolExecutor expected, got loom.Lock)" },
      { "shutdown('x')", function() p:shutdown("x") end,
        "bad argument #1 to 'shutdown' (table expected, got string)" },
      { "shutdown{wait = 1}", function() p:shutdown { wait = 1 } end,
        "bad argument #1 to 'shutdown' (field 'wait' must be a boolean)" },
    }
    assert.are.equal(42, p:submit(function() return 42 end):result(10)) -- still running
  end)

  it("to Future methods, loom.wait and loom.as_completed", function()
    local p <close> = loom.ThreadPoolExecutor { max_workers = 1 }
    local fut = p:submit(f)
    fut:result(10) -- done: an unchecked wait returns at once
    check {
      { "result(-1)", function() fut:result(-1) end,
        "bad argument #1 to 'result' (timeout must be a non-negative number)" },
      { "result(NaN)", function() fut:result(NaN) end,
        "bad argument #1 to 'result' (timeout must be a non-negative number)" },
      { "result('x')", function() fut:result("x") end,
        "bad argument #1 to 'result' (number expected, got string)" },
      { "exception(-1)", function() fut:exception(-1) end,
        "bad argument #1 to 'exception' (timeout must be a non-negative number)" },
      { "add_done_callback(nil)", function() fut:add_done_callback(nil) end,
        "bad argument #1 to 'add_done_callback' (function expected, got nil)" },
      { "add_done_callback(1)", function() fut:add_done_callback(1) end,
        "bad argument #1 to 'add_done_callback' (function expected, got number)" },
      { "fut.result(1)", function() fut.result(1) end,
        "bad argument #1 to 'result' (loom.Future expected, got number)" },
      { "fut.cancel(nil)", function() fut.cancel(nil) end,
        "bad argument #1 to 'cancel' (loom.Future expected, got nil)" },
      { "wait()", function() loom.wait() end,
        "bad argument #1 to 'wait' (table expected, got no value)" },
      { "wait({1})", function() loom.wait({ 1 }) end,
        "bad argument #1 to 'wait' (item 1 is not a loom.Future or loom.Thread: number)" },
      { "wait(fs, 1)", function() loom.wait({ fut }, 1) end,
        "bad argument #2 to 'wait' (table expected, got number)" },
      { "wait timeout = -1", function() loom.wait({ fut }, { timeout = -1 }) end,
        "bad argument #2 to 'wait' (field 'timeout' must be a non-negative number)" },
      { "wait timeout = NaN", function() loom.wait({ fut }, { timeout = NaN }) end,
        "bad argument #2 to 'wait' (field 'timeout' must be a non-negative number)" },
      { "wait timeout = 'x'", function() loom.wait({ fut }, { timeout = "x" }) end,
        "bad argument #2 to 'wait' (field 'timeout' must be a non-negative number)" },
      { "wait return_when = 'x'", function() loom.wait({ fut }, { return_when = "x" }) end,
        "bad argument #2 to 'wait' (field 'return_when' must be loom.ALL_COMPLETED, " ..
        "loom.FIRST_COMPLETED or loom.FIRST_EXCEPTION)" },
      { "as_completed()", function() loom.as_completed() end,
        "bad argument #1 to 'as_completed' (table expected, got no value)" },
      { "as_completed({1})", function() loom.as_completed({ 1 }) end,
        "bad argument #1 to 'as_completed' (item 1 is not a loom.Future or loom.Thread: number)" },
      { "as_completed(fs, -1)", function() loom.as_completed({ fut }, -1) end,
        "bad argument #2 to 'as_completed' (timeout must be a non-negative number)" },
      { "as_completed(fs, NaN)", function() loom.as_completed({ fut }, NaN) end,
        "bad argument #2 to 'as_completed' (timeout must be a non-negative number)" },
      { "as_completed(fs, 'x')", function() loom.as_completed({ fut }, "x") end,
        "bad argument #2 to 'as_completed' (number expected, got string)" },
    }
  end)

  it("to loom.sleep and loom.error", function()
    check {
      { "sleep()", function() loom.sleep() end,
        "bad argument #1 to 'sleep' (number expected, got no value)" },
      { "sleep('x')", function() loom.sleep("x") end,
        "bad argument #1 to 'sleep' (number expected, got string)" },
      { "error()", function() loom.error() end,
        "bad argument #1 to 'error' (string expected, got no value)" },
    }
    -- in a thread: unchecked, these could sleep for ever
    local loom_sleep = loom.sleep
    local sleep = function(s) loom_sleep(s) end
    assert.are.equal("bad argument #1 to 'loom_sleep' (sleep length must be non-negative)",
                     in_thread(sleep, -1))
    assert.are.equal("bad argument #1 to 'loom_sleep' (sleep length must be non-negative)",
                     in_thread(sleep, NaN))
  end)
end)

describe("bad input messages", function()
  it("point at the caller, for functions written in C and in Lua", function()
    local here = "bad_input_spec%.lua:%d+: bad argument"
    local p <close> = loom.ThreadPoolExecutor { max_workers = 1 }
    for _, fn in ipairs {
      function() loom.Lock():with(nil) end,
      function() loom.Timer(1) end,
      function() p:map(nil, {}) end,
      function() loom.Timer(0, f):join(-1) end,
    } do
      local _, e = pcall(fn)
      assert.matches(here, e)
    end
  end)

  it("name the function as Lua does: self is not counted in a method call", function()
    local lock, p = loom.Lock(), loom.ThreadPoolExecutor { max_workers = 1 }
    local tm = loom.Timer(0, f)
    assert.are.equal("bad argument #2 to 'with' (function expected, got nil)",
                     message(function() lock.with(lock, nil) end))
    assert.are.equal("bad argument #2 to 'map' (function expected, got nil)",
                     message(function() p.map(p, nil, {}) end))
    assert.are.equal("bad argument #2 to 'join' (timeout must be a non-negative number)",
                     message(function() tm.join(tm, -1) end))
    -- a bad self in a method call, and a function called through pcall
    local fake = { with = lock.with, map = p.map, join = tm.join }
    assert.are.equal("calling 'with' on bad self (loom.Lock expected, got table)",
                     message(function() fake:with(f) end))
    assert.are.equal("calling 'map' on bad self (loom.ThreadPoolExecutor expected, got table)",
                     message(function() fake:map(f, {}) end))
    assert.are.equal("calling 'join' on bad self (loom.Timer expected, got table)",
                     message(function() fake:join() end))
    -- (C names such a function by its field in a loaded module: so does Lua code)
    local _, e = pcall(loom.Timer, 1)
    assert.are.equal("bad argument #2 to 'loom.Timer' (function expected, got nil)", e)
    p:shutdown()
  end)

  it("accept a callable table where a function is called in place", function()
    local callable = setmetatable({}, { __call = function(_, x) return x * 2 end })
    assert.are.equal(42, loom.Lock():with(callable, 21))
    local s = loom.shared { n = 20 }
    assert.are.equal(21, s:update("n", setmetatable({}, { __call = function(_, v) return v + 1 end })))
  end)
end)
