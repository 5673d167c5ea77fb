-- Finding 3 (fuzz/crashes/README.md): C functions and userdata found in a
-- module under a key with a zero byte are copied by a truncated name:
-- the name map stores module and field with lua_pushstring/lua_tostring.
local loom = require "loom"

local f = coroutine.wrap(function() end)   -- a C function of no module
string["x\0y"] = f                           -- now a module's field
print(loom.copy(f))                          --> nil (looked up as string.x)

local g = coroutine.wrap(function() end)
string["rep\0lica"] = g
print(loom.copy(g) == string.rep)            --> true: another function
