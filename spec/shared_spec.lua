-- loom.shared: thread-safe tables shared by reference (csrc/shared.c).
local loom = require "loom"
local helpers = require "helpers"

-- Thread bodies read only locals (busted's _ENV is not the globals; see
-- sync_spec.lua): the standard names they need are bound here.
local pcall, error, tostring, type = pcall, error, tostring, type

local check_env = helpers.check_env

local function spawn(fn, ...) return helpers.spawn(check_env(fn), ...) end

local TSAN = os.getenv("LOOM_SANITIZER") ~= nil
local N = TSAN and 2000 or 20000

local function error_of(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return err
end

after_each(function() helpers.join_all() end)

describe("loom.shared", function()
  it("starts empty or with a copy of a table", function()
    local s = loom.shared()
    assert.is_nil(s.x)
    assert.are.equal(0, #s)
    local init = { a = 1, b = "two", 10, 20, nested = { x = 1 } }
    local t = loom.shared(init)
    init.a = 99
    assert.are.equal(1, t.a)
    assert.are.equal("two", t.b)
    assert.are.equal(20, t[2])
    assert.are.same({ x = 1 }, t.nested)
    error_of(loom.shared, 42)
    assert.matches("loom.shared", tostring(t))
  end)

  it("stores and copies every kind of value", function()
    local s = loom.shared()
    local long = string.rep("abc", 100)
    s.i, s.f, s.b, s.no, s.str, s.long = 42, 1.5, true, false, "short", long
    s.tab = { 1, 2, { deep = "yes" } }
    s.fn = function(a) return a * 2 end
    assert.are.equal(42, s.i)
    assert.is_true(math.type(s.i) == "integer")
    assert.are.equal(1.5, s.f)
    assert.is_true(s.b)
    assert.is_false(s.no)
    assert.are.equal("short", s.str)
    assert.are.equal(long, s.long)
    assert.are.equal("yes", s.tab[3].deep)
    assert.are.equal(8, s.fn(4))
    -- values are copies: changing what was read does not change s
    local t = s.tab
    t[1] = 100
    assert.are.equal(1, s.tab[1])
    assert.are_not.equal(s.tab, s.tab)
    s.i = nil
    assert.is_nil(s.i)
    s.i = nil -- removing a missing key is fine
  end)

  it("accepts string, number and boolean keys; 2.0 and 2 are the same key", function()
    local s = loom.shared()
    s[1] = "int"
    s[2.0] = "float-int"
    s[2.5] = "float"
    s[true] = "yes"
    s[false] = "no"
    s[""] = "empty"
    assert.are.equal("int", s[1.0])
    assert.are.equal("float-int", s[2])
    assert.are.equal("float", s[2.5])
    assert.are.equal("yes", s[true])
    assert.are.equal("no", s[false])
    assert.are.equal("empty", s[""])
    local keys = {}
    for k in pairs(s) do keys[#keys + 1] = tostring(k) end
    table.sort(keys)
    assert.are.same({ "", "1", "2", "2.5", "false", "true" }, keys)
  end)

  it("rejects keys that cannot be copied, with a clear error", function()
    local s = loom.shared()
    assert.matches("keys must be strings, numbers or booleans %(got table%)",
      tostring(error_of(function() s[{}] = 1 end)))
    assert.matches("got function", tostring(error_of(function() return s[print] end)))
    assert.matches("NaN", tostring(error_of(function() s[0 / 0] = 1 end)))
    assert.matches("nil", tostring(error_of(function() return s:get(nil) end)))
  end)

  it("rejects values that cannot be copied and keeps the old one", function()
    local s = loom.shared { x = 1 }
    local err = error_of(function() s.x = coroutine.create(print) end)
    assert.matches("coroutine", tostring(err))
    assert.are.equal(1, s.x)
  end)

  it("supports #, ipairs and pairs", function()
    local s = loom.shared { "a", "b", "c", x = 1 }
    assert.are.equal(3, #s)
    s[4] = "d"
    assert.are.equal(4, #s)
    s[4] = nil
    assert.are.equal(3, #s)
    local seen = {}
    for i, v in ipairs(s) do seen[i] = v end
    assert.are.same({ "a", "b", "c" }, seen)
    local all = {}
    for k, v in pairs(s) do all[k] = v end
    assert.are.same({ "a", "b", "c", x = 1 }, all)
    for i = 1, 1000 do s[i] = i end
    assert.are.equal(1000, #s)
  end)

  it("pairs iterates a snapshot, so writing during the loop is safe", function()
    local s = loom.shared()
    for i = 1, 100 do s["k" .. i] = i end
    local n = 0
    for k, v in pairs(s) do
      s[k] = nil
      s["new" .. v] = v
      n = n + 1
    end
    assert.are.equal(100, n)
    assert.is_nil(s.k1)
    assert.are.equal(5, s.new5)
  end)

  it("snapshot() returns a plain table copy", function()
    local s = loom.shared { a = 1, b = { 2 } }
    local t = s:snapshot()
    assert.are.same({ a = 1, b = { 2 } }, t)
    assert.is_nil(getmetatable(t))
  end)

  it("grows and shrinks through many keys", function()
    local s = loom.shared()
    for i = 1, 5000 do s["key" .. i] = i end
    for i = 1, 5000 do assert.are.equal(i, s["key" .. i]) end
    for i = 1, 5000, 2 do s["key" .. i] = nil end
    for i = 1, 5000 do
      if i % 2 == 1 then assert.is_nil(s["key" .. i]) else assert.are.equal(i, s["key" .. i]) end
    end
    for i = 2, 5000, 2 do s["key" .. i] = nil end
    assert.is_nil(next(s:snapshot()))
  end)

  it("method names are reached with get/set; dot-assigning one raises", function()
    local s = loom.shared()
    local err = error_of(function() s.update = 1 end)
    assert.matches("'update' is a method of loom.shared", tostring(err))
    s:set("update", 1)
    assert.are.equal(1, s:get("update"))
    assert.are.equal("function", type(s.update))
    assert.are.equal("dflt", s:get("missing", "dflt"))
    assert.are.equal(1, s:get("update", "dflt"))
    s:set("update", nil)
    assert.is_nil(s:get("update"))
  end)

  it("is shared by reference between threads", function()
    local s = loom.shared { n = 1 }
    local r = spawn(function(sh)
      sh.from_thread = "hello"
      return sh.n, sh
    end, s)
    local n, back = r:result(10)
    assert.are.equal(1, n)
    assert.are.equal(s, back)
    assert.are.equal("hello", s.from_thread)
  end)

  it("a shared table stored in another stays shared", function()
    local inner = loom.shared { x = 0 }
    local outer = loom.shared { inner = inner }
    assert.are.equal(inner, outer.inner)
    spawn(function(o) o.inner.x = 42 end, outer):join(10)
    assert.are.equal(42, inner.x)
    local plain = loom.shared { t = { x = 0 } }
    plain.t.x = 42 -- a plain table value is a copy: this changes nothing
    assert.are.equal(0, plain.t.x)
  end)

  describe("incr", function()
    it("adds integers and floats; a missing key counts as 0", function()
      local s = loom.shared()
      assert.are.equal(1, s:incr("n"))
      assert.are.equal(6, s:incr("n", 5))
      assert.are.equal(4, s:incr("n", -2))
      assert.is_true(math.type(s.n) == "integer")
      assert.are.equal(4.5, s:incr("n", 0.5))
      assert.are.equal(0.25, s:incr("f", 0.25))
      assert.are.equal(math.mininteger, (function()
        s.big = math.maxinteger
        return s:incr("big")
      end)()) -- wraps like Lua integers
    end)

    it("raises on a value that is not a number", function()
      local s = loom.shared { str = "x", b = true }
      assert.matches("string", tostring(error_of(s.incr, s, "str")))
      assert.matches("boolean", tostring(error_of(s.incr, s, "b")))
      assert.matches("keys must be", tostring(error_of(s.incr, s, {})))
      assert.are.equal("x", s.str)
    end)
  end)

  describe("update", function()
    it("runs fn(old) and stores its result", function()
      local s = loom.shared { n = 1 }
      assert.are.equal(2, s:update("n", function(v) return v + 1 end))
      assert.are.equal("new", s:update("m", function(v)
        assert.is_nil(v)
        return "new"
      end))
      assert.is_nil(s:update("m", function() return nil end))
      assert.is_nil(s.m)
    end)

    it("may read and write the table inside fn", function()
      local s = loom.shared { a = 1, b = 2 }
      s:update("sum", function() s.touched = true; return s.a + s.b end)
      assert.are.equal(3, s.sum)
      assert.is_true(s.touched)
    end)

    it("propagates fn's error and releases the table", function()
      local s = loom.shared { n = 1 }
      local err = error_of(s.update, s, "n", function() error({ code = 7 }) end)
      assert.are.equal(7, err.code)
      assert.are.equal(1, s.n)
      local got = spawn(function(sh) sh.n = 5; return sh.n end, s):result(10)
      assert.are.equal(5, got)
      -- a result that cannot be copied is an error too, and releases
      error_of(s.update, s, "n", function() return coroutine.create(print) end)
      assert.are.equal(6, spawn(function(sh) return sh:incr("n") end, s):result(10))
    end)

    it("is atomic across threads", function()
      local s = loom.shared { n = 0 }
      local ts = {}
      for i = 1, 4 do
        ts[i] = spawn(function(sh, n)
          for _ = 1, n do sh:update("n", function(v) return v + 1 end) end
        end, s, N / 4)
      end
      for i = 1, 4 do assert.is_true(ts[i]:join(300)); ts[i]:result() end
      assert.are.equal(N, s.n)
    end)
  end)

  describe("guard and with", function()
    it("a guard makes several steps one transaction", function()
      local s = loom.shared { a = 1000, b = 0 }
      local ts = {}
      for i = 1, 4 do
        ts[i] = spawn(function(sh, n)
          for _ = 1, n do
            local _ <close> = sh:guard()
            sh.a = sh.a - 1
            sh.b = sh.b + 1
          end
        end, s, N / 20)
      end
      local bad = 0
      for _ = 1, 200 do
        local _ <close> = s:guard()
        if s.a + s.b ~= 1000 then bad = bad + 1 end
      end
      for i = 1, 4 do assert.is_true(ts[i]:join(300)); ts[i]:result() end
      assert.are.equal(0, bad)
      assert.are.equal(1000, s.a + s.b)
      assert.are.equal(N / 5, s.b)
    end)

    it("guards are re-entrant and release on error", function()
      local s = loom.shared { x = 1 }
      local ok = pcall(function()
        local _ <close> = s:guard()
        local _ <close> = s:guard()
        s.x = 2
        s:update("x", function(v) return v + 1 end)
        error("boom")
      end)
      assert.is_false(ok)
      assert.are.equal(3, s.x)
      assert.are.equal(4, spawn(function(sh) return sh:incr("x") end, s):result(10))
    end)

    it("another thread waits while the table is guarded", function()
      local s = loom.shared { x = 1 }
      local started = loom.Event()
      local t
      do
        local _ <close> = s:guard()
        t = spawn(function(sh, ev) ev:set(); sh.x = 2; return true end, s, started)
        assert.is_true(started:wait(10))
        assert.is_false(t:join(0.05))
        assert.are.equal(1, s.x)
      end
      assert.is_true(t:result(10))
      assert.are.equal(2, s.x)
    end)

    it("with(fn, ...) returns fn's results and releases on error", function()
      local s = loom.shared { x = 1 }
      local a, b = s:with(function(p, q) return s.x + p, q end, 10, "q")
      assert.are.equal(11, a)
      assert.are.equal("q", b)
      error_of(s.with, s, function() error("x") end)
      assert.are.equal(2, spawn(function(sh) return sh:incr("x") end, s):result(10))
    end)

    it("a thread waiting for a guarded table can be cancelled", function()
      local s = loom.shared()
      local started = loom.Event()
      local g = s:guard()
      local t = spawn(function(sh, ev) ev:set(); return sh.x end, s, started)
      assert.is_true(started:wait(10))
      t:cancel()
      assert.is_true(t:join(10))
      local ok, err = pcall(t.result, t)
      assert.is_false(ok)
      assert.is_true(loom.is_cancelled(err))
      g:release()
    end)
  end)

  it("stress: 8 threads x " .. (TSAN and 5000 or 100000) .. " incr give the exact total", function()
    local per = TSAN and 5000 or 100000
    local s = loom.shared()
    local ts = {}
    for i = 1, 8 do
      ts[i] = spawn(function(sh, n, k)
        for _ = 1, n do sh:incr("total") end
        for _ = 1, n / 10 do sh:incr(k) end
      end, s, per, "t" .. i)
    end
    for i = 1, 8 do assert.is_true(ts[i]:join(600)); ts[i]:result() end
    assert.are.equal(8 * per, s.total)
    for i = 1, 8 do assert.are.equal(per / 10, s["t" .. i]) end
  end)
end)
