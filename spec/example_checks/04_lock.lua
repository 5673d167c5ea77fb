return function(out, status)
  assert.are.equal(0, status, out)
  assert.matches("Safe print: 1\nSafe print: 2\n", out, 1, true)
  -- the racy count varies from run to run; only its shape is checked
  local racy, total = out:match("without a lock: (%d+) of (%d+) %(%d+ updates lost%)\n")
  assert.is_truthy(racy, out)
  assert.is_true(tonumber(racy) <= tonumber(total))
  assert.matches("with a lock: 20000 of 20000\n", out, 1, true)
  assert.matches("with s:incr: 20000 of 20000\n", out, 1, true)
end
