return function(out, status)
  assert.are.equal(0, status, out)
  -- pi(300000) = 25997: every run must agree with it
  assert.matches("primes up to 300000: 25997 and 25997 serially, 25997 and 25997 on 2 threads\n", out, 1, true)
  assert.matches("speedup %d+%.%d%dx on %d+ cores", out)
end
