-- Out of memory inside loom (make oom: csrc/failalloc.h makes loom's own
-- Nth allocation from now fail, once). Every operation below is run with
-- its first, second, ... allocation failing: each run either succeeds or
-- raises an error that says memory ran out, never crashes (the build runs
-- under ASan), and loom keeps working afterwards. In a normal build the
-- hook is absent and these cases are pending.
local loom = require "loom"
local core = require "loom.core"
local helpers = require "helpers"
local globals = helpers.globals

local fail = core._fail_alloc
local MAX = 60 -- allocations tried per operation (most need far fewer)

local function is_oom(e)
  local s = tostring(type(e) == "table" and (e.message or e[1]) or e)
  return s:find("memory", 1, true) ~= nil
end

-- loom still works: a thread, a queue and a copy
local function healthy()
  local q = loom.Queue()
  local t = loom.thread(function(qq) qq:put({ 1, { 2 } }) return "ok" end, q)
  assert.are.equal("ok", t:result())
  assert.are.same({ 1, { 2 } }, q:get(5))
  assert.are.same({ a = { 1, 2 } }, loom.copy({ a = { 1, 2 } }))
end

-- Runs op with allocation n failing, for n = 1..MAX, until one run has
-- no failure left to hit (the operation needs fewer than n allocations).
local function sweep(name, op, max)
  local failed_runs = 0
  for n = 1, max or MAX do
    fail(n)
    local ok, e = pcall(op)
    local left = fail(0) -- > 0: the failure was never reached
    if not ok then
      failed_runs = failed_runs + 1
      assert.is_true(is_oom(e), name .. ", allocation " .. n .. ": " .. tostring(e and (e.message or e)))
    end
    if left > 0 then break end
    collectgarbage()
  end
  healthy()
  if os.getenv("LOOM_OOM_VERBOSE") then
    io.stderr:write(("%s: %d runs hit a failed allocation\n"):format(name, failed_runs))
  end
  -- the sweep reached the operation's allocations (else it tested nothing)
  assert.is_true(failed_runs > 0, name .. ": no allocation failed")
  return failed_runs
end

local describe_if = fail and describe or function(name, _)
  describe(name, function() it("needs the allocation-failure build (make oom)", function() pending("make oom") end) end)
end

describe_if("out of memory inside loom", function()
  it("while copying values (tables, strings, functions)", function()
    local big = {}
    for i = 1, 200 do big[i] = { i, tostring(i):rep(10), { x = i } } end
    big.self = big
    local up = 7
    big.fn = function() return up end
    sweep("copy", function() return loom.copy(big) end)
  end)

  it("in constructors of every class", function()
    for name, make in pairs {
      Lock = function() return loom.Lock() end, RLock = function() return loom.RLock() end,
      Condition = function() return loom.Condition() end,
      Semaphore = function() return loom.Semaphore(2) end,
      BoundedSemaphore = function() return loom.BoundedSemaphore(2) end,
      Event = function() return loom.Event() end, Barrier = function() return loom.Barrier(2) end,
      Queue = function() return loom.Queue(4) end, LifoQueue = function() return loom.LifoQueue() end,
      PriorityQueue = function() return loom.PriorityQueue() end,
      shared = function() return loom.shared { a = 1, b = { 2 } } end,
      ThreadPoolExecutor = function() return loom.ThreadPoolExecutor { max_workers = 1 } end,
    } do
      sweep(name, make)
    end
  end)

  it("putting to and getting from queues", function()
    local q = loom.Queue()
    sweep("put/get", function()
      q:put({ "item", { 1, 2, 3 }, ("x"):rep(100) })
      return q:get(1)
    end)
    -- nothing half-put is left behind: each item is there once or not at all
    local n = 0
    while q:get_nowait() do n = n + 1 end
    assert.is_true(n <= 1)
  end)

  it("starting threads and collecting their results", function()
    sweep("thread", function()
      return loom.thread(globals(function(a) return { a, a } end), { 1 }):result()
    end, 1000)
  end)

  it("submitting to a pool", function()
    local pool <close> = loom.ThreadPoolExecutor { max_workers = 1 }
    pool:submit(function() return 1 end):result() -- the worker exists
    sweep("submit", function()
      return pool:submit(function(x) return x end, { 1, 2 }):result()
    end)
  end)

  it("in shared tables", function()
    local s = loom.shared {}
    sweep("shared", function()
      s.k = { 1, 2, { 3 } }
      return s.k
    end)
  end)
end)
