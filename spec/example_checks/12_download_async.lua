return function(out, status)
  assert.are.equal(0, status, out)
  local delays = tonumber(out:match(
    "^server: 8 images on http://127%.0%.0%.1:%d+/, 20%-200 KB each, ([%d.]+) s of delays in all\n"))
  assert.is_truthy(delays, out)
  assert.is_nil(out:find("differs", 1, true), out)
  local times = {}
  for _, label in ipairs { "sequential", "tasks on one thread, gather" } do
    local pat = "\n" .. label:gsub("%p", "%%%0") .. ": +8 of 8 images verified %(877612 bytes%) in ([%d.]+) s\n"
    times[label] = tonumber(out:match(pat))
    assert.is_truthy(times[label], "no verified line for " .. label .. " in:\n" .. out)
  end
  -- one after another, the downloads cannot beat the delays added up
  assert.is_true(times.sequential >= 0.95 * delays, out)
  for k = 1, 8 do
    local _, n = out:gsub("\nimg_" .. k .. "%.bin downloaded%.\n", "")
    assert.are.equal(1, n, out)
  end
  assert.matches("All images downloaded.\n", out, 1, true)
  assert.matches("\ntasks: [%d.]+x faster than sequential, on one OS thread\n", out)
  assert.matches("\nserver stopped after 16 requests\n$", out)
end
