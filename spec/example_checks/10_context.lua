return function(out, status)
  assert.are.equal(0, status, out)
  assert.matches("normal exit:\tupdated\t| locked after:\tfalse\n", out, 1, true)
  assert.matches("error exit:\tfalse\tsomething went wrong while holding the lock\t| locked after:\tfalse\n",
                 out, 1, true)
  assert.matches("with:\t42\t| locked after:\tfalse\n", out, 1, true)
  assert.matches("with + error:\tfalse\t| locked after:\tfalse\n", out, 1, true)
  local busiest = out:match("workers failed: 3 of 9; most connections at once: (%d); free slots at the end: 2 of 2\n")
  assert.is_truthy(busiest, out)
  assert.is_true(tonumber(busiest) >= 1 and tonumber(busiest) <= 2)
  -- closed in reverse order, on the error path
  assert.matches("open a\nopen b\nclose b %(on error%)\nclose a %(on error%)\n", out)
  assert.is_nil(out:find("Exception in thread", 1, true))
end
