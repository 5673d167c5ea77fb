-- Finding 5 (fuzz/crashes/README.md): a table raised by a thread comes
-- back as a text instead of the table when its __tostring raises, though
-- the table itself can be copied (docs/threads.md, result(): "a table
-- stays the table that was raised").
local loom = require "loom"
local e = setmetatable({code = 7}, {__tostring = function() error("no text") end})
local t = loom.thread(function(x) error(x, 0) end, e)
local ok, got = pcall(t.result, t)
print(ok, type(got), type(got) == "string" and got:match("^[^\n]*") or got.code)
--> false  string  (error object is a table value; ...no text)
-- The fuzzer met it with io.stdout's metatable (FILE*) on a plain table:
-- its __tostring raises "bad argument #1 to '?' (FILE* expected, got FILE*)".
