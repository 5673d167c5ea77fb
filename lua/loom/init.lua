-- loom: real parallelism for Lua 5.4 on native threads.
-- The C core (loom.core) does the work; this layer re-exports it and lets
-- each concept's Lua side (loom/sync.lua, ...) add the few
-- helpers that are simpler in Lua.
local core = require "loom.core"

local loom = {}
for k, v in pairs(core) do loom[k] = v end

for _, name in ipairs { "loom.sync" } do
  require(name)(loom)
end

return loom
