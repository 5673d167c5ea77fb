-- Lua side of loom.sync: installs helpers into the loom module table.
--   loom.Timer(interval, fn, ...)   threading.Timer, on a loom.Thread that
--                                   waits on a loom.Event for `interval`.
-- A timer shows only its documented members (the methods, name, daemon);
-- the rest lives in a table of its own, and its metatable is protected
-- like those of the C classes.
local check = require "loom.argcheck"

return function(loom)
  -- Runs in the timer's own thread: everything it needs comes as
  -- arguments (fn and its arguments are copied there by the usual rules).
  local function run(finished, interval, fn, args)
    local results = table.pack()
    if not finished:wait(interval) then
      results = table.pack(fn(table.unpack(args, 1, args.n)))
    end
    finished:set()
    return table.unpack(results, 1, results.n)
  end

  local fields = setmetatable({}, { __mode = "k" }) -- timer -> its state
  local methods = {}
  local Timer = { __name = "loom.Timer", __metatable = "loom.Timer", __methods = methods }

  -- The state of the timer t, the argument #1 of the function `level`
  -- calls up (1: the caller); a bad self raises as in C.
  local function state(t, level)
    local s = fields[t]
    if s == nil then check.typeerror(1, "loom.Timer", t, (level or 1) + 1) end
    return s
  end

  function Timer.__index(t, k)
    local s = state(t)
    if k == "name" or k == "daemon" then
      if s.thread ~= nil then return s.thread[k] end
      return s[k]
    end
    return methods[k]
  end

  -- name: any time, as a Thread's; daemon: a boolean, before start() only.
  function Timer.__newindex(t, k, v)
    local s = state(t)
    if k == "name" then
      if type(v) ~= "string" and type(v) ~= "number" then check.typeerror(3, "string", v) end
      if s.thread ~= nil then s.thread.name = v else s.name = tostring(v) end
    elseif k == "daemon" then
      check.arg(v, "boolean", 3)
      if s.thread ~= nil then error("cannot set daemon status of a started timer", 2) end
      s.daemon = v
    else
      error(("cannot set field '%s' of a loom.Timer"):format(tostring(k)), 2)
    end
  end

  function Timer.__tostring(t)
    local s = fields[t]
    local state_name = s.thread == nil and "initial"
      or (s.thread:is_alive() and "started" or "stopped")
    return string.format("loom.Timer(%s, %s)", tostring(s.interval), state_name)
  end

  --- loom.Timer(interval, fn, ...) -> a timer that calls fn(...) after
  --- `interval` seconds once started, unless cancelled first.
  function loom.Timer(interval, fn, ...)
    if type(interval) ~= "number" then check.typeerror(1, "number", interval) end
    if interval ~= interval or interval < 0 then
      check.argerror(1, "interval must be a non-negative number")
    end
    check.arg(fn, "function", 2)
    local t = setmetatable({}, Timer)
    fields[t] = {
      interval = interval,
      fn = fn,
      args = table.pack(...),
      finished = loom.Event(),
      daemon = false,
      name = nil,
      thread = nil,
    }
    return t
  end

  --- t:start() -> t ; starts the countdown (raises if started twice).
  function methods.start(t)
    local s = state(t)
    if s.thread ~= nil then error("timer was already started", 2) end
    s.thread = loom.Thread {
      target = run,
      args = { s.finished, s.interval, s.fn, s.args, n = 4 },
      name = s.name,
      daemon = s.daemon,
    }
    s.thread:start()
    return t
  end

  --- t:cancel() ; stops the timer if it is still waiting (no effect once
  --- fn has started).
  function methods.cancel(t)
    state(t).finished:set()
  end

  -- The thread of a started timer, for its caller (join or result).
  local function started(t, timeout, what)
    local s = state(t, 2)
    check.timeout(timeout, 2, 2)
    if s.thread == nil then error("cannot " .. what .. " a timer before it is started", 3) end
    return s.thread
  end

  --- t:join([timeout]) -> true if the timer's thread finished
  function methods.join(t, timeout)
    return started(t, timeout, "join"):join(timeout)
  end

  --- t:result([timeout]) -> fn's results (nothing if cancelled); re-raises fn's error
  function methods.result(t, timeout)
    return started(t, timeout, "get the result of"):result(timeout)
  end

  function methods.is_alive(t)
    local s = state(t)
    return s.thread ~= nil and s.thread:is_alive()
  end
end
