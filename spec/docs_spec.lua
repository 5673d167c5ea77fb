-- The documentation against the code:
-- (a) docs/reference.md has an entry (a "### " heading naming it in
--     backticks, `loom.name`, `async.name` or `var:name` / `var.name` in
--     its class's "## " section) for every public name: the fields of
--     `require "loom"` and `require "loom.async"`, and the methods and
--     fields of every class, read from live objects (debug.getmetatable,
--     since the class metatables are protected); and no entry names
--     something the code does not have. Names starting with `_` are
--     private.
-- (b) every fenced block of docs/*.md whose info string is exactly
--     `lua runnable` runs in a fresh lua5.4 and exits with status 0, and
--     its output holds every line that a `--> text` comment in the block
--     announces (whitespace runs compared as one space, in any order:
--     threads print in any order).
local loom = require "loom"
local async = require "loom.async"
local helpers = require "helpers"

local io, _, pairs, ipairs, type, table, _, tostring, _, _ =
      io, os, pairs, ipairs, type, table, string, tostring, pcall, next
local rawget, debug = rawget, debug

local REFERENCE = "docs/reference.md"

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function lines_of(text)
  local out = {}
  for line in (text .. "\n"):gmatch("(.-)\r?\n") do out[#out + 1] = line end
  return out
end

-- The entries of a reference: for each "### " heading outside code
-- blocks, each backticked span that starts with `prefix.name` or
-- `prefix:name` gives {section = the "## " title above it, prefix, name,
-- line}.
local function index_entries(text)
  local entries, section, fence = {}, "", false
  for n, line in ipairs(lines_of(text)) do
    if line:match("^%s*```") then
      fence = not fence
    elseif not fence then
      local h2 = line:match("^##%s+(.-)%s*$")
      if h2 then section = h2 end
      if line:match("^###%s") then
        for code in line:gmatch("`([^`]+)`") do
          local prefix, name = code:match("^([%a_][%w_]*)[:%.]([%a_][%w_]*)")
          if prefix then
            entries[#entries + 1] = { section = section, prefix = prefix, name = name, line = n }
          end
        end
      end
    end
  end
  return entries
end

local function has_entry(entries, section, prefix, name)
  for _, e in ipairs(entries) do
    if e.prefix == prefix and e.name == name and (section == nil or e.section == section) then
      return true
    end
  end
  return false
end

-- The public names of a table of names (a module): its string keys that
-- do not start with "_".
local function public_keys(t, into)
  into = into or {}
  for k in pairs(t) do
    if type(k) == "string" and not k:match("^_") then into[k] = true end
  end
  return into
end

-- The public methods and fields of a live object: its class's method
-- table (`__methods`, or `__index` when that is a table), the fields of
-- a table object, and the extra `fields` that a custom __index answers
-- (each of which must really be there).
local function member_names(obj, fields)
  local names = {}
  local mt = debug.getmetatable(obj)
  if mt ~= nil then
    local methods = rawget(mt, "__methods")
    if type(methods) ~= "table" and type(rawget(mt, "__index")) == "table" then
      methods = rawget(mt, "__index")
    end
    if type(methods) == "table" then public_keys(methods, names) end
  end
  if type(obj) == "table" then public_keys(obj, names) end
  for _, f in ipairs(fields or {}) do
    if obj[f] == nil then error(("field '%s' is nil on %s"):format(f, tostring(obj)), 0) end
    names[f] = true
  end
  return names
end

local function sorted(set)
  local list = {}
  for k in pairs(set) do list[#list + 1] = k end
  table.sort(list)
  return list
end

-- Checks every name of every subject against the entries; returns the
-- list of misses ("Queue: q:foo") and the set of (section, prefix, name)
-- the subjects cover. A subject is {label, section (nil: anywhere),
-- prefix, sep, names = set}.
local function missing_entries(entries, subjects)
  local missing, covered = {}, {}
  for _, s in ipairs(subjects) do
    for _, name in ipairs(sorted(s.names)) do
      if has_entry(entries, s.section, s.prefix, name) then
        covered[(s.section or "*") .. "\0" .. s.prefix .. "\0" .. name] = true
      else
        missing[#missing + 1] = ("%s: %s%s%s%s"):format(s.label, s.prefix, s.sep, name,
          s.section and (" (in '## " .. s.section .. "')") or "")
      end
    end
  end
  return missing, covered
end

-- Entries whose prefix belongs to a subject (a module anywhere, a class
-- in its section) but that no subject has: documentation of names the
-- code does not have.
local function stale_entries(entries, subjects, covered)
  local stale = {}
  for _, e in ipairs(entries) do
    for _, s in ipairs(subjects) do
      if e.prefix == s.prefix and (s.section == nil or s.section == e.section) then
        local key_any = "*\0" .. e.prefix .. "\0" .. e.name
        local key_sec = e.section .. "\0" .. e.prefix .. "\0" .. e.name
        if not covered[key_any] and not covered[key_sec] then
          stale[#stale + 1] = ("line %d: %s.%s (in '## %s')"):format(e.line, e.prefix, e.name, e.section)
        end
        break
      end
    end
  end
  return stale
end

-- The subjects: the two modules and every class, from live objects.
-- Objects that need a loop (tasks, loop futures, groups, timeouts,
-- streams, servers) are made inside async.run.
local function subjects()
  local list = {}
  local function module(label, prefix, t)
    list[#list + 1] = { label = label, prefix = prefix, sep = ".", names = public_keys(t) }
  end
  local function class(label, section, prefix, obj, fields)
    list[#list + 1] = { label = label, section = section, prefix = prefix, sep = ":",
                        names = member_names(obj, fields) }
  end
  module("loom", "loom", loom)
  module("loom.async", "async", async)

  local t = loom.Thread { target = function() end, name = "docs" }
  t:start()
  t:join()
  class("Thread", "Threads", "t", t, { "name", "ident", "daemon" })
  class("Lock", "Lock", "lock", loom.Lock())
  class("RLock", "RLock", "rlock", loom.RLock())
  class("Condition", "Condition", "cond", loom.Condition(), { "lock" })
  class("Semaphore", "Semaphore and BoundedSemaphore", "sem", loom.Semaphore(), { "value" })
  class("BoundedSemaphore", "Semaphore and BoundedSemaphore", "sem", loom.BoundedSemaphore(), { "value" })
  class("Event", "Event", "ev", loom.Event())
  class("Barrier", "Barrier", "b", loom.Barrier(2), { "parties", "broken", "n_waiting" })
  local timer = loom.Timer(0, function() end)
  timer.name = "docs-timer"
  timer:start()
  timer:join()
  class("Timer", "Timer", "timer", timer, { "name", "daemon" })
  local lock = loom.Lock()
  local guard = lock:guard()
  class("Guard", "Guards", "guard", guard)
  guard:release()
  local s = loom.shared {}
  local sguard = s:guard()
  class("SharedGuard", "Guards", "guard", sguard)
  sguard:release()
  class("shared", "Shared tables", "s", s)
  class("Queue", "Queues", "q", loom.Queue(), { "maxsize" })
  class("LifoQueue", "Queues", "q", loom.LifoQueue(), { "maxsize" })
  class("PriorityQueue", "Queues", "q", loom.PriorityQueue(), { "maxsize" })
  class("SimpleQueue", "Queues", "q", loom.SimpleQueue(), { "maxsize" })
  local pool = loom.ThreadPoolExecutor { max_workers = 1 }
  class("ThreadPoolExecutor", "Thread pools", "pool", pool, { "max_workers" })
  local fut = pool:submit(function() return 1 end)
  fut:result(10)
  class("Future", "Futures", "fut", fut)
  pool:shutdown()

  async.run(function()
    class("async Task", "Tasks", "task", async.spawn(function() end))
    class("async Future", "Loop futures", "fut", async.Future())
    class("async Event", "Async Event", "ev", async.Event())
    class("async Lock", "Async Lock", "lock", async.Lock())
    class("async Condition", "Async Condition", "cond", async.Condition())
    class("async Semaphore", "Async Semaphore and BoundedSemaphore", "sem", async.Semaphore())
    class("async BoundedSemaphore", "Async Semaphore and BoundedSemaphore", "sem",
          async.BoundedSemaphore())
    class("async Barrier", "Async Barrier", "b", async.Barrier(2))
    class("async Queue", "Async queues", "q", async.Queue())
    class("async LifoQueue", "Async queues", "q", async.LifoQueue())
    class("async PriorityQueue", "Async queues", "q", async.PriorityQueue())
    do
      local cm <close> = async.timeout(nil)
      class("async timeout", "Timeouts", "cm", cm)
    end
    async.group(function(g) class("async group", "Task groups", "g", g) end)
    local server <close> = async.start_server(function(reader) reader:read() end, "127.0.0.1", 0)
    class("Server", "Servers", "server", server)
    local reader, writer = async.open_connection("127.0.0.1", server:port(), { timeout = 10 })
    class("Stream", "Streams", "stream", reader)
    writer:close()
    writer:wait_closed()
  end)
  return list
end

-- The fenced blocks of a Markdown text whose info string is exactly
-- `info`: {code, line (of the opening fence)}.
local function fenced_blocks(text, info)
  local blocks, open, buf, start = {}, nil, nil, nil
  for n, line in ipairs(lines_of(text)) do
    local fence_info = line:match("^```%s*(.-)%s*$")
    if open == nil then
      if fence_info ~= nil then
        open, buf, start = fence_info, {}, n
      end
    elseif fence_info == "" then
      if open == info then blocks[#blocks + 1] = { code = table.concat(buf, "\n") .. "\n", line = start } end
      open = nil
    else
      buf[#buf + 1] = line
    end
  end
  return blocks
end

local function squash(s)
  return (s:gsub("%s+", " "):gsub("^ ", ""):gsub(" $", ""))
end

-- What a block announces with `--> text` comments.
local function expectations(code)
  local list = {}
  for _, line in ipairs(lines_of(code)) do
    local want = line:match("%-%->%s?(.-)%s*$")
    if want and want ~= "" then list[#list + 1] = squash(want) end
  end
  return list
end

-- Runs a block; returns true, or false and what went wrong.
local function run_block(code, timeout)
  local out, status = helpers.run_lua(code, timeout or 30, "unset LOOM_ASYNC_DEBUG")
  if status ~= 0 then
    return false, ("exit status %s; output:\n%s"):format(tostring(status), out)
  end
  local have = {}
  for _, line in ipairs(lines_of(out)) do have[squash(line)] = true end
  local absent = {}
  for _, want in ipairs(expectations(code)) do
    if not have[want] then absent[#absent + 1] = "  --> " .. want end
  end
  if #absent > 0 then
    return false, ("output lacks:\n%s\noutput:\n%s"):format(table.concat(absent, "\n"), out)
  end
  return true
end

describe("docs/reference.md", function()
  it("has an entry for every public name of loom and loom.async, and none for names they lack", function()
    local entries = index_entries(read(REFERENCE))
    local subs = subjects()
    local missing, covered = missing_entries(entries, subs)
    assert.are.same({}, missing, "names without an entry in " .. REFERENCE .. ":\n  " ..
      table.concat(missing, "\n  "))
    local stale = stale_entries(entries, subs, covered)
    assert.are.same({}, stale, "entries in " .. REFERENCE .. " for names the code lacks:\n  " ..
      table.concat(stale, "\n  "))
  end)

  it("(the check itself) reports a missing entry and an entry for nothing", function()
    local text = table.concat({
      "## Things", "### `m.alpha(x)`", "```lua", "### `m.inside_code`", "```",
      "## Widget", "### `w:spin()`, `w.size`", "### `w:gone()`",
      "## Other", "### `w:grow()`", "",
    }, "\n")
    local entries = index_entries(text)
    local subs = {
      { label = "m", prefix = "m", sep = ".", names = public_keys { alpha = 1, beta = 2, inside_code = 3, _p = 4 } },
      { label = "Widget", section = "Widget", prefix = "w", sep = ":",
        names = { spin = true, size = true, grow = true } },
    }
    local missing, covered = missing_entries(entries, subs)
    assert.are.same({ "m: m.beta", "m: m.inside_code", "Widget: w:grow (in '## Widget')" }, missing)
    assert.are.same({ "line 8: w.gone (in '## Widget')" }, stale_entries(entries, subs, covered))
  end)
end)

describe("runnable blocks in docs/*.md", function()
  local p = assert(io.popen("ls docs/*.md"))
  local files = {}
  for f in p:lines() do files[#files + 1] = f end
  p:close()

  local count = 0
  for _, file in ipairs(files) do
    for _, block in ipairs(fenced_blocks(read(file), "lua runnable")) do
      count = count + 1
      it(("%s:%d runs and prints what it says"):format(file, block.line), function()
        local ok, why = run_block(block.code)
        assert(ok, ("%s:%d: %s"):format(file, block.line, why or ""))
      end)
    end
  end

  it("there are some (the guide's and the reference's)", function()
    assert.is_true(count >= 20, "only " .. count .. " runnable blocks found")
  end)

  it("(the check itself) fails a block that raises or does not print what it says", function()
    local text = table.concat({
      "```lua runnable", "print('yes')  --> yes", "```",
      "```lua", "not run", "```",
      "```lua runnable", "error('boom')", "```",
      "```lua runnable", "print('one', 2)  --> one 2", "print('x') --> y", "```", "",
    }, "\n")
    local blocks = fenced_blocks(text, "lua runnable")
    assert.are.same({ 1, 7, 10 }, { blocks[1].line, blocks[2].line, blocks[3].line })
    assert.is_true((run_block(blocks[1].code)))
    local ok, why = run_block(blocks[2].code)
    assert.is_false(ok)
    assert.matches("boom", why)
    ok, why = run_block(blocks[3].code)
    assert.is_false(ok)
    assert.matches("--> y", why, 1, true)
    assert.is_nil(why:find("--> one 2", 1, true))
  end)
end)
