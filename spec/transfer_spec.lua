-- Values crossing states (csrc/transfer.c): every row of the value table of
-- ../shared/DESIGN.md, checked by sending values into a thread and back,
-- and by looking at them inside the receiving thread.
local loom = require "loom"
local helpers = require "helpers"

-- Functions defined in a spec file see busted's environment as _ENV, which
-- is not the global table: a thread body reading a global would copy that
-- environment (and busted with it) into the thread. So every thread body
-- here reads only locals; the standard names it needs are bound here and
-- cross by name (C functions and modules of package.loaded).
local G = _G
local math, string, table, select, type, pcall, error, tostring =
      math, string, table, select, type, pcall, error, tostring
local rawequal, getmetatable, setmetatable, pairs, next, require =
      rawequal, getmetatable, setmetatable, pairs, next, require
local package, io, print, coroutine, debug, os, load =
      package, io, print, coroutine, debug, os, load
local collectgarbage = collectgarbage

local check_env = helpers.check_env

-- Runs fn(...) in a thread and returns its results (bounded wait).
local function run(fn, ...)
  return helpers.spawn(check_env(fn), ...):result(10)
end

local function pack(...) return {n = select("#", ...), ...} end

local function identity(...) return ... end

-- The message of the error raised by f(...).
local function err_of(f, ...)
  local ok, e = pcall(f, ...)
  assert.is_false(ok, "expected an error")
  return e
end

local function noop() end

describe("transfer", function()
  after_each(function() helpers.join_all(10) end)

  describe("nil, booleans, numbers, strings", function()
    it("nil and booleans round-trip, nils in the middle and at the end kept", function()
      local r = pack(run(identity, nil, true, false, nil, nil))
      assert.are.same({n = 5, nil, true, false, nil, nil}, r)
      local inside = pack(run(function(...)
        return select("#", ...), type((...)), type(select(2, ...)), select(3, ...)
      end, nil, true, false, nil))
      assert.are.same({n = 5, 4, "nil", "boolean", false, nil}, inside)
    end)

    it("no values at all", function()
      assert.are.equal(0, select("#", run(identity)))
      assert.are.equal(0, run(function(...) return select("#", ...) end))
    end)

    it("integers stay integers (all encodings and both extremes)", function()
      local ints = {0, 1, -1, 127, -128, 128, -129, 255, 256, 65535, -65536,
                    1 << 31, -(1 << 31), 1 << 32, (1 << 53) + 1,
                    math.maxinteger, math.mininteger}
      local back = pack(run(identity, table.unpack(ints)))
      assert.are.equal(#ints, back.n)
      for i, v in ipairs(ints) do
        assert.are.equal("integer", math.type(back[i]), "value " .. tostring(v))
        assert.are.equal(v, back[i])
      end
      local types = pack(run(function(...)
        local out = {}
        for i = 1, select("#", ...) do out[i] = math.type((select(i, ...))) end
        return table.unpack(out)
      end, table.unpack(ints)))
      for i = 1, #ints do assert.are.equal("integer", types[i]) end
      -- arithmetic in the thread stays integer arithmetic
      assert.are.equal(math.mininteger, run(function(x) return x + 1 end, math.maxinteger))
    end)

    it("floats stay floats, including 1.0, tiny, huge and subnormal values", function()
      local floats = {1.0, 0.5, -2.25, 3.0e300, 1.7976931348623157e308,
                      2.2250738585072014e-308, 4.9406564584124654e-324, 0.1,
                      2^53 + 0.0, -1.0}
      local back = pack(run(identity, table.unpack(floats)))
      for i, v in ipairs(floats) do
        assert.are.equal("float", math.type(back[i]), "value " .. tostring(v))
        assert.are.equal(v, back[i])
      end
      assert.are.equal("float", run(function(x) return math.type(x) end, 1.0))
    end)

    it("inf, -inf, nan, 0.0 and -0.0", function()
      local inf, ninf, nan, z, nz = run(identity, math.huge, -math.huge, 0/0, 0.0, -0.0)
      assert.are.equal(math.huge, inf)
      assert.are.equal(-math.huge, ninf)
      assert.is_true(nan ~= nan)
      assert.are.equal("float", math.type(nan))
      assert.are.equal("float", math.type(z))
      assert.are.equal(math.huge, 1 / z)
      assert.are.equal("float", math.type(nz))
      assert.are.equal(-math.huge, 1 / nz)
      local a, b, c, d = run(function(i, n, x, y)
        return i == math.huge and n == -math.huge, x ~= x, 1 / y, math.type(y)
      end, math.huge, -math.huge, 0/0, -0.0)
      assert.is_true(a)
      assert.is_true(b)
      assert.are.equal(-math.huge, c)
      assert.are.equal("float", d)
    end)

    it("strings: empty, embedded zeros, every byte, length boundaries, long", function()
      local bytes = {}
      for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
      local all = table.concat(bytes)
      local cases = {"", "\0", "a\0b\0", "\0\0\0end", all,
                     string.rep("x", 255), string.rep("y", 256), string.rep("z", 257),
                     string.rep("\0", 300), string.rep(all, 4096) --[[1 MiB]]}
      local back = pack(run(identity, table.unpack(cases)))
      for i, s in ipairs(cases) do
        assert.are.equal(#s, #back[i])
        assert.is_true(s == back[i], "string " .. i .. " changed")
      end
      local lens = pack(run(function(...)
        local out = {}
        for i = 1, select("#", ...) do
          local s = select(i, ...)
          out[i] = #s .. ":" .. (s:find("\0", 1, true) or 0)
        end
        return table.unpack(out)
      end, table.unpack(cases)))
      for i, s in ipairs(cases) do
        assert.are.equal(#s .. ":" .. (s:find("\0", 1, true) or 0), lens[i])
      end
    end)
  end)

  describe("tables", function()
    it("are deep copies with array, hash and odd keys", function()
      local t = {1, 2, "three", {4, {5}}, x = {y = {z = "deep"}},
                 [1.5] = "float key", [-1] = "negative", [0] = "zero",
                 [true] = "true key", [false] = "false key",
                 [100] = "far", [math.maxinteger] = "max", ["a b"] = "space",
                 ["\0k"] = "zero byte key"}
      local r = run(identity, t)
      assert.are.same(t, r)
      assert.are_not.equal(t, r)
      assert.are.equal("integer", math.type(next({[1] = 1}))) -- sanity
      for k in pairs(r) do
        if type(k) == "number" and k ~= 1.5 then
          assert.are.equal("integer", math.type(k))
        end
      end
      -- the receiver sees the same shape
      local n, deep, far = run(function(x)
        local n = 0
        for _ in pairs(x) do n = n + 1 end
        return n, x.x.y.z, x[100]
      end, t)
      local count = 0
      for _ in pairs(t) do count = count + 1 end
      assert.are.equal(count, n)
      assert.are.equal("deep", deep)
      assert.are.equal("far", far)
    end)

    it("keeps arrays with holes and their length-independent content", function()
      local t = {1, nil, 3, nil, nil, 6}
      local r = run(identity, t)
      for i = 1, 6 do assert.are.equal(t[i], r[i]) end
      local sparse = {[1] = "a", [3] = "c", [1000000] = "m"}
      assert.are.same(sparse, run(identity, sparse))
    end)

    it("keeps every layout of array elements: hash part, reversed, mixed, holes", function()
      local reversed = {}
      for i = 10, 1, -1 do reversed[i] = i * 10 end
      local grown = {1, 2, 3}
      for i = 4, 40 do grown[i] = i end
      grown.name, grown[50], grown[0], grown["1"] = "grown", 50, 0, "string one"
      local shrunk = {}
      for i = 1, 64 do shrunk[i] = i end
      for i = 33, 64 do shrunk[i] = nil end
      shrunk.tail = true
      local layouts = {
        {[1] = "a", [2] = "b", [3] = "c"},     -- constructor: hash part
        reversed,                              -- built from the end
        grown,                                 -- array part, then hash keys
        shrunk,                                -- emptied end of the array part
        {1, nil, 3, nil, 5, x = "x"},          -- holes before the border
        {[1] = 1, 2, 3, [4] = 4, k = {1, 2}},  -- luacheck: ignore 314 (both kinds of 1)
        setmetatable({1, 2, n = 2}, {__index = {3}}),
        {nil, 2, 3, x = 1},                    -- first key is not 1
        setmetatable({}, {__index = {4}}),     -- empty, with a metatable
      }
      for i, t in ipairs(layouts) do
        local copy = loom.copy(t)
        assert.are.same(t, copy, "layout " .. i)
        local back, count = run(function(x)
          local n = 0
          for _ in pairs(x) do n = n + 1 end
          return x, n
        end, t)
        assert.are.same(t, back, "layout " .. i .. " via a thread")
        local n = 0
        for _ in pairs(t) do n = n + 1 end
        assert.are.equal(n, count, "layout " .. i .. " pair count")
        for k in pairs(back) do
          if type(k) == "number" then assert.are.equal("integer", math.type(k)) end
        end
      end
    end)

    it("a big table with array elements and other keys crosses a queue whole", function()
      -- big enough to be streamed: the elements are handed over in chunks,
      -- the other keys after them
      local t = {}
      for i = 1, 30000 do t[i] = {i, tostring(i)} end
      for i = 1, 200 do t["k" .. i] = i end
      t[30002] = "past the border"
      local inbox, outbox = loom.Queue(), loom.Queue()
      local worker = helpers.spawn(check_env(function(qin, qout)
        local x = qin:get(10)
        local n, sum, ok = 0, 0, true
        for k, v in pairs(x) do
          n = n + 1
          if math.type(k) == "integer" and k <= 30000 then
            ok = ok and v[1] == k and v[2] == tostring(k)
          elseif type(k) == "string" then
            sum = sum + v
          end
        end
        qout:put({n, sum, ok, x[30002], x[30001] == nil})
      end), inbox, outbox)
      inbox:put(t)
      local r = outbox:get(30)
      assert.are.same({30000 + 200 + 1, 20100, true, "past the border", true}, r)
      assert.is_true(worker:join(10))
    end)

    it("modifying the copy in the thread leaves the sender's table alone", function()
      local t = {n = 1, sub = {1}}
      local r = run(function(x) x.n = 2; x.sub[1] = 99; x.added = true; return x end, t)
      assert.are.same({n = 1, sub = {1}}, t)
      assert.are.same({n = 2, sub = {99}, added = true}, r)
    end)

    it("preserves cycles", function()
      local t = {name = "root"}
      t.self = t
      t.child = {parent = t}
      t.child.child = t.child
      local r = run(identity, t)
      assert.are.equal(r, r.self)
      assert.are.equal(r, r.child.parent)
      assert.are.equal(r.child, r.child.child)
      assert.are_not.equal(t, r)
      local ok = run(function(x)
        return rawequal(x, x.self) and rawequal(x, x.child.parent)
               and rawequal(x.child, x.child.child)
      end, t)
      assert.is_true(ok)
    end)

    it("preserves shared sub-tables, within a value and across arguments", function()
      local shared = {v = 1}
      local t = {a = shared, b = shared, list = {shared, shared}}
      local r, s2 = run(identity, t, shared)
      assert.are.equal(r.a, r.b)
      assert.are.equal(r.a, r.list[1])
      assert.are.equal(r.a, r.list[2])
      assert.are.equal(r.a, s2)
      local same = pack(run(function(x, y)
        return rawequal(x.a, x.b), rawequal(x.a, y), rawequal(x.list[2], y)
      end, t, shared))
      assert.are.same({n = 3, true, true, true}, same)
    end)

    it("a table used as a key and as a value keeps its identity", function()
      local k = {"key"}
      local t = {[k] = k, other = k}
      local r = run(identity, t)
      local key = next(r, nil)
      if key == "other" then key = next(r, key) end
      assert.are.equal(r.other, key)
      assert.are.equal(r.other, r[key])
      assert.are.same({"key"}, key)
    end)

    it("copies metatables, and a shared metatable stays shared", function()
      local mt = {__index = function(_, key) return key .. "!" end,
                  __add = function(a, b) return a.v + b.v end,
                  kind = "point"}
      local a = setmetatable({v = 1}, mt)
      local b = setmetatable({v = 2}, mt)
      local ra, rb = run(identity, a, b)
      assert.are.equal(getmetatable(ra), getmetatable(rb))
      assert.are.equal("point", getmetatable(ra).kind)
      assert.are.equal("foo!", ra.foo)
      assert.are.equal(3, ra + rb)
      assert.are_not.equal(mt, getmetatable(ra))
      local foo, sum, shared = run(function(x, y)
        return x.foo, x + y, rawequal(getmetatable(x), getmetatable(y))
      end, a, b)
      assert.are.equal("foo!", foo)
      assert.are.equal(3, sum)
      assert.is_true(shared)
    end)

    it("a metatable with __index table and __metatable field", function()
      local base = {greet = function(self) return "hi " .. self.name end}
      local obj = setmetatable({name = "ann"}, {__index = base, __metatable = "locked"})
      local greeting, locked = run(function(o) return o:greet(), getmetatable(o) end, obj)
      assert.are.equal("hi ann", greeting)
      assert.are.equal("locked", locked)
    end)

    it("10,000 records are rebuilt exactly", function()
      local recs = {}
      for i = 1, 10000 do recs[i] = {x = i, y = "s" .. i} end
      local n, sum, last = run(function(t)
        local s = 0
        for i = 1, #t do
          s = s + t[i].x
          if t[i].y ~= "s" .. t[i].x then return -1 end
        end
        return #t, s, t[#t].y
      end, recs)
      assert.are.equal(10000, n)
      assert.are.equal(10000 * 10001 // 2, sum)
      assert.are.equal("s10000", last)
      local back = run(identity, recs)
      assert.are.same(recs, back)
    end)

    it("short strings that repeat near and far apart (past the decoder's ring)", function()
      -- "common" repeats every third string; "k<n>" comes back about 1500
      -- strings later, when the ring slot it was kept in has been reused;
      -- the record keys repeat in every record
      local t = {}
      for i = 1, 6000 do
        local r = i % 3
        t[i] = r == 0 and "common" or r == 1 and ("u" .. i) or ("k" .. (i % 1000))
      end
      local recs = {}
      for i = 1, 3000 do recs[i] = {["f" .. (i % 300)] = i, name = "n" .. i, tag = "common"} end
      local v = {t, recs}
      assert.are.same(v, loom.copy(v))
      assert.are.same(v, run(identity, v))
      local q = loom.Queue() -- big enough to be streamed to a waiting reader
      local reader = helpers.spawn(check_env(function(qin)
        local x = qin:get(10)
        return x[1][6000], x[1][5999], x[2][3000].f0, #x[1], #x[2]
      end), q)
      q:put(v)
      assert.are.same({"common", "k999", 3000, 6000, 3000}, {reader:result(10)})
    end)

    it("the sender's global table arrives as the receiver's", function()
      local is_g = run(function(g) return rawequal(g, package.loaded._G) end, G)
      assert.is_true(is_g)
      assert.are.equal(G, run(function() return package.loaded._G end))
    end)

    it("a table nested 900 deep crosses intact", function()
      local t = {}
      local c = t
      for _ = 1, 900 do c[1] = {}; c = c[1] end
      c.bottom = true
      local depth = run(function(x)
        local d = 0
        while x[1] do x = x[1]; d = d + 1 end
        return x.bottom and d
      end, t)
      assert.are.equal(900, depth)
    end)
  end)

  describe("registered metatables cross by name", function()
    it("io's FILE* metatable is the receiver's own", function()
      local t = setmetatable({}, getmetatable(io.stdout))
      local same = run(function(x)
        return rawequal(getmetatable(x), getmetatable(io.stdout))
      end, t)
      assert.is_true(same)
      assert.are.equal(getmetatable(io.stdout), getmetatable(run(identity, t)))
    end)

    it("loom.Error values keep their kind: is_timeout works after the trip", function()
      local e = run(function() return loom.error("timeout", "late") end)
      assert.is_true(loom.is_timeout(e))
      assert.are.equal("late", tostring(e))
      local inside = run(function(x) return loom.is_timeout(x), tostring(x) end,
                         loom.error("timeout", "sent"))
      assert.is_true(inside)
    end)

    it("an error re-raised from a thread is recognised by loom.is_timeout", function()
      local t = helpers.spawn(check_env(function()
        local inner = loom.thread(loom.sleep, 5)
        local ok, e = pcall(inner.result, inner, 0.01)
        inner:cancel()
        inner:join(10)
        if ok then error("expected a timeout") end
        error(e)
      end))
      local e = err_of(t.result, t, 10)
      assert.is_true(loom.is_timeout(e))
      assert.is_true(loom.is_error(e))
    end)

    it("a metatable registered only in the sender gives an error, not a crash", function()
      local reg = debug.getregistry()
      local mt = {__name = "loom_spec.Unknown"}
      reg["loom_spec.Unknown"] = mt
      local ok, e = pcall(function()
        return helpers.spawn(identity, setmetatable({}, mt)):result(10)
      end)
      reg["loom_spec.Unknown"] = nil
      assert.is_false(ok)
      assert.matches("loom_spec.Unknown", tostring(e), 1, true)
      assert.matches("not registered", tostring(e), 1, true)
    end)
  end)

  describe("Lua functions", function()
    it("cross as bytecode and can be called in the thread and sent back", function()
      local function add(a, b) return a + b end
      assert.are.equal(5, run(function(f) return f(2, 3) end, add))
      local f = run(function()
        local k = 10
        return function(x) return x + k end
      end)
      assert.are.equal(15, f(5))
    end)

    it("varargs, nested prototypes and multiple results survive", function()
      local function f(...)
        local function inner(a, ...) return select("#", ...), a end
        return inner(...)
      end
      local n, a = run(function(g) return g(1, 2, 3) end, f)
      assert.are.equal(2, n)
      assert.are.equal(1, a)
    end)

    it("copy their upvalues recursively", function()
      local cfg = {a = {b = 42}}
      local function helper() return cfg.a.b end
      local function outer() return helper() + 1 end
      assert.are.equal(43, run(function(f) return f() end, outer))
    end)

    it("upvalues are copies: changes in the thread stay there", function()
      local counter = {n = 0}
      local x = 1
      local function bump() counter.n = counter.n + 1; x = x + 1; return counter.n, x end
      local n, xx = run(function(f) f(); return f() end, bump)
      assert.are.equal(2, n)
      assert.are.equal(3, xx)
      assert.are.equal(0, counter.n)
      assert.are.equal(1, x)
    end)

    it("_ENV that was the sender's globals becomes the receiver's globals", function()
      G.loom_spec_global = "main"
      local reader = load("return loom_spec_global")
      local writer = load("loom_spec_global_w = 'thread'")
      local ok, got, before = pcall(run, function(r, w)
        local was = r()
        package.loaded._G.loom_spec_global = "thread"
        w()
        return r(), was
      end, reader, writer)
      G.loom_spec_global = nil
      assert.is_true(ok, tostring(got))
      assert.are.equal("thread", got)
      assert.is_nil(before)
      assert.is_nil(G.loom_spec_global_w) -- the thread wrote its own globals
    end)

    it("a thread body's globals are the thread's: the sender's are not seen", function()
      G.loom_spec_only_main = 1
      local body = load("return loom_spec_only_main, type(print), type(string.format)")
      local a, b, c = run(body)
      G.loom_spec_only_main = nil
      assert.is_nil(a)
      assert.are.equal("function", b)
      assert.are.equal("function", c)
    end)

    it("an _ENV that is not the globals is copied like any table", function()
      local env = {x = 7, tostring = tostring}
      local f = load("return tostring(x)", "=f", "t", env)
      assert.are.equal("7", run(function(g) return g() end, f))
    end)

    it("a recursive local function calls itself through its upvalue", function()
      local function fib(n) if n < 2 then return n end return fib(n - 1) + fib(n - 2) end
      assert.are.equal(6765, run(function(f) return f(20) end, fib))
      local fib2 = run(identity, fib)
      assert.are.equal(55, fib2(10))
    end)

    it("mutually recursive functions", function()
      local is_even, is_odd
      function is_even(n) if n == 0 then return true end return is_odd(n - 1) end
      function is_odd(n) if n == 0 then return false end return is_even(n - 1) end
      local a, b = run(function(e, o) return e(10), o(7) end, is_even, is_odd)
      assert.is_true(a)
      assert.is_true(b)
    end)

    it("two closures sharing an upvalue still share it after the copy", function()
      local function make()
        local n = 0
        return function() n = n + 1; return n end, function() return n end
      end
      local inc, get = make()
      inc() -- n == 1 in the sender
      local r = run(function(i, g) i(); i(); return g() end, inc, get)
      assert.are.equal(3, r)
      assert.are.equal(1, get()) -- the sender's n is untouched
      -- inside one table too
      local r2 = run(function(t) t.inc(); return t.get() end, {inc = inc, get = get})
      assert.are.equal(2, r2)
      -- and sent back: the two returned closures still share
      local i2, g2 = run(identity, inc, get)
      i2(); i2()
      assert.are.equal(3, g2())
      assert.are.equal(1, get())
    end)

    it("the target and an argument share an upvalue", function()
      local n = 0
      local function inc() n = n + 1 end
      assert.are.equal(2, run(function(f) f(); f(); return n end, inc))
    end)

    it("the same function twice is the same function in the receiver", function()
      local function f() return 1 end
      local same = run(function(a, b, t) return rawequal(a, b) and rawequal(a, t.f) end,
                       f, f, {f = f})
      assert.is_true(same)
      local a, b = run(identity, f, f)
      assert.are.equal(a, b)
    end)
  end)

  describe("C functions and modules cross by name", function()
    it("string, string.format, print, io.stdout as upvalues", function()
      local s, fmt, p, out = string, string.format, print, io.stdout
      local function use()
        return rawequal(s, package.loaded.string),
               rawequal(fmt, package.loaded.string.format),
               rawequal(p, package.loaded._G.print),
               rawequal(out, package.loaded.io.stdout),
               fmt("%d-%s", 1, "x")
      end
      local r = pack(run(function(f) return f() end, use))
      assert.are.same({n = 5, true, true, true, true, "1-x"}, r)
    end)

    it("come back as the sender's own", function()
      local a, b, c, d, e = run(function()
        return string, string.format, print, io.stdout, math.floor
      end)
      assert.are.equal(string, a)
      assert.are.equal(string.format, b)
      assert.are.equal(print, c)
      assert.are.equal(io.stdout, d)
      assert.are.equal(math.floor, e)
    end)

    it("a C function can be a thread's target", function()
      assert.are.equal("ababab", helpers.spawn(string.rep, "ab", 3):result(10))
      assert.are.equal(9, helpers.spawn(math.max, 3, 9, 1):result(10))
    end)

    it("loom itself crosses by name", function()
      local same = run(function(l) return rawequal(l, require "loom"), type(l.thread) end, loom)
      assert.is_true(same)
    end)

    describe("a module the receiver must require", function()
      -- Each test writes its own module (a fresh name), in a directory that
      -- is on package.path before its threads are created.
      local dir, old_path, modname, stamp
      local source = [[
local M = {loaded_here = true, counter = 0}
function M.hello(x) return "hello " .. x end
M.rep = string.rep
return M
]]
      before_each(function()
        -- os.tmpname() makes a fresh file; its name (plus .lua) is the module
        stamp = os.tmpname()
        dir, modname = stamp:match("^(.*)/([^/]+)$")
        modname = modname:gsub("[^%w_]", "_")
        local fh = assert(io.open(dir .. "/" .. modname .. ".lua", "w"))
        fh:write(source)
        fh:close()
        old_path = package.path
        package.path = dir .. "/?.lua;" .. package.path
      end)
      after_each(function()
        if old_path then package.path = old_path end
        old_path = nil
        os.remove(dir .. "/" .. modname .. ".lua")
        os.remove(stamp)
      end)

      it("is required in the thread when an upvalue holds it", function()
        local mod = require(modname)
        mod.counter = 5
        local name = modname
        local function use() return mod.hello("w"), mod.counter end
        local hello, counter, same = run(function(f)
          local h, c = f()
          return h, c, rawequal(package.loaded[name], require(name))
        end, use)
        assert.are.equal("hello w", hello)
        assert.are.equal(0, counter) -- the thread's own copy of the module
        assert.is_true(same)
        assert.are.equal(5, mod.counter)
      end)

      it("as an argument it is the receiver's module", function()
        local mod = require(modname)
        local same, r = run(function(m, name)
          m.counter = 99
          return rawequal(m, require(name)), m.rep("a", 2)
        end, mod, modname)
        assert.is_true(same)
        assert.are.equal("aa", r)
        assert.are.equal(0, mod.counter)
        assert.are.equal(mod, run(function(name) return require(name) end, modname))
      end)

      it("that the receiver cannot find gives an error naming it", function()
        local mod = require(modname)
        package.path = old_path -- threads created now cannot find it
        local t = helpers.spawn(identity, mod)
        local e = err_of(t.result, t, 10)
        assert.matches(modname, tostring(e), 1, true)
      end)

      it("reloaded under the same name (package.loaded cleared) still crosses by name", function()
        -- what busted's insulation and hot reloading do to package.loaded
        local first = require(modname)
        assert.are.equal(first, run(identity, first))
        package.loaded[modname] = nil
        local second = require(modname)
        assert.are_not.equal(first, second)
        local same = run(function(m, name) return rawequal(m, require(name)) end,
                         second, modname)
        assert.is_true(same)
        assert.are.equal(second, run(identity, second))
      end)
    end)
  end)

  describe("loom objects cross by reference", function()
    it("a thread handle sent back is the same object", function()
      local t = helpers.spawn(check_env(function() return loom.current_thread() end))
      local h = t:result(10)
      assert.are.equal(t, h)
      assert.is_true(rawequal(t, h))
    end)

    it("the same object twice is the same userdata", function()
      local t = helpers.spawn(check_env(function()
        local me = loom.current_thread()
        return me, me, {me, k = me}
      end))
      local a, b, c = t:result(10)
      assert.is_true(rawequal(a, b))
      assert.is_true(rawequal(a, c[1]))
      assert.is_true(rawequal(a, c.k))
      assert.is_true(rawequal(a, t))
      -- returned again by a second result() call: still the same box
      local again = t:result(10)
      assert.is_true(rawequal(a, again))
    end)

    it("a handle passed to another thread is the same object there", function()
      local main = loom.main_thread()
      local t1 = helpers.spawn(function() return 1 end)
      t1:join(10)
      local r = pack(run(function(m, h, hh)
        return rawequal(m, loom.main_thread()), rawequal(h, hh), h:join(10), h:result(10), m.name
      end, main, t1, t1))
      assert.are.same({n = 5, true, true, true, 1, "MainThread"}, r)
      local back = run(identity, t1)
      assert.is_true(rawequal(t1, back))
    end)

    it("a handle stays usable in a thread after the sender dropped it", function()
      local target = loom.Thread{target = check_env(function() return "done" end)}
      local t = helpers.spawn(check_env(function(h)
        loom.sleep(0.05)
        collectgarbage()
        h:start()
        return h:result(10)
      end), target)
      target = nil -- luacheck: ignore 311 (dropped before collecting)
      collectgarbage()
      collectgarbage()
      assert.are.equal("done", t:result(10))
    end)
  end)

  describe("values that cannot be copied", function()
    local fh
    before_each(function() fh = assert(io.tmpfile()) end)
    after_each(function() fh:close() end)

    -- The root of a path is numbered by the two tests right below; the
    -- others check the rest of the message with the root's number hidden.
    local function norm(e) return (tostring(e):gsub(" at args%[%d+%]", " at args[#]", 1)) end

    it("io.stdout itself crosses by name, an opened file does not", function()
      assert.are.equal(io.stdout, run(identity, io.stdout))
      assert.are.equal("cannot copy userdata (FILE*) at args[2].log",
                       err_of(loom.thread, noop, 1, {log = fh}))
      assert.are.equal("cannot copy userdata (FILE*) at args[1]",
                       err_of(loom.thread, noop, fh))
    end)

    it("the path counts the elements of Thread{args=}", function()
      assert.are.equal("cannot copy userdata (FILE*) at args[2].log",
                       err_of(loom.Thread, {target = noop, args = {1, {log = fh}}}))
      assert.are.equal("cannot copy userdata (FILE*) at args[1]",
                       err_of(loom.Thread, {target = noop, args = {fh}}))
    end)

    it("the path spells odd keys", function()
      assert.are.equal('cannot copy userdata (FILE*) at args[#]["a b"][1]',
                       norm(err_of(loom.thread, noop, {["a b"] = {fh}})))
      assert.are.equal("cannot copy userdata (FILE*) at args[#][1.5]",
                       norm(err_of(loom.thread, noop, {[1.5] = fh})))
      assert.are.equal("cannot copy userdata (FILE*) at args[#][100]",
                       norm(err_of(loom.thread, noop, {[100] = fh})))
      assert.are.equal("cannot copy userdata (FILE*) at args[#].x[2].y",
                       norm(err_of(loom.thread, noop, {x = {1, {y = fh}}})))
    end)

    it("a coroutine", function()
      local co = coroutine.create(noop)
      assert.are.equal("cannot copy a coroutine at args[#]",
                       norm(err_of(loom.thread, noop, co)))
      assert.are.equal("cannot copy a coroutine at args[#].co",
                       norm(err_of(loom.thread, noop, {co = co})))
    end)

    it("a table key that cannot be copied", function()
      assert.are.equal("cannot copy userdata (FILE*) at args[#].<key>",
                       norm(err_of(loom.thread, noop, {[fh] = true})))
      assert.are.equal("cannot copy a coroutine at args[#].a.<key>",
                       norm(err_of(loom.thread, noop, {a = {[coroutine.create(noop)] = 1}})))
    end)

    it("a metatable that cannot be copied", function()
      local t = setmetatable({}, {log = fh})
      assert.are.equal("cannot copy userdata (FILE*) at args[#].<metatable>.log",
                       norm(err_of(loom.thread, noop, t)))
    end)

    it("an upvalue that cannot be copied names the upvalue", function()
      local function uses_file() return fh end
      assert.are.equal("cannot copy userdata (FILE*) at args[#].cb.<upvalue fh>",
                       norm(err_of(loom.thread, noop, {cb = uses_file})))
      local function outer() return uses_file() end
      assert.are.equal("cannot copy userdata (FILE*) at args[#].<upvalue uses_file>.<upvalue fh>",
                       norm(err_of(loom.thread, noop, outer)))
      -- the target's own upvalue
      local e = err_of(loom.thread, function() return fh end)
      assert.matches("^cannot copy userdata %(FILE%*%) at .*<upvalue fh>$", e)
    end)

    it("a C function that is not in package.loaded", function()
      local wrapped = coroutine.wrap(noop)
      assert.are.equal("cannot copy a C function that is not in package.loaded at args[#]",
                       norm(err_of(loom.thread, noop, wrapped)))
    end)

    it("results that cannot be copied: result() re-raises naming results[i]", function()
      local t = helpers.spawn(check_env(function()
        return 1, {x = {io.tmpfile()}}
      end))
      local e = err_of(t.result, t, 10)
      assert.are.equal("string", type(e))
      assert.matches("^cannot copy userdata %(FILE%*%) at results%[2%]%.x%[1%]", e)
      local t2 = helpers.spawn(check_env(function() return coroutine.create(print) end))
      assert.matches("^cannot copy a coroutine at results%[1%]", err_of(t2.result, t2, 10))
    end)

    it("a table nested 100,000 deep is an error, not a crash (sending)", function()
      local deep = {}
      local c = deep
      for _ = 1, 100000 do c[1] = {}; c = c[1] end
      local e = err_of(loom.thread, noop, deep)
      assert.matches("nested more than 1000 levels", e, 1, true)
      assert.matches("^cannot copy", e)
      -- the copier still works afterwards
      assert.are.equal(1, run(identity, 1))
    end)

    it("a table nested 100,000 deep is an error, not a crash (results)", function()
      local t = helpers.spawn(check_env(function()
        local deep = {}
        local c = deep
        for _ = 1, 100000 do c[1] = {}; c = c[1] end
        return deep
      end))
      local e = err_of(t.result, t, 10)
      assert.matches("nested more than 1000 levels", tostring(e), 1, true)
      assert.matches("results[1]", tostring(e), 1, true)
    end)

    it("deep nesting through functions and metatables is bounded too", function()
      local f = function() return 0 end
      for _ = 1, 5000 do
        local g = f
        f = function() return g() + 1 end
      end
      local e = err_of(loom.thread, noop, f)
      assert.matches("nested more than 1000 levels", e, 1, true)
      local t = {}
      for _ = 1, 5000 do t = setmetatable({}, {__index = t}) end
      assert.matches("nested more than 1000 levels", err_of(loom.thread, noop, t), 1, true)
    end)

    it("a failed copy starts no thread and leaks no reference", function()
      local before = loom.active_count()
      for _ = 1, 100 do
        err_of(loom.thread, noop, loom.main_thread(), fh)
      end
      assert.are.equal(before, loom.active_count())
      -- handles in a failed message still work afterwards
      local m = loom.main_thread()
      assert.are.equal("MainThread", m.name)
    end)
  end)
end)
