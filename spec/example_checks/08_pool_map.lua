return function(out, status)
  assert.are.equal(0, status, out)
  -- the squares, in the order of the input (Python: [0, 1, 4, 9, 16])
  assert.matches("^%[0, 1, 4, 9, 16%]\nsubmit%(worker, 12%) %-> 144\n", out)
  -- sum of i % 7 for i = 1..4,000,000: the pool computes what the loop does
  assert.matches("4 jobs of busy_sum(4000000): serial 11999998 11999998 11999998 11999998, " ..
                 "pool 11999998 11999998 11999998 11999998\n", out, 1, true)
  -- a speedup is printed; its value depends on the machine, never asserted
  assert.matches("serial %d+%.%d+ s, pool of 2 workers %d+%.%d+ s: speedup %d+%.%d%dx on %d+ cores", out)
end
