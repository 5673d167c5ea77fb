return function(out, status)
  assert.are.equal(0, status, out)
  assert.matches("Hello, World!\n", out, 1, true)
  assert.matches("Hello, Lua!\n", out, 1, true)
  assert.matches("All done in %d+%.%d s", out)
  -- both greetings come before the final line
  local last_hello = math.max(out:find("Hello, World!", 1, true), out:find("Hello, Lua!", 1, true))
  assert.is_true(last_hello < out:find("All done", 1, true))
  assert.matches("The answer from a thread:\t42\n", out, 1, true)
end
