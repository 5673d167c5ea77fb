-- Finding 2 (fuzz/crashes/README.md): the decoder pushes past the stack
-- space it reserved. Needs a Lua built with -DLUA_USE_APICHECK, where it
-- fails "lua_pushstring: Assertion `(L->top <= L->ci->top) && "stack
-- overflow"'"; with a stock Lua nothing visible happens (the stack has
-- slack), but the API contract is broken.
--
-- The arguments of a new thread are one message. Repeated short strings
-- make the decoder reserve its ring of 256 slots (loom__decode checks
-- count + nkept + 3 slots), and the loom object among the arguments is
-- the first of its class in the new state: loom__push_object ->
-- push_class_meta -> luaL_requiref("loom.core") pushes several more.
local loom = require "loom"
local t = {}
for i = 1, 600 do t["k" .. i] = "v" .. i % 100 end
print(select("#", loom.thread(function(...) return ... end, 1.5, loom.shared(), t):result()))
