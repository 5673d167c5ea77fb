-- loom.async's bridge to thread queues: async.get / async.put suspend the
-- task, not the loop's thread, and lose no item.
local loom = require "loom"
local async = require "loom.async"

describe("async.get / async.put on a loom.Queue", function()
  it("gets every item a thread puts, in order, while other tasks run", function()
    local q = loom.Queue(4)
    local go = loom.Event() -- set by the ticker: the producer starts only
                            -- once the loop ran it while get waited
    local prod = loom.thread(function(queue, ev)
      ev:wait(10)
      for i = 1, 2000 do queue:put(i) end
      queue:close()
    end, q, go)
    local got, ticks = async.run(function()
      local seen, stop, n = {}, false, 0
      local ticker = async.spawn(function()
        while not stop do
          n = n + 1
          go:set()
          async.sleep(0)
        end
      end)
      while true do
        local v, why = async.get(q, 10)
        if v == nil then
          assert.are.equal("closed", why)
          break
        end
        seen[#seen + 1] = v
      end
      stop = true
      ticker:await()
      return seen, n
    end)
    prod:join(10)
    assert.are.equal(2000, #got)
    for i = 1, 2000 do assert.are.equal(i, got[i]) end
    assert.is_true(ticks > 0) -- the loop went on while get waited
  end)

  it("times out, returns nil, 'timeout', and an immediate check with 0", function()
    local q = loom.Queue()
    assert.are.same({ nil, "timeout", nil, "timeout" }, { async.run(function()
      local a, b = async.get(q, 0.02)
      local c, d = async.get(q, 0)
      return a, b, c, d
    end) })
  end)

  it("a cancelled get takes nothing from the queue", function()
    local q = loom.Queue()
    local left = async.run(function()
      local g = async.spawn(async.get, q)
      async.sleep(0.01)
      assert.is_true(g:cancel())
      local ok, e = pcall(async.await, g)
      assert.is_false(ok)
      assert.is_true(loom.is_cancelled(e))
      q:put("kept")
      return q:get_nowait()
    end)
    assert.are.equal("kept", left)
  end)

  it("a put into a full queue waits for room without blocking the loop", function()
    local q = loom.Queue(1)
    q:put("first")
    local drained = loom.Event()
    local drain = loom.thread(function(queue, ev)
      ev:wait(10)
      return queue:get(), queue:get()
    end, q, drained)
    local a, b, order = async.run(function()
      local steps = {}
      local putter = async.spawn(function()
        local ok = async.put(q, "second")
        steps[#steps + 1] = "put"
        return ok
      end)
      async.sleep(0.01)
      steps[#steps + 1] = "loop alive"
      drained:set()
      assert.is_true(putter:await())
      local x, y = async.await(drain)
      return x, y, table.concat(steps, ",")
    end)
    assert.are.equal("first", a)
    assert.are.equal("second", b)
    assert.are.equal("loop alive,put", order)
  end)

  it("a cancelled put into a full queue puts nothing", function()
    local q = loom.Queue(1)
    q:put("only")
    async.run(function()
      local p = async.spawn(async.put, q, "never")
      async.sleep(0.05)
      p:cancel()
      local ok, e = pcall(async.await, p)
      assert.is_false(ok)
      assert.is_true(loom.is_cancelled(e))
    end)
    loom.sleep(0.05) -- the interrupted pool put has given up by now (bounded)
    assert.are.equal("only", q:get_nowait())
    assert.are.same({ nil, "empty" }, { q:get_nowait() })
  end)

  it("put on a closed queue raises, get on a drained closed queue says closed", function()
    local q = loom.Queue()
    q:close()
    async.run(function()
      local ok, e = pcall(async.put, q, 1)
      assert.is_false(ok)
      assert.is_true(loom.is_closed(e))
      assert.are.same({ nil, "closed" }, { async.get(q) })
    end)
  end)

  it("refuses what is not a queue, and calls outside a task", function()
    assert.has_error(function() async.run(function() async.get({}) end) end)
    assert.has_error(function() async.get(loom.Queue()) end,
      "async.get must be called from a task (inside async.run)")
  end)
end)
