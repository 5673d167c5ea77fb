-- Objects whose own contents mention them: run under valgrind by
-- `make valgrind`, which fails if any of them is never freed.
local loom = require "loom"
local s = loom.shared{}
s.me = s
s.list = {s, 1}
assert(s.me == s and s.list[1] == s)
local t = loom.thread(function() return loom.current_thread(), {loom.current_thread()} end)
local a, b = t:result()
assert(a == t and b[1] == t)
local t2 = loom.thread(function() error({self = loom.current_thread()}) end)
local ok, e = pcall(t2.result, t2)
assert(not ok and e.self == t2)
print("ok")
