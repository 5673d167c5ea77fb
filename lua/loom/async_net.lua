-- Async networking for loom.async (asyncio's open_connection and
-- start_server): streams, servers, name resolution and descriptor
-- readiness are C (csrc/loop_net.c, on libuv); this file resolves names,
-- tries each address in turn, and applies timeouts. Installed into
-- loom.async by loom/async.lua.
return function(async, loom)
  local connect, listen, getaddrinfo = async._connect, async._listen, async.getaddrinfo
  async._connect, async._listen = nil, nil

  local function check_opts(opts, fname, argn)
    if opts ~= nil and type(opts) ~= "table" then
      error(("bad argument #%d to '%s' (table expected, got %s)"):format(argn, fname, type(opts)), 3)
    end
    return opts or {}
  end

  local function check_number(v, name, fname, argn, positive)
    if v ~= nil and (type(v) ~= "number" or v ~= v or v < 0 or (positive and v == 0)) then
      error(("bad argument #%d to '%s' (%s must be a %s number)")
        :format(argn, fname, name, positive and "positive" or "non-negative"), 3)
    end
  end

  local function check_port(port, fname, argn)
    if math.type(port) ~= "integer" then
      error(("bad argument #%d to '%s' (integer expected, got %s)")
        :format(argn, fname, type(port)), 3)
    end
    if port < 0 or port > 65535 then
      error(("bad argument #%d to '%s' (port must be 0 to 65535)"):format(argn, fname), 3)
    end
  end

  local function check_family(family, fname, argn)
    if family ~= nil and family ~= "inet" and family ~= "inet6" and family ~= "any" then
      error(("bad argument #%d to '%s' (family must be 'inet', 'inet6' or 'any')")
        :format(argn, fname), 3)
    end
  end

  -- A numeric address needs no resolver (unless a family must be checked).
  local function numeric(host)
    return host:match("^%d+%.%d+%.%d+%.%d+$") or (host:find(":", 1, true) and host:match("^[%x:%.]+$"))
  end

  local function addresses(host, port, family)
    if numeric(host) and (family == nil or family == "any") then
      return { { address = host, port = port, family = host:find(":", 1, true) and "inet6" or "inet" } }
    end
    return getaddrinfo(host, port, family)
  end

  local function connect_any(host, port, opts)
    local last
    for _, a in ipairs(addresses(host, port, opts.family)) do
      local ok, s = pcall(connect, a.address, a.port, opts.limit)
      if ok then return s end
      if loom.is_cancelled(s) then error(s, 0) end
      last = s
    end
    error(last or loom.error("network", ("cannot resolve '%s': no address"):format(host)), 0)
  end

  --- async.open_connection(host, port[, {timeout=, limit=, family=}])
  --- -> reader, writer (one loom.async.Stream, twice)
  function async.open_connection(host, port, opts)
    if type(host) ~= "string" then
      error("bad argument #1 to 'open_connection' (string expected, got " .. type(host) .. ")", 2)
    end
    check_port(port, "open_connection", 2)
    opts = check_opts(opts, "open_connection", 3)
    check_number(opts.timeout, "timeout", "open_connection", 3)
    check_number(opts.limit, "limit", "open_connection", 3, true)
    check_family(opts.family, "open_connection", 3)
    if opts.timeout == nil then
      local s = connect_any(host, port, opts)
      return s, s
    end
    local ok, s = pcall(function()
      local _ <close> = async.timeout(opts.timeout)
      return connect_any(host, port, opts)
    end)
    if not ok then
      if loom.is_timeout(s) then
        error(loom.error("timeout", ("connect to %s port %d timed out after %s seconds")
          :format(host, port, opts.timeout)), 0)
      end
      error(s, 0)
    end
    return s, s
  end

  --- async.start_server(handler, host, port[, {backlog=, limit=, family=}])
  --- -> server; handler(reader, writer) runs as a task per connection
  function async.start_server(handler, host, port, opts)
    if type(handler) ~= "function" then
      error("bad argument #1 to 'start_server' (function expected, got " .. type(handler) .. ")", 2)
    end
    if host ~= nil and type(host) ~= "string" then
      error("bad argument #2 to 'start_server' (string expected, got " .. type(host) .. ")", 2)
    end
    check_port(port, "start_server", 3)
    opts = check_opts(opts, "start_server", 4)
    check_number(opts.limit, "limit", "start_server", 4, true)
    check_family(opts.family, "start_server", 4)
    local backlog = opts.backlog
    if backlog ~= nil and (math.type(backlog) ~= "integer" or backlog < 1 or backlog > 65535) then
      error("bad argument #4 to 'start_server' (backlog must be 1 to 65535)", 2)
    end
    local list = addresses(host or "0.0.0.0", port, opts.family)
    local last
    for _, a in ipairs(list) do
      local ok, srv = pcall(listen, a.address, a.port, handler, opts.backlog, opts.limit)
      if ok then return srv end
      last = srv
    end
    error(last, 0)
  end

  function async.is_network_error(e) return loom.is_error(e) and e.kind == "network" end
  function async.is_incomplete_read(e) return loom.is_error(e) and e.kind == "incomplete_read" end
  function async.is_limit_overrun(e) return loom.is_error(e) and e.kind == "limit_overrun" end
end
