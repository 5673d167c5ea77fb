-- The "remote site" of the download examples (12_download.lua and
-- 12_download_async.lua): image k of n has a size (20-200 KB), a delay
-- before the server answers (100-200 ms) and deterministic bytes, so the
-- client knows what it should receive and checks every byte.
local site = {}

function site.image_spec(k, n)
  local size = 1000 * (20 + (k - 1) * 180 // (n - 1)) + 17 * k  -- 20-200 KB
  local delay = 0.1 + 0.1 * ((3 * k) % n) / (n - 1)             -- 100-200 ms
  return size, delay
end

function site.make_image(k, size)
  local words, x = {}, k * 2654435761 & 0xffffffff
  for i = 1, (size + 3) // 4 do
    x = (x * 1103515245 + 12345) & 0xffffffff
    words[i] = string.pack("<I4", x)
  end
  return table.concat(words):sub(1, size)
end

-- Checks every image byte by byte against what the server should have
-- sent; prints one line, and returns the seconds it was given.
function site.verify(label, bodies, n, seconds)
  local good, bytes = 0, 0
  for k = 1, n do
    local expected = site.make_image(k, (site.image_spec(k, n)))
    local got = bodies[k] or ""
    if got == expected then
      good, bytes = good + 1, bytes + #got
    else
      local at = 1
      while at <= #got and got:byte(at) == expected:byte(at) do at = at + 1 end
      print(("%s: img_%d.bin differs from byte %d (got %d bytes of %d)")
        :format(label, k, at, #got, #expected))
    end
  end
  print(("%-28s %d of %d images verified (%d bytes) in %.2f s")
    :format(label .. ":", good, n, bytes, seconds))
  return seconds
end

return site
