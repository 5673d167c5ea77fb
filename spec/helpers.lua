-- Shared by the specs: paths, running Lua snippets in a child process,
-- and joining every thread a spec started.
local helpers = {}

helpers.build = os.getenv("LOOM_BUILD") or "build"
helpers.lua = os.getenv("LOOM_LUA") or "lua5.4"

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- Runs `code` in a fresh lua5.4 that can require loom; returns its
-- stdout+stderr and exit status. Used for exit-time behaviour. `setup` is
-- shell run first in the child's shell (e.g. "ulimit -v 300000").
function helpers.run_lua(code, timeout, setup)
  local prelude = string.format(
    "package.cpath='./%s/?.so;'..package.cpath;" ..
    "package.path='./lua/?.lua;./lua/?/init.lua;'..package.path;",
    helpers.build)
  local f = os.tmpname()
  local fh = assert(io.open(f, "w"))
  fh:write(prelude, "\n", code)
  fh:close()
  local cmd = string.format("%stimeout %d %s %s 2>&1",
                            setup and (setup .. "; ") or "", timeout or 60,
                            helpers.lua, shell_quote(f))
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  local ok, _, status = p:close()
  os.remove(f)
  return out, ok and 0 or status
end

-- Runs a file (an example) with the test build; returns output, status.
function helpers.run_file(path, args, timeout)
  local cmd = string.format(
    "LUA_CPATH='./%s/?.so;;' LUA_PATH='./lua/?.lua;./lua/?/init.lua;;' timeout %d %s %s %s 2>&1",
    helpers.build, timeout or 120, helpers.lua, path, args or "")
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  local ok, _, status = p:close()
  return out, ok and 0 or status
end

-- In busted, a spec file's _ENV is busted's own environment, not _G, so
-- a thread body that reads a global would copy all of busted into the
-- thread. Specs bind the names they need as locals; check_env(fn) fails
-- loudly when fn, or a function it reaches through upvalues, still reads
-- a global.
-- All the values a call returned, with their count: pack(f()).
function helpers.pack(...) return { n = select("#", ...), ... } end

-- The error f(...) raises; fails when it raises none.
function helpers.err_of(f, ...)
  local ok, e = pcall(f, ...)
  assert(not ok, "expected an error")
  return e
end

-- Inside a loom.async task: gives the other ready tasks n turns of the loop.
function helpers.turns(n)
  local async = require "loom.async"
  for _ = 1, n or 5 do async.sleep(0) end
end

-- async.run with a bound: a spec that would hang fails after `limit` s.
function helpers.run_bounded(fn, limit)
  local async = require "loom.async"
  return async.run(function()
    local main = async.spawn(fn)
    local _, pending = async.wait({ main }, { timeout = limit or 10 })
    if #pending > 0 then
      main:cancel()
      error("spec timed out after " .. (limit or 10) .. " s", 0)
    end
    return main:result()
  end)
end

local G = _G
function helpers.check_env(fn, seen)
  seen = seen or {}
  if seen[fn] then return fn end
  seen[fn] = true
  for i = 1, math.huge do
    local name, value = debug.getupvalue(fn, i)
    if name == nil then break end
    if name == "_ENV" and value ~= G then
      error("spec bug: a function sent to a thread reads a global", 2)
    end
    if type(value) == "function" then helpers.check_env(value, seen) end
  end
  return fn
end

-- The other way round, for bodies that read globals: rebinds fn's own
-- _ENV to the real globals, which cross by name (then checks as above).
local function G_env() return G end
function helpers.globals(fn)
  for i = 1, math.huge do
    local name = debug.getupvalue(fn, i)
    if name == nil then break end
    if name == "_ENV" then debug.upvaluejoin(fn, i, G_env, 1) end
  end
  return helpers.check_env(fn)
end

-- Threads started through helpers.spawn are joined by helpers.join_all,
-- which each spec calls in after_each.
local started = {}
function helpers.spawn(...)
  local loom = require "loom"
  local t = loom.thread(...)
  started[#started + 1] = t
  return t
end

function helpers.join_all(timeout)
  for i, t in ipairs(started) do
    if not t:join(timeout or 30) then
      t:cancel()
      t:join(5)
    end
    started[i] = nil
  end
end

return helpers
