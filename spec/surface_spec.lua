-- The whole public surface with bad input, generated from the module
-- tables and the classes' method tables, so that a new function or method
-- is swept without anyone adding it here (issue #14). Every call below
-- must raise an error with a message (a string, or a loom error with one),
-- never crash, never block, and leave loom working.
local loom = require "loom"
local helpers = require "helpers"
local globals = helpers.globals -- thread functions see the real globals

local BAD = { "nil", "number", "nan", "string", "table", "boolean", "function", "coroutine", "huge" }
local function bad_value(kind)
  if kind == "nil" then return nil end
  if kind == "number" then return -1 end
  if kind == "nan" then return 0 / 0 end
  if kind == "string" then return "bad" end
  if kind == "table" then return {} end
  if kind == "boolean" then return true end
  if kind == "function" then return function() end end
  if kind == "coroutine" then return coroutine.create(function() end) end
  return math.huge
end

local function message_of(e)
  if type(e) == "string" then return e end
  if type(e) == "table" and type(e.message) == "string" then return e.message end
  return nil
end

-- One live instance of every class whose methods are swept.
local function instances()
  local pool = loom.ThreadPoolExecutor { max_workers = 1 }
  local fut = pool:submit(function() return 1 end)
  fut:result()
  local t = loom.thread(function() end)
  t:join()
  return {
    Lock = loom.Lock(), RLock = loom.RLock(), Condition = loom.Condition(),
    Semaphore = loom.Semaphore(1), BoundedSemaphore = loom.BoundedSemaphore(1),
    Event = loom.Event(), Barrier = loom.Barrier(2), Queue = loom.Queue(),
    LifoQueue = loom.LifoQueue(), PriorityQueue = loom.PriorityQueue(),
    SimpleQueue = loom.SimpleQueue(), shared = loom.shared {},
    ThreadPoolExecutor = pool, Future = fut, Thread = t,
  }, pool
end

local function methods_of(obj)
  local mt = debug.getmetatable(obj)
  local index = mt and mt.__index
  local names = {}
  if type(index) == "table" then
    for k, v in pairs(index) do
      if type(v) == "function" and type(k) == "string" and k:sub(1, 1) ~= "_" then
        names[#names + 1] = k
      end
    end
  end
  table.sort(names)
  return names
end

describe("the public surface with bad input", function()
  it("every method of every class, called on a wrong self, raises a clear error", function()
    local objs, pool = instances()
    local swept, problems = 0, {}
    for cname, obj in pairs(objs) do
      for _, m in ipairs(methods_of(obj)) do
        local fn = obj[m]
        for _, kind in ipairs(BAD) do
          local ok, e = pcall(fn, bad_value(kind))
          swept = swept + 1
          if ok then
            problems[#problems + 1] = ("%s:%s(%s) did not raise"):format(cname, m, kind)
          elseif not message_of(e) then
            problems[#problems + 1] = ("%s:%s(%s) raised a %s"):format(cname, m, kind, type(e))
          end
        end
      end
    end
    pool:shutdown()
    assert.is_true(swept > 500, "swept only " .. swept)
    assert.are.same({}, problems)
  end)

  it("every function of loom and loom.async, with each bad first argument, returns or raises at once", function()
    local names = {}
    for _, mod in ipairs { "loom", "loom.async" } do
      for k, v in pairs(require(mod)) do
        if type(v) == "function" and k:sub(1, 1) ~= "_" then names[#names + 1] = mod .. "." .. k end
      end
    end
    table.sort(names)
    -- each call runs in a daemon thread, so a call that blocks shows up
    -- as a thread that does not finish in time (and cannot hang the suite)
    local problems = {}
    for _, full in ipairs(names) do
      local t = loom.Thread { daemon = true, args = { full, BAD }, target = globals(function(name, bad)
        local mod, fname = name:match("^(.*)%.([^.]+)$")
        local fn = require(mod)[fname]
        local out = {}
        for _, kind in ipairs(bad) do
          local v
          if kind == "number" then v = -1 elseif kind == "nan" then v = 0 / 0
          elseif kind == "string" then v = "bad" elseif kind == "table" then v = {}
          elseif kind == "boolean" then v = true elseif kind == "function" then v = function() end
          elseif kind == "huge" then v = math.huge end
          local ok, e = pcall(fn, v)
          if not ok then
            local m = type(e) == "string" and e or type(e) == "table" and e.message
            if type(m) ~= "string" then out[#out + 1] = kind .. ": error without a message" end
          end
        end
        return out
      end) }
      t:start()
      if not t:join(5) then
        problems[#problems + 1] = full .. ": did not return within 5 s"
      else
        local ok, out = pcall(t.result, t)
        if not ok then
          problems[#problems + 1] = full .. ": the sweep itself failed: " .. tostring(message_of(out) or out)
        else
          for _, p in ipairs(out) do problems[#problems + 1] = full .. " " .. p end
        end
      end
    end
    assert.is_true(#names > 60, "swept only " .. #names .. " functions")
    assert.are.same({}, problems)
    -- loom still works
    assert.are.equal(6, loom.thread(function(a, b) return a * b end, 2, 3):result())
  end)
end)
