-- Runs the busted suite against the build in $LOOM_BUILD (default build/)
-- and ends with the line "N passed, N failed" that CI reads.
local build = os.getenv("LOOM_BUILD") or "build"
local args = table.concat(arg, " ")
-- Paths come from .busted, which reads LOOM_BUILD. busted runs under the
-- interpreter in LOOM_LUA (the sanitizer builds' own runner) or lua5.4.
local lua = os.getenv("LOOM_LUA") or "lua5.4"
local busted = io.popen("command -v busted"):read("l") or "/usr/bin/busted"
local cmd = string.format("LOOM_BUILD=%s %s %s --ignore-lua -o utfTerminal %s 2>&1",
  build, lua, busted, args ~= "" and args or "spec")
local p = assert(io.popen(cmd))
local passed, failed, seen = 0, 0, false
for line in p:lines() do
  print(line)
  local s, f, e = line:match("(%d+) successe?s? / (%d+) failures? / (%d+) errors?")
  if s then
    passed, failed, seen = tonumber(s), tonumber(f) + tonumber(e), true
  end
end
local ok = p:close()
if not seen then failed = failed + 1 end
if not ok and failed == 0 then failed = 1 end
print(string.format("%d passed, %d failed", passed, failed))
os.exit(failed == 0 and 0 or 1)
