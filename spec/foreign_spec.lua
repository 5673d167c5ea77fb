-- Userdata of other C libraries across threads (loom.h: loom_register_udata,
-- reached here through loom.core's c_api, as a host that loaded loom with
-- require would). spec/support/udata_lib.c has a copied type (udata.Point)
-- and a shared one (udata.Counter); lib.stats() counts live counters, live
-- exported points and imports, so the specs can check nothing leaks.
local loom = require "loom"
local helpers = require "helpers"
local lib = require "udata_lib"
local type = type

local function settle()
  collectgarbage()
  collectgarbage()
end

describe("foreign userdata", function()
  after_each(function() lib.unregister() end)

  it("is refused while its type is not registered, with today's message", function()
    local ok, e = pcall(loom.thread, function() end, lib.point(1, 2))
    assert.is_false(ok)
    assert.matches("cannot copy userdata (udata.Point) at args[1]", tostring(e), 1, true)
    ok, e = pcall(loom.copy, { lib.counter() })
    assert.is_false(ok)
    assert.matches("cannot copy userdata (udata.Counter)", tostring(e), 1, true)
  end)

  it("registers by metatable name; bad registrations fail with -1", function()
    assert.are.same({ 0, 0 }, { lib.register() })
    assert.are.same({ -1, -1, -1 }, { lib.register_invalid() })
    assert.are.same({ 0, 0 }, { lib.register() }) -- again: replaces
  end)

  it("a copied type arrives as an equal, independent value in the thread", function()
    lib.register()
    local p = lib.point(1.5, -2)
    local t = loom.thread(function(q)
      local before = { q.x, q.y, type(q) == "userdata" }
      q.x = 100 -- the sender's point does not change
      return before, q
    end, p)
    local before, back = t:result()
    assert.are.same({ 1.5, -2, true }, before)
    assert.are.equal(1.5, p.x)
    assert.are.equal(100, back.x) -- and it crossed back, copied again
    assert.are_not.equal(p, back)
  end)

  it("a shared type points at the same C object in every thread", function()
    lib.register()
    local c = lib.counter()
    local ts = {}
    for i = 1, 4 do
      ts[i] = loom.thread(function(counter, n)
        for _ = 1, n do counter:incr() end
        return counter
      end, c, 2500)
    end
    for i = 1, 4 do assert.is_true(c:same(ts[i]:result())) end
    assert.are.equal(10000, c:value())
  end)

  it("crosses through queues, shared tables, pools and futures", function()
    lib.register()
    local q = loom.Queue()
    q:put(lib.point(3, 4))
    assert.are.equal(4, q:get(1).y)
    local s = loom.shared { p = lib.point(5, 6) }
    -- every read decodes anew: two reads, two values
    local a, b = s.p, s.p
    assert.are.equal(5, a.x)
    assert.are_not.equal(a, b)
    local pool <close> = loom.ThreadPoolExecutor { max_workers = 2 }
    local c = lib.counter()
    local fs = {}
    for i = 1, 8 do fs[i] = pool:submit(function(counter, k) return counter:incr(k) end, c, i) end
    for i = 1, 8 do fs[i]:result() end
    assert.are.equal(36, c:value())
    local sums = {}
    for _, r in pool:map(function(p) return p.x + p.y end, { lib.point(1, 2), lib.point(3, 4) }) do
      sums[#sums + 1] = r
    end
    assert.are.same({ 3, 7 }, sums)
  end)

  it("an exporter that refuses makes the send raise, naming the type", function()
    lib.register()
    local ok, e = pcall(loom.copy, { lib.point(0, 0, true) })
    assert.is_false(ok)
    assert.matches("cannot copy userdata (udata.Point): its exporter refused it", tostring(e), 1, true)
  end)

  it("an importer that pushes the wrong number of values raises in the receiver", function()
    lib.register(true)
    local q = loom.Queue()
    q:put(lib.point(1, 1))
    local ok, e = pcall(q.get, q, 1)
    assert.is_false(ok)
    assert.matches("a userdata importer must push exactly one value (it pushed 2)", tostring(e), 1, true)
  end)

  it("drops what it exported once no message holds it (nothing leaks)", function()
    lib.register()
    settle()
    local counters0, exports0 = lib.stats()
    do
      local q = loom.Queue()
      for i = 1, 10 do q:put({ lib.point(i, i), lib.counter() }) end
      -- half of them read, the rest dropped with the queue
      for _ = 1, 5 do q:get(1) end
      local s = loom.shared { p = lib.point(1, 1) }
      s.p = nil
      local t = loom.thread(function(p) return p end, lib.point(2, 2))
      t:join()
    end
    settle()
    local counters, exports = lib.stats()
    assert.are.same({ counters0, exports0 }, { counters, exports })
  end)

  it("an unregistered type is refused again, values in flight still arrive", function()
    lib.register()
    local q = loom.Queue()
    q:put(lib.point(7, 8))
    lib.unregister()
    assert.are.equal(7, q:get(1).x)
    local ok = pcall(loom.copy, lib.point(1, 1))
    assert.is_false(ok)
  end)

  it("is reached by a host that loaded loom with require: c_api", function()
    local core = require "loom.core"
    assert.are.equal("userdata", type(core.c_api))
  end)

  it("compiles in C++ with loom.h (extern \"C\" around lua.h)", function()
    local src = os.tmpname() .. ".cpp"
    local f = assert(io.open(src, "w"))
    f:write([[
#include "loom.h"
static void *ex(lua_State *, int, void *) { return nullptr; }
static void im(lua_State *L, void *, void *) { lua_pushnil(L); }
int main() {
  loom_udata_ops ops = {ex, im, nullptr, nullptr};
  loom_c_api api{};
  (void)ops; (void)api;
  return LOOM_C_API_VERSION == 1 ? 0 : 1;
}
]])
    f:close()
    local inc = helpers.lua_incdir and helpers.lua_incdir() or "/usr/include/lua5.4"
    local cmd = ("g++ -std=c++17 -Wall -Wextra -Werror -fsyntax-only -I%s -Icsrc %s 2>&1"):format(inc, src)
    local p = io.popen(cmd)
    local out = p:read("a")
    local ok = p:close()
    os.remove(src)
    if out:find("not found", 1, true) and out:find("g++", 1, true) then
      pending("g++ is not installed")
      return
    end
    assert.is_true(ok, out)
  end)
end)
