-- The build and install story: the rockspecs build through the Makefile,
-- `make install` gives a C host what it needs (loom.h, loom.pc) and the
-- docs, and only the public symbols of loom.h are exported.
local loom = require "loom"
local helpers = require "helpers"

local function read(path)
  local f = assert(io.open(path))
  local text = f:read("a")
  f:close()
  return text
end

-- Runs a shell command; returns its output and whether it succeeded.
local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("a")
  return out, p:close()
end

describe("rockspec", function()
  it("scm-1 and 0.1.0-1 build the same way, and the version is loom.h's", function()
    local scm = read("rockspec/loom-scm-1.rockspec")
    local rel = read("rockspec/loom-" .. loom.version .. "-1.rockspec")
    assert.are.equal(scm:match("\nbuild = %b{}"), rel:match("\nbuild = %b{}"))
    assert.matches('\nversion = "scm%-1"', scm)
    assert.matches('tag = "v' .. loom.version:gsub("%.", "%%.") .. '"', rel)
    assert.matches('#define LOOM_VERSION "' .. loom.version:gsub("%.", "%%.") .. '"',
                   read("csrc/loom.h"))
  end)

  it("exports only the public symbols of loom.h", function()
    local so = helpers.build .. "/loom/core.so"
    local p = assert(io.popen("nm -D --defined-only " .. so .. " | awk '{print $3}'"))
    local names = {}
    for n in p:lines() do
      if not n:match("^_") then names[#names + 1] = n end
    end
    p:close()
    table.sort(names)
    assert.are.same({ "loom_register_udata", "loom_set_default_workers", "loom_set_stack_size",
                      "loom_set_state_hook", "luaopen_loom_core" }, names)
  end)
end)

describe("make install", function()
  local prefix
  before_each(function()
    prefix = os.tmpname()
    os.remove(prefix)
  end)
  after_each(function() sh("rm -rf " .. prefix) end)

  it("installs the module, loom.h, loom.pc and the docs; uninstall removes them", function()
    local make = ("make -s BUILD=%s PREFIX=%s "):format(helpers.build, prefix)
    local out, ok = sh(make .. "install")
    assert.is_true(ok, out)
    for _, f in ipairs { "lib/lua/5.4/loom/core.so", "share/lua/5.4/loom/init.lua",
                         "share/lua/5.4/loom/async.lua", "include/loom.h",
                         "lib/pkgconfig/loom.pc", "share/doc/loom/README.md",
                         "share/doc/loom/LICENSE", "share/doc/loom/docs/threads.md" } do
      assert.is_truthy(io.open(prefix .. "/" .. f), f .. " is not installed")
    end
    local pc = prefix .. "/lib/pkgconfig/loom.pc"
    local flags
    flags, ok = sh("pkg-config --cflags --libs " .. pc)
    assert.is_true(ok, flags)
    assert.matches("-I" .. prefix:gsub("%p", "%%%0") .. "/include", flags)
    assert.matches(prefix:gsub("%p", "%%%0") .. "/lib/lua/5%.4/loom/core%.so", flags)
    assert.are.equal(loom.version .. "\n", (sh("pkg-config --modversion " .. pc)))

    -- a host built with those flags sets a hook, then requires the same library
    if not os.getenv("LOOM_SANITIZER") then
      local src = prefix .. "/host.c"
      local f = assert(io.open(src, "w"))
      f:write([[
#include "lua.h"
#include "lauxlib.h"
#include "lualib.h"
#include "loom.h"
static void hook(lua_State *L, void *ud) {
  (void)ud;
  lua_pushliteral(L, "hooked");
  lua_setglobal(L, "HOOKED");
}
int main(int argc, char **argv) {
  (void)argc;
  loom_set_state_hook(hook, NULL);
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  int status = luaL_dostring(L, argv[1]);
  if (status != LUA_OK) lua_writestringerror("%s\n", lua_tostring(L, -1));
  lua_close(L);
  return status;
}
]])
      f:close()
      out, ok = sh(("cc -o %s/host %s %s $(pkg-config --libs lua5.4 || echo -llua5.4)")
                   :format(prefix, src, flags:gsub("\n", "")))
      assert.is_true(ok, out)
      out, ok = sh(("LUA_CPATH='%s/lib/lua/5.4/?.so' LUA_PATH='%s/share/lua/5.4/?.lua;%s/share/lua/5.4/?/init.lua' " ..
                    "%s/host 'print(require(\"loom\").thread(function() return HOOKED end):result())'")
                   :format(prefix, prefix, prefix, prefix))
      assert.is_true(ok, out)
      assert.are.equal("hooked\n", out)
    end

    out, ok = sh(make .. "uninstall")
    assert.is_true(ok, out)
    local left = sh("find " .. prefix .. " -type f ! -name 'host*'")
    assert.are.equal("", left)
  end)
end)
