local loom = require "loom"
describe("smoke", function()
  it("runs a thread", function()
    assert.are.equal(3, loom.thread(function(a, b) return a + b end, 1, 2):result())
  end)
end)
