-- Lua side of the executor: pool:map, lazy and ordered, on top of the C
-- pool's submit (csrc/pool.c). Items go to the workers in chunks; at most
-- `buffersize` chunks are in flight, so an endless iterator is fine.
local check = require "loom.argcheck"

return function(loom, methods)
  -- Runs one chunk in a worker (so it uses only its arguments and the
  -- worker's globals, and is loaded there once). Returns the first results
  -- of the items, the full results of the items that gave other than one,
  -- and, when an item failed, where, with what, and its traceback.
  local function run_chunk(fn, items, n)
    local first, multi = {}, nil
    local failed_at, err, tb
    local handler = function(e) return { e, debug.traceback(nil, 2) } end
    for k = 1, n do
      local r = table.pack(xpcall(fn, handler, items[k]))
      if not r[1] then
        failed_at, err, tb = k, r[2][1], r[2][2]
        break
      end
      if r.n == 2 then
        first[k] = r[2]
      else
        multi = multi or {}
        multi[k] = table.pack(table.unpack(r, 2, r.n))
      end
    end
    local where = failed_at and require("loom.core").current_thread().name
    return first, multi, failed_at, err, tb, where
  end

  -- A field of map's options (argument 4: pool, fn, items, opts).
  local function check_count(opts, field)
    local v = opts[field]
    if v == nil then return nil end
    if math.type(v) ~= "integer" or v < 1 then
      check.argerror(4, ("field '%s' must be a positive integer"):format(field), 2)
    end
    return v
  end

  --- pool:map(fn, items[, {timeout=, chunksize=, buffersize=}]) -> for i, ... in
  function methods.map(pool, fn, items, opts)
    check.object(pool, "loom.ThreadPoolExecutor", 1)
    check.arg(fn, "function", 2)
    local ti = type(items)
    if ti ~= "table" and ti ~= "function" then check.typeerror(3, "table or function", items) end
    if opts ~= nil then check.arg(opts, "table", 4) end
    opts = opts or {}
    local timeout = opts.timeout
    if timeout ~= nil and (type(timeout) ~= "number" or timeout ~= timeout or timeout < 0) then
      check.argerror(4, "field 'timeout' must be a non-negative number")
    end
    local chunksize = check_count(opts, "chunksize")
    local buffersize = check_count(opts, "buffersize") or 4 * pool.max_workers
    local deadline = timeout and loom.now() + timeout

    -- the source: chunks of items, pulled only when there is room
    local total = ti == "table" and #items or nil
    local pulled, exhausted, grow = 0, false, 1
    if total and not chunksize then
      -- enough chunks to keep every worker busy, few enough to be cheap
      chunksize = math.max(1, math.min(512, total // (8 * pool.max_workers)))
    end
    local function next_chunk()
      if exhausted then return nil end
      local size = chunksize or grow
      if not chunksize and grow < 64 then grow = grow * 2 end
      local chunk, n = {}, 0
      if total then
        n = math.min(size, total - pulled)
        table.move(items, pulled + 1, pulled + n, 1, chunk)
        if pulled + n >= total then exhausted = true end
      else
        while n < size do
          local v = items()
          if v == nil then exhausted = true break end
          n = n + 1
          chunk[n] = v
        end
      end
      if n == 0 then return nil end
      local base = pulled
      pulled = pulled + n
      return chunk, n, base
    end

    -- the window: futures of the chunks in flight, in input order
    local fifo, head, tail = {}, 1, 0
    local function fill()
      while tail - head + 1 < buffersize do
        local chunk, n, base = next_chunk()
        if not chunk then return end
        tail = tail + 1
        fifo[tail] = { fut = pool:submit(run_chunk, fn, chunk, n), n = n, base = base }
      end
    end
    fill()

    -- the chunk being yielded
    local cur, k, first, multi, failed_at, err, tb, where
    local function step()
      while true do
        if cur and k < cur.n then
          k = k + 1
          if failed_at == k then
            if type(err) == "string" and where then
              err = ("%s\n(in thread '%s') %s"):format(err, where, tb or "")
            end
            error(err, 0)
          end
          local i = cur.base + k
          if multi and multi[k] then
            return i, table.unpack(multi[k], 1, multi[k].n)
          end
          return i, first[k]
        end
        if head > tail then return nil end
        cur = fifo[head]
        fifo[head] = nil
        head = head + 1
        k = 0
        local wait = deadline and math.max(0, deadline - loom.now())
        first, multi, failed_at, err, tb, where = cur.fut:result(wait)
        fill()
      end
    end

    -- closed when the loop ends early (break, error): chunks not started
    -- are cancelled, the ones running finish on their own
    local closer = setmetatable({}, { __close = function()
      for j = head, tail do
        if fifo[j] then fifo[j].fut:cancel() end
      end
      head = tail + 1
    end })
    return step, nil, nil, closer
  end
end
