-- loom.async's TCP streams vs Python 3's asyncio streams, in the same run:
--   an echo server on loopback and 100 concurrent clients in one process,
--   each doing a fixed number of round trips of 64-byte messages (write,
--   drain, readexactly): round trips per second;
--   the resident memory one idle connection costs (both of its ends, in
--   one process, after one round trip), each side in its own fresh process.
-- loom and Python take turns for ROUNDS rounds; each row is the median.
local async = require "loom.async"
local util = require "util"

local ROUNDS = 5
local CLIENTS, TRIPS = 100, 200
local IDLE = 1000
local MSG = string.rep("x", 63) .. "\n"

local function handle(reader, writer)
  while true do
    local ok, data = pcall(reader.readexactly, reader, 64)
    if not ok then break end -- the client closed: an incomplete read
    writer:write(data)
    writer:drain()
  end
end

local function client(port, trips)
  local reader, writer = async.open_connection("127.0.0.1", port)
  for _ = 1, trips do
    writer:write(MSG)
    writer:drain()
    assert(reader:readexactly(64) == MSG)
  end
  writer:close()
  writer:wait_closed()
end

local function echo_rate(clients, trips)
  return async.run(function()
    local server = async.start_server(handle, "127.0.0.1", 0)
    local port = server:port()
    local t0 = util.now()
    local ts = {}
    for i = 1, clients do ts[i] = async.spawn(client, port, trips) end
    async.gather(table.unpack(ts))
    local dt = util.now() - t0
    server:close()
    server:wait_closed()
    return clients * trips / dt
  end)
end

local idle_script = [[
local function rss() for l in io.lines("/proc/self/status") do
  local v = l:match("^VmRSS:%s+(%d+)") if v then return tonumber(v) end end end
local async = require "loom.async"
local MSG = string.rep("x", 63) .. "\n"
local N = @N@
async.run(function()
  local server = async.start_server(function(r, w)
    while true do
      local ok, data = pcall(r.readexactly, r, 64)
      if not ok then break end
      w:write(data)
    end
  end, "127.0.0.1", 0)
  local port = server:port()
  local r, w = async.open_connection("127.0.0.1", port)
  w:write(MSG) r:readexactly(64)
  collectgarbage() collectgarbage()
  local base = rss()
  local conns = {}
  for i = 1, N do
    local r2, w2 = async.open_connection("127.0.0.1", port)
    w2:write(MSG) r2:readexactly(64)
    conns[i] = r2
  end
  async.sleep(0.05)
  print("idle_kb", (rss() - base) / N)
  for _, c in ipairs(conns) do c:close() end
  w:close()
  server:close()
end)
]]

local function loom_idle(n)
  local f = os.tmpname()
  local fh = assert(io.open(f, "w"))
  fh:write((idle_script:gsub("@N@", tostring(n))))
  fh:close()
  local p = assert(io.popen("lua5.4 " .. f))
  local out = p:read("a")
  p:close()
  os.remove(f)
  return tonumber(out:match("idle_kb%s+([%d.]+)"))
end

local L = { echo = {}, idle = {} }
local P = { echo = {}, idle = {} }
for _ = 1, ROUNDS do
  L.echo[#L.echo + 1] = echo_rate(CLIENTS, TRIPS)
  P.echo[#P.echo + 1] = util.python("bench/net_bench.py", ("echo %d %d"):format(CLIENTS, TRIPS)).echo_rate
end
for _ = 1, 3 do
  L.idle[#L.idle + 1] = loom_idle(IDLE)
  P.idle[#P.idle + 1] = util.python("bench/net_bench.py", ("idle %d"):format(IDLE)).idle_kb
end

util.report(("loom.async streams vs asyncio streams (median of %d alternating rounds)"):format(ROUNDS), {
  { name = ("echo, %d clients x %d trips of 64 B"):format(CLIENTS, TRIPS), unit = "trips/s",
    loom = util.median(L.echo), python = util.median(P.echo), higher = true },
  { name = ("memory per idle connection (%d, KB)"):format(IDLE), unit = "KB",
    loom = util.median(L.idle), python = util.median(P.idle) },
})
print("")
print(("spread: loom echo %.0f-%.0f trips/s, python %.0f-%.0f"):format(
  util.min(L.echo), math.max(table.unpack(L.echo)), util.min(P.echo), math.max(table.unpack(P.echo))))
print("targets: echo >= 5x asyncio's round trips per second; idle memory <= 0.5x asyncio's")
