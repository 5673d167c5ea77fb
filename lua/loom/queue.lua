-- Lua side of loom.queue: installs helpers into the loom module table.
return function(loom)
  local _ = loom
end
