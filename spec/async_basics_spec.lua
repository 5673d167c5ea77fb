-- loom.async's core rules, one case each (asyncio's behaviours, SEMANTICS
-- 23-26): running, sleeping, cancelling, combining, groups, bridges.
local loom = require "loom"
local async = require "loom.async"
local helpers = require "helpers"

describe("loom.async basics", function()
  it("run returns the main task's results and re-raises its error", function()
    assert.are.same({ 1, nil, 3 }, { async.run(function(a, b, c) return a, b, c end, 1, nil, 3) })
    local ok, e = pcall(async.run, function() error({ code = 7 }) end)
    assert.is_false(ok)
    assert.are.equal(7, e.code)
  end)

  it("run inside a running loop and suspending calls outside a task raise", function()
    local ok, e = pcall(async.run, function() return async.run(function() end) end)
    assert.is_false(ok)
    assert.matches("cannot be called from a running loop", tostring(e))
    assert.has_error(function() async.sleep(0) end,
      "async.sleep must be called from a task (inside async.run)")
  end)

  it("a main task waiting for nothing that can happen makes run raise", function()
    local ok, e = pcall(async.run, function() async.Future():await() end)
    assert.is_false(ok)
    assert.matches("can never happen", tostring(e))
  end)

  it("timers fire in the order of their deadlines", function()
    local order = async.run(function()
      local out = {}
      local ts = {}
      for _, d in ipairs { 0.03, 0.01, 0.02 } do
        ts[#ts + 1] = async.spawn(function() async.sleep(d) out[#out + 1] = d end)
      end
      for _, t in ipairs(ts) do t:await() end
      return out
    end)
    assert.are.same({ 0.01, 0.02, 0.03 }, order)
  end)

  it("cancel raises at the suspension point; a task may clean up and return", function()
    local r = { async.run(function()
      local started = async.Event()
      local caught = async.spawn(function()
        started:set()
        local ok, e = pcall(async.sleep, 10)
        return ok, loom.is_cancelled(e) and tostring(e)
      end)
      started:wait()
      caught:cancel("stop")
      local a, b = caught:await()
      local plain = async.spawn(async.sleep, 10)
      async.sleep(0)
      plain:cancel()
      local ok, e = pcall(async.await, plain)
      return a, b, caught:cancelled(), ok, loom.is_cancelled(e), plain:cancelled()
    end) }
    assert.are.same({ false, "stop", false, false, true, true }, r)
  end)

  it("a task cancelled before it starts never runs", function()
    local ran = false
    local cancelled = async.run(function()
      local t = async.spawn(function() ran = true end)
      t:cancel()
      pcall(async.await, t)
      return t:cancelled()
    end)
    assert.is_true(cancelled)
    assert.is_false(ran)
  end)

  it("cancelling a task cancels the task it awaits", function()
    local inner_cancelled = async.run(function()
      local inner = async.spawn(async.sleep, 10)
      local outer = async.spawn(function() return inner:await() end)
      async.sleep(0)
      async.sleep(0)
      outer:cancel()
      pcall(async.await, outer)
      return inner:cancelled(), outer:cancelled()
    end)
    assert.is_true(inner_cancelled)
  end)

  it("gather keeps argument order; return_exceptions puts errors in place", function()
    local r = { async.run(function()
      return async.gather(
        function() async.sleep(0.02) return "a" end,
        function() return "b" end,
        function() async.sleep(0.01) error({ "c" }) end,
        { return_exceptions = true })
    end) }
    assert.are.equal("a", r[1])
    assert.are.equal("b", r[2])
    assert.are.same({ "c" }, r[3])
    local ok, e = pcall(async.run, function()
      return async.gather(function() async.sleep(1) end, function() error({ "first" }) end)
    end)
    assert.is_false(ok)
    assert.are.same({ "first" }, e)
  end)

  it("wait_for: a timeout cancels the task, waits for it, raises; a swallowed cancel returns its value", function()
    local r = { async.run(function()
      local cleaned = false
      local t = async.spawn(function()
        local ok = pcall(async.sleep, 10)
        if not ok then async.sleep(0.01) cleaned = true end
        error(loom.error("cancelled"))
      end)
      local ok, e = pcall(async.wait_for, t, 0.02)
      local swallow = async.wait_for(function()
        pcall(async.sleep, 10)
        return "kept"
      end, 0.02)
      return ok, loom.is_timeout(e), cleaned, swallow
    end) }
    assert.are.same({ false, true, true, "kept" }, r)
  end)

  it("wait_for with a timeout <= 0 never starts a task that has not started", function()
    local ran = false
    local ok, e = pcall(async.run, function()
      return async.wait_for(async.spawn(function() ran = true end), 0)
    end)
    assert.is_false(ok)
    assert.is_true(loom.is_timeout(e))
    assert.is_false(ran)
  end)

  it("timeout() with <close> turns its cancellation into a timeout error", function()
    local r = { async.run(function()
      local cm
      local ok, e = pcall(function()
        local t <close> = async.timeout(0.02)
        cm = t
        async.sleep(10)
      end)
      local fast
      do
        local t <close> = async.timeout(1)
        async.sleep(0)
        fast = t:expired()
      end
      return ok, loom.is_timeout(e), cm:expired(), fast
    end) }
    assert.are.same({ false, true, true, false }, r)
  end)

  it("a task group: a child's error cancels the siblings and the body, errors come together", function()
    local sibling_cancelled, body_reached = false, false
    local ok, e = pcall(async.run, function()
      async.group(function(g)
        g:spawn(function() async.sleep(0.01) error("boom") end)
        g:spawn(function()
          local ok2, err = pcall(async.sleep, 10)
          sibling_cancelled = not ok2 and loom.is_cancelled(err)
        end)
        async.sleep(10)
        body_reached = true
      end)
    end)
    assert.is_false(ok)
    assert.is_true(async.is_group_error(e))
    assert.are.equal(1, #e.errors)
    assert.matches("boom", tostring(e.errors[1]))
    assert.is_true(sibling_cancelled)
    assert.is_false(body_reached)
  end)

  it("shield keeps the inner task running when its waiter is cancelled", function()
    local r = { async.run(function()
      local inner = async.spawn(function() async.sleep(0.03) return "done" end)
      local waiter = async.spawn(function() return async.await(async.shield(inner)) end)
      async.sleep(0.01)
      waiter:cancel()
      pcall(async.await, waiter)
      return waiter:cancelled(), inner:await()
    end) }
    assert.are.same({ true, "done" }, r)
  end)

  it("awaits a pool future and a thread while the loop keeps running", function()
    local pool <close> = loom.ThreadPoolExecutor { max_workers = 1 }
    local r = { async.run(function()
      local ticks, stop = 0, false
      local ticker = async.spawn(function()
        while not stop do async.sleep(0.005) ticks = ticks + 1 end
      end)
      local v = async.await(pool:submit(function(x) loom.sleep(0.05) return x * 2 end, 21))
      local t = async.await(loom.thread(function() loom.sleep(0.05) return "thread" end))
      local w = async.to_thread(function(a, b) return a .. b end, "to_", "thread")
      stop = true
      ticker:await()
      return v, t, w, ticks > 2
    end) }
    assert.are.same({ 42, "thread", "to_thread", true }, r)
  end)

  it("loops run in two loom threads at once", function()
    local function body(n)
      local as = require "loom.async"
      return as.run(function()
        local total = 0
        local ts = {}
        for i = 1, n do ts[i] = as.spawn(function() as.sleep(0.01) return i end) end
        for i = 1, n do total = total + ts[i]:await() end
        return total
      end)
    end
    body = helpers.globals(body)
    local a, b = loom.thread(body, 100), loom.thread(body, 200)
    assert.are.equal(5050, a:result(10))
    assert.are.equal(20100, b:result(10))
  end)

  it("async Lock is FIFO and refuses a release when unlocked", function()
    local order = async.run(function()
      local lock = async.Lock()
      local out = {}
      lock:acquire()
      local ts = {}
      for i = 1, 3 do
        ts[i] = async.spawn(function()
          local _ <close> = lock:guard()
          out[#out + 1] = i
        end)
        async.sleep(0)
      end
      lock:release()
      for i = 1, 3 do ts[i]:await() end
      local ok = pcall(lock.release, lock)
      out[#out + 1] = ok
      return out
    end)
    assert.are.same({ 1, 2, 3, false }, order)
  end)
end)
