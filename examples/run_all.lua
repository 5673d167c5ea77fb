-- The demo: runs every example in order, each as its own lua5.4 process.
local build = os.getenv("LOOM_BUILD") or "build"
local p = assert(io.popen("ls examples/[0-9][0-9]_*.lua examples/echo_server.lua"))
local failed = 0
for file in p:lines() do
  print(("\n=== %s ==="):format(file))
  io.stdout:flush()
  local ok = os.execute(("LUA_CPATH='./%s/?.so;;' LUA_PATH='./lua/?.lua;./lua/?/init.lua;;' lua5.4 %s")
    :format(build, file))
  if not ok then failed = failed + 1; print("!!! " .. file .. " failed") end
end
p:close()
os.exit(failed == 0 and 0 or 1)
