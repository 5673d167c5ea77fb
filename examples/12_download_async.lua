-- Tip 12 on one thread: the same downloads as 12_download.lua, but with
-- loom.async tasks instead of threads (Python: asyncio.open_connection and
-- asyncio.gather). The "internet" is an HTTP/1.0 server on 127.0.0.1 and a
-- port the system picks, served by async.start_server on the same loop:
-- N generated images (20-200 KB), each after a delay of 100-200 ms. The
-- images are downloaded one after another, then all at once with gather;
-- every byte is checked against what the server should have sent.
local loom = require "loom"
local async = require "loom.async"

local here = arg and arg[0] and arg[0]:match("^(.*)/") or "examples"
local site = dofile(here .. "/download_site.lua")

local N = 8
local requests = 0

---------------------------------------------------------------- the server
-- One task per connection: read the request line and the headers, wait
-- the image's delay (async.sleep: the other connections go on), answer.
local function serve(reader, writer)
  local request = reader:readline()
  repeat local header = reader:readline() until header == "\r\n" or header == "\n" or header == ""
  local k = tonumber(request:match("^GET /img_(%d+)%.bin HTTP/1%.[01]\r?\n$"))
  if k and k >= 1 and k <= N then
    local size, delay = site.image_spec(k, N)
    async.sleep(delay) -- a slow site
    writer:write(("HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n" ..
                  "Content-Length: %d\r\n\r\n"):format(size))
    writer:write(site.make_image(k, size))
  else
    writer:write("HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n")
  end
  writer:drain()
  requests = requests + 1
  -- the stream is closed (its data flushed first) when the handler ends
end

---------------------------------------------------------------- the client
-- asyncio's way without an HTTP library: open_connection, write the
-- request, read the status line, the headers, then exactly Content-Length
-- bytes.
local function fetch(port, k)
  local reader, writer = async.open_connection("127.0.0.1", port, { timeout = 5 })
  writer:write(("GET /img_%d.bin HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"):format(k))
  local status = reader:readline()
  local length
  while true do
    local header = reader:readline()
    if header == "\r\n" or header == "" then break end
    length = length or tonumber(header:match("^Content%-Length: (%d+)"))
  end
  if not status:match("^HTTP/1%.[01] 200") then
    error(("img_%d.bin: %s"):format(k, status), 0)
  end
  local body = reader:readexactly(length)
  writer:close()
  writer:wait_closed()
  return body
end

async.run(function()
  local server <close> = async.start_server(serve, "127.0.0.1", 0)
  local port = server:port()
  local total_delay = 0
  for k = 1, N do total_delay = total_delay + select(2, site.image_spec(k, N)) end
  print(("server: %d images on http://127.0.0.1:%d/, 20-200 KB each, %.2f s of delays in all")
    :format(N, port, total_delay))

  -- 1. One after another.
  local t0 = loom.now()
  local bodies = {}
  for k = 1, N do bodies[k] = fetch(port, k) end
  local sequential = site.verify("sequential", bodies, N, loom.now() - t0)

  -- 2. All at once: one task per image, gathered (results in order).
  t0 = loom.now()
  local tasks = {}
  for k = 1, N do
    tasks[k] = async.spawn(function()
      local body = fetch(port, k)
      print(("img_%d.bin downloaded."):format(k))
      return body
    end)
  end
  bodies = { async.gather(table.unpack(tasks)) }
  print("All images downloaded.")
  local concurrent = site.verify("tasks on one thread, gather", bodies, N, loom.now() - t0)
  print(("tasks: %.1fx faster than sequential, on one OS thread"):format(sequential / concurrent))

  server:close()
  server:wait_closed()
  print(("server stopped after %d requests"):format(requests))
end)
