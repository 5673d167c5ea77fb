-- Async primitives for the tasks of one loop (asyncio.Event, Lock,
-- Condition, Semaphore, BoundedSemaphore, Barrier, Queue, LifoQueue,
-- PriorityQueue), built on loop futures as asyncio builds them. They
-- never block the loop and never cross threads. Installed into loom.async
-- by loom/async.lua.
return function(async, loom, check_timeout)
  local Future, await = async.Future, async.await
  local pcall, error, setmetatable = pcall, error, setmetatable

  local function class(name)
    local c = {}
    c.__index = c
    c.__name = name
    c.__metatable = name
    -- it belongs to one loop: loom's copier refuses it
    c.__nocopy = name .. " (it belongs to the loop of one thread)"
    return c
  end

  -- Waits for f; a cancellation still raises, after `undo` ran.
  local function wait_on(f, undo)
    local ok, err = pcall(await, f)
    if not ok then
      if undo then undo(f) end
      error(err, 0)
    end
    return true
  end

  -- A FIFO of futures with cancelled ones skipped.
  local function fifo() return { head = 1, tail = 0 } end
  local function push(q, f) q.tail = q.tail + 1; q[q.tail] = f end
  local function pop_live(q)
    while q.head <= q.tail do
      local f = q[q.head]
      q[q.head] = nil
      q.head = q.head + 1
      if not f:done() then return f end
    end
    return nil
  end
  local function has_live(q)
    for i = q.head, q.tail do
      if q[i] and not q[i]:done() then return true end
    end
    return false
  end

  -- Waits in self._waiters until a release hands self over; a waiter
  -- cancelled after the hand-over passes it on with self:release().
  local function wait_handover(self)
    local f = Future()
    push(self._waiters, f)
    return wait_on(f, function(w)
      if w:done() and not w:cancelled() then self:release() end
    end)
  end

  ---------------------------------------------------------------------
  -- Event
  local Event = class("loom.async.Event")
  function async.Event() return setmetatable({ _flag = false, _waiters = {} }, Event) end
  function Event:is_set() return self._flag end
  function Event:set()
    if self._flag then return end
    self._flag = true
    for f in pairs(self._waiters) do
      if not f:done() then f:set_result(true) end
    end
  end
  function Event:clear() self._flag = false end
  --- ev:wait() -> true once the event is set
  function Event:wait()
    if self._flag then return true end
    local f = Future()
    self._waiters[f] = true
    local ok, err = pcall(await, f)
    self._waiters[f] = nil
    if not ok then error(err, 0) end
    return true
  end
  function Event:__tostring()
    return ("loom.async.Event(%s)"):format(self._flag and "set" or "unset")
  end

  ---------------------------------------------------------------------
  -- Lock: FIFO, handed over on release
  local Lock = class("loom.async.Lock")
  function async.Lock() return setmetatable({ _locked = false, _waiters = fifo() }, Lock) end
  function Lock:locked() return self._locked end
  local function lock_acquire(self)
    if not self._locked and not has_live(self._waiters) then
      self._locked = true
      return true
    end
    return wait_handover(self)
  end
  --- lock:acquire() -> true (waits without blocking the loop)
  Lock.acquire = lock_acquire
  --- lock:release(); raises when the lock is not held
  function Lock:release()
    if not self._locked then error("release unlocked lock", 2) end
    local f = pop_live(self._waiters)
    if f then f:set_result(true) else self._locked = false end
  end
  local function guard_of(release, obj)
    return setmetatable({}, { __close = function() release(obj) end })
  end
  --- local _ <close> = lock:guard()
  function Lock:guard()
    self:acquire()
    return guard_of(Lock.release, self)
  end
  --- lock:with(fn, ...) -> fn's results, holding the lock
  function Lock:with(fn, ...)
    if type(fn) ~= "function" then
      error("bad argument #1 to 'with' (function expected, got " .. type(fn) .. ")", 2)
    end
    self:acquire()
    local r = table.pack(pcall(fn, ...))
    self:release()
    if not r[1] then error(r[2], 0) end
    return table.unpack(r, 2, r.n)
  end
  function Lock:__tostring()
    return ("loom.async.Lock(%s)"):format(self._locked and "locked" or "unlocked")
  end

  ---------------------------------------------------------------------
  -- Condition
  local Condition = class("loom.async.Condition")
  function async.Condition(lock)
    if lock ~= nil and getmetatable(lock) ~= "loom.async.Lock" then
      error("bad argument #1 to 'Condition' (loom.async.Lock expected)", 2)
    end
    return setmetatable({ _lock = lock or async.Lock(), _waiters = fifo() }, Condition)
  end
  function Condition:acquire() return self._lock:acquire() end
  function Condition:release() return self._lock:release() end
  function Condition:locked() return self._lock:locked() end
  function Condition:guard() return self._lock:guard() end
  --- cond:wait() -> true; releases the lock while waiting, holds it again after
  function Condition:wait()
    if not self._lock:locked() then error("cannot wait on un-acquired lock", 2) end
    self._lock:release()
    local f = Future()
    push(self._waiters, f)
    local ok, err = pcall(await, f)
    -- the lock is held again whatever happened (asyncio's rule)
    while true do
      local ok2, err2 = pcall(lock_acquire, self._lock)
      if ok2 then break end
      err = err or err2
      ok = false
    end
    if not ok then error(err, 0) end
    return true
  end
  --- cond:wait_for(pred) -> pred's last (true) value
  function Condition:wait_for(pred)
    local r = pred()
    while not r do
      self:wait()
      r = pred()
    end
    return r
  end
  --- cond:notify([n]) wakes up to n waiters (default 1)
  function Condition:notify(n)
    if not self._lock:locked() then error("cannot notify on un-acquired lock", 2) end
    n = n or 1
    while n > 0 do
      local f = pop_live(self._waiters)
      if not f then break end
      f:set_result(true)
      n = n - 1
    end
  end
  function Condition:notify_all() self:notify(math.huge) end

  ---------------------------------------------------------------------
  -- Semaphore and BoundedSemaphore
  local Semaphore = class("loom.async.Semaphore")
  local function new_semaphore(value, bound, fname)
    value = value == nil and 1 or value
    if math.type(value) ~= "integer" or value < 0 then
      error("bad argument #1 to '" .. fname .. "' (semaphore initial value must be >= 0)", 3)
    end
    return setmetatable({ _value = value, _bound = bound and value, _waiters = fifo() }, Semaphore)
  end
  function async.Semaphore(value) return new_semaphore(value, false, "Semaphore") end
  function async.BoundedSemaphore(value) return new_semaphore(value, true, "BoundedSemaphore") end
  function Semaphore:locked() return self._value == 0 end
  --- sem:acquire() -> true
  function Semaphore:acquire()
    if self._value > 0 and not has_live(self._waiters) then
      self._value = self._value - 1
      return true
    end
    return wait_handover(self)
  end
  --- sem:release()
  function Semaphore:release()
    local f = pop_live(self._waiters)
    if f then f:set_result(true) return end -- handed over
    if self._bound and self._value >= self._bound then
      error("Semaphore released too many times", 2)
    end
    self._value = self._value + 1
  end
  function Semaphore:guard()
    self:acquire()
    return guard_of(Semaphore.release, self)
  end
  function Semaphore:__tostring()
    if self._bound then
      return ("loom.async.BoundedSemaphore(value=%d/%d)"):format(self._value, self._bound)
    end
    return ("loom.async.Semaphore(value=%d)"):format(self._value)
  end

  ---------------------------------------------------------------------
  -- Barrier
  local Barrier = class("loom.async.Barrier")
  function async.Barrier(parties)
    if math.type(parties) ~= "integer" or parties < 1 then
      error("bad argument #1 to 'Barrier' (parties must be >= 1)", 2)
    end
    return setmetatable({ parties = parties, _waiting = {}, _broken = false }, Barrier)
  end
  local function broken_error() return loom.error("broken", "barrier is broken") end
  --- b:wait() -> an index 0..parties-1, distinct among the tasks of one cycle
  function Barrier:wait()
    if self._broken then error(broken_error(), 0) end
    local index = #self._waiting
    if index + 1 == self.parties then -- the last one releases the cycle
      local cycle = self._waiting
      self._waiting = {}
      for i, f in ipairs(cycle) do f:set_result(i - 1) end
      return index
    end
    local f = Future()
    self._waiting[index + 1] = f
    local ok, r = pcall(await, f)
    if not ok then
      if loom.is_cancelled(r) then -- a waiter that leaves breaks the barrier
        self:abort()
      end
      error(r, 0)
    end
    return r
  end
  local function fail_waiters(self)
    local cycle = self._waiting
    self._waiting = {}
    for _, f in ipairs(cycle) do
      if not f:done() then f:set_exception(broken_error()) end
    end
  end
  --- b:abort(): breaks the barrier; waiters and later waits raise
  function Barrier:abort()
    self._broken = true
    fail_waiters(self)
  end
  --- b:reset(): current waiters raise broken; the barrier is usable again
  function Barrier:reset()
    fail_waiters(self)
    self._broken = false
  end
  function Barrier:broken() return self._broken end
  function Barrier:n_waiting() return #self._waiting end
  function Barrier:__tostring()
    return ("loom.async.Barrier(%d/%d waiting%s)"):format(#self._waiting, self.parties,
      self._broken and ", broken" or "")
  end

  ---------------------------------------------------------------------
  -- Queues (the thread queues' API: nil, reason for expected failures)
  local Queue = class("loom.async.Queue")
  local function new_queue(kind, maxsize, fname)
    maxsize = maxsize or 0
    if math.type(maxsize) ~= "integer" then
      error("bad argument #1 to '" .. fname .. "' (maxsize must be an integer)", 3)
    end
    return setmetatable({ kind = kind, maxsize = maxsize > 0 and maxsize or 0,
      _items = {}, _head = 1, _n = 0, _seq = 0, _getters = fifo(), _putters = fifo(),
      _unfinished = 0, _joiners = {}, _closed = false }, Queue)
  end
  function async.Queue(maxsize) return new_queue("fifo", maxsize, "Queue") end
  function async.LifoQueue(maxsize) return new_queue("lifo", maxsize, "LifoQueue") end
  function async.PriorityQueue(maxsize) return new_queue("prio", maxsize, "PriorityQueue") end

  local function priority_of(v)
    local p = type(v) == "number" and v or (type(v) == "table" and v[1])
    if type(p) ~= "number" or p ~= p then
      error("bad argument #1 to 'put' (a number or a table {priority, ...} expected)", 4)
    end
    return p
  end

  -- heap of {p, seq, v} for PriorityQueue; ring for the others
  local function store(self, v)
    if self.kind == "prio" then
      local h = self._items
      self._seq = self._seq + 1
      local e = { priority_of(v), self._seq, v }
      local i = self._n + 1
      h[i] = e
      while i > 1 do
        local p = i // 2
        local a, b = h[p], h[i]
        if a[1] < b[1] or (a[1] == b[1] and a[2] < b[2]) then break end
        h[p], h[i] = b, a
        i = p
      end
    elseif self.kind == "lifo" then
      self._items[self._n + 1] = v
    else
      self._items[self._head + self._n] = v
    end
    self._n = self._n + 1
  end

  local function take(self)
    local v
    if self.kind == "prio" then
      local h, n = self._items, self._n
      v = h[1][3]
      h[1] = h[n]
      h[n] = nil
      n = n - 1
      local i = 1
      while true do
        local l, r, m = 2 * i, 2 * i + 1, i
        local function less(x, y) return h[x][1] < h[y][1] or (h[x][1] == h[y][1] and h[x][2] < h[y][2]) end
        if l <= n and less(l, m) then m = l end
        if r <= n and less(r, m) then m = r end
        if m == i then break end
        h[m], h[i] = h[i], h[m]
        i = m
      end
    elseif self.kind == "lifo" then
      v = self._items[self._n]
      self._items[self._n] = nil
    else
      v = self._items[self._head]
      self._items[self._head] = nil
      self._head = self._head + 1
    end
    self._n = self._n - 1
    return v
  end

  local function wake_one(q)
    local f = pop_live(q)
    if f then f:set_result(true) end
  end

  local function closed_error() return loom.error("closed", "cannot put into a closed queue") end

  function Queue:qsize() return self._n end
  Queue.__len = Queue.qsize
  function Queue:empty() return self._n == 0 end
  function Queue:full() return self.maxsize > 0 and self._n >= self.maxsize end
  function Queue:is_closed() return self._closed end

  --- q:put_nowait(v) -> true | nil, "full"
  function Queue:put_nowait(v)
    if v == nil then error("bad argument #1 to 'put_nowait' (cannot put nil into a queue)", 2) end
    if self._closed then error(closed_error(), 2) end
    if self:full() then return nil, "full" end
    store(self, v)
    self._unfinished = self._unfinished + 1
    wake_one(self._getters)
    return true
  end

  --- q:put(v[, timeout]) -> true | nil, "timeout"; waits while full
  function Queue:put(v, timeout)
    if v == nil then error("bad argument #1 to 'put' (cannot put nil into a queue)", 2) end
    check_timeout(timeout, 2, "put")
    local deadline = timeout and loom.now() + timeout
    while true do
      if self._closed then error(closed_error(), 2) end
      if not self:full() then return self:put_nowait(v) end
      local left = deadline and deadline - loom.now()
      if left and left <= 0 then return nil, "timeout" end
      local f = Future()
      push(self._putters, f)
      local ok, err = pcall(async.wait_for, f, left)
      if not ok then
        -- room was meant for us: let the next putter have it
        if f:done() and not f:cancelled() then wake_one(self._putters) end
        if loom.is_timeout(err) then return nil, "timeout" end
        error(err, 0)
      end
    end
  end

  --- q:get_nowait() -> v | nil, "empty" | nil, "closed"
  function Queue:get_nowait()
    if self._n == 0 then return nil, self._closed and "closed" or "empty" end
    local v = take(self)
    wake_one(self._putters)
    return v
  end

  --- q:get([timeout]) -> v | nil, "timeout" | nil, "closed"
  function Queue:get(timeout)
    check_timeout(timeout, 1, "get")
    local deadline = timeout and loom.now() + timeout
    while true do
      if self._n > 0 then return self:get_nowait() end
      if self._closed then return nil, "closed" end
      local left = deadline and deadline - loom.now()
      if left and left <= 0 then return nil, "timeout" end
      local f = Future()
      push(self._getters, f)
      local ok, err = pcall(async.wait_for, f, left)
      if not ok then
        if loom.is_timeout(err) then return nil, "timeout" end
        -- cancelled after an item was meant for us: let another getter have it
        if f:done() and not f:cancelled() then wake_one(self._getters) end
        error(err, 0)
      end
    end
  end

  --- q:task_done([n])
  function Queue:task_done(n)
    n = n or 1
    if math.type(n) ~= "integer" or n < 1 then
      error("bad argument #1 to 'task_done' (count must be at least 1)", 2)
    end
    if n > self._unfinished then error("task_done() called too many times", 2) end
    self._unfinished = self._unfinished - n
    if self._unfinished == 0 then
      for f in pairs(self._joiners) do if not f:done() then f:set_result(true) end end
    end
  end

  --- q:join() -> true once every item put was marked done
  function Queue:join()
    if self._unfinished == 0 then return true end
    local f = Future()
    self._joiners[f] = true
    local ok, err = pcall(await, f)
    self._joiners[f] = nil
    if not ok then error(err, 0) end
    return true
  end

  --- q:close([immediate]): later puts raise; gets drain, then nil, "closed"
  function Queue:close(immediate)
    self._closed = true
    if immediate then
      local n = self._n
      while self._n > 0 do take(self) end
      self:task_done(math.min(n, self._unfinished))
    end
    for _, q in ipairs { self._getters, self._putters } do
      local f = pop_live(q)
      while f do f:set_result(true); f = pop_live(q) end
    end
  end

  --- for v in q:iter() do ... end, until closed and drained
  function Queue:iter()
    return function()
      local v = self:get()
      return v
    end
  end

  function Queue:__tostring()
    return ("loom.async.Queue(%s, %d items%s)"):format(self.kind, self._n,
      self._closed and ", closed" or "")
  end
end
