-- Lua side of loom.sync: installs helpers into the loom module table.
return function(loom)
  local _ = loom
end
