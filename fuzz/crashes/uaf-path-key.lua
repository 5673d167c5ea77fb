-- Finding 4 (fuzz/crashes/README.md): heap-use-after-free in put_path.
-- Run with an ASan build of loom (make asan builds build-asan/lua and
-- build-asan/loom/core.so): LUA_CPATH='build-asan/?.so;;' build-asan/lua ...
--
-- A streamed queue item notes where each of its tables sits (its parent
-- and the key under it, place.key.str = the key string's bytes) so that a
-- later reference to a table already handed over can be written as a path.
-- Meeting a C function the name map lacks, the encoder rebuilds the map,
-- which allocates; the collector runs; a finalizer clears the list, so the
-- key strings die and are freed; the back references at the end of the
-- item then copy the freed key strings.
local loom = require "loom"
for trial = 1, 60 do
  local list, early = {}, {}
  for i = 1, 400 do
    local r = {i = i}
    list["record key number " .. i .. string.rep("-", 30)] = r  -- not interned
    early[i] = r
  end
  string["fz" .. trial] = coroutine.wrap(function() end)   -- not in the name map
  local tail = {string["fz" .. trial]}
  for i = 1, 400 do tail[#tail + 1] = early[i] end        -- back references
  local item = {list, tail}
  local function arm(n)
    setmetatable({}, {__gc = function()
      for k in next, list do list[k] = nil end             -- the keys die
      if n > 0 then arm(n - 1) end
    end})
  end
  collectgarbage("incremental", 10, 400)
  for _ = 1, 10 do arm(5) end
  local q = loom.Queue()
  pcall(q.put, q, item)
  collectgarbage("incremental", 200, 100)
end
print("no error (it takes an ASan build to see it)")
