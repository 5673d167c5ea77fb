-- loom.async: asyncio for Lua. The loop, tasks, sleep, loop futures and
-- await are C (csrc/loop.c, on libuv); this file builds what asyncio
-- builds on top of futures: gather, wait_for, wait, as_completed,
-- timeout, shield, task groups, the bridges to threads and pools, and
-- (loom/async_sync.lua) the async primitives.
local core = require "loom.core"
local loom = require "loom"
local A = core._async

local async = {}
for k, v in pairs(A) do async[k] = v end
async.create_task = A.spawn
async.is_cancelled = loom.is_cancelled
async.is_timeout = loom.is_timeout

local spawn, await, Future, current = A.spawn, A.await, A.Future, A.current_task
local pack, unpack = table.pack, table.unpack

local function is_loop_future(x)
  local mt = getmetatable(x)
  return mt == "loom.async.Task" or mt == "loom.async.Future"
end

local function is_cross(x)
  local mt = getmetatable(x)
  return mt == "loom.Future" or mt == "loom.Thread"
end

-- A loop future or task for x: tasks and futures as they are, a function
-- becomes a task, a loom.Future or loom.Thread a task that awaits it.
local function ensure(x, fname, argn)
  if is_loop_future(x) then return x end
  if type(x) == "function" then return spawn(x) end
  if is_cross(x) then return spawn(await, x) end
  error(("bad argument #%d to '%s' (task, future or function expected, got %s)")
    :format(argn, fname, type(x)), 3)
end

-- Outcome of a done future: true, values... | false, error
local function outcome(f)
  return pcall(f.result, f)
end

--- async.gather(a, b, ...[, {return_exceptions=true}]) -> first result of each
function async.gather(...)
  local n = select("#", ...)
  local args = { ... }
  local return_exceptions = false
  if n > 0 and type(args[n]) == "table" and getmetatable(args[n]) == nil then
    return_exceptions = args[n].return_exceptions and true or false
    n = n - 1
  end
  local children = {}
  for i = 1, n do children[i] = ensure(args[i], "gather", i) end
  if n == 0 then return end
  local outer = Future()
  local results, left = {}, n
  for i = 1, n do
    children[i]:add_done_callback(function(c)
      left = left - 1
      if outer:done() then return end
      local r = pack(outcome(c))
      if r[1] then
        results[i] = r[2]
      elseif return_exceptions then
        results[i] = r[2]
      else
        outer:set_exception(r[2]) -- the first error, at once
        return
      end
      if left == 0 then outer:set_result(unpack(results, 1, n)) end
    end)
  end
  local r = pack(pcall(await, outer))
  if not r[1] then
    -- the waiter was cancelled (not a child, whose cancellation ends
    -- outer with an error): so are the children
    if loom.is_cancelled(r[2]) and not (outer:done() and not outer:cancelled()) then
      for i = 1, n do children[i]:cancel() end
    end
    error(r[2], 0)
  end
  return unpack(r, 2, r.n)
end

--- async.wait_for(x, timeout) -> x's results; on timeout x is cancelled,
--- waited for, and a timeout error raised
function async.wait_for(x, timeout)
  if timeout ~= nil and (type(timeout) ~= "number" or timeout ~= timeout) then
    error("bad argument #2 to 'wait_for' (number expected, got " .. type(timeout) .. ")", 2)
  end
  local t = ensure(x, "wait_for", 1)
  if timeout == nil then return await(t) end
  if timeout <= 0 then
    if t:done() then return t:result() end
    t:cancel() -- one that has not started never will
    local r = pack(pcall(await, t))
    if r[1] then return unpack(r, 2, r.n) end
    if t:cancelled() then
      error(loom.error("timeout", ("timed out after %s seconds"):format(timeout)), 0)
    end
    error(r[2], 0)
  end
  local fired = false
  local deadline = loom.now() + timeout
  local timer = spawn(function()
    local left = deadline - loom.now()
    if left > 0 then A.sleep(left) end
    fired = true
    t:cancel()
  end)
  local r = pack(pcall(await, t))
  if not timer:done() then timer:cancel() end
  if r[1] then return unpack(r, 2, r.n) end -- also when t swallowed it
  if fired and t:cancelled() then
    error(loom.error("timeout", ("timed out after %s seconds"):format(timeout)), 0)
  end
  error(r[2], 0)
end

-- Raises, naming the caller's caller as `fname`, unless t is nil or a
-- non-negative number (not NaN). Shared with loom/async_sync.lua.
local function check_timeout(t, argn, fname)
  if t ~= nil and (type(t) ~= "number" or t ~= t or t < 0) then
    error(("bad argument #%d to '%s' (timeout must be a non-negative number)")
      :format(argn, fname), 3)
  end
end

local function first_failed(list)
  for _, f in ipairs(list) do
    if f:done() and not f:cancelled() and f:exception() ~= nil then return true end
  end
  return false
end

--- async.wait(list[, {timeout=, return_when=}]) -> done, pending
function async.wait(list, opts)
  if type(list) ~= "table" then
    error("bad argument #1 to 'wait' (table expected, got " .. type(list) .. ")", 2)
  end
  opts = opts or {}
  check_timeout(opts.timeout, 2, "wait")
  local when = opts.return_when or "ALL_COMPLETED"
  if when ~= "ALL_COMPLETED" and when ~= "FIRST_COMPLETED" and when ~= "FIRST_EXCEPTION" then
    error("bad argument #2 to 'wait' (invalid return_when '" .. tostring(when) .. "')", 2)
  end
  local fs, seen = {}, {}
  for i, x in ipairs(list) do
    local f = ensure(x, "wait", i)
    if not seen[f] then seen[f] = true; fs[#fs + 1] = f end
  end
  local function enough()
    local ndone = 0
    for _, f in ipairs(fs) do if f:done() then ndone = ndone + 1 end end
    return ndone == #fs or (when == "FIRST_COMPLETED" and ndone > 0)
      or (when == "FIRST_EXCEPTION" and first_failed(fs))
  end
  if #fs > 0 and not enough() then
    local wake = Future()
    local function check() if not wake:done() and enough() then wake:set_result() end end
    for _, f in ipairs(fs) do f:add_done_callback(check) end
    local timer
    if opts.timeout then
      timer = spawn(function() A.sleep(opts.timeout) if not wake:done() then wake:set_result() end end)
    end
    local ok, err = pcall(await, wake)
    if timer and not timer:done() then timer:cancel() end
    if not ok then error(err, 0) end
  end
  local done, pending = {}, {}
  for _, f in ipairs(fs) do
    if f:done() then done[#done + 1] = f else pending[#pending + 1] = f end
  end
  return done, pending
end

--- for f in async.as_completed(list[, timeout]) do ... f:result() ... end
function async.as_completed(list, timeout)
  local fs, seen = {}, {}
  for i, x in ipairs(list) do
    local f = ensure(x, "as_completed", i)
    if not seen[f] then seen[f] = true; fs[#fs + 1] = f end
  end
  local finished, head, yielded = {}, 1, 0
  local signal
  for _, f in ipairs(fs) do
    if f:done() then finished[#finished + 1] = f end
  end
  for _, f in ipairs(fs) do
    if not f:done() then
      f:add_done_callback(function(d)
        finished[#finished + 1] = d
        if signal and not signal:done() then signal:set_result() end
      end)
    end
  end
  local deadline = timeout and loom.now() + timeout
  return function()
    if yielded == #fs then return nil end
    while head > #finished do
      signal = Future()
      local timer
      if deadline then
        local left = deadline - loom.now()
        timer = spawn(function()
          if left > 0 then A.sleep(left) end
          if not signal:done() then signal:set_result() end
        end)
      end
      local ok, err = pcall(await, signal)
      if timer and not timer:done() then timer:cancel() end
      if not ok then error(err, 0) end
      if head > #finished and deadline and loom.now() >= deadline then
        error(loom.error("timeout", ("%d (of %d) futures unfinished")
          :format(#fs - yielded, #fs)), 0)
      end
    end
    local f = finished[head]
    head = head + 1
    yielded = yielded + 1
    return f
  end
end

--- async.shield(x) -> a future with x's outcome; cancelling it does not
--- cancel x
function async.shield(x)
  local inner = ensure(x, "shield", 1)
  if inner:done() then return inner end
  local outer = Future()
  inner:add_done_callback(function(i)
    if outer:done() then return end
    if i:cancelled() then outer:cancel() return end
    local r = pack(outcome(i))
    if r[1] then outer:set_result(unpack(r, 2, r.n)) else outer:set_exception(r[2]) end
  end)
  return outer
end

-- async.timeout(seconds): a context for `local t <close> = ...`
local Timeout = {}
Timeout.__index = Timeout
Timeout.__name = "loom.async.Timeout"
Timeout.__metatable = "loom.async.Timeout"

function Timeout:expired() return self._expired end

-- At expiry the task was cancelled: the scope takes its own request back
-- and turns the cancellation into a timeout error, unless another request
-- came on top of it (an outer timeout, a cancel()): then the cancellation
-- goes on to whoever made that one (asyncio's rule).
function Timeout:__close(err)
  if self._timer and not self._timer:done() then self._timer:cancel() end
  if self._expired then
    if self._task:uncancel() <= self._cancelling and err ~= nil and loom.is_cancelled(err) then
      error(loom.error("timeout", ("timed out after %s seconds"):format(self._delay)), 0)
    end
  end
end

--- async.timeout(seconds) -> context; `local t <close> = async.timeout(1)`
function async.timeout(delay)
  if delay ~= nil and (type(delay) ~= "number" or delay ~= delay) then
    error("bad argument #1 to 'timeout' (number expected, got " .. type(delay) .. ")", 2)
  end
  local task = current()
  if task == nil then error("async.timeout must be used inside a task", 2) end
  local self = setmetatable({ _task = task, _delay = delay, _expired = false,
                             _cancelling = task:cancelling() }, Timeout)
  if delay ~= nil then
    local deadline = loom.now() + delay -- from now, not from the timer's first turn
    self._timer = spawn(function()
      local left = deadline - loom.now()
      if left > 0 then A.sleep(left) end
      self._expired = true
      task:cancel()
    end)
  end
  return self
end

-- task groups (asyncio.TaskGroup)
local Group = {}
Group.__index = Group
Group.__name = "loom.async.Group"
Group.__metatable = "loom.async.Group"

function Group:spawn(fn, ...)
  if self._closed then error("task group is finished", 2) end
  if self._aborting then error("task group is shutting down", 2) end
  local t = spawn(fn, ...)
  self._tasks[#self._tasks + 1] = t
  t:add_done_callback(function(c)
    local wake = self._wake
    if wake and not wake:done() then wake:set_result() end
    if c:cancelled() then return end
    local ok, err = outcome(c)
    if not ok then
      self._errors[#self._errors + 1] = err
      self:_abort()
    end
  end)
  return t
end

function Group:_abort()
  if self._aborting then return end
  self._aborting = true
  for _, t in ipairs(self._tasks) do t:cancel() end
  if not self._exiting and not self._parent:done() then
    self._parent_cancelled = true
    self._parent:cancel()
  end
end

local function group_error(errors)
  local parts = {}
  for i, e in ipairs(errors) do parts[i] = tostring(e) end
  local e = loom.error("group", ("%d error%s in a task group: %s"):format(#errors,
    #errors == 1 and "" or "s", table.concat(parts, "; ")))
  e.errors = errors
  return e
end

-- Waits for every child (the normal end of the body, where waiting can
-- suspend). It waits on a future of its own, never on a child, so that a
-- cancellation of the parent reaches the group and not one child: the
-- group then cancels every child, waits for them, and raises that
-- cancellation at its end (unless children failed).
function Group:_wait_all()
  local i = 1
  while i <= #self._tasks do
    if self._tasks[i]:done() then
      i = i + 1
    else
      self._wake = Future()
      local ok, err = pcall(await, self._wake)
      self._wake = nil
      if not ok then
        self._propagate = self._propagate or err
        self:_abort()
      end
    end
  end
end

function Group:_finish()
  self._closed = true
  if self._parent_cancelled then self._parent:uncancel() end
  if #self._errors > 0 then error(group_error(self._errors), 0) end
  if self._propagate then error(self._propagate, 0) end
end

function Group:__close(err)
  self._exiting = true
  if err ~= nil and not (loom.is_cancelled(err) and self._parent_cancelled) then
    -- the body failed: cancel the children (they end at their next suspension)
    if not loom.is_cancelled(err) then self._errors[#self._errors + 1] = err end
    self:_abort()
    self._closed = true
    error(#self._errors > 0 and group_error(self._errors) or err, 0)
  end
  if err == nil then self:_wait_all() end
  self:_finish()
end

--- local g <close> = async.group(); g:spawn(fn, ...)   (asyncio.TaskGroup)
--- async.group(function(g) ... end) runs the body and waits for every
--- child, also when the body fails.
function async.group(body)
  local parent = current()
  if parent == nil then error("async.group must be used inside a task", 2) end
  local g = setmetatable({ _parent = parent, _tasks = {}, _errors = {} }, Group)
  if body == nil then return g end
  if type(body) ~= "function" then
    error("bad argument #1 to 'group' (function expected, got " .. type(body) .. ")", 2)
  end
  local r = pack(pcall(body, g))
  g._exiting = true
  if not r[1] then
    if not loom.is_cancelled(r[2]) then g._errors[#g._errors + 1] = r[2] end
    g:_abort()
  end
  g:_wait_all()
  g:_finish()
  if not r[1] and not (loom.is_cancelled(r[2]) and g._parent_cancelled) then error(r[2], 0) end
  return unpack(r, 2, r.n)
end

function async.is_group_error(e)
  return loom.is_error(e) and e.kind == "group"
end

-- bridges to threads and pools
local default_pool

--- async.run_in(pool, fn, ...) -> fn's results, run on pool without
--- blocking the loop (loop.run_in_executor)
function async.run_in(pool, fn, ...)
  return await(pool:submit(fn, ...))
end

--- async.to_thread(fn, ...) -> fn's results, on loom's default pool
function async.to_thread(fn, ...)
  if default_pool == nil then
    default_pool = loom.ThreadPoolExecutor { thread_name_prefix = "async_to_thread" }
  end
  return await(default_pool:submit(fn, ...))
end

-- loom.Queue from tasks: async.get (C) waits for an item without holding
-- up the loop; a put that must wait for room waits on a pool thread.
local put_pool

--- async.put(q, v[, timeout]) -> true | nil, "timeout": q:put for a
--- loom.Queue that suspends the task, not the loop's thread
function async.put(q, v, timeout)
  check_timeout(timeout, 3, "put")
  local ok = q:put_nowait(v) -- raises when closed, for nil, ...
  if ok then return true end
  if timeout ~= nil and timeout <= 0 then return nil, "timeout" end
  put_pool = put_pool or loom.ThreadPoolExecutor { thread_name_prefix = "async_put" }
  local f = put_pool:submit(function(queue, item, t) return queue:put(item, t) end, q, v, timeout)
  local r = pack(pcall(await, f))
  if not r[1] then
    -- cancelled: a put still waiting for room gives up and puts nothing
    if loom.is_cancelled(r[2]) then f:interrupt() end
    error(r[2], 0)
  end
  return unpack(r, 2, r.n)
end

require("loom.async_sync")(async, loom, check_timeout)
require("loom.async_net")(async, loom)

return async
