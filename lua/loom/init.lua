-- loom: real parallelism for Lua 5.4 on native threads.
-- The C core (loom.core) does the work; this layer re-exports it and lets
-- each concept's Lua side (loom/sync.lua, loom/pool.lua) add the few
-- helpers that are simpler in Lua.
local core = require "loom.core"

local loom = {}
for k, v in pairs(core) do
  -- _names are internal; c_api is for C hosts (loom.h)
  if k:sub(1, 1) ~= "_" and k ~= "c_api" then loom[k] = v end
end

require("loom.sync")(loom)
require("loom.pool")(loom, core._pool_methods)

return loom
