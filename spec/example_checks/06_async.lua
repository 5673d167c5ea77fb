return function(out, status)
  assert.are.equal(0, status, out)
  -- every task said hello before any said bye: the sleeps overlapped
  assert.matches("^Hello 0\nHello 1\nHello 2\nBye 0\nBye 1\nBye 2\n" ..
                 "gathered 0 1 2 in [%d.]+ s %(three sleeps of 1 s, run at once%)\n", out)
  assert.matches("finished: fast\nfinished: medium\nfinished: slow\n", out, 1, true)
  assert.matches("wait_for: timed out after 0.1 seconds (timeout: true)\n", out, 1, true)
end
