return function(out, status)
  assert.are.equal(0, status, out)
  for i = 0, 3 do
    assert.matches(("Worker: %d (its own counter = %d)\n"):format(i, 100 * i), out, 1, true)
  end
  assert.matches("results: 0, 100, 200, 300\n", out, 1, true)
  assert.matches("main state's counter is still 0\n", out, 1, true)
end
