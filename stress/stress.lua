-- stress/stress.lua: `make stress`. Runs randomly chosen scenarios (queues
-- and select, every primitive, shared tables, pools and futures, async
-- loops bridged to threads, thread churn, bad input) until the time is up,
-- and checks after each one that nothing was lost or duplicated, that
-- every future completed or was cancelled exactly once, that no thread is
-- left running and that memory came back.
--
--   STRESS_SECONDS=300   total time (new rounds start until it is spent)
--   STRESS_SEED=n        the seed (printed at the start) reproduces a run
--   STRESS_ROUND=k       run only round k of that seed's sequence
--   STRESS_ONLY=a,b      draw scenarios only among these names
--   STRESS_TIMEOUT=s     timeout of every blocking call (30 s, 90 s under
--                        a sanitizer): reaching it is a failure
--   STRESS_SCALE=x       work per scenario (1; 0.4 under ASan, 0.15 under TSan)
--   STRESS_WATCHDOG=s    a round running longer is a hang: the process
--                        ends naming it (6 timeouts + 60 s)
--   STRESS_KNOWN_BUGS=1  also run the steps that hit known loom bugs
--                        (docs/guarantees.md lists them)
--   LOOM_BUILD=build     where loom/core.so is (set by the Makefile)
--
-- Ends with "N passed, N failed" (N = scenarios run); exits 1 on failure.
local root = (arg and arg[0] or ""):match("^(.*)/stress/[^/]*$") or "."
local build = os.getenv("LOOM_BUILD") or "build"
if build:sub(1, 1) ~= "/" then build = root .. "/" .. build end
package.path = root .. "/?.lua;" .. root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
package.cpath = build .. "/?.so;" .. package.cpath

local loom = require "loom"
local lib = require "stress.lib"

local modules = { "stress.queues", "stress.sync", "stress.shared", "stress.pool",
                  "stress.async", "stress.threads", "stress.misuse" }
local scenarios = {}
for _, m in ipairs(modules) do
  for _, s in ipairs(require(m)) do scenarios[#scenarios + 1] = s end
end

local only = os.getenv("STRESS_ONLY")
if only and only ~= "" then
  local keep = {}
  for name in only:gmatch("[^,%s]+") do keep[name] = true end
  local list = {}
  for _, s in ipairs(scenarios) do
    if keep[s.name] then list[#list + 1] = s; keep[s.name] = nil end
  end
  if next(keep) then
    io.stderr:write("stress: no scenario named " .. next(keep) .. "\n")
    os.exit(2)
  end
  scenarios = list
end

-- the scenario list decides what each round draws: a reproduction needs it
local only_env = ((only and only ~= "") and ("STRESS_ONLY=" .. only .. " ") or "")
  .. (lib.known_bugs and "STRESS_KNOWN_BUGS=1 " or "")
  .. (os.getenv("STRESS_SCALE") and ("STRESS_SCALE=" .. os.getenv("STRESS_SCALE") .. " ") or "")

local target = lib.sanitizer and ("stress-" .. lib.sanitizer) or "stress"

local SECONDS = tonumber(os.getenv("STRESS_SECONDS")) or 300
local SEED = math.tointeger(tonumber(os.getenv("STRESS_SEED") or ""))
if not SEED then
  -- a fresh seed: the clock and the address of a new table
  local addr = tonumber(tostring({}):match("0x(%x+)"), 16) or 0
  SEED = lib.derive(os.time(), math.floor(os.clock() * 1e6), addr)
end
local ONLY_ROUND = math.tointeger(tonumber(os.getenv("STRESS_ROUND") or ""))
local T = lib.T
-- Work per scenario: less under a sanitizer (ASan runs loom about 3 times
-- slower, TSan 5 to 20 times).
local SCALE = tonumber(os.getenv("STRESS_SCALE"))
  or (lib.sanitizer == "asan" and 0.4) or (lib.sanitizer and 0.15) or 1
-- A round still running after this long is stuck: the watchdog ends the
-- process (every wait of a round is bounded by T; a failing round may
-- spend a few T in them and in its clean-up).
local WATCHDOG = tonumber(os.getenv("STRESS_WATCHDOG")) or (6 * T + 60)
-- After a round, the threads it started must be gone within SETTLE s
-- (pool workers of a pool dropped without waiting end on their own).
local SETTLE = lib.sanitizer and 30 or 10

local function rss_kb()
  local f = io.open("/proc/self/status")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return tonumber(s:match("VmRSS:%s*(%d+)"))
end

local function lua_kb()
  collectgarbage("collect")
  collectgarbage("collect")
  return collectgarbage("count")
end

-- The order of rounds: first each scenario once (the warm-up, in an order
-- drawn from the seed), then a random one per round.
local order_rng = lib.rng(lib.derive(SEED, 0))
local warm = {}
for i = 1, #scenarios do warm[i] = i end
for i = #warm, 2, -1 do
  local j = order_rng(i)
  warm[i], warm[j] = warm[j], warm[i]
end
local function scenario_of(round)
  if round <= #warm then return scenarios[warm[round]] end
  return scenarios[lib.rng(lib.derive(SEED, round, 1))(#scenarios)]
end

-- The watchdog: a daemon thread that ends the process when a round runs
-- far past its timeouts (something blocked without one, or a scenario's
-- own logic hangs), saying which round and how to reproduce it.
local state = loom.shared { passed = 0, failed = 0, only_env = only_env, target = target }
local stop = loom.Event()
local function watchdog(st, stop_ev, seed)
  local loom_ = require "loom"
  while not stop_ev:wait(1) do
    local started = st.started
    if started and loom_.now() - started > st.limit then
      io.stderr:write(string.format(
        "\nstress: HANG: round %d (%s) still running after %.0f s; reproduce with " ..
        "%sSTRESS_SEED=%d STRESS_ROUND=%d make %s\n", st.round, st.name,
        loom_.now() - started, st.only_env, seed, st.round, st.target))
      io.stdout:write(string.format("%d passed, %d failed\n", st.passed, st.failed + 1))
      io.stdout:flush()
      os.exit(3, false)
    end
  end
end
local dog = loom.Thread { target = watchdog, args = { state, stop, SEED },
                          name = "stress-watchdog", daemon = true }
dog:start()

-- What a scenario gets: its random choices, the timeout, the work scale,
-- and helpers that register what it starts so that a failure can be
-- cleaned up (threads cancelled, queues closed, pools shut down).
local Ctx = {}
Ctx.__index = Ctx

local function new_ctx(round, scen)
  local seed = lib.derive(SEED, round, 2)
  return setmetatable({
    round = round, name = scen.name, seed = seed, rng = lib.rng(seed), T = T,
    scale = SCALE, threads = {}, queues = {}, pools = {}, events = {},
    barriers = {}, notes = {}, nsub = 0,
  }, Ctx)
end

-- ctx:param(name, value): records a choice for the round's line.
function Ctx:param(name, value)
  self.notes[#self.notes + 1] = name .. "=" .. tostring(value)
  return value
end

function Ctx:int(m, n) return self.rng(m, n) end
function Ctx:chance(p) return self.rng() < p end
function Ctx:pick(list) return list[self.rng(#list)] end
-- n scaled by the work factor, at least lo
function Ctx:n(n, lo) return math.max(lo or 1, math.floor(n * self.scale + 0.5)) end

-- A seed for the next actor (thread, task) of this round.
function Ctx:sub()
  self.nsub = self.nsub + 1
  return lib.derive(self.seed, self.nsub)
end

function Ctx:spawn(fn, ...)
  local t = loom.Thread { target = fn, args = table.pack(...),
                          name = self.name .. "#" .. (#self.threads + 1) }
  t:start()
  self.threads[#self.threads + 1] = t
  return t
end

-- The results of thread t, within the timeout; its error, naming it.
function Ctx:result(t)
  if not t:join(self.T) then
    lib.fail("thread %s still running after %g s (lost wake-up?)", t.name, self.T)
  end
  local r = table.pack(pcall(t.result, t, 0))
  if not r[1] then
    local e = r[2]
    if type(e) ~= "string" then
      e = string.format("%s%s", loom.is_error(e) and (e.kind .. " error: ") or "", tostring(e))
    end
    error(string.format("thread %s raised: %s", t.name, e), 0)
  end
  return table.unpack(r, 2, r.n)
end

function Ctx:own_queue(q) self.queues[#self.queues + 1] = q; return q end
function Ctx:own_pool(p) self.pools[#self.pools + 1] = p; return p end
function Ctx:own_event(e) self.events[#self.events + 1] = e; return e end
function Ctx:own_barrier(b) self.barriers[#self.barriers + 1] = b; return b end

-- After a failure: unblock and stop everything the round started.
function Ctx:abort()
  for _, e in ipairs(self.events) do pcall(e.set, e) end
  for _, b in ipairs(self.barriers) do pcall(b.abort, b) end
  for _, q in ipairs(self.queues) do pcall(q.close, q, true) end
  for _, t in ipairs(self.threads) do pcall(t.cancel, t) end
  for _, p in ipairs(self.pools) do
    pcall(p.shutdown, p, { wait = false, cancel_futures = true, interrupt = true })
  end
  local deadline = loom.now() + self.T
  for _, t in ipairs(self.threads) do
    pcall(t.join, t, math.max(0, deadline - loom.now()))
  end
end

local function short(msg, lines)
  msg = tostring(msg)
  local out, n = {}, 0
  for line in (msg .. "\n"):gmatch("(.-)\n") do
    n = n + 1
    if n > lines then out[#out + 1] = "\t..."; break end
    out[#out + 1] = line
  end
  return table.concat(out, "\n")
end

local function thread_names()
  local names = {}
  for _, t in ipairs(loom.enumerate()) do
    if t ~= loom.main_thread() and t ~= dog then names[#names + 1] = t.name end
  end
  return table.concat(names, ", ")
end

-- Memory: the main state's Lua heap must come back to where it was before
-- the round (a small tolerance for interned strings and caches); the
-- process's resident memory must stay near where it was after the warm-up
-- (every scenario run once). The allocator keeps what the largest rounds
-- needed (the main state's tallies, the arenas of many threads) and does
-- not give it back, so the RSS tolerance is generous (192 MB, or twice
-- the warm-up figure): it catches a steady leak over a full run, not a
-- small one; `make stress-asan` runs with LeakSanitizer for those.
local LUA_TOL_KB = 256
local RSS_TOL_KB -- set after the warm-up
local rss_base

local function run_round(round)
  local scen = scenario_of(round)
  local ctx = new_ctx(round, scen)
  local base_threads = loom.active_count()
  local kb0 = lua_kb()
  state.round, state.name = round, scen.name
  state.limit = WATCHDOG
  state.started = loom.now()
  local t0 = loom.now()
  local ok, err = xpcall(scen.run, function(e)
    if type(e) ~= "string" then
      e = (loom.is_error(e) and (e.kind .. " error: ") or "") .. tostring(e)
    end
    if not e:find("stack traceback", 1, true) then return debug.traceback(e, 2) end
    return e
  end, ctx)
  local dt = loom.now() - t0
  if not ok then ctx:abort() end
  local problems = {}
  if not ok then problems[#problems + 1] = short(err, 14) end
  -- no thread left running: every handle the round made, then the count
  for _, t in ipairs(ctx.threads) do
    if t:is_alive() and not t:join(ok and 0 or 5) then
      problems[#problems + 1] = "thread " .. t.name .. " left running"
    end
  end
  if not lib.poll(SETTLE, function() return loom.active_count() <= base_threads end, 0.005) then
    problems[#problems + 1] = string.format("%d thread(s) left running %g s after the round: %s",
      loom.active_count() - base_threads, SETTLE, thread_names())
  end
  state.started = nil
  local notes = table.concat(ctx.notes, " ")
  ctx = nil -- everything the round made is garbage now
  local kb1 = lua_kb()
  if kb1 - kb0 > LUA_TOL_KB then
    problems[#problems + 1] = string.format(
      "main Lua heap grew by %.0f KB in the round (%.0f -> %.0f KB; tolerance %d KB)",
      kb1 - kb0, kb0, kb1, LUA_TOL_KB)
  end
  local rss = rss_kb()
  if rss and rss_base and not lib.sanitizer and rss > rss_base + RSS_TOL_KB then
    problems[#problems + 1] = string.format(
      "resident memory %.1f MB, above %.1f MB after the warm-up + %.0f MB tolerance",
      rss / 1024, rss_base / 1024, RSS_TOL_KB / 1024)
    rss_base = rss -- report each further step once, not every round
  end
  print(string.format("[%4d %6.1fs] %-16s %-5s %5.2fs  lua %+4.0f KB  rss %5.1f MB  %s",
    round, loom.now() - state.t_start, scen.name, #problems == 0 and "ok" or "FAIL",
    dt, kb1 - kb0, (rss or 0) / 1024, notes))
  if #problems > 0 then
    print(string.format("  FAILED round %d (%s); reproduce: %sSTRESS_SEED=%d STRESS_ROUND=%d make %s",
      round, scen.name, only_env, SEED, round, target))
    for _, p in ipairs(problems) do print("  " .. p:gsub("\n", "\n  ")) end
    state:incr("failed")
  else
    state:incr("passed")
  end
  io.stdout:flush()
  return #problems == 0, dt
end

print(string.format("stress: seed %d (STRESS_SEED=%d reproduces), %g s, %d scenarios, " ..
  "timeout %g s, scale %g%s", SEED, SEED, SECONDS, #scenarios, T, SCALE,
  lib.sanitizer and (", under " .. lib.sanitizer) or ""))
io.stdout:flush()
state.t_start = loom.now()
local start = loom.now()
local rss_start = rss_kb()
local kb_start = lua_kb()

if ONLY_ROUND then
  run_round(ONLY_ROUND)
else
  local round, longest = 0, 0
  while true do
    local left = SECONDS - (loom.now() - start)
    -- a round starts only when the longest so far still fits (the first
    -- always runs)
    if round > 0 and left < longest then break end
    round = round + 1
    local _, dt = run_round(round)
    if dt > longest then longest = dt end
    if round == #warm then
      rss_base = rss_kb()
      if rss_base then RSS_TOL_KB = math.max(192 * 1024, 2 * rss_base) end
    end
    -- after a round left threads behind, the next ones cannot be judged
    if loom.active_count() > 2 then
      print("stress: stopping early: threads of a failed round are still running: " .. thread_names())
      break
    end
  end
end

stop:set()
dog:join(5)
local kb_end = lua_kb()
local rss_end = rss_kb()
print(string.format("stress: %d rounds in %.1f s (seed %d); main Lua heap %.0f -> %.0f KB; " ..
  "RSS %.1f MB at start, %s after the warm-up, %.1f MB at the end%s",
  state.passed + state.failed, loom.now() - start, SEED, kb_start, kb_end,
  (rss_start or 0) / 1024,
  rss_base and string.format("%.1f MB", rss_base / 1024) or "n/a", (rss_end or 0) / 1024,
  lib.sanitizer and (" (RSS not checked under " .. lib.sanitizer .. ")")
    or RSS_TOL_KB and string.format(" (tolerance +%.0f MB)", RSS_TOL_KB / 1024) or ""))
print(string.format("%d passed, %d failed", state.passed, state.failed))
-- close the state (loom's exit join) only when nothing is left to join
os.exit(state.failed == 0 and 0 or 1, loom.active_count() <= 1)
