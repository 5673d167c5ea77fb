-- stress/shared.lua: loom.shared tables under contention. Threads move
-- money between accounts in transactions (guard, with), audit the total
-- with snapshot() and pairs(), bump counters with incr and update (also
-- in a nested shared table), and churn keys of their own through growth
-- and shrinking; one of them may be cancelled while it waits for the
-- table the main thread owns. The total never changes, no count is lost.
local loom = require "loom"
local lib = require "stress.lib"

local START = 1000

local function audit(bank, K, how)
  local snap
  if how == "pairs" then
    snap = {}
    for k, v in pairs(bank) do snap[k] = v end
  else
    snap = bank:snapshot()
  end
  local sum = 0
  for a = 1, K do sum = sum + snap["acct" .. a] end
  if sum ~= K * START then lib.fail("%s saw a total of %d, not %d", how, sum, K * START) end
end

local function transfer(bank, a, b, amount)
  local va = bank["acct" .. a]
  if va >= amount then
    bank["acct" .. a] = va - amount
    bank["acct" .. b] = bank["acct" .. b] + amount
  end
end

-- n operations; returns the counts the main thread checks, and whether
-- the thread was cancelled.
local function teller(bank, K, me, n, seed)
  local r = lib.rng(seed)
  local counts = { incr = 0, update = 0 }
  local mine = {}
  local ok, err = pcall(function()
    local inner = bank.inner -- waits (cancellably) while main owns bank
    for _ = 1, n do
      local op = r(8)
      if op == 1 then
        local _ <close> = bank:guard()
        transfer(bank, r(K), r(K), r(1, 50))
      elseif op == 2 then
        bank:with(transfer, bank, r(K), r(K), r(1, 50))
      elseif op == 3 then
        bank:update("updates", function(v) return (v or 0) + 1 end)
        counts.update = counts.update + 1
      elseif op == 4 then
        audit(bank, K, r(2) == 1 and "pairs" or "snapshot")
      elseif op == 5 then
        inner:incr("hits")
        counts.incr = counts.incr + 1
      else
        -- keys of this thread: set (scalars, strings, tables), remove
        local key = "k" .. me .. "_" .. r(64)
        local v = r(4)
        if v == 1 then bank[key] = nil; mine[key] = nil
        elseif v == 2 then bank[key] = r(1000); mine[key] = true
        elseif v == 3 then bank[key] = string.rep("s", r(0, 40)); mine[key] = true
        else bank[key] = { me, key, { r(9) } }; mine[key] = true end
      end
    end
    for key in pairs(mine) do bank[key] = nil end
  end)
  if not ok then
    if not loom.is_cancelled(err) then error(err, 0) end
    return counts, true
  end
  return counts, false
end

local scen = { name = "shared_tables" }
function scen.run(ctx)
  local K = ctx:param("accounts", ctx:int(2, 16))
  local W = ctx:param("threads", ctx:int(2, 6))
  local n = ctx:param("n", ctx:n(ctx:pick { 1000, 5000 }, 20))
  local init = { updates = 0 }
  for a = 1, K do init["acct" .. a] = START end
  local bank = loom.shared(init)
  bank.inner = loom.shared { hits = 0 }
  local ts = {}
  for i = 1, W do ts[i] = ctx:spawn(teller, bank, K, i, n, ctx:sub()) end
  local victim = ctx:chance(0.3) and ctx:int(1, W)
  if victim then
    ctx:param("cancel", "one")
    loom.sleep(ctx.rng() * 0.01)
    local g = bank:guard() -- everyone waits for the table now
    loom.sleep(0.002)
    ts[victim]:cancel()
    g:release()
  end
  local incr, update = 0, 0
  for i = 1, W do
    local counts, cancelled = ctx:result(ts[i])
    incr, update = incr + counts.incr, update + counts.update
    if i ~= victim then lib.check(not cancelled, "thread %d cancelled", i) end
  end
  audit(bank, K, "snapshot")
  lib.check(bank.inner.hits == incr, "inner.hits %d after %d incr", bank.inner.hits, incr)
  lib.check(bank.updates == update, "updates %d after %d update calls", bank.updates, update)
  for k in pairs(bank) do
    if type(k) == "string" and k:match("^k(%d+)_") then
      -- only a cancelled thread may leave keys behind
      lib.check(tonumber(k:match("^k(%d+)_")) == victim, "key %s left behind", k)
      bank[k] = nil
    end
  end
  local nkeys = 0
  for _ in pairs(bank) do nkeys = nkeys + 1 end
  lib.check(nkeys == K + 2, "%d keys, expected %d", nkeys, K + 2)
end

return { scen }
