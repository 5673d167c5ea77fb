-- The build and install story: the rockspec must name every C source, so
-- that `luarocks make` builds what `make` builds.
describe("rockspec", function()
  it("lists every csrc/*.c and every lua/loom/*.lua", function()
    local f = assert(io.open("rockspec/loom-scm-1.rockspec"))
    local text = f:read("a")
    f:close()
    local p = assert(io.popen("ls csrc/*.c lua/loom/*.lua"))
    for file in p:lines() do
      assert.is_truthy(text:find('"' .. file .. '"', 1, true), file .. " is missing from the rockspec")
    end
    p:close()
  end)

  it("exports only the public symbols of loom.h", function()
    local so = (os.getenv("LOOM_BUILD") or "build") .. "/loom/core.so"
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
