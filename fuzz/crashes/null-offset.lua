-- Finding 1 (fuzz/crashes/README.md): pointer arithmetic on NULL in the
-- encoder, reported by clang's UBSan (-fsanitize=pointer-overflow).
-- Run with a loom built by clang with -fsanitize=undefined.
local loom = require "loom"

-- encode_values: s->buf + sizeof(loom_msg) while the state's scratch has
-- no buffer yet (or freed it after a message over 1 MB): zero values.
loom.copy()                                   -- in a state that never copied
loom.thread(function() end):result()          -- a thread that returns nothing

-- publish: s->objs + e->pub_objs when no loom object was ever encoded:
-- the second chunk of a streamed queue item.
local q = loom.Queue()
local t = {}
for i = 1, 3000 do t[i] = i * 1000 end
q:put(t)
assert(#q:get() == 3000)
print("done")
