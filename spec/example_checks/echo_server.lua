return function(out, status)
  assert.are.equal(0, status, out)
  assert.matches("^serving on 127%.0%.0%.1 port %d+\n", out)
  local sent = {
    alice = { "hello", "how are you?" }, bob = { "bonjour" }, carol = { "hola", "que tal", "adios" },
  }
  for name, lines in pairs(sent) do
    local last = 0
    for _, text in ipairs(lines) do
      -- each client's lines come back in the order they were sent
      local at = out:find(('\n%s: sent "%s", received "%s"\n'):format(name, text, text), 1, true)
      assert.is_truthy(at, name .. " " .. text .. " in:\n" .. out)
      assert.is_true(at > last, out)
      last = at
      assert.matches('\nserver: "' .. text:gsub("%p", "%%%0") .. '" from 127%.0%.0%.1 port %d+\n', out)
    end
  end
  local _, closes = out:gsub("\nserver: client done, closing the connection\n", "")
  assert.are.equal(3, closes, out)
  assert.matches("\nechoed 6 lines for 3 clients; server closed\n$", out)
end
