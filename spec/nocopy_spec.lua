-- A table whose metatable has a __nocopy field is refused by the copier
-- (csrc/transfer.c), with that field's text: loom.async's primitives use
-- it, since they belong to the loop of one thread.
local loom = require "loom"
local async = require "loom.async"

describe("__nocopy", function()
  it("refuses a table of such a class, naming it and where it was", function()
    local Session = { __nocopy = "a Session (it holds a socket)" }
    local ok, e = pcall(loom.copy, { user = setmetatable({}, Session) })
    assert.is_false(ok)
    assert.matches("cannot copy a Session (it holds a socket) at args[1].user", tostring(e), 1, true)
  end)

  it("refuses loom.async's primitives: they belong to one loop", function()
    for _, make in ipairs { async.Event, async.Lock, async.Condition, async.Semaphore,
                            async.Queue, function() return async.Barrier(2) end } do
      local ok, e = pcall(loom.copy, make())
      assert.is_false(ok)
      assert.matches("it belongs to the loop of one thread", tostring(e), 1, true)
    end
    local q = loom.Queue()
    assert.has_error(function() q:put(async.Event()) end)
    assert.are.equal(0, q:qsize())
  end)

  it("leaves other tables with metatables alone", function()
    local t = loom.copy(setmetatable({ 1 }, { __index = { x = 2 } }))
    assert.are.equal(2, t.x)
  end)
end)
