-- Runs every examples/NN_name.lua (and echo_server.lua) as a user would
-- and checks its output with spec/example_checks/<name>.lua, which returns
-- function(output, status) that asserts what the example must print.
local helpers = require "helpers"

local p = assert(io.popen("ls examples/[0-9][0-9]_*.lua examples/echo_server.lua 2>/dev/null"))
local files = {}
for f in p:lines() do files[#files + 1] = f end
p:close()

describe("examples", function()
  for _, file in ipairs(files) do
    local name = file:match("examples/(.-)%.lua$")
    it(name .. " runs and prints what it should", function()
      local out, status = helpers.run_file(file)
      -- loaded with this spec's environment, so that it sees busted's assert
      local chunk = loadfile("spec/example_checks/" .. name .. ".lua", "t", _ENV)
      assert.is_truthy(chunk, "no checker spec/example_checks/" .. name .. ".lua")
      chunk()(out, status)
    end)
  end
end)
