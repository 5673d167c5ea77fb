-- Bugs found by `make stress` (stress/), each as a small failing case
-- marked pending until it is fixed: turn `pending` into `it` with the fix.
-- docs/guarantees.md lists them under "Known bugs".
local loom = require "loom"
local helpers = require "helpers"

local pcall = pcall

local function spawn(fn, ...) return helpers.spawn(helpers.check_env(fn), ...) end

after_each(function() helpers.join_all() end)

describe("found by make stress", function()
  -- docs/sync.md: "a waiter that is cancelled breaks the barrier too
  -- (otherwise the others would wait for ever for a party that left)".
  -- barrier_wait (csrc/sync.c) first waits while the previous cycle
  -- drains, resets or runs its action; a cancellation there raises
  -- without breaking the barrier. In stress (barrier_event, mode=cancel)
  -- a party cancelled between two cycles left the other parties waiting
  -- out their whole timeout.
  it("a party cancelled while the previous cycle finishes breaks the barrier", function()
    local b = loom.Barrier(2, function() loom.sleep(0.3) end)
    local function party(bar) return pcall(bar.wait, bar, 5) end
    local a1, a2 = spawn(party, b), spawn(party, b) -- cycle 1; its action takes 0.3 s
    loom.sleep(0.1)
    local late = spawn(function(bar)
      local ok, e = pcall(bar.wait, bar, 5) -- waits for cycle 1 to end
      return ok, loom.is_cancelled(e)
    end, b)
    loom.sleep(0.05)
    late:cancel()
    assert.are.same({ false, true }, { late:result(5) })
    assert.is_true((a1:result(5)))
    assert.is_true((a2:result(5)))
    assert.is_true(b.broken) -- fails: the barrier is not broken
    local t0 = loom.now()
    assert.is_false((pcall(b.wait, b, 1))) -- and the next party waits out its timeout
    assert.is_true(loom.now() - t0 < 0.5)
  end)
end)
