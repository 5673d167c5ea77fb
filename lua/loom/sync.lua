-- Lua side of loom.sync: installs helpers into the loom module table.
--   loom.Timer(interval, fn, ...)   threading.Timer, on a loom.Thread that
--                                   waits on a loom.Event for `interval`.
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

  local Timer = {}
  Timer.__index = Timer
  Timer.__name = "loom.Timer"

  function Timer.__tostring(t)
    local state = t.thread == nil and "initial"
      or (t.thread:is_alive() and "started" or "stopped")
    return string.format("loom.Timer(%s, %s)", tostring(t.interval), state)
  end

  --- loom.Timer(interval, fn, ...) -> a timer that calls fn(...) after
  --- `interval` seconds once started, unless cancelled first.
  function loom.Timer(interval, fn, ...)
    if type(interval) ~= "number" or interval ~= interval or interval < 0 then
      error("bad argument #1 to 'Timer' (interval must be a non-negative number)", 2)
    end
    if type(fn) ~= "function" then
      error("bad argument #2 to 'Timer' (function expected, got " .. type(fn) .. ")", 2)
    end
    return setmetatable({
      interval = interval,
      fn = fn,
      args = table.pack(...),
      finished = loom.Event(),
      daemon = false,
      name = nil,
      thread = nil,
    }, Timer)
  end

  --- t:start() -> t ; starts the countdown (raises if started twice).
  function Timer:start()
    if self.thread ~= nil then error("timer was already started", 2) end
    self.thread = loom.Thread {
      target = run,
      args = { self.finished, self.interval, self.fn, self.args, n = 4 },
      name = self.name,
      daemon = self.daemon,
    }
    self.thread:start()
    return self
  end

  --- t:cancel() ; stops the timer if it is still waiting (no effect once
  --- fn has started).
  function Timer:cancel()
    self.finished:set()
  end

  local function started(self, what)
    if self.thread == nil then error("cannot " .. what .. " a timer before it is started", 3) end
    return self.thread
  end

  --- t:join([timeout]) -> true if the timer's thread finished
  function Timer:join(timeout)
    return started(self, "join"):join(timeout)
  end

  --- t:result([timeout]) -> fn's results (nothing if cancelled); re-raises fn's error
  function Timer:result(timeout)
    return started(self, "get the result of"):result(timeout)
  end

  function Timer:is_alive()
    return self.thread ~= nil and self.thread:is_alive()
  end
end
