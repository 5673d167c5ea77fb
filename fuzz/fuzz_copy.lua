-- fuzz/fuzz_copy.lua: the generator and checker behind fuzz/fuzz_copy.c
-- (the build embeds this file in the fuzz target; see fuzz/README.md).
--
-- The chunk returns run(bytes). The bytes are a little program: the first
-- three set the mode (garbage collector parameters, whether tables carry
-- ids for the checker, the routes of the last check, whether finalizers
-- may change values), then each byte picks an operation that makes a value
-- (numbers at the edges, strings up to megabytes, tables, closures, loom
-- objects, named library values, values that cannot be copied), links
-- values (fields, metatables, upvalues, upvalue joins, deep chains, big
-- lists of records), or copies some of them by one of the routes (loom.copy,
-- a queue, a queue relayed by a thread, a thread's arguments and results,
-- its error, a shared table) and checks the copy: same shape, same
-- sharing and cycles (a bijection between original and copied tables,
-- functions and upvalues), same values bit for bit, functions with the
-- same bytecode that return the same things when called.
--
-- Some operations make finalizers that change the values while they are
-- being copied (run by the collector mid-copy, which loom's name map
-- rebuilds and the decoder's allocations make likely). Once one exists
-- nothing is compared any more: the copy may fail with an error, but must
-- not crash or touch freed memory (ASan is the judge).
--
-- A failed check raises "FUZZ FAIL: ..."; fuzz_copy.c aborts on any error
-- that leaves run, so that libFuzzer saves the input.
local loom = require "loom.core"

local rawget, rawset, rawlen, rawequal, next, type, select, pcall, error,
      tostring, setmetatable =
      rawget, rawset, rawlen, rawequal, next, type, select, pcall, error,
      tostring, setmetatable
local mtype, floor = math.type, math.floor
local dgetmt, dsetmt = debug.getmetatable, debug.setmetatable
local getup, setup, upid, upjoin = debug.getupvalue, debug.setupvalue,
                                   debug.upvalueid, debug.upvaluejoin
local getinfo = debug.getinfo
local spack, sunpack, sdump, srep, schar = string.pack, string.unpack,
                                           string.dump, string.rep, string.char
local tpack, tunpack, concat = table.pack, table.unpack, table.concat
local REG = debug.getregistry()

local IDK = "\0id"        -- the id field of generated tables
local NIL = {}            -- nil in the pool
local MAX_STR = 2 << 20   -- bytes of strings one input may make
local MAX_WORK = 60000    -- table fields one input may set

local TRACE = os.getenv("FUZZ_TRACE")
-- FUZZ_ALL=1 turns off the exclusions of findings not fixed yet
-- (fuzz/crashes/README.md), so that their reproducers fail again.
local ALL = os.getenv("FUZZ_ALL") ~= nil
local function trace(...)
  if TRACE then
    local t = tpack(...)
    for i = 1, t.n do t[i] = tostring(t[i]) end
    io.stderr:write(concat(t, " "), "\n")
  end
end

local function fail(fmt, ...)
  error("FUZZ FAIL: " .. string.format(fmt, ...), 0)
end

local function iscfunc(f)
  return getinfo(f, "S").what == "C"
end

-- A metatable the copier sends by name (luaL_newmetatable's registry entry).
local function registered(mt)
  local name = rawget(mt, "__name")
  return type(name) == "string" and rawequal(REG[name], mt)
end

local function isloomobj(u)
  local mt = dgetmt(u)
  local name = mt and rawget(mt, "__name")
  return type(name) == "string" and name:sub(1, 5) == "loom."
end

-- What the copier sends by name right now: _G and the tables of
-- package.loaded, and the C functions and userdata under a string key of
-- a module (loom's name map).
local function named_now()
  local tables, leaves = {[_G] = "_G"}, {}
  local function index(m)
    for k, v in next, m do
      if type(k) == "string" and (type(v) == "userdata" or
                                  (type(v) == "function" and iscfunc(v))) then
        leaves[v] = true
      end
    end
  end
  index(_G)
  for name, m in next, package.loaded do
    if type(m) == "table" then
      tables[m] = name
      if type(name) == "string" then index(m) end
    end
  end
  return {tables = tables, leaves = leaves}
end

-- Walks values as the copier will: what in them cannot be copied (bad),
-- how many tables and functions they hold (a chain of 1000 is too deep),
-- and whether they hold a value that only this state can name (dep).
local function survey(vals, n, names, local_names)
  local seen, todo, count, bad, dep = {}, {}, 0, nil, false
  for i = 1, n do todo[i] = vals[i] end
  local top = n
  local function push(v)
    top = top + 1
    todo[top] = v
  end
  while top > 0 do
    local v = todo[top]
    todo[top] = nil
    top = top - 1
    local tv = type(v)
    if tv == "table" then
      if names.tables[v] then
        if local_names[v] then dep = true end
      elseif not seen[v] then
        seen[v] = true
        count = count + 1
        local mt = dgetmt(v)
        if mt ~= nil and not registered(mt) then push(mt) end
        for k, x in next, v do
          push(k)
          push(x)
        end
      end
    elseif tv == "function" then
      if iscfunc(v) then
        if not names.leaves[v] then bad = bad or "a C function"
        elseif local_names[v] then dep = true end
      elseif not seen[v] then
        seen[v] = true
        count = count + 1
        for i = 1, getinfo(v, "u").nups do
          local _, x = getup(v, i)
          push(x)
        end
      end
    elseif tv == "userdata" then
      if not isloomobj(v) and not names.leaves[v] then
        bad = bad or "userdata"
      end
    elseif tv == "thread" then
      bad = bad or "a coroutine"
    end
  end
  return {bad = bad, count = count, dep = dep}
end

-- ------------------------------------------------------------------
-- the checker

local INCONCLUSIVE = {}

local function isweak(t)
  local mt = dgetmt(t)
  local mode = mt and rawget(mt, "__mode")
  return type(mode) == "string" and
         (mode:find("k", 1, true) ~= nil or mode:find("v", 1, true) ~= nil)
end

local function collectable(v)
  local tv = type(v)
  return tv == "table" or tv == "function" or tv == "userdata" or
         tv == "thread"
end

local function show(v)
  local tv = type(v)
  if tv == "string" then
    if #v > 40 then return string.format("string of %d bytes", #v) end
    return string.format("%q", v)
  elseif tv == "number" then
    return string.format("%s %s (%s)", mtype(v), tostring(v),
                         (spack(mtype(v) == "integer" and "<j" or "<d", v):gsub(".", function(c)
                           return string.format("%02x", c:byte())
                         end)))
  end
  return tostring(v)
end

local function keystr(k)
  if type(k) == "string" and #k <= 40 then return "[" .. string.format("%q", k) .. "]" end
  if type(k) == "number" then return "[" .. tostring(k) .. "]" end
  return "[<" .. type(k) .. ">]"
end

-- Error messages of calls, without addresses and the position prefix.
local function norm_err(e)
  if type(e) ~= "string" then return e end
  return (e:gsub("0x%x+", "ADDR"):gsub("^[^\n]-:%-?%d+: ", ""))
end

-- A checker for one message: originals and copies are bound one to one
-- (tables, Lua functions, upvalue ids), so sharing and cycles must match.
local function new_checker(names)
  local fwd, bwd, log = {}, {}, {}
  local calls = {}
  local budget = 400000
  local guessed = false
  local cmp

  local function bind(o, c)
    local m = fwd[o]
    if m ~= nil then return rawequal(m, c) and 1 or false end
    if bwd[c] ~= nil then return false end
    fwd[o], bwd[c] = c, o
    log[#log + 1] = o
    return 2
  end

  local function rollback(n, ncalls)
    for i = #log, n + 1, -1 do
      local o = log[i]
      bwd[fwd[o]] = nil
      fwd[o] = nil
      log[i] = nil
    end
    for i = #calls, ncalls + 1, -1 do calls[i] = nil end
  end

  local function cmp_function(o, c)
    if iscfunc(o) or iscfunc(c) then
      if not rawequal(o, c) then
        return ": C function " .. tostring(o) .. " became " .. tostring(c)
      end
      return nil
    end
    local b = bind(o, c)
    if not b then return ": function sharing differs" end
    if b == 1 then return nil end
    if sdump(o) ~= sdump(c) then return ": bytecode differs" end
    local nu = getinfo(o, "u").nups
    if getinfo(c, "u").nups ~= nu then return ": upvalue count differs" end
    for i = 1, nu do
      local n1, v1 = getup(o, i)
      local n2, v2 = getup(c, i)
      if n1 ~= n2 then return ": upvalue names differ" end
      if not bind(upid(o, i), upid(c, i)) then
        return ": upvalue " .. i .. " (" .. tostring(n1) .. ") sharing differs"
      end
      local e = cmp(v1, v2)
      if e then return ".<upvalue " .. tostring(n1) .. ">" .. e end
    end
    calls[#calls + 1] = {o, c}
    return nil
  end

  local function copy_keys_by_id(c)
    local ids = {}
    for k in next, c do
      if type(k) == "table" then
        local id = rawget(k, IDK)
        if id ~= nil then ids[id] = k end
      end
    end
    return ids
  end

  local function cmp_table(o, c)
    if names.tables[o] then
      if not rawequal(o, c) then
        return ": a named table (" .. tostring(names.tables[o]) .. ") is not itself"
      end
      return nil
    end
    local b = bind(o, c)
    if not b then return ": table sharing differs" end
    if b == 1 then return nil end
    local mo, mc = dgetmt(o), dgetmt(c)
    if mo == nil then
      if mc ~= nil then return ": gained a metatable" end
    elseif registered(mo) then
      if not rawequal(mo, mc) then return ": registered metatable lost" end
    else
      if mc == nil then return ": lost its metatable" end
      local e = cmp(mo, mc)
      if e then return ".<metatable>" .. e end
    end
    local weak = isweak(o)
    local no, nc, missing = 0, 0, 0
    for _ in next, c do nc = nc + 1 end
    local ids, pending
    for k, v in next, o do
      no = no + 1
      local tk, ck = type(k), nil
      if tk == "table" and not names.tables[k] or
         tk == "function" and not iscfunc(k) then
        ck = fwd[k]
        if ck == nil and tk == "table" and rawget(k, IDK) ~= nil then
          ids = ids or copy_keys_by_id(c)
          ck = ids[rawget(k, IDK)]
          if ck == nil and not weak then
            return ": key table id " .. tostring(rawget(k, IDK)) .. " missing"
          end
        end
        if ck == nil then
          pending = pending or {}
          pending[#pending + 1] = k
          goto continue
        end
      else
        ck = k
      end
      do
        local cv = rawget(c, ck)
        if cv == nil then
          if weak and (collectable(k) or collectable(v)) then
            missing = missing + 1
            goto continue
          end
          return keystr(k) .. ": missing"
        end
        if ck ~= k then
          local e = cmp(k, ck)
          if e then return ".<key>" .. e end
        end
        local e = cmp(v, cv)
        if e then return keystr(k) .. e end
      end
      ::continue::
    end
    if pending then -- table or function keys met here first, without ids
      for _, k in next, pending do
        local found, viable = nil, 0
        for ck, cv in next, c do
          if type(ck) == type(k) and bwd[ck] == nil then
            local mark, ncalls = #log, #calls
            local e = cmp(k, ck) or cmp(rawget(o, k), cv)
            if e == nil then
              viable = viable + 1
              if found == nil then
                found = ck
                break
              end
            end
            rollback(mark, ncalls)
          end
        end
        if found == nil then
          if weak then
            missing = missing + 1
          else
            return ": no copy of a " .. type(k) .. " key"
          end
        else
          guessed = true
        end
      end
    end
    -- a weak table may lose entries, on either side, whenever the
    -- collector runs (what only it refers to is not kept by the pool)
    if not weak and no ~= nc then
      return string.format(": %d entries became %d", no, nc)
    end
    return nil
  end

  cmp = function(o, c)
    budget = budget - 1
    if budget < 0 then error(INCONCLUSIVE) end
    local to = type(o)
    if to ~= type(c) then
      return ": " .. show(o) .. " became " .. show(c)
    end
    if to == "number" then
      local mt = mtype(o)
      if mt ~= mtype(c) or mt == "integer" and o ~= c or
         mt == "float" and spack("<d", o) ~= spack("<d", c) then
        return ": " .. show(o) .. " became " .. show(c)
      end
    elseif to == "table" then
      return cmp_table(o, c)
    elseif to == "function" then
      return cmp_function(o, c)
    elseif to == "string" or to == "boolean" or to == "nil" then
      if o ~= c then return ": " .. show(o) .. " became " .. show(c) end
    elseif not rawequal(o, c) then
      return ": " .. to .. " is not the same " .. to
    end
    return nil
  end

  -- Calls each pair of functions met (op 1: return the upvalues, op 3:
  -- compute) and compares what they return or raise.
  local function run_calls()
    local i = 1
    while i <= #calls do
      local o, c = tunpack(calls[i])
      local info = getinfo(o, "S")
      local path = " function of " .. info.short_src .. ":" .. info.linedefined
      for _, op in ipairs {1, 3} do
        local r1 = tpack(pcall(o, op, 3))
        local r2 = tpack(pcall(c, op, 3))
        local where = path .. "(" .. op .. ")"
        if r1.n ~= r2.n or r1[1] ~= r2[1] then
          return where .. ": calls differ: " .. tostring(r1[2]) .. " / " .. tostring(r2[2])
        end
        if r1[1] then
          for j = 2, r1.n do
            local e = cmp(r1[j], r2[j])
            if e then return where .. "[" .. (j - 1) .. "]" .. e end
          end
        else
          local e1, e2 = norm_err(r1[2]), norm_err(r2[2])
          if type(e1) == "string" then
            if e1 ~= e2 then return where .. ": errors differ: " .. e1 .. " / " .. tostring(e2) end
          else
            local e = cmp(e1, e2)
            if e then return where .. "<error>" .. e end
          end
        end
      end
      i = i + 1
    end
    return nil
  end

  local self = {}
  -- Compares original o with its copy c; raises FUZZ FAIL on a difference.
  function self.check(o, c, path)
    local ok, e = pcall(cmp, o, c)
    if ok and e ~= nil then e = path .. e end
    if ok and e == nil then
      ok, e = pcall(run_calls)
      if ok and e ~= nil then e = path .. e end
    end
    if not ok then
      if e == INCONCLUSIVE then return end
      error(e, 0)
    end
    if e ~= nil then
      if guessed then return end -- a key matched by guess may be the wrong one
      fail("wrong copy: %s", e)
    end
  end
  return self
end

-- ------------------------------------------------------------------
-- closure templates: op 1 returns the upvalues, op 2 sets one, op 3
-- computes; any other first argument (a finalizer's object, an __index
-- call) does nothing, so that calling them has no side effects.

-- They live in a chunk of their own: the fuzzer changes and joins their
-- upvalues, _ENV included, which must not be this chunk's _ENV.
local T = assert(load([==[
  local T = {}
  T[1] = function() return function(op) if op == 1 then return 42 end end end
  T[2] = function(a)
    return function(op, v) if op == 1 then return a elseif op == 2 then a = v end end
  end
  T[3] = function(a, b, c)
    return function(op, i, v)
      if op == 1 then return a, b, c
      elseif op == 2 then if i == 1 then a = v elseif i == 2 then b = v else c = v end
      elseif op == 3 then return type(a), type(b), math.type(c) end
    end
  end
  T[4] = function()
    return function(op) if op == 1 then return type, tostring, string end end
  end
  T[5] = function(a)
    local function f(op, n)
      if op == 1 then return a, f
      elseif op == 3 and math.type(n) == "integer" then
        if n <= 0 then return a end
        return f(3, n - 1)
      end
    end
    return f
  end
  T[6] = function(a) -- two closures sharing one upvalue
    return function(op) if op == 1 then return a end end,
           function(op, v) if op == 2 then a = v elseif op == 1 then return a end end
  end
  T[7] = assert(load("local _ENV, a = ... " ..
    "return function(op) if op == 1 then return x, a end end", "=template7"))
  T[8] = function(a, b)
    return function(op, ...)
      if op == 1 then
        local function inner() return a end
        return inner(), b, select("#", ...)
      elseif op == 3 then
        local n = 0
        for i = 1, select("#", ...) do n = n + i end
        return n, b
      end
    end
  end
  return T
]==], "=templates"))()
local STRIPPED = sdump(T[3](1, 2, 3), true)

local BIGFUNCS = {}
local function big_function(n, kind)
  local key = n * 2 + kind
  local f = BIGFUNCS[key]
  if f == nil then
    local parts = {}
    for i = 1, n do
      parts[i] = kind == 0 and string.format("%q", "c" .. i) or tostring(i * 1.5)
    end
    f = assert(load("local up = ... return function(op) if op == 1 then return {" ..
                    concat(parts, ",") .. "}, up end end", "=bigfunc" .. n))
    BIGFUNCS[key] = f
  end
  return f
end

-- ------------------------------------------------------------------
-- constants

local INTS = {0, 1, -1, 127, 128, -128, -129, 255, 256, 65535, 65536,
  2^31 - 1, 2^31, -2^31, -2^31 - 1, 2^32, 2^53, 2^53 + 1, -(2^53 + 1), 2^62,
  math.maxinteger, math.mininteger, math.maxinteger - 1, math.mininteger + 1}
for i = 1, #INTS do INTS[i] = math.tointeger(INTS[i]) or floor(INTS[i]) end
INTS[#INTS + 1] = (1 << 53) + 1
local FLOATS = {0.0, -0.0, 1 / 0, -1 / 0, 0 / 0, -(0 / 0), 2.0^53, 2.0^53 + 1,
  9007199254740993.0, 1.0, -1.0, 0.5, 1e308, 5e-324, 2.2250738585072014e-308,
  math.pi, 2.0^63, -2.0^63, 1e-300, 3.0, 255.0, -128.0,
  (sunpack("<d", "\1\0\0\0\0\0\xf8\x7f")), (sunpack("<d", "\0\0\0\0\0\0\xf0\xff")),
  (sunpack("<d", "\xff\xff\xff\xff\xff\xff\xff\x7f"))}
local SIZES = {41, 42, 254, 255, 256, 257, 1000, 4095, 4096, 4097, 8191,
  65535, 65536, 100000, 1 << 20, (1 << 20) + 7}
local CFUNCS = {string.format, string.rep, math.floor, math.abs, math.max,
  table.concat, select, type, rawlen, rawequal, math.type, utf8.char,
  string.byte, string.len, string.upper, loom.copy}
local NAMED = {string, math, table, _G, io, os, coroutine, utf8, loom,
  package, debug}
local STRING_MT = getmetatable("")

-- ------------------------------------------------------------------

return function(bytes)
  local pos, nbytes = 1, #bytes
  local function u8()
    local b = bytes:byte(pos) or 0
    pos = pos + 1
    return b
  end
  local function u16() return u8() | u8() << 8 end
  local function raw(n)
    local s = bytes:sub(pos, pos + n - 1)
    pos = pos + n
    return s .. srep("\0", n - #s)
  end

  local flags, flags2, flags3 = u8(), u8(), u8()
  local gc = flags & 3
  if gc == 1 then
    collectgarbage("incremental", flags2 % 60, 100 + (flags2 >> 2) * 16)
  elseif gc == 2 then
    collectgarbage("generational", 1 + flags2 % 40, 10 + flags2)
  elseif gc == 3 then
    collectgarbage("incremental", 0, 1000)
  end
  local with_ids = flags & 4 == 0
  -- a collector that runs all the time walks the whole heap again and
  -- again: keep that heap small
  local max_work = gc == 0 and MAX_WORK or MAX_WORK // 8
  local max_str = gc == 0 and MAX_STR or MAX_STR // 8

  local P = {}                 -- the pool
  local frozen = {}            -- tables the program must not change
  for _, t in ipairs(NAMED) do frozen[t] = true end
  frozen[STRING_MT] = true
  local local_names = {}       -- values named only in this state
  local installs = 0
  local dirty = false          -- finalizers that mutate exist
  local nextid = 0
  local strbytes, work = 0, 0
  local checks = 0

  -- n, or less so that n things of cost `per` stay within the budget
  local function room(n, per)
    return math.max(0, math.min(n, (max_work - work) // per))
  end
  local function add(v)
    if v == nil then v = NIL end
    P[#P + 1] = v
    return v
  end
  local function pick()
    local n = #P
    if n == 0 then return nil end
    local v = P[n - u8() % (n < 256 and n or 256)]
    if v == NIL then return nil end
    return v
  end
  local function pick_type(t)
    for _ = 1, 4 do
      local v = pick()
      if type(v) == t then return v end
    end
    for i = #P, 1, -1 do
      if type(P[i]) == t and P[i] ~= NIL then return P[i] end
    end
  end
  local function pick_table()
    for _ = 1, 4 do
      local v = pick_type("table")
      if v ~= nil and not frozen[v] then return v end
    end
  end
  local function pick_lua_function()
    for _ = 1, 4 do
      local v = pick_type("function")
      if v ~= nil and not iscfunc(v) and getinfo(v, "u").nups > 0 then return v end
    end
  end
  local function newtable()
    local t = {}
    if with_ids then
      nextid = nextid + 1
      t[IDK] = nextid
    end
    return t
  end
  local function key_ok(k)
    return k ~= nil and k == k and k ~= IDK
  end
  -- Excluded: a C function or userdata in a module under a name with a
  -- zero byte is copied by a truncated name (fuzz/crashes/README.md,
  -- finding 3).
  local function zero_name(k, v)
    return not ALL and type(k) == "string" and k:find("\0", 1, true) ~= nil and
           (type(v) == "userdata" or type(v) == "function" and iscfunc(v))
  end
  local function set(t, k, v)
    if t == nil or frozen[t] or not key_ok(k) then return end
    if local_names[t] and zero_name(k, v) then return end
    work = work + 1
    rawset(t, k, v)
  end

  local function short_string()
    local len = u8() % 41
    return raw(len)
  end
  local function long_string()
    local size = SIZES[1 + u8() % #SIZES]
    if strbytes + size > max_str then size = 41 + u8() end
    strbytes = strbytes + size
    local unit = raw(1 + u8() % 8)
    return srep(unit, size // #unit + 1):sub(1, size)
  end
  local function number()
    local k = u8() % 4
    if k == 0 then return INTS[1 + u8() % #INTS]
    elseif k == 1 then return FLOATS[1 + u8() % #FLOATS]
    elseif k == 2 then return (sunpack("<i8", raw(8)))
    else return (sunpack("<d", raw(8))) end
  end

  -- a finalizer that changes the values being copied (its parameters
  -- come from the bytes now; it may re-arm itself a few times)
  -- (finding 4, fixed: a key string that died during a streamed encode
  -- was read after it was freed; the keys finalizers remove now die)
  local function grave(key) return key end
  local mutators = 0
  local function mutator(target, action_kind)
    if flags3 & 3 ~= 0 or mutators > 64 then return end
    mutators = mutators + 1
    dirty = true
    local what = action_kind or u8() % 10
    local t, k, v = pick_table(), pick(), pick()
    t = target or t
    local f = pick_lua_function()
    local n = u8()
    local rearm = u8() % 4
    local action
    if what == 0 then
      action = function() if t and key_ok(k) then rawset(t, k, v) end end
    elseif what == 1 then -- remove the n-th key
      action = function()
        if t == nil then return end
        local i, key = 0, next(t)
        while key ~= nil and i < n % 8 do i = i + 1; key = next(t, key) end
        if key ~= nil then
          grave(key)
          rawset(t, key, nil)
        end
      end
    elseif what == 2 then -- replace every table value by a new table
      action = function()
        if t == nil then return end
        for key, x in next, t do
          if type(x) == "table" then rawset(t, key, {n}) end
        end
      end
    elseif what == 3 then -- forget the pool: its values may die now
      action = function()
        for i = #P, math.max(1, #P - n), -1 do P[i] = NIL end
      end
    elseif what == 4 then
      action = function()
        if f then pcall(setup, f, 1 + n % getinfo(f, "u").nups, v) end
      end
    elseif what == 5 then
      action = function() if t then dsetmt(t, type(v) == "table" and v or nil) end end
    elseif what == 6 then
      action = function() pcall(loom.copy, t, v) end
    elseif what == 7 then -- grow the table (rehash) under a traversal
      action = function()
        if t == nil then return end
        for i = 1, 40 + n do rawset(t, "g" .. i .. "." .. n, i) end
      end
    elseif what == 8 then -- change the modules (the name map is stale)
      action = function()
        local name = "fzmod" .. n % 4
        if package.loaded[name] then package.loaded[name] = nil
        else package.loaded[name] = {n} end
      end
    else -- clear the table
      action = function()
        if t == nil then return end
        for key in next, t do
          grave(key)
          rawset(t, key, nil)
        end
      end
    end
    local function arm(left)
      setmetatable({}, {__gc = function()
        if TRACE then trace("finalizer", what) end
        action()
        if left > 0 then arm(left - 1) end
      end})
    end
    arm(rearm)
  end

  -- Copies vals[1..n] by one route and checks the copies. `what` names
  -- the route in failures.
  local function check(vals, n, route)
    checks = checks + 1
    if TRACE then
      trace("check", route, n, dirty and "dirty" or "", show(vals[1]), show(vals[2]), show(vals[3]))
    end
    local names = named_now()
    local what

    -- Whether an outcome is right for values surveyed as info; returns
    -- whether the copy succeeded. thread_route: the values went through
    -- another state, which cannot name what only this one has.
    local function judge(info, ok, err, thread_route)
      if dirty or thread_route and info.dep then return ok end
      if ok then
        if info.bad then fail("%s copied a value holding %s", what, info.bad) end
        return true
      end
      local msg = tostring(err)
      if info.bad and msg:find("cannot copy", 1, true) then return false end
      if info.count >= 999 and msg:find("nested more than", 1, true) then return false end
      fail("%s raised: %s", what, msg)
    end
    local function compare(info, originals, copies, first, last, thread_route)
      if dirty or thread_route and info.dep then return end
      local c = new_checker(names)
      for i = first, last do
        c.check(originals[i], copies[i], what .. "[" .. i .. "]")
      end
    end
    -- Each value of vals on its own (routes that send one value a message).
    local function each(fn)
      for i = 1, n do
        if vals[i] ~= nil then fn(vals[i], survey({vals[i]}, 1, names, local_names)) end
      end
    end

    if route == 0 then -- loom.copy, all values in one message
      what = "loom.copy"
      local info = survey(vals, n, names, local_names)
      local r = tpack(pcall(loom.copy, tunpack(vals, 1, n)))
      if judge(info, r[1], r[2]) then
        if r.n - 1 ~= n then fail("loom.copy returned %d values for %d", r.n - 1, n) end
        compare(info, vals, {tunpack(r, 2, r.n)}, 1, n)
      end
    elseif route == 1 then -- a queue, put then get
      local kinds = {loom.Queue, loom.LifoQueue, loom.SimpleQueue}
      local q = kinds[1 + u8() % 3]()
      what = "queue put/get"
      each(function(v, info)
        local ok, err = pcall(q.put, q, v)
        if judge(info, ok, err) then
          local r = tpack(pcall(q.get_nowait, q))
          if not r[1] or r[2] == nil then
            fail("queue get after put: %s %s", tostring(r[2]), tostring(r[3]))
          end
          compare(info, {v}, {r[2]}, 1, 1)
        end
      end)
    elseif route == 2 then -- relayed by a thread: queue to queue
      what = "queue relay"
      each(function(v, info)
        local q1, q2 = loom.Queue(), loom.Queue()
        local t = loom.thread(function(a, b)
          local ok, e = pcall(function()
            local x = a:get()
            if x ~= nil then
              b:put(x)
              return "sent"
            end
            b:close() -- closed, or the value arrived as nil
            return x == nil and "nil"
          end)
          if not ok then
            b:close()
            error(e, 0)
          end
          return e
        end, q1, q2)
        local ok, err = pcall(q1.put, q1, v)
        if not judge(info, ok, err) then
          q1:close()
          pcall(t.result, t) -- collected: its error is not printed
          return
        end
        local got = q2:get()
        local rok, rerr = pcall(t.result, t)
        if not rok then
          judge(info, false, rerr, true)
          return
        end
        if got == nil then
          if dirty or info.dep then return end
          fail("queue relay: the value arrived as %s", tostring(rerr))
        end
        compare(info, {v}, {got}, 1, 1, true)
      end)
    elseif route == 3 then -- a thread's arguments, then its results
      what = "thread args/results"
      -- (finding 2, fixed: a loom object among several arguments made the
      -- decoder push past the stack it reserved)
      local info = survey(vals, n, names, local_names)
      local ok, t = pcall(loom.thread, function(...) return ... end,
                          tunpack(vals, 1, n))
      if judge(info, ok, t) then
        local r = tpack(pcall(t.result, t))
        if judge(info, r[1], r[2], true) then
          compare(info, vals, {tunpack(r, 2, r.n)}, 1, n, true)
        end
      end
    elseif route == 4 then -- a thread's error value
      what = "thread error"
      local v = vals[1]
      local info = survey({v}, 1, names, local_names)
      local ok, t = pcall(loom.thread, function(x) error(x, 0) end, v)
      if judge(info, ok, t) then
        local rok, e = pcall(t.result, t)
        if rok then fail("thread error: result() did not raise") end
        if type(v) == "table" then
          if type(e) == "table" then
            compare(info, {v}, {e}, 1, 1, true)
          else -- (finding 5, fixed: a raising __tostring made it a text)
            judge(info, false, e, true)
          end
        end
      end
    else -- a shared table's value
      local s = loom.shared()
      what = "shared value"
      each(function(v, info)
        local ok, err = pcall(function() s.v = v end)
        if judge(info, ok, err) then compare(info, {v}, {s.v}, 1, 1) end
      end)
    end
  end

  local function check_op()
    local n = 1 + u8() % 3
    local vals = {}
    for i = 1, n do vals[i] = pick() end
    check(vals, n, u8() % 6)
  end

  -- ----------------------------------------------------------------
  local ops = {
    function() add(INTS[1 + u8() % #INTS]) end,
    function()
      local w = u8() % 4
      add((sunpack(({"<i1", "<i2", "<i4", "<i8"})[w + 1], raw(1 << w))))
    end,
    function() add(FLOATS[1 + u8() % #FLOATS]) end,
    function() add((sunpack("<d", raw(8)))) end,
    function() add(short_string()) end,
    function() add(long_string()) end,
    function() local k = u8() % 3; add(k == 0 and NIL or k == 1) end,
    function() add(newtable()) end,
    function() -- t[k] = v
      set(pick_table(), pick(), pick())
    end,
    function() -- append
      local t = pick_table()
      if t then set(t, rawlen(t) + 1, pick()) end
    end,
    function() -- metatable
      local t, m = pick_table(), pick_type("table")
      if t then dsetmt(t, m) end
    end,
    function() -- a closure
      local k = u8() % 10
      if k == 0 then add(T[1]())
      elseif k == 1 then add(T[2](pick()))
      elseif k == 2 then add(T[3](pick(), pick(), pick()))
      elseif k == 3 then add(T[4]())
      elseif k == 4 then add(T[5](pick()))
      elseif k == 5 then local f, g = T[6](pick()); add(f); add(g)
      elseif k == 6 then add(T[7](pick_type("table") or newtable(), pick()))
      elseif k == 7 then add(T[8](pick(), pick()))
      elseif k == 8 then -- stripped bytecode, upvalues set by debug
        local f = load(STRIPPED, "=stripped", "b")
        for i = 1, 3 do if u8() % 2 == 0 then setup(f, i, pick()) end end
        add(f)
      else
        add(big_function(1 + u16() % 500, u8() % 2)(pick()))
      end
    end,
    function() -- share an upvalue between two closures
      local f, g = pick_lua_function(), pick_lua_function()
      if f and g then
        upjoin(f, 1 + u8() % getinfo(f, "u").nups, g, 1 + u8() % getinfo(g, "u").nups)
      end
    end,
    function() -- set an upvalue
      local f = pick_lua_function()
      if f then setup(f, 1 + u8() % getinfo(f, "u").nups, pick()) end
    end,
    function() -- values sent by name
      local k = u8() % 4
      if k == 0 then add(CFUNCS[1 + u8() % #CFUNCS])
      elseif k == 1 then add(NAMED[1 + u8() % #NAMED])
      elseif k == 2 then add(({io.stdout, io.stderr, io.stdin})[1 + u8() % 3])
      else -- a registered metatable on a table
        local t = pick_table()
        local mts = {getmetatable(io.stdout), getmetatable(loom.error("timeout")), STRING_MT}
        if t then dsetmt(t, mts[1 + u8() % 3]) end
      end
    end,
    function() -- loom objects
      local k = u8() % 7
      if k == 0 then add(loom.Queue())
      elseif k == 1 then add(loom.Lock())
      elseif k == 2 then add(loom.Event())
      elseif k == 3 then add(loom.shared())
      elseif k == 4 then add(loom.current_thread())
      elseif k == 5 then add(loom.error("timeout", short_string()))
      else add(loom.Semaphore(1)) end
    end,
    function() -- things that cannot be copied
      local k = u8() % 3
      if k == 0 then add(coroutine.create(function() end))
      elseif k == 1 then add(coroutine.wrap(function() end))
      else add(string.gmatch("", "")) end
    end,
    function() -- a deep chain
      -- mostly short; sometimes right around the copier's limit of 1000
      local len = u8() % 4 == 0 and 990 + u8() % 20 or u8()
      local kind = u8() % 5
      local head = newtable()
      local cur = head
      local fn = nil
      for i = 1, len do
        local nxt = newtable()
        if kind == 0 then cur[1] = nxt
        elseif kind == 1 then cur.n = nxt
        elseif kind == 2 then dsetmt(cur, nxt)
        elseif kind == 3 then nxt[cur] = i
        else fn = T[2](fn or cur) end
        cur = nxt
      end
      work = work + len
      add(head)
      add(cur)
      if fn then add(fn) end
    end,
    function() -- a list of records (big: streams through queues)
      local m = room(u8() % 8 == 0 and u16() % 1500 or u8(), 6)
      local kinds = 1 + u8() % 600
      local every = 1 + u8()
      local list = newtable()
      local shared = pick()
      for i = 1, m do
        local r = newtable()
        r.id = i
        r.name = "nm" .. i % kinds
        r.sub = {i, i * 2, tag = "t" .. i % 7}
        if i % every == 0 then r.ref = shared end
        if i % (every + 3) == 0 then r.back = list[i // 2 + 1] end
        list[i] = r
      end
      work = work + 6 * m
      add(list)
      if m > 0 then add(list[1 + u16() % m]) end
    end,
    function() -- many short strings, repeated near and far
      local nkeys = room(u16() % 520, 1)
      local kinds = 1 + u8() % 300
      local t = newtable()
      for i = 1, nkeys do t["k" .. i] = "v" .. i % kinds end
      work = work + nkeys
      add(t)
    end,
    function() -- array layouts
      local n = room(u16() % 600, 1)
      local k = u8() % 5
      local t = newtable()
      if k == 0 then for i = n, 1, -1 do t[i] = i end
      elseif k == 1 then
        for i = 1, n do t[i] = i end
        if n > 0 then t[1 + u8() % n] = nil end
      elseif k == 2 then for i = 1, n do t[i + 0.0] = -i end
      elseif k == 3 then for i = -2, n do t[i] = pick() end
      else
        for i = 1, n do t[i] = i end
        t[math.maxinteger] = 1
        t[math.mininteger] = 2
        t[0.5] = 3
        t[-0.0] = 4
      end
      work = work + n
      add(t)
    end,
    function() -- a weak table
      local t = pick_table()
      if t then
        local mt = newtable()
        mt.__mode = ({"k", "v", "kv"})[1 + u8() % 3]
        dsetmt(t, mt)
      end
    end,
    function() check_op() end,
    function() mutator() end,
    function() -- a C function put into a module: named only in this state
      installs = installs + 1
      local f = u8() % 2 == 0 and coroutine.wrap(function() end) or string.gmatch("", "")
      rawset(string, "fz" .. installs, f)
      local_names[f] = true
      add(f)
    end,
    function() -- a module only this state has
      local t = pick_table()
      for k, v in next, t or {} do
        if zero_name(k, v) then t = nil break end
      end
      if t then
        installs = installs + 1
        package.loaded["fzmod" .. installs] = t
        local_names[t] = true
      end
    end,
    function() -- functions and tables as keys
      local t = pick_table()
      local k = u8() % 3 == 0 and pick_lua_function() or pick_type("table")
      set(t, k, pick())
    end,
    function() collectgarbage(u8() % 2 == 0 and "collect" or "step") end,
    function() -- a big value whose copy makes the collector run mid-way
      -- A C function put into a module now is missing from the copier's
      -- name map: meeting it, the copier rebuilds the map, which
      -- allocates, so the collector may run finalizers in the middle of
      -- the encode, after part of a streamed item went to the reader.
      local m = room(100 + u8() * 4, 3)
      local list, recs = newtable(), {}
      local pad = srep("-", u8() % 2 * 40)
      local keyed = u8() % 2 == 0
      for i = 1, m do
        local r = newtable()
        r.i = i
        recs[i] = r
        if keyed then list["record " .. i .. pad] = r else list[i] = r end
      end
      work = work + 3 * m
      installs = installs + 1
      local f = coroutine.wrap(function() end)
      rawset(string, "fz" .. installs, f)
      local_names[f] = true
      local tail = {f}
      for _ = 1, 1 + u8() % 16 do
        if m > 0 then tail[#tail + 1] = recs[1 + u8() % m] end
      end
      local holder = newtable()
      holder[1], holder[2] = list, tail
      add(holder)
      if flags3 & 3 ~= 0 then -- no finalizers: an ordinary check
        check({holder}, 1, u8() % 6)
        return
      end
      -- finalizers aimed at the list, then the copy at once: the check's
      -- own allocations would run them before it
      local route = u8() % 3
      local q, s = loom.Queue(), loom.shared()
      local pause, mul = u8() % 20, 100 + u8() * 4
      for _ = 1, 1 + u8() % 8 do mutator(list, u8() % 2 == 0 and 9 or nil) end
      collectgarbage("incremental", pause, mul)
      if route == 0 then
        pcall(loom.copy, holder)
      elseif route == 1 then
        if pcall(q.put, q, holder) then pcall(q.get_nowait, q) end
      else
        pcall(function() s.v = holder end)
      end
    end,
    function() -- values under the keys of every kind
      local t = pick_table()
      if t then
        set(t, true, pick())
        set(t, false, pick())
        set(t, number(), pick())
        set(t, short_string(), pick())
        set(t, CFUNCS[1 + u8() % #CFUNCS], pick())
        set(t, io.stdout, pick())
        set(t, pick_type("userdata"), pick())
      end
    end,
  }

  -- a fixed number of slots, so that adding an operation in a free slot
  -- does not change what the other bytes of existing inputs mean
  assert(#ops <= 32)
  for i = #ops + 1, 32 do ops[i] = function() end end
  while pos <= nbytes and work < max_work do
    local op = 1 + u8() % 32
    trace("op", op)
    ops[op]()
  end
  -- the last values made, by every route
  local n = math.min(#P, 3)
  if n > 0 then
    local vals = {}
    for i = 1, n do
      vals[i] = P[#P - i + 1]
      if vals[i] == NIL then vals[i] = nil end
    end
    for route = 0, 5 do
      if route == 0 or flags & (8 << (route - 1)) ~= 0 then check(vals, n, route) end
    end
  end
end
