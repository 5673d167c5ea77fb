-- An echo server and its clients in one script, as asyncio's docs show
-- them (asyncio.start_server / asyncio.open_connection): the server runs
-- one task per connection; three clients talk to it at once, each sending
-- lines and reading back what it sent, all on one OS thread.
local async = require "loom.async"

local function handle_echo(reader, writer)
  local addr, port = writer:getpeername()
  while true do
    local line = reader:readline()
    if line == "" then break end -- the client closed its side
    print(("server: %q from %s port %d"):format((line:gsub("\n$", "")), addr, port))
    writer:write(line)
    writer:drain()
  end
  print("server: client done, closing the connection")
  writer:close()
end

local function client(name, lines, port)
  local reader, writer = async.open_connection("127.0.0.1", port)
  for _, text in ipairs(lines) do
    writer:write(text .. "\n")
    local echoed = reader:readline()
    print(("%s: sent %q, received %q"):format(name, text, (echoed:gsub("\n$", ""))))
    assert(echoed == text .. "\n")
  end
  writer:write_eof() -- no more lines: the server sees the end of the stream
  assert(reader:read() == "")
  writer:close()
  writer:wait_closed()
  return #lines
end

async.run(function()
  local server <close> = async.start_server(handle_echo, "127.0.0.1", 0)
  local addr, port = server:getsockname()
  print(("serving on %s port %d"):format(addr, port))
  local counts = { async.gather(
    function() return client("alice", { "hello", "how are you?" }, port) end,
    function() return client("bob", { "bonjour" }, port) end,
    function() return client("carol", { "hola", "que tal", "adios" }, port) end) }
  server:close()
  server:wait_closed()
  print(("echoed %d lines for %d clients; server closed"):format(counts[1] + counts[2] + counts[3], #counts))
end)
