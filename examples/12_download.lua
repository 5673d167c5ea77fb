-- Tip 12: downloading images concurrently (Python: one threading.Thread
-- per URL, each running requests.get). The "internet" here is a small
-- HTTP/1.0 server in this process, on 127.0.0.1 and a port the system
-- picks: it serves N generated images (deterministic bytes, 20-200 KB),
-- each after a delay of 100-200 ms, like a slow remote site. The images are
-- downloaded one after another, with one loom.thread each (the article's
-- way), and on a thread pool; every byte is checked against what the
-- server should have sent. Needs LuaSocket (Debian: lua-socket).
local loom = require "loom"

local N = 8

-- What the server holds (examples/download_site.lua): image k's size,
-- delay and bytes. Client and server call the same functions, so the
-- client knows what to expect.
local here = arg and arg[0] and arg[0]:match("^(.*)/") or "examples"
local site = dofile(here .. "/download_site.lua")
local image_spec, make_image = site.image_spec, site.make_image

---------------------------------------------------------------- the server
-- The server's threads all wait in accept() on one listening socket (the
-- kernel gives each connection to one of them), so as many requests as
-- there are threads are served at once, each sleeping its delay with
-- loom.sleep. A thread looks at the `stop` event between accepts.
local function accept_loop(listen_fd, n, stop, stats)
  local socket = require "socket"
  local listener = socket.tcp()
  listener:setfd(listen_fd) -- the server thread's listening socket...
  assert(listener:listen(64)) -- ...as a server object of this thread's state
  listener:settimeout(0.05)
  while not stop:is_set() do
    local conn = listener:accept()
    if conn then
      conn:settimeout(10)
      local request = conn:receive("*l") or ""
      repeat local header = conn:receive("*l") until header == nil or header == ""
      local k = tonumber(request:match("^GET /img_(%d+)%.bin HTTP/1%.[01]$"))
      if k and k >= 1 and k <= n then
        local size, delay = image_spec(k, n)
        loom.sleep(delay) -- a slow site
        conn:send(("HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n" ..
                   "Content-Length: %d\r\n\r\n"):format(size) .. make_image(k, size))
      else
        conn:send("HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n")
      end
      conn:close()
      stats:incr("requests")
    end
  end
  listener:setfd(-1) -- the server thread closes the socket, not this copy
end

local function run_server(n, ready, stop, stats)
  local socket = require "socket"
  local server = assert(socket.bind("127.0.0.1", 0, 64))
  local threads = {}
  for i = 1, n do
    threads[i] = loom.thread(accept_loop, server:getfd(), n, stop, stats)
  end
  local _, port = server:getsockname()
  ready:put(tonumber(port))
  for _, t in ipairs(threads) do t:join() end -- they end once `stop` is set
  server:close()
end

local ready, stop, stats = loom.Queue(), loom.Event(), loom.shared { requests = 0 }
local server = loom.thread(run_server, N, ready, stop, stats)
local port = ready:get()

local urls, total_delay = {}, 0
for k = 1, N do
  urls[k] = ("http://127.0.0.1:%d/img_%d.bin"):format(port, k)
  total_delay = total_delay + select(2, image_spec(k, N))
end
print(("server: %d images on http://127.0.0.1:%d/, 20-200 KB each, %.2f s of delays in all")
  :format(N, port, total_delay))

---------------------------------------------------------------- the client
-- requests.get(url).content
local function fetch(url)
  local http = require "socket.http"
  local body, code = http.request(url)
  if code ~= 200 then error(("%s: %s"):format(url, tostring(code)), 0) end
  return body
end

-- The article's download_image(url, filename); the bytes are returned to
-- be checked instead of written to a file.
local function download_image(url, filename)
  local body = fetch(url)
  io.write(filename .. " downloaded.\n")
  return body
end

local function verify(label, bodies, seconds)
  return site.verify(label, bodies, N, seconds)
end

-- 1. One after another.
local t0 = loom.now()
local bodies = {}
for k, url in ipairs(urls) do bodies[k] = fetch(url) end
local sequential = verify("sequential", bodies, loom.now() - t0)

-- 2. One thread per image, as in the article.
t0 = loom.now()
local threads = {}
for k, url in ipairs(urls) do
  threads[k] = loom.thread(download_image, url, ("img_%d.bin"):format(k))
end
bodies = {}
for k, t in ipairs(threads) do bodies[k] = t:result() end -- join, and the bytes
print("All images downloaded.")
local threaded = verify("one loom.thread per image", bodies, loom.now() - t0)

-- 3. A pool of 4 workers: pool:map gives the images in the order of the URLs.
t0 = loom.now()
bodies = {}
do
  local pool <close> = loom.ThreadPoolExecutor { max_workers = 4 }
  for k, body in pool:map(fetch, urls) do bodies[k] = body end
end
local pooled = verify("pool of 4 workers, map", bodies, loom.now() - t0)

print(("threads: %.1fx faster than sequential, pool: %.1fx")
  :format(sequential / threaded, sequential / pooled))

stop:set()
server:join()
print(("server stopped after %d requests"):format(stats.requests))
