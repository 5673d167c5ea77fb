-- Modules in package.preload are require-able in thread states too
-- (csrc/thread.c: the creator's copyable loaders go with its paths).
local loom = require "loom"
local helpers = require "helpers"
local globals = helpers.globals -- thread functions see the real globals

describe("package.preload in threads", function()
  local saved
  before_each(function()
    saved = {}
    for k, v in pairs(package.preload) do saved[k] = v end
  end)
  after_each(function()
    for k in pairs(package.preload) do package.preload[k] = nil end
    for k, v in pairs(saved) do package.preload[k] = v end
  end)

  it("a Lua loader (with upvalues) is copied: require works in the thread", function()
    local base = 40
    package.preload["spec_preload_mod"] = function(name)
      return { answer = function() return base + 2 end, name = name }
    end
    local r = { loom.thread(globals(function()
      local m = require "spec_preload_mod"
      return m.answer(), m.name
    end)):result() }
    assert.are.same({ 42, "spec_preload_mod" }, r)
  end)

  it("reaches nested threads and pool workers", function()
    package.preload["spec_preload_two"] = function() return { two = 2 } end
    local nested = loom.thread(globals(function()
      local loom_ = require "loom"
      return loom_.thread(function() return require("spec_preload_two").two end):result()
    end)):result()
    assert.are.equal(2, nested)
    local pool <close> = loom.ThreadPoolExecutor { max_workers = 1 }
    assert.are.equal(2, pool:submit(globals(function() return require("spec_preload_two").two end)):result())
  end)

  it("a loader that cannot be copied is left out; the others still arrive", function()
    package.preload["spec_preload_bad"] = coroutine.wrap(function() end) -- a C closure
    package.preload["spec_preload_good"] = function() return "good" end
    local r = { loom.thread(globals(function()
      return package.preload.spec_preload_bad == nil, (require "spec_preload_good")
    end)):result() }
    assert.are.same({ true, "good" }, r)
  end)

  it("a loader added after the thread started is not seen (a snapshot at start)", function()
    local go, added = loom.Event(), loom.Event()
    local t = loom.thread(globals(function(g, a)
      g:set()
      a:wait(10)
      return package.preload.spec_preload_late == nil
    end), go, added)
    go:wait(10)
    package.preload["spec_preload_late"] = function() return 1 end
    added:set()
    assert.is_true(t:result())
  end)
end)
