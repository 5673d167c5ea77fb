-- Argument checks for loom's functions written in Lua. Misuse raises the
-- message Lua's C API gives (luaL_argerror, luaL_typeerror), so it reads
-- the same whether a function is written in C or in Lua:
--   bad argument #2 to 'Timer' (function expected, got nil)
-- As there, arguments are counted and the function named as the call
-- site shows them: a method call does not count self (and a bad self is
-- "calling 'join' on bad self (...)"), a function called without a name
-- (through pcall, or a tail call) is named by its field in a loaded
-- module ("loom.Timer"), else '?'. The error points at the caller of the
-- checked function, as error(msg, 2) there would.
--
-- `arg` is the argument's position in the call (self is 1), as in C;
-- `level` says which function's argument it is: 1 (the default) for the
-- function calling the check, 2 for its caller, and so on.
-- Internal to loom: not part of its documented API.
local check = {}

local getinfo, getmetatable, getregistry = debug.getinfo, debug.getmetatable, debug.getregistry
local loaded = package.loaded

-- What luaL_argerror calls a function it has no name for.
local function global_name(fn)
  for modname, mod in next, loaded do
    if type(mod) == "table" then
      for k, v in next, mod do
        if rawequal(v, fn) and type(k) == "string" then
          return modname == "_G" and k or modname .. "." .. k
        end
      end
    end
  end
  return "?"
end

-- Raises "bad argument #arg to 'name' (msg)".
function check.argerror(arg, msg, level)
  level = (level or 1) + 1 -- the checked function, seen from here
  local info = getinfo(level, "nf")
  local name = info and info.name
  if info and info.namewhat == "method" then
    arg = arg - 1
    if arg == 0 then
      error(("calling '%s' on bad self (%s)"):format(name, msg), level + 1)
    end
  end
  name = name or (info and global_name(info.func)) or "?"
  error(("bad argument #%d to '%s' (%s)"):format(arg, name, msg), level + 1)
end

-- luaL_typeerror's name for the type of v: its metatable's __name if that
-- is a string (loom.Lock...), else type(v).
local function typename(v)
  local mt = getmetatable(v)
  local name = type(mt) == "table" and rawget(mt, "__name")
  if type(name) == "string" then return name end
  return type(v)
end

-- Raises "bad argument #arg to 'f' (<expected> expected, got <type of v>)".
function check.typeerror(arg, expected, v, level)
  check.argerror(arg, ("%s expected, got %s"):format(expected, typename(v)), (level or 1) + 1)
end

-- v must be of Lua type tname ("function", "table"...); returns v.
function check.arg(v, tname, arg, level)
  if type(v) ~= tname then check.typeerror(arg, tname, v, (level or 1) + 1) end
  return v
end

-- v must be an object of the C class registered as `name`
-- ("loom.ThreadPoolExecutor"); returns v.
function check.object(v, name, arg, level)
  local mt = getregistry()[name]
  if mt == nil or getmetatable(v) ~= mt then check.typeerror(arg, name, v, (level or 1) + 1) end
  return v
end

-- An optional timeout, as the C functions read one: nil, or a number (a
-- numeric string converts) >= 0. Returns it as a number, or nil.
function check.timeout(v, arg, level)
  if v == nil then return nil end
  level = (level or 1) + 1
  local n = type(v) == "number" and v or type(v) == "string" and tonumber(v)
  if not n then check.typeerror(arg, "number", v, level) end
  if n ~= n or n < 0 then check.argerror(arg, "timeout must be a non-negative number", level) end
  return n
end

return check
