-- Runs every bench/*_bench.lua (or those named on the command line), each
-- in its own process, with the build in $LOOM_BUILD.
local build = os.getenv("LOOM_BUILD") or "build"
local names = {}
if #arg > 0 then
  for _, a in ipairs(arg) do names[#names + 1] = "bench/" .. a .. "_bench.lua" end
else
  local p = assert(io.popen("ls bench/*_bench.lua"))
  for l in p:lines() do names[#names + 1] = l end
  p:close()
end
print("# loom vs Python " .. io.popen("python3 -c 'import sys;print(sys.version.split()[0])'"):read("l") ..
      " on " .. io.popen("nproc"):read("l") .. " cores (same run, best of several)")
local failed = false
for _, f in ipairs(names) do
  local cmd = string.format(
    "LUA_CPATH='./%s/?.so;;' LUA_PATH='./lua/?.lua;./lua/?/init.lua;./bench/?.lua;;' lua5.4 %s",
    build, f)
  local ok = os.execute(cmd)
  if not ok then failed = true; io.stderr:write("benchmark failed: ", f, "\n") end
end
os.exit(failed and 1 or 0)
