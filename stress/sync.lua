-- stress/sync.lua: every primitive under contention. Locks (Lock, RLock,
-- Semaphore, BoundedSemaphore, a Condition used as a lock) guard a
-- read-modify-write of a shared counter taken in every form (guard, with,
-- acquire with a timeout, non-blocking retries, short timeouts that expire
-- while the lock changes hands) with a cancelled waiter now and then; two
-- Conditions on one Lock run a bounded buffer; a Barrier runs cycles, is
-- aborted or loses a cancelled party, and is reset; Events ping-pong and
-- open gates; Timers fire or are cancelled.
local loom = require "loom"
local lib = require "stress.lib"

-- Takes m (a lock-like object) in the form r picks, runs crit, releases.
-- `nest` re-acquires re-entrant locks. Returns true once crit ran.
local function locked(m, r, T, nest, crit)
  local form = r(6)
  if form == 1 then
    local _ <close> = m:guard()
    return crit()
  elseif form == 2 then
    return m:with(crit)
  end
  local deadline = loom.now() + T
  if form == 3 then
    if not m:acquire(true, T) then lib.fail("acquire timed out after %g s", T) end
  elseif form == 4 then
    while not m:acquire(false) do
      if loom.now() > deadline then lib.fail("acquire(false) never succeeded in %g s", T) end
      loom.sleep(0)
    end
  else
    -- short timeouts that expire while the lock changes hands: a waiter
    -- that gives up must pass its wake-up on
    while not m:acquire(true, r() * 0.001) do
      if loom.now() > deadline then lib.fail("acquire(t) never succeeded in %g s", T) end
    end
  end
  for _ = 2, nest do
    if not m:acquire(true, T) then lib.fail("re-entrant acquire timed out") end
  end
  local ok, err = pcall(crit)
  for _ = 2, nest do m:release() end
  m:release()
  if not ok then error(err, 0) end
  return err
end

-- n rounds of the critical section. The counter s.n is read and written
-- back in two steps, so only mutual exclusion keeps it exact; s.inside
-- counts the threads inside (at most k). Returns how many rounds it did;
-- a cancellation (the victim) ends it early.
local function locker(m, s, k, reentrant, n, seed, T)
  local r = lib.rng(seed)
  local done = 0
  local function crit()
    local inside = s:incr("inside")
    if inside > k then
      s:incr("inside", -1)
      lib.fail("%d threads inside a section for %d", inside, k)
    end
    if k == 1 then
      local v = s.n
      for _ = 1, r(0, 50) do end -- widen the window
      s.n = v + 1
    else
      s:incr("n")
    end
    s:incr("inside", -1)
    return true
  end
  local ok, err = pcall(function()
    for _ = 1, n do
      locked(m, r, T, reentrant and r(3) or 1, crit)
      done = done + 1
    end
  end)
  if not ok and not loom.is_cancelled(err) then error(err, 0) end
  return done, not ok
end

local locks = { name = "locks" }
function locks.run(ctx)
  local kind = ctx:param("prim", ctx:pick { "Lock", "RLock", "Semaphore", "BoundedSemaphore",
                                            "Condition(Lock)", "Condition(RLock)" })
  local k, m = 1, nil
  if kind == "Lock" then m = loom.Lock()
  elseif kind == "RLock" then m = loom.RLock()
  elseif kind == "Condition(Lock)" then m = loom.Condition(loom.Lock())
  elseif kind == "Condition(RLock)" then m = loom.Condition(loom.RLock())
  else
    k = ctx:param("k", ctx:pick { 1, 1, 2, 3 })
    m = loom[kind](k)
  end
  local reentrant = kind == "RLock" or kind == "Condition(RLock)"
  local W = ctx:param("threads", ctx:int(2, 6))
  local n = ctx:param("n", ctx:n(ctx:pick { 500, 3000, 10000 }, 20))
  local victim = ctx:chance(0.4)
  local s = loom.shared { n = 0, inside = 0 }
  local ts = {}
  for i = 1, W do ts[i] = ctx:spawn(locker, m, s, k, reentrant, n, ctx:sub(), ctx.T) end
  if victim then
    ctx:param("cancel", "one")
    loom.sleep(ctx.rng() * 0.02)
    ts[ctx:int(1, W)]:cancel()
  end
  local total, cancelled = 0, 0
  for i = 1, W do
    local done, was_cancelled = ctx:result(ts[i])
    total = total + done
    if was_cancelled then cancelled = cancelled + 1 end
  end
  lib.check(s.n == total, "counter %d after %d critical sections", s.n, total)
  lib.check(s.inside == 0, "%d threads still counted inside", s.inside)
  -- the primitive is free again
  lib.check(m:acquire(false), "%s still held after every thread ended", kind)
  m:release()
  if kind == "BoundedSemaphore" or kind == "Semaphore" then
    lib.check(m.value == k, "semaphore value %d, expected %d", m.value, k)
  end
  ctx:param("sections", total)
end

-- A bounded buffer in a shared table, guarded by one Lock with two
-- Conditions: producers wait on not_full, consumers on not_empty.
local function cond_producer(lock, not_full, not_empty, s, cap, p, n, seed, T)
  local r = lib.rng(seed)
  for i = 1, n do
    local _ <close> = lock:guard()
    if not not_full:wait_for(function() return s.tail - s.head < cap end, T) then
      lib.fail("producer: buffer still full after %g s (lost notify?)", T)
    end
    local tail = s.tail + 1
    s[tail] = p * lib.ID_SPAN + i
    s.tail = tail
    if r(8) == 1 then not_empty:notify_all() else not_empty:notify(r(2)) end
  end
  return string.rep("p", n)
end

local function cond_consumer(lock, not_full, not_empty, s, seed, T)
  local r = lib.rng(seed)
  local got = {}
  while true do
    local _ <close> = lock:guard()
    if r(2) == 1 then
      if not not_empty:wait_for(function() return s.head < s.tail or s.done end, T) then
        lib.fail("consumer: nothing to take after %g s (lost notify?)", T)
      end
    else
      local deadline = loom.now() + T
      while not (s.head < s.tail or s.done) do
        local left = deadline - loom.now()
        if left <= 0 then lib.fail("consumer: wait loop ran out after %g s", T) end
        not_empty:wait(left)
      end
    end
    if s.head == s.tail then break end -- done and empty
    local head = s.head + 1
    got[#got + 1] = s[head]
    s[head] = nil
    s.head = head
    not_full:notify()
  end
  return got
end

local condition = { name = "condition" }
function condition.run(ctx)
  local lock = ctx:pick { "Lock", "RLock" }
  ctx:param("lock", lock)
  lock = loom[lock]()
  local not_full, not_empty = loom.Condition(lock), loom.Condition(lock)
  local cap = ctx:param("cap", ctx:pick { 1, 2, 8, 100 })
  local P = ctx:param("P", ctx:int(1, 4))
  local C = ctx:param("C", ctx:int(1, 4))
  local n = ctx:n(ctx:pick { 300, 3000 }, 20)
  ctx:param("n", P .. "x" .. n)
  local s = loom.shared { head = 0, tail = 0 }
  local cs, ps = {}, {}
  for c = 1, C do cs[c] = ctx:spawn(cond_consumer, lock, not_full, not_empty, s, ctx:sub(), ctx.T) end
  for p = 1, P do ps[p] = ctx:spawn(cond_producer, lock, not_full, not_empty, s, cap, p, n, ctx:sub(), ctx.T) end
  local status = {}
  for p = 1, P do status[p] = ctx:result(ps[p]) end
  do
    local _ <close> = lock:guard()
    s.done = true
    not_empty:notify_all()
  end
  local tally = lib.tally()
  for c = 1, C do lib.tally_add(tally, ctx:result(cs[c])) end
  ctx:param("got", lib.tally_check(tally, status, "condition"))
  lib.check(not lock:locked(), "the lock is still held")
end

-- One party of a barrier: `cycles` waits; returns the arrival index of
-- each completed cycle, and why it stopped ("done", "broken", "cancelled").
local function party(b, cycles, T)
  local idx = {}
  for c = 1, cycles do
    local ok, i = pcall(b.wait, b, T)
    if not ok then
      if loom.is_broken(i) then return idx, "broken" end
      if loom.is_cancelled(i) then return idx, "cancelled" end
      error(i, 0)
    end
    idx[c] = i
  end
  return idx, "done"
end

local function pinger(my, other, n, T)
  for _ = 1, n do
    if not my:wait(T) then lib.fail("ping-pong: no wake-up within %g s", T) end
    my:clear()
    other:set()
  end
  return n
end

local function gate_waiter(ev, T)
  return ev:wait(T)
end

local function timer_fn(s, i)
  s:incr("fired" .. i)
end

local barrier = { name = "barrier_event" }
function barrier.run(ctx)
  local T = ctx.T
  local N = ctx:param("parties", ctx:int(2, 6))
  local cycles = ctx:param("cycles", ctx:n(ctx:pick { 50, 500 }, 5))
  local mode = ctx:param("mode", ctx:pick { "plain", "plain", "abort", "cancel" })
  local s = loom.shared { actions = 0 }
  local b = ctx:own_barrier(loom.Barrier(N, function() s:incr("actions") end))
  local ts = {}
  for i = 1, N do ts[i] = ctx:spawn(party, b, cycles, T) end

  -- meanwhile: events ping-pong, gates open, timers fire or not
  local e1, e2 = ctx:own_event(loom.Event()), ctx:own_event(loom.Event())
  local rounds = ctx:n(ctx:pick { 100, 1000 }, 10)
  local pa = ctx:spawn(pinger, e1, e2, rounds, T)
  local pb = ctx:spawn(pinger, e2, e1, rounds, T)
  e1:set()
  local gate = ctx:own_event(loom.Event())
  local gs = {}
  for i = 1, ctx:int(1, 4) do gs[i] = ctx:spawn(gate_waiter, gate, T) end
  local timers, tstate = {}, loom.shared {}
  for i = 1, ctx:int(0, 3) do
    local tm = loom.Timer(ctx.rng() * 0.01, timer_fn, tstate, i)
    local how = ctx:pick { "run", "cancel-before", "cancel-after" }
    if how == "cancel-before" then tm:cancel() end
    tm:start()
    if how == "cancel-after" then tm:cancel() end
    timers[i] = { tm, how }
  end

  if mode == "abort" then
    loom.sleep(ctx.rng() * 0.01)
    b:abort()
  elseif mode == "cancel" then
    loom.sleep(ctx.rng() * 0.01)
    ts[ctx:int(1, N)]:cancel()
  end
  local lists = {}
  local max_done, min_done = 0, math.huge
  for i = 1, N do
    local idx, why = ctx:result(ts[i])
    lists[i] = idx
    max_done, min_done = math.max(max_done, #idx), math.min(min_done, #idx)
    if mode == "plain" then lib.check(why == "done", "party %d stopped: %s", i, why) end
  end
  -- each cycle that every party completed gave the indices 0..N-1 once
  for c = 1, min_done do
    local seen = {}
    for i = 1, N do
      local x = lists[i][c]
      lib.check(x >= 0 and x < N and not seen[x], "cycle %d: index %d given twice or out of range", c, x)
      seen[x] = true
    end
  end
  local actions = s.actions
  if mode == "plain" then
    lib.check(actions == cycles, "the action ran %d times in %d cycles", actions, cycles)
  else
    -- the cycle a party completed ran the action first
    lib.check(max_done <= actions, "a party completed %d cycles, the action ran %d times",
      max_done, actions)
    lib.check(b.broken or max_done == cycles, "parties stopped early but the barrier is not broken")
  end
  ctx:param("actions", actions)
  if b.broken then
    b:reset()
    lib.check(not b.broken, "reset() left the barrier broken")
    -- usable again: one more cycle
    local again = {}
    for i = 1, N do again[i] = ctx:spawn(party, b, 1, T) end
    local seen = {}
    for i = 1, N do
      local idx, why = ctx:result(again[i])
      lib.check(why == "done", "after reset, party %d: %s", i, why)
      lib.check(not seen[idx[1]], "after reset, index %d given twice", idx[1])
      seen[idx[1]] = true
    end
  end
  lib.check(ctx:result(pa) == rounds and ctx:result(pb) == rounds, "ping-pong short")
  gate:set()
  for i = 1, #gs do lib.check(ctx:result(gs[i]) == true, "a gate waiter timed out") end
  for i, t in ipairs(timers) do
    lib.check(t[1]:join(T), "timer %d still running after %g s", i, T)
    local fired = tstate:get("fired" .. i, 0)
    if t[2] == "run" then lib.check(fired == 1, "timer %d fired %d times", i, fired)
    elseif t[2] == "cancel-before" then lib.check(fired == 0, "a cancelled timer fired")
    else lib.check(fired <= 1, "timer %d fired %d times", i, fired) end
  end
end

return { locks, condition, barrier }
