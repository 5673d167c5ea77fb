-- Regressions found by reviewing the core: each of these crashed, leaked,
-- corrupted data or misbehaved before its fix.
local loom = require "loom"
local helpers = require "helpers"
local check_env = helpers.check_env
local setmetatable, error, pcall, tostring, string, collectgarbage, require, getmetatable =
      setmetatable, error, pcall, tostring, string, collectgarbage, require, getmetatable

describe("review regressions", function()
  after_each(function() helpers.join_all(10) end)

  it("an error value whose __tostring raises does not abort the process", function()
    local t = helpers.spawn(check_env(function()
      error(setmetatable({}, { __tostring = function() error("no text") end }))
    end))
    local ok, e = pcall(t.result, t, 10)
    assert.is_false(ok)
    assert.is_not_nil(e)
  end)

  it("strings of 41 to 255 bytes do not shift later repeated strings", function()
    local long = string.rep("x", 50)
    local r = loom.copy({ long, "a", "a", k1 = 1, k2 = { k1 = 2 } })
    assert.are.same({ long, "a", "a", k1 = 1, k2 = { k1 = 2 } }, r)
  end)

  it("Thread{} rejects an args.n that is negative or huge", function()
    local f = function() end
    for _, n in ipairs({ -1, -100000, 2 ^ 31, 1.5 }) do
      local ok, e = pcall(loom.Thread, { target = f, args = { n = n } })
      assert.is_false(ok)
      assert.matches("args.n", e, 1, true)
    end
  end)

  it("a failed copy does not leave every later copy slow", function()
    pcall(loom.copy, { io.tmpfile() }) -- fails mid-encode
    local small = { 1, 2, 3, x = "y" }
    collectgarbage(); collectgarbage("stop")
    local before = collectgarbage("count")
    for _ = 1, 2000 do loom.copy(small) end
    local grown = collectgarbage("count") - before
    collectgarbage("restart")
    -- a fresh 22 KB scratch per copy would be ~44 MB
    assert.is_true(grown < 4096, ("copies allocated %.0f KB"):format(grown))
  end)

  it("a pairs() iterator keeps its shared table alive", function()
    local s = loom.shared { a = 1 }
    s.me = s
    local it = pairs(s)
    s = nil -- luacheck: ignore 311 (dropped before collecting)
    collectgarbage(); collectgarbage()
    local n = 0
    for _ = 1, 2 do
      local k, v = it()
      if k == "me" then assert.are.equal("loom.shared", getmetatable(v)) end
      if k then n = n + 1 end
    end
    assert.are.equal(2, n)
  end)

  it("loom objects show their class as metatable; __gc is out of reach", function()
    local lock = loom.Lock()
    assert.are.equal("loom.Lock", getmetatable(lock))
    assert.are.equal("loom.Queue", getmetatable(loom.Queue()))
    assert.has_error(function() getmetatable(lock).__gc(io.stdout) end)
    assert.is_true(lock:acquire())
    lock:release()
  end)

  -- issue #14.2: getmetatable(lock:guard()).__gc(io.tmpfile()) zeroed the
  -- file's first word (a later write crashed). Run in a child: before the
  -- fix it died of a segmentation fault.
  it("guard metatables are protected; no finalizer of loom's trusts a foreign userdata", function()
    assert.are.equal("loom.Guard", getmetatable(loom.Lock():guard()))
    local s = loom.shared()
    local g = s:guard()
    assert.are.equal("loom.SharedGuard", getmetatable(g))
    g:release()
    local out, status = helpers.run_lua([==[
local loom = require "loom"
local problems = {}
local function check(ok, what) if not ok then problems[#problems + 1] = what end end
local f = assert(io.tmpfile())
local lock = loom.Lock()
local s = loom.shared { a = 1 }
local q = loom.Queue()
q:put_many({ 1, 2 }); q:get_many(2)
loom.copy({ 1 })
local it = pairs(s)
local guards = { lock:guard(), loom.RLock():guard(), loom.Semaphore():guard(),
                 loom.Condition():guard(), s:guard() }
for _, g in ipairs(guards) do
  check(type(getmetatable(g)) == "string", "the metatable of " .. tostring(g) .. " is reachable")
end
-- every metatable of loom's with a finalizer, reached through debug
local mts = {}
for _, g in ipairs(guards) do mts[#mts + 1] = debug.getmetatable(g) end
mts[#mts + 1] = debug.getmetatable(select(2, debug.getupvalue(it, 1)))
local file_mt = debug.getregistry()["FILE*"]
for k, v in pairs(debug.getregistry()) do
  if type(k) == "string" and k:match("^loom") and type(v) == "table" then
    mts[#mts + 1] = v
  elseif type(v) == "userdata" and debug.getmetatable(v) ~= file_mt then
    mts[#mts + 1] = debug.getmetatable(v)
  end
end
local n = 0
for _, mt in ipairs(mts) do
  for _, mm in ipairs({ "__gc", "__close" }) do
    if type(mt[mm]) == "function" then
      pcall(mt[mm], f)
      if mt ~= debug.getmetatable(lock) then pcall(mt[mm], lock) end
      n = n + 1
    end
  end
end
for _, g in ipairs(guards) do pcall(g.release, g) end
check(pcall(lock.acquire, lock, false), "another kind's finalizer closed the lock's box")
check(f:write("still a file"), "the file was damaged")
f:seek("set")
check(f:read("a") == "still a file", "the file was damaged")
print(#problems == 0 and "ok" or table.concat(problems, "; "), n)
]==], 60)
    assert.are.equal(0, status, out)
    assert.matches("^ok", out)
  end)

  -- issue #14.4: tostring raised "object is closed" for most classes.
  it("tostring of a closed box of every class says \"<class> (closed)\"", function()
    local objects = {
      loom.Lock(), loom.RLock(), loom.Condition(), loom.Semaphore(),
      loom.BoundedSemaphore(), loom.Event(), loom.Barrier(2),
      loom.Thread { target = function() end }, loom.shared(),
      loom.Queue(), loom.LifoQueue(), loom.PriorityQueue(), loom.SimpleQueue(),
    }
    for _, obj in ipairs(objects) do
      local class = getmetatable(obj)
      assert.matches("^" .. class:gsub("%.", "%%.") .. "[ :(]", tostring(obj))
      debug.getmetatable(obj).__gc(obj) -- what collecting the box does
      local ok, s = pcall(tostring, obj)
      assert.is_true(ok, class .. ": " .. tostring(s))
      assert.are.equal(class .. " (closed)", s)
    end
    -- the ordinary way to meet one: a finalizer that saves a box whose own
    -- finalizer ran first (finalizers run in reverse order of marking)
    local saved
    local function drop_a_holder()
      local holder = setmetatable({}, { __gc = function(self) saved = self.lock end })
      holder.lock = loom.Lock()
    end
    drop_a_holder()
    collectgarbage(); collectgarbage()
    assert.are.equal("loom.Lock (closed)", tostring(saved))
  end)

  it("a huge Semaphore release raises instead of wrapping around", function()
    local s = loom.Semaphore(1)
    assert.has_error(function() s:release(math.maxinteger) end, "Semaphore value would overflow")
    assert.is_true(s:acquire(false))
    local b = loom.BoundedSemaphore(1)
    assert.has_error(function() b:release(math.maxinteger) end)
  end)

  it("renaming a thread while another reads its name is safe", function()
    local gate = loom.Event()
    local t = helpers.spawn(check_env(function(e) e:wait(10) end), gate)
    local renamer = helpers.spawn(check_env(function(th)
      for i = 1, 2000 do th.name = "name-" .. i end
    end), t)
    for _ = 1, 2000 do
      local n = t.name
      assert.is_string(n)
      tostring(t)
    end
    assert.is_true(renamer:join(10))
    gate:set()
  end)

  it("a lazily opened library keeps what the thread set before using it", function()
    local t = helpers.spawn(check_env(function()
      local m = require "math"
      m.floor = function() return 42 end -- before math is first used
      local pi = m.pi                   -- opens the real library
      return m.floor(2.5), pi
    end))
    local f, pi = t:result(10)
    assert.are.equal(42, f)
    assert.are.equal(math.pi, pi)
  end)
end)
