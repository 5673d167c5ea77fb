return function(out, status)
  assert.are.equal(0, status, out)
  local delays = tonumber(out:match(
    "^server: 8 images on http://127%.0%.0%.1:%d+/, 20%-200 KB each, ([%d.]+) s of delays in all\n"))
  assert.is_truthy(delays, out)
  -- every image of every way arrived intact (the sizes add up to 877612)
  assert.is_nil(out:find("differs", 1, true), out)
  local times = {}
  for _, label in ipairs { "sequential", "one loom.thread per image", "pool of 4 workers, map" } do
    local pat = "\n" .. label:gsub("%p", "%%%0") .. ": +8 of 8 images verified %(877612 bytes%) in ([%d.]+) s\n"
    times[label] = tonumber(out:match(pat))
    assert.is_truthy(times[label], "no verified line for " .. label .. " in:\n" .. out)
  end
  -- the server really made each request wait: one after another, the
  -- downloads cannot take less than the delays added up (a bound, not a ratio)
  assert.is_true(times.sequential >= 0.95 * delays, out)
  -- the article's threads: each image reported once, then the summary
  for k = 1, 8 do
    local _, n = out:gsub("\nimg_" .. k .. "%.bin downloaded%.\n", "")
    assert.are.equal(1, n, out)
  end
  assert.matches("All images downloaded.\n", out, 1, true)
  assert.matches("\nthreads: [%d.]+x faster than sequential, pool: [%d.]+x\n", out)
  -- the server shut down cleanly after 3 x 8 requests
  assert.matches("\nserver stopped after 24 requests\n$", out)
end
