return function(out, status)
  assert.are.equal(0, status, out)
  assert.matches("Caught an error: [^\n]*odd input 1\n", out)
  assert.matches("task 2 gave 20\n", out, 1, true)
  assert.matches("Caught error table: code=404 what=not found\n", out, 1, true)
  assert.matches("timed out:\ttrue\n", out, 1, true)
  assert.matches("cleaned up after cancel\n", out, 1, true)
  -- every error was collected: nothing reported as uncaught
  assert.is_nil(out:find("Exception in thread", 1, true))
end
