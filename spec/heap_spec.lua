-- The allocator of thread states (csrc/heap.c): small blocks from pages,
-- large ones from malloc, blocks that grow or shrink across the boundary
-- moved between the two; plus the warning and panic functions a state
-- made with lua_newstate needs.
local helpers = require "helpers"

-- Thread bodies read globals: bound to the real ones, which cross by name.
local function thread(fn) return helpers.spawn(helpers.globals(fn)) end

describe("thread state heap", function()
  it("keeps data intact through growth, shrinking and collection", function()
    local t = thread(function()
      -- strings of every size around the small/large boundary
      local parts = {}
      for n = 1, 600 do parts[n] = string.rep(string.char(65 + n % 26), n) end
      local sum = 0
      for n = 1, 600 do
        assert(#parts[n] == n and parts[n]:byte(n) == 65 + n % 26)
        sum = sum + #parts[n]
      end
      -- a buffer that grows from a few bytes to 100 KB (realloc across
      -- the boundary), then tables that grow and are emptied again
      local buf = {}
      for i = 1, 20000 do buf[#buf + 1] = tostring(i) end
      local s = table.concat(buf, ",")
      local tabs = {}
      for round = 1, 5 do
        local big = {}
        for i = 1, 5000 do big["k" .. i] = { i, round } end
        for i = 1, 5000, 2 do big["k" .. i] = nil end
        collectgarbage()
        local n = 0
        for k, v in pairs(big) do
          assert(v[2] == round and "k" .. v[1] == k)
          n = n + 1
        end
        tabs[round] = n
      end
      collectgarbage()
      return sum, #s, tabs[1], tabs[5], collectgarbage("count") > 0
    end)
    local sum, len, n1, n5, counted = t:result(30)
    assert.equal(600 * 601 / 2, sum)
    assert.equal(#table.concat((function()
      local b = {}
      for i = 1, 20000 do b[i] = tostring(i) end
      return b
    end)(), ","), len)
    assert.equal(2500, n1)
    assert.equal(2500, n5)
    assert.is_true(counted)
  end)

  it("collects a churning thread back to its base size", function()
    local t = thread(function()
      collectgarbage()
      local base, peak = collectgarbage("count"), 0
      for _ = 1, 20 do
        local junk = {} -- luacheck: ignore 241 (garbage to collect)
        for i = 1, 20000 do junk[i] = { i, "v" .. i } end
        junk = nil -- luacheck: ignore 311 (dropped before collecting)
        collectgarbage()
        peak = math.max(peak, collectgarbage("count"))
      end
      return peak - base
    end)
    -- Lua's own count: after each full collection the state holds what it
    -- held before (20,000 records are over 2 MB), whatever the heap keeps
    assert.is_true(t:result(60) < 256)
  end)

  it("has warnings off until @on, like the standalone interpreter", function()
    local out, status = helpers.run_lua([[
      local loom = require "loom"
      loom.thread(function()
        warn("hidden")
        warn("@on")
        warn("shown ", "in pieces")
        warn("@off")
        warn("hidden too")
      end):join()
    ]], 30)
    assert.equal(0, status)
    assert.equal("Lua warning: shown in pieces\n", out)
  end)
end)
