-- Observation (fuzz/crashes/README.md): a streamed queue item that the
-- producer withdraws (its encode fails late) still makes a consumer that
-- cannot decode its first chunk raise, instead of dropping the item and
-- waiting for the next one (docs/transfer.md, "Streaming").
local loom = require "loom"
local m = {}
package.loaded.fzmodX = m                         -- a module only this state has
local big = {}
for i = 1, 300000 do big[i] = i * 1000 end
big[1] = m                                        -- the first chunk names it
big[299999] = coroutine.create(function() end)   -- the encode fails late
local q = loom.Queue()
local t = loom.thread(function(q) return pcall(q.get, q, 2) end, q)
loom.sleep(0.2)                                   -- the consumer waits in get
print("put:", pcall(q.put, q, big))               --> false  cannot copy a coroutine at item[299999]
print("consumer:", t:result())                    --> false  module 'fzmodX' not found ...
-- (with nothing else wrong, the consumer would get: true nil timeout)
