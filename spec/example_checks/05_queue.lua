return function(out, status)
  assert.are.equal(0, status, out)
  assert.are.equal(
    "Product\n" ..
    "handled: 3 x apple\n" ..
    "handled: 1 x pear\n" ..
    "handled: 4 x plum\n" ..
    "total: 15\n", out)
end
