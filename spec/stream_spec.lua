-- Streamed queue items (csrc/stream.c; publish, maybe_publish and
-- decode_stream in csrc/transfer.c; start_stream, withdraw_stream and
-- stream_vanished in csrc/queue.c). A Queue, LifoQueue or SimpleQueue item
-- whose encoding grows past 4 KB enters the queue once its first chunk is
-- ready, and a consumer decodes it chunk by chunk (about 4 KB each)
-- while the producer is still encoding. These specs send items of 20,000
-- records (about 700 KB encoded, so some 25 chunks) and check that every
-- value, every shared table and every object arrives intact, and that a put
-- that fails after its first chunks leaves no item and no task behind.
--
-- Ordering uses events and queues, never sleeps; every wait has a timeout.
local loom = require "loom"
local helpers = require "helpers"

-- Functions defined in a spec file see busted's environment as _ENV: a
-- thread body (or an item's function) reading a global would copy busted
-- into the thread. The names they use are bound here, so they cross as
-- upvalues by name; spawn() checks that no function reached from a thread
-- body (through upvalues) still has busted's _ENV.
local math, string, type, pairs, tostring, pcall =
      math, string, type, pairs, tostring, pcall
local coroutine, collectgarbage, setmetatable, io, ipairs, error, print =
      coroutine, collectgarbage, setmetatable, io, ipairs, error, print
local getmetatable = getmetatable

local check_env_deep = helpers.check_env

local function spawn(fn, ...)
  local args = table.pack(...)
  for i = 1, args.n do
    if type(args[i]) == "function" then check_env_deep(args[i]) end
  end
  return helpers.spawn(check_env_deep(fn), table.unpack(args, 1, args.n))
end

-- Every wait below is bounded by this (seconds); the sanitizer builds are
-- about ten times slower, so it is generous.
local WAIT = 120
local SETTLED = 5 -- for a join once every task is done: it returns at once
local N = 20000 -- records per big item: about 700 KB encoded

-- {x = i, y = "s" .. i} for i = 1..n, and a tag when given (to tell items
-- apart): the bulk of every big item.
local function records(n, tag)
  local t = {}
  for i = 1, n do t[i] = { x = i, y = "s" .. i, tag = tag } end
  return t
end

-- nil when t[from..to] are exactly what records(_, tag) made, else what is
-- wrong (run in consumer threads: no busted assertions).
local function bad_records(t, from, to, tag)
  if type(t) ~= "table" then return "not a table: " .. tostring(t) end
  local want = tag == nil and 2 or 3
  for i = from, to do
    local r = t[i]
    if type(r) ~= "table" then return "[" .. i .. "] is a " .. type(r) end
    if r.x ~= i or math.type(r.x) ~= "integer" or r.y ~= "s" .. i
       or r.tag ~= tag then
      return "[" .. i .. "] is {x=" .. tostring(r.x) .. ", y=" ..
             tostring(r.y) .. ", tag=" .. tostring(r.tag) .. "}"
    end
    local fields = 0
    for _ in pairs(r) do fields = fields + 1 end
    if fields ~= want then return "[" .. i .. "] has " .. fields .. " fields" end
  end
  return nil
end

-- A big item of N records whose encoding fails at index `at` (the
-- coroutine cannot be copied): put raises after many chunks went out.
local function failing(at)
  local t = records(N)
  t[at] = coroutine.create(print)
  return t
end

-- The error message of f(...), which must raise.
local function errmsg(f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok, "expected an error")
  return tostring(err), err
end

describe("streamed queue items", function()
  after_each(function() helpers.join_all(WAIT) end)

  -- The plain case: one big item to a consumer that waits in get() while
  -- it is encoded; every field of every record is checked over there.
  describe("a big array of records", function()
    it("reaches a consumer blocked in get() intact", function()
      local q, ready = loom.Queue(), loom.Event()
      local consumer = spawn(function(qq, rdy, n)
        rdy:set()
        local t = qq:get(WAIT)
        local bad = bad_records(t, 1, n)
        if bad then return false, bad end
        local keys = 0
        for _ in pairs(t) do keys = keys + 1 end
        if keys ~= n then return false, keys .. " keys" end
        local sum = 0
        for i = 1, n do sum = sum + t[i].x end
        qq:task_done()
        return true, #t, sum
      end, q, ready, N)
      assert.is_true(ready:wait(WAIT))
      local big = records(N) -- built after the consumer is waiting
      assert.is_true(q:put(big))
      local ok, len, sum = consumer:result(WAIT)
      assert.is_true(ok, len)
      assert.are.equal(N, len)
      assert.are.equal(N * (N + 1) // 2, sum)
      assert.is_true(q:join(SETTLED))
      assert.are.equal(0, q:qsize())
    end)

    it("also comes out whole when nobody was waiting (get after put)", function()
      local q = loom.Queue()
      assert.is_true(q:put(records(N, "late")))
      assert.are.equal(1, q:qsize())
      local got = q:get(WAIT)
      assert.is_nil(bad_records(got, 1, N, "late"))
      assert.are.equal(N, #got)
      assert.are.same({ nil, "empty" }, { q:get_nowait() })
    end)
  end)

  -- Several producers and consumers at once: each item arrives once and
  -- whole (its records carry the item's tag), in FIFO order per producer.
  describe("several producers and consumers", function()
    local function run(nprod, ncons, per, n)
      local q = loom.Queue()
      local consumers = {}
      for c = 1, ncons do
        consumers[c] = spawn(function(qq, count)
          local seen = {}
          while true do
            local item = qq:get(WAIT)
            if item == nil then return false, "get timed out" end
            qq:task_done()
            if item == "stop" then break end
            local tag = item.p * 100 + item.k
            local bad = bad_records(item, 1, count, tag)
            if bad then return false, "item " .. tag .. ": " .. bad end
            if #item ~= count then return false, "item " .. tag .. ": length" end
            seen[#seen + 1] = tag
          end
          return true, seen
        end, q, n)
      end
      local producers = {}
      for p = 1, nprod do
        producers[p] = spawn(function(qq, id, k_max, count)
          for k = 1, k_max do
            local item = records(count, id * 100 + k)
            item.p, item.k = id, k -- hash part: goes first, never cut
            qq:put(item)
          end
          return true
        end, q, p, per, n)
      end
      for p = 1, nprod do assert.is_true(producers[p]:result(WAIT)) end
      for _ = 1, ncons do q:put("stop") end
      local all = {}
      for c = 1, ncons do
        local ok, seen = consumers[c]:result(WAIT)
        assert.is_true(ok, seen)
        local last = {}
        for _, tag in ipairs(seen) do
          local p, k = tag // 100, tag % 100
          assert.is_nil(all[tag], "item " .. tag .. " arrived twice")
          all[tag] = true
          -- a consumer takes items in queue order: per producer, rising
          assert.is_true(k > (last[p] or 0), "producer " .. p .. " out of order")
          last[p] = k
        end
      end
      for p = 1, nprod do
        for k = 1, per do
          assert.is_true(all[p * 100 + k], "item " .. p * 100 + k .. " lost")
        end
      end
      assert.is_true(q:join(SETTLED))
      assert.are.equal(0, q:qsize())
    end

    it("2 producers, 1 consumer: nothing lost or duplicated, FIFO per producer", function()
      run(2, 1, 3, N)
    end)

    it("3 producers, 2 consumers: nothing lost or duplicated, FIFO per producer", function()
      run(3, 2, 3, N // 2)
    end)
  end)

  -- Back references that cross chunk boundaries: the reader keeps every
  -- table it built, since their headers went out before anyone knew they
  -- would be referenced again.
  describe("shared sub-tables and cycles across chunks", function()
    it("keep their identity in the copy", function()
      local t = records(N)
      local shared = { name = "shared", list = { 1, 2, 3 } }
      local late = { name = "late" }
      t[1] = shared
      t[15000] = shared          -- first met at [1], many chunks before
      t.self = t                 -- hash part, written before the array
      t.in_hash = t[3]           -- met in the hash part, then in the array
      t[18000] = { back = t[2] } -- points back to an early record
      t[16000] = late
      t[19000] = late            -- first met late, met again later
      t[17000] = t               -- the root, from deep in the array
      t[19999] = { root = t, shared = shared, list = shared.list }
      -- big arrays inside hash parts: nothing may be cut until such a
      -- hash part is done (its count is written after it)
      t.index = records(3000)
      t[5000] = { name = "nested", list = records(3000), [0.5] = "hash" }
      local q, ready = loom.Queue(), loom.Event()
      local consumer = spawn(function(qq, rdy, n)
        rdy:set()
        local c = qq:get(WAIT)
        local r = {
          len = #c,
          shared_same = c[1] == c[15000],
          shared_ok = c[1].name == "shared" and #c[1].list == 3,
          self = c.self == c,
          in_hash = c.in_hash == c[3] and c[3].x == 3,
          back = c[18000].back == c[2] and c[2].x == 2,
          late = c[16000] == c[19000] and c[16000].name == "late",
          root = c[17000] == c and c[19999].root == c,
          list = c[19999].shared == c[1] and c[19999].list == c[1].list,
          distinct = c[4] ~= c[5],
          index = bad_records(c.index, 1, 3000) or #c.index,
          nested = c[5000].name == "nested" and c[5000][0.5] == "hash"
                   and (bad_records(c[5000].list, 1, 3000) or #c[5000].list),
        }
        for i = 4, n do
          if i ~= 5000 and i ~= 15000 and i ~= 16000 and i ~= 17000
             and i ~= 18000 and i ~= 19000 and i < 19999 and c[i].x ~= i then
            r.bad = i
            break
          end
        end
        return r
      end, q, ready, N)
      assert.is_true(ready:wait(WAIT))
      assert.is_true(q:put(t))
      assert.are.same({
        len = N, shared_same = true, shared_ok = true, self = true,
        in_hash = true, back = true, late = true, root = true, list = true,
        distinct = true, index = 3000, nested = 3000,
      }, consumer:result(WAIT))
    end)

    -- A table whose header went to the reader before a second reference
    -- to it shows up is named by a path (T_PATH) from a table the reader
    -- still holds; tables no path can reach are kept from the start.
    it("are found again by any kind of place: string, sparse, long and deep keys, keys, metatables, " ..
       "upvalues", function()
      local t = records(N)
      local sub = { v = "sub" }
      t[1] = { name = { sub = sub } }             -- int, string, string
      local sparse = { v = "sparse" }
      t[2] = { map = { [100] = sparse } }          -- a sparse integer key
      local long = { v = "long" }
      t[3] = { [string.rep("k", 300)] = long }     -- a long string key
      local half = { v = "half" }
      t[4] = { [0.5] = half, [true] = { v = "true" } } -- keys no path takes
      local key = { v = "key" }
      t[5] = { [key] = "a table as a key" }
      local mt = { __index = { v = "meta" } }
      t[6] = setmetatable({}, mt)
      local up = { v = "up" }
      t[7] = function() return up end             -- an upvalue
      local deep = {}                              -- 20 levels: past MAX_HOPS
      local cur = deep
      local levels = {}
      for i = 1, 20 do cur.next = { level = i }; cur = cur.next; levels[i] = cur end
      t[8] = deep
      t[19001] = { sub = sub, sparse = sparse, long = long, half = half,
                   key = key, mt = mt, up = up, first = t[1].name,
                   level3 = levels[3], level9 = levels[9], level10 = levels[10],
                   level20 = levels[20], truth = t[4][true] }
      t[19002] = { again = levels[20], root = t }
      local q, ready = loom.Queue(), loom.Event()
      local consumer = spawn(function(qq, rdy, n)
        rdy:set()
        local c = qq:get(WAIT)
        local r = c[19001]
        local lv = {}
        local at = c[8]
        for i = 1, 20 do at = at.next; lv[i] = at end
        local k
        for kk in pairs(c[5]) do k = kk end
        return {
          sub = r.sub == c[1].name.sub and r.sub.v == "sub",
          first = r.first == c[1].name,
          sparse = r.sparse == c[2].map[100] and r.sparse.v == "sparse",
          long = r.long == c[3][string.rep("k", 300)] and r.long.v == "long",
          half = r.half == c[4][0.5] and r.half.v == "half",
          truth = r.truth == c[4][true] and r.truth.v == "true",
          key = r.key == k and r.key.v == "key",
          mt = r.mt == getmetatable(c[6]) and c[6].v == "meta",
          up = r.up == c[7]() and r.up.v == "up",
          levels = r.level3 == lv[3] and r.level9 == lv[9] and
                   r.level10 == lv[10] and r.level20 == lv[20] and
                   lv[20].level == 20 and lv[20].next == nil,
          again = c[19002].again == lv[20] and c[19002].root == c,
          records = bad_records(c, 9, 19000) or #c == n,
        }
      end, q, ready, N)
      assert.is_true(ready:wait(WAIT))
      assert.is_true(q:put(t))
      assert.are.same({
        sub = true, first = true, sparse = true, long = true, half = true,
        truth = true, key = true, mt = true, up = true, levels = true,
        again = true, records = true,
      }, consumer:result(WAIT))
    end)

    it("are found again when many records share a few tables met early", function()
      local shared = {}
      for i = 1, 50 do shared[i] = { id = i } end
      local t = { shared = {} }
      for i = 1, 50 do t[i] = shared[i] end
      for i = 51, N do t[i] = { x = i, ref = shared[i % 50 + 1] } end
      local q = loom.Queue()
      local consumer = spawn(function(qq, n)
        local c = qq:get(WAIT)
        for i = 51, n do
          local want = c[i % 50 + 1]
          if c[i].ref ~= want or want.id ~= i % 50 + 1 or c[i].x ~= i then
            return "wrong at " .. i
          end
        end
        return #c
      end, q, N)
      assert.is_true(q:put(t))
      assert.are.equal(N, consumer:result(WAIT))
    end)

    it("keep their identity on the way back too (a second stream)", function()
      local t = records(N)
      local shared = { "shared" }
      t[2], t[15000], t.self = shared, shared, t
      t[18000] = { back = t[2] }
      local q, back = loom.Queue(), loom.Queue()
      local echo = spawn(function(a, b) return b:put(a:get(WAIT)) end, q, back)
      assert.is_true(q:put(t))
      local c = back:get(WAIT)
      assert.is_true(echo:result(WAIT))
      assert.are.equal(N, #c)
      assert.are.equal(c[2], c[15000])
      assert.are.equal("shared", c[2][1])
      assert.are.equal(c, c.self)
      assert.are.equal(c[2], c[18000].back)
      assert.is_nil(bad_records(c, 3, 14999))
      assert.is_nil(bad_records(c, 15001, 17999))
    end)
  end)

  -- Strings (short ones repeated in every record, whose first copy went
  -- out in an earlier chunk; long and very long ones), floats with their
  -- special values, booleans and wide integers.
  describe("scalars", function()
    local S30 = string.rep("abcdefghij", 3) -- 30 bytes: short, interned
    local S5 = "fives"
    local L41 = string.rep("L", 41)          -- past the short-string limit
    local L300 = string.rep("0123456789", 30) -- past a one-byte length
    local ZS = "a\0b\0c"

    local function mixed(i)
      return {
        s30 = S30, s5 = S5, [S5] = S30, z = ZS, l41 = L41 .. i,
        l300 = i % 10 == 0 and L300 .. i or nil,
        f = i + 0.25, ff = i * 1.0, nan = 0 / 0, inf = 1 / 0, ninf = -1 / 0,
        nz = -0.0, yes = true, no = false,
        big = (1 << 40) + i, neg = -(1 << 62) - i,
        maxi = math.maxinteger, mini = math.mininteger,
        [i + 0.5] = "float key", [true] = "boolean key",
      }
    end

    -- The bare values put in the array part at i % 3 == 0.
    local function bare(i)
      local k = (i // 3) % 7
      if k == 0 then return S30
      elseif k == 1 then return L300 .. i
      elseif k == 2 then return -0.0
      elseif k == 3 then return 0 / 0
      elseif k == 4 then return (1 << 33) + i
      elseif k == 5 then return false
      else return i + 0.5 end
    end

    local function build(n)
      local t = {}
      for i = 1, n do
        if i % 3 == 0 then t[i] = bare(i) else t[i] = mixed(i) end
      end
      t.header = S30 -- hash part: its first copy goes in the first chunk
      return t
    end

    -- nil when c is what build(n) made, else what is wrong.
    local function bad_mixed(c, n)
      local function same(a, b)
        if a ~= a then return b ~= b end -- NaN
        if math.type(a) ~= math.type(b) or a ~= b then return false end
        if a == 0 and math.type(a) == "float" then return 1 / a == 1 / b end
        return true
      end
      if c.header ~= S30 then return "header" end
      if #c ~= n then return "length " .. #c end
      for i = 1, n do
        local got, want = c[i]
        if i % 3 == 0 then want = bare(i) else want = mixed(i) end
        if type(want) ~= "table" then
          if not same(want, got) then return "[" .. i .. "] = " .. tostring(got) end
        else
          if type(got) ~= "table" then return "[" .. i .. "] is " .. type(got) end
          for k, v in pairs(want) do
            if not same(v, got[k]) then
              return "[" .. i .. "]." .. tostring(k) .. " = " .. tostring(got[k])
            end
          end
          for k in pairs(got) do
            if want[k] == nil then return "[" .. i .. "] extra " .. tostring(k) end
          end
        end
      end
      return nil
    end

    it("arrive intact: repeated, long and embedded-zero strings, nan/inf/-0.0, booleans, wide integers", function()
      local q, ready = loom.Queue(), loom.Event()
      local consumer = spawn(function(qq, rdy, n)
        rdy:set()
        local c = qq:get(WAIT)
        return bad_mixed(c, n) or "ok"
      end, q, ready, N)
      assert.is_true(ready:wait(WAIT))
      assert.is_true(q:put(build(N)))
      assert.are.equal("ok", consumer:result(WAIT))
    end)

    it("arrive intact when got after the put finished", function()
      local q = loom.Queue()
      q:put(build(N))
      assert.is_nil(bad_mixed(q:get(WAIT), N))
    end)
  end)

  -- Lua functions placed after the first chunks: bytecode, upvalues,
  -- shared upvalues and recursion. A chunk is cut after the first array
  -- element that takes it past its size (4 KB), so a 40 KB string
  -- at the end of a table makes a cut right after that table: here between
  -- two upvalues of one function (also before an upvalue it shares with
  -- another closure) and before a nested table's metatable.
  describe("functions", function()
    local PAD = string.rep("p", 40000)

    it("work in the consumer, closures still share their upvalue", function()
      local function counter()
        local count = 0
        local pad = records(100)
        pad[#pad + 1] = PAD -- a chunk ends right after pad
        local function inc() local _ = pad; count = count + 1 return count end
        local function peek() return count end
        return inc, peek
      end
      local inc, peek = counter()
      inc() -- count is 1 when sent
      local base = 7
      local function times(a) return a * base end
      local function fact(k) if k <= 1 then return 1 end return k * fact(k - 1) end
      local bigup = records(3000)
      bigup[#bigup + 1] = PAD -- a chunk ends right after bigup
      local after = "after the big upvalue"
      local function reach() return #bigup, bigup[3000].y, after end
      local function fmt(v) return string.format("<%d>", v) end

      for _, f in ipairs { inc, peek, times, fact, reach, fmt } do
        check_env_deep(f)
      end
      local t = records(N)
      -- peek first: inc's second upvalue (count) is then a join with
      -- peek's, written right after the cut that follows inc's pad
      t[15000], t[15001] = peek, inc
      t[16000] = { fn = times }
      t[17000] = fact
      t[17500] = setmetatable({ PAD }, { __index = { kind = "meta" } })
      t[18000] = reach
      t[18500] = fmt
      t[19999] = inc -- the same function again
      local q, ready = loom.Queue(), loom.Event()
      local consumer = spawn(function(qq, rdy)
        rdy:set()
        local c = qq:get(WAIT)
        local r = {}
        r.inc1 = c[15001]()
        r.peek1 = c[15000]()
        r.inc2 = c[19999]()
        r.peek2 = c[15000]()
        r.same = c[15001] == c[19999]
        r.meta = c[17500].kind .. " " .. #c[17500][1]
        r.times = c[16000].fn(6)
        r.fact = c[17000](10)
        r.reach = { c[18000]() }
        r.fmt = c[18500](42)
        r.record = c[14999].x == 14999 and c[18001].y == "s18001"
        return r
      end, q, ready)
      assert.is_true(ready:wait(WAIT))
      assert.is_true(q:put(t))
      assert.are.same({
        inc1 = 2, peek1 = 2, inc2 = 3, peek2 = 3, same = true, times = 42,
        fact = 3628800, reach = { 3001, "s3000", after }, fmt = "<42>",
        record = true, meta = "meta 40000",
      }, consumer:result(WAIT))
      assert.are.equal(1, peek()) -- the sender's upvalue is untouched
    end)
  end)

  -- loom objects in a big item are passed by reference; the stream holds
  -- them (it took a reference per published chunk), so they live even when
  -- nobody else does any more.
  describe("loom objects", function()
    it("arrive as the same objects (late in the array)", function()
      local q, ready = loom.Queue(), loom.Event()
      local ev, reply = loom.Event(), loom.Queue()
      local t = records(N)
      t[100] = ev
      t[19500] = ev
      t[19600] = reply
      t[19700] = q -- the queue that carries the item
      local consumer = spawn(function(qq, rdy)
        rdy:set()
        local c = qq:get(WAIT)
        c[19500]:set()
        c[19600]:put("pong")
        return c[100] == c[19500], c[19700] == qq
      end, q, ready)
      assert.is_true(ready:wait(WAIT))
      assert.is_true(q:put(t))
      assert.is_true(ev:wait(WAIT))
      assert.are.equal("pong", reply:get(WAIT))
      local same_ev, same_q = consumer:result(WAIT)
      assert.is_true(same_ev)
      assert.is_true(same_q)
    end)

    it("stay alive after the producer dropped them and ended", function()
      local q = loom.Queue()
      local producer = spawn(function(qq, n)
        local t = records(n)
        local lock = loom.Lock()
        t[19500] = loom.Event()
        t[19600] = loom.Queue()
        t[19700] = lock
        t[19701] = lock
        t[19800] = loom.shared({ answer = 42 })
        qq:put(t)
        t, lock = nil, nil -- luacheck: ignore 311 (dropped before collecting)
        collectgarbage()
        collectgarbage()
        return true
      end, q, N)
      assert.is_true(producer:result(WAIT))
      assert.is_true(producer:join(WAIT)) -- its state is closed
      collectgarbage()
      local consumer = spawn(function(qq)
        local c = qq:get(WAIT)
        local ev, inner, lock, sh = c[19500], c[19600], c[19700], c[19800]
        c = nil -- luacheck: ignore 311 (dropped before collecting)
        collectgarbage()
        ev:set()
        inner:put("inner")
        if not lock:acquire(true, 1) then error("the lock is not free") end
        lock:release()
        return ev:is_set(), inner:get(1), sh.answer, tostring(lock)
      end, q)
      local set, inner, answer, name = consumer:result(WAIT)
      assert.is_true(set)
      assert.are.equal("inner", inner)
      assert.are.equal(42, answer)
      assert.matches("Lock", name)
    end)
  end)

  -- An encode that fails after the item went into the queue: put raises as
  -- usual, and the item never was (no item, no task for join), whether a
  -- consumer already took it (it drops it and keeps waiting) or not (it is
  -- withdrawn from the queue).
  describe("a put that fails late", function()
    local function sealed(t, mt) return setmetatable(t, mt) end
    local cases = {
      { "a coroutine", function() return failing(19000) end,
        "cannot copy a coroutine at item%[19000%]$" },
      { "a userdata not in package.loaded", function()
          local t = records(N)
          t[19000] = io.tmpfile()
          return t
        end, "cannot copy userdata %(FILE%*%) at item%[19000%]$" },
      { "a nested field", function()
          local t = records(N)
          t[19000] = { ok = 1, bad = { coroutine.create(print) } }
          return t
        end, "cannot copy a coroutine at item%[19000%]%.bad%[1%]$" },
      { "an upvalue", function()
          local t = records(N)
          local co = coroutine.create(print)
          t[19000] = function() return co end
          return t
        end, "cannot copy a coroutine at item%[19000%]%.<upvalue co>$" },
      { "the metatable (after the whole array went out)", function()
          return sealed(records(N), { __index = coroutine.create(print) })
        end, "cannot copy a coroutine at item%.<metatable>%.__index$" },
    }

    for _, case in ipairs(cases) do
      local what, make, pattern = case[1], case[2], case[3]
      it("with no consumer leaves no item and no task (" .. what .. ")", function()
        local q = loom.Queue()
        local msg = errmsg(q.put, q, make())
        assert.matches(pattern, msg)
        assert.are.equal(0, q:qsize())
        assert.is_true(q:empty())
        assert.is_true(q:join(0.5))
        -- the queue works on: a big item, then a small one
        assert.is_true(q:put(records(N, "next")))
        assert.is_true(q:put("small"))
        assert.is_nil(bad_records(q:get(WAIT), 1, N, "next"))
        assert.are.equal("small", q:get(WAIT))
        q:task_done(2)
        assert.is_true(q:join(SETTLED))
        assert.has_error(function() q:task_done() end)
      end)
    end

    it("is dropped by a consumer blocked in get(timeout), which gets the next item only", function()
      for _, case in ipairs(cases) do
        local what, make, pattern = case[1], case[2], case[3]
        local q, ready = loom.Queue(), loom.Event()
        local consumer = spawn(function(qq, rdy)
          local got = {}
          rdy:set()
          while true do
            local v, why = qq:get(WAIT)
            if v == nil then got[#got + 1] = why break end
            qq:task_done()
            if v == "end" then break end
            got[#got + 1] = type(v) == "table" and
              (bad_records(v, 1, #v, v[1].tag) or ("good " .. #v .. " " .. v[1].tag))
              or v
          end
          return got
        end, q, ready)
        assert.is_true(ready:wait(WAIT))
        local msg = errmsg(q.put, q, make())
        assert.matches(pattern, msg)
        assert.is_true(q:put(records(N, "next")))
        assert.is_true(q:put("end"))
        assert.are.same({ "good " .. N .. " next" }, consumer:result(WAIT), what)
        assert.is_true(q:join(SETTLED))
        assert.are.equal(0, q:qsize())
      end
    end)

    it("with a consumer, the producer's next put is a small item", function()
      local q, ready = loom.Queue(), loom.Event()
      local consumer = spawn(function(qq, rdy)
        rdy:set()
        local v = qq:get(WAIT)
        qq:task_done()
        return v, qq:qsize()
      end, q, ready)
      assert.is_true(ready:wait(WAIT))
      assert.matches("item%[19000%]", errmsg(q.put, q, failing(19000)))
      q:put(12345)
      assert.are.same({ 12345, 0 }, { consumer:result(WAIT) })
      assert.is_true(q:join(SETTLED))
    end)

    -- Another thread puts small items once the big item is in the queue
    -- (it polls qsize), so the item is withdrawn from between items; its
    -- encode (200,000 records) outlasts those puts by far.
    for _, kind in ipairs { "Queue", "LifoQueue", "SimpleQueue" } do
      it("is withdrawn from between items other threads put meanwhile (" .. kind .. ")", function()
        local q = loom[kind]()
        local count = 200
        local other = spawn(function(qq, k)
          local deadline = loom.now() + 30
          while qq:qsize() < 2 do -- "first" and the big item
            if loom.now() > deadline then return false end
          end
          for i = 1, k do qq:put(i) end
          return true
        end, q, count)
        q:put("first")
        local item = records(200000)
        item[199000] = coroutine.create(print)
        assert.matches("item%[199000%]", errmsg(q.put, q, item))
        assert.is_true(other:result(WAIT))
        assert.are.equal(count + 1, q:qsize())
        local got = {}
        for i = 1, count + 1 do got[i] = q:get_nowait() end
        local want = { "first" }
        for i = 1, count do want[#want + 1] = i end
        if kind == "LifoQueue" then -- last in, first out
          local rev = {}
          for i = #want, 1, -1 do rev[#rev + 1] = want[i] end
          want = rev
        end
        assert.are.same(want, got)
        assert.is_true(q:empty())
        if q.join then
          q:task_done(count + 1)
          assert.is_true(q:join(SETTLED))
        end
      end)
    end

    it("leaves no item and no task when the error leaves a coroutine (no pcall)", function()
      -- put's error unwinds a coroutine instead of a pcall: Lua 5.4 does
      -- not close to-be-closed slots then (only at coroutine.close), so the
      -- encode must not count on its scratch's __close to withdraw the item
      local q = loom.Queue()
      local co = coroutine.create(function(qq, t) return qq:put(t) end)
      local ok, err = coroutine.resume(co, q, failing(19000))
      assert.is_false(ok)
      assert.matches("item%[19000%]", tostring(err))
      local size, done = q:qsize(), q:join(0.5)
      coroutine.close(co) -- whatever happened, let the stream go
      assert.are.equal(0, size)
      assert.is_true(done)
    end)
  end)

  -- The other queue kinds: LifoQueue and SimpleQueue stream too (and
  -- withdraw); PriorityQueue encodes big items whole.
  describe("queue kinds", function()
    local function through_thread(q)
      local ready = loom.Event()
      local consumer = spawn(function(qq, rdy, n)
        rdy:set()
        local v = qq:get(WAIT)
        return bad_records(v, 1, n, "kind") or #v
      end, q, ready, N)
      assert.is_true(ready:wait(WAIT))
      assert.is_true(q:put(records(N, "kind")))
      assert.are.equal(N, consumer:result(WAIT))
    end

    it("LifoQueue carries big items, last in first out", function()
      local q = loom.LifoQueue()
      through_thread(q)
      q:task_done()
      for k = 1, 3 do q:put(records(N, k)) end
      q:put("top")
      assert.are.equal("top", q:get(WAIT))
      for k = 3, 1, -1 do assert.is_nil(bad_records(q:get(WAIT), 1, N, k)) end
      q:task_done(4)
      assert.is_true(q:join(1))
    end)

    it("LifoQueue withdraws a failed big item", function()
      local q = loom.LifoQueue()
      q:put("a")
      assert.matches("item%[19000%]", errmsg(q.put, q, failing(19000)))
      q:put("b")
      assert.are.equal(2, q:qsize())
      assert.are.equal("b", q:get(WAIT))
      assert.are.equal("a", q:get(WAIT))
      q:task_done(2)
      assert.is_true(q:join(1))
    end)

    it("SimpleQueue carries big items in order and withdraws a failed one", function()
      local q = loom.SimpleQueue()
      through_thread(q)
      q:put(records(N, 1))
      assert.matches("item%[19000%]", errmsg(q.put, q, failing(19000)))
      q:put(records(N, 2))
      assert.are.equal(2, q:qsize())
      assert.is_nil(bad_records(q:get(WAIT), 1, N, 1))
      assert.is_nil(bad_records(q:get(WAIT), 1, N, 2))
      assert.is_true(q:empty())
    end)

    it("SimpleQueue: a consumer blocked in get() drops a failed item", function()
      local q, ready = loom.SimpleQueue(), loom.Event()
      local consumer = spawn(function(qq, rdy, n)
        rdy:set()
        local v = qq:get(WAIT)
        return bad_records(v, 1, n, "after") or #v, qq:qsize()
      end, q, ready, N)
      assert.is_true(ready:wait(WAIT))
      assert.matches("item%[19000%]", errmsg(q.put, q, failing(19000)))
      q:put(records(N, "after"))
      assert.are.same({ N, 0 }, { consumer:result(WAIT) })
    end)

    it("PriorityQueue orders big {priority, payload} items", function()
      local q = loom.PriorityQueue()
      for _, p in ipairs { 3, 1, 2 } do
        q:put({ p, records(N, p) })
      end
      local consumer = spawn(function(qq, n)
        local order = {}
        for _ = 1, 3 do
          local item = qq:get(WAIT)
          local bad = bad_records(item[2], 1, n, item[1])
          if bad then return bad end
          order[#order + 1] = item[1]
          qq:task_done()
        end
        return order
      end, q, N)
      assert.are.same({ 1, 2, 3 }, consumer:result(WAIT))
      assert.is_true(q:join(1))
      -- an item that fails late is never in the queue
      local bad = failing(19000)
      table.insert(bad, 1, 0) -- priority 0; the coroutine moves to [19001]
      assert.matches("item%[19001%]", errmsg(q.put, q, bad))
      assert.are.equal(0, q:qsize())
      assert.is_true(q:join(0.5))
    end)
  end)

  -- get_many and select take big items like get does, and skip the ones
  -- whose put failed. A big item is only ever the first of a get_many
  -- (it is read once, so one that fails to decode could not be put back).
  describe("get_many and select", function()
    it("get_many returns the big items whole and in order", function()
      local q = loom.Queue()
      q:put(records(N, 1))
      assert.matches("item%[19000%]", errmsg(q.put, q, failing(19000)))
      q:put(records(N, 2))
      q:put("small")
      local items, n = q:get_many(10, WAIT)
      assert.are.equal(1, n) -- stops before the next big item
      assert.is_nil(bad_records(items[1], 1, N, 1))
      items, n = q:get_many(10, WAIT)
      assert.are.equal(2, n)
      assert.is_nil(bad_records(items[1], 1, N, 2))
      assert.are.equal("small", items[2])
      q:task_done(3)
      assert.is_true(q:join(1))
    end)

    it("a get_many blocked while a big put fails returns only the next good item", function()
      local q, ready = loom.Queue(), loom.Event()
      local consumer = spawn(function(qq, rdy, n)
        rdy:set()
        local items, count = qq:get_many(10, WAIT)
        if items == nil then return nil, count end
        local tags = {}
        for i, v in ipairs(items) do
          tags[i] = bad_records(v, 1, n, "good") or "good"
        end
        if #items > 0 then qq:task_done(#items) end
        return count, tags
      end, q, ready, N)
      assert.is_true(ready:wait(WAIT))
      assert.matches("item%[19000%]", errmsg(q.put, q, failing(19000)))
      q:put(records(N, "good"))
      local count, tags = consumer:result(WAIT)
      assert.are.equal(1, count)
      assert.are.same({ "good" }, tags)
      assert.is_true(q:join(SETTLED))
    end)

    it("select returns big items from any queue whole", function()
      local a, b = loom.Queue(), loom.LifoQueue()
      a:put(records(N, "a"))
      b:put(records(N, "b"))
      local got = {}
      for _ = 1, 2 do
        local q, v = loom.select({ a, b }, WAIT)
        local tag = q == a and "a" or "b"
        assert.is_nil(bad_records(v, 1, N, tag))
        got[tag] = true
      end
      assert.are.same({ a = true, b = true }, got)
    end)

    it("a select blocked while a big put fails returns only the good item", function()
      local a, b, ready = loom.Queue(), loom.Queue(), loom.Event()
      local consumer = spawn(function(x, y, rdy, n)
        rdy:set()
        local q, v = loom.select({ x, y }, WAIT)
        local which = q == x and "a" or q == y and "b" or tostring(v)
        local bad = type(v) == "table" and bad_records(v, 1, n, "good")
        return which, bad or "good", x:qsize(), y:qsize()
      end, a, b, ready, N)
      assert.is_true(ready:wait(WAIT))
      assert.matches("item%[19000%]", errmsg(a.put, a, failing(19000)))
      b:put(records(N, "good"))
      assert.are.same({ "b", "good", 0, 0 }, { consumer:result(WAIT) })
      assert.is_true(a:join(1))
      b:task_done()
      assert.is_true(b:join(1))
    end)
  end)

  -- close(true) discards what is in the queue, also an item still being
  -- streamed; the producer's put either went in (true) or raises closed.
  describe("close(true) during a big put", function()
    local function race(with_consumer, fails)
      local q, started = loom.Queue(), loom.Event()
      local ready = loom.Event()
      local consumer
      if with_consumer then
        consumer = spawn(function(qq, rdy, n)
          rdy:set()
          local v, why = qq:get(WAIT)
          if v == nil then return why end
          qq:task_done()
          return bad_records(v, 1, n) or "whole"
        end, q, ready, N)
        assert.is_true(ready:wait(WAIT))
      end
      local producer = spawn(function(qq, st, n, fail_at)
        local t = records(n)
        if fail_at then t[fail_at] = coroutine.create(print) end
        st:set()
        local ok, err = pcall(qq.put, qq, t)
        return ok, ok or loom.is_closed(err), tostring(err)
      end, q, started, N, fails and 19000 or nil)
      assert.is_true(started:wait(WAIT))
      q:close(true)
      local ok, closed, msg = producer:result(WAIT)
      if fails then -- whether the item went in or not, the copy fails
        assert.is_false(ok)
        assert.matches("cannot copy a coroutine at item%[19000%]", msg)
      elseif not ok then
        assert.is_true(closed, msg)
      end
      if consumer then
        local got = consumer:result(WAIT)
        if fails then
          assert.are.equal("closed", got)
        else
          assert.is_true(got == "whole" or got == "closed", got)
        end
      end
      assert.are.equal(0, q:qsize())
      assert.is_true(q:join(SETTLED))
      assert.are.same({ nil, "closed" }, { q:get(1) })
    end

    it("no crash, no hang; put succeeds or raises closed", function()
      for _ = 1, 4 do
        race(false, false)
        race(true, false)
      end
    end)

    it("also when the put then fails", function()
      for _ = 1, 4 do
        race(false, true)
        race(true, true)
      end
    end)

    it("leaves the process working normally", function()
      local q = loom.Queue()
      local echo = spawn(function(qq, n)
        local v = qq:get(WAIT)
        return bad_records(v, 1, n) or "whole"
      end, q, N)
      q:put(records(N))
      assert.are.equal("whole", echo:result(WAIT))
    end)
  end)

  -- A full bounded queue has no room for a stream: the big put encodes
  -- the item whole and waits for room like any put.
  describe("bounded queues", function()
    it("a big put into a full queue(1) waits for room, then arrives intact", function()
      local q = loom.Queue(1)
      q:put("first")
      local tried, putting = loom.Event(), loom.Event()
      local producer = spawn(function(qq, tr, pu, n)
        local t = records(n, "big")
        local r1 = { qq:put_nowait(t) } -- no room: nothing goes in
        local r2 = { qq:put(t, 0.05) }
        local size = qq:qsize()
        tr:set()
        pu:wait(WAIT)
        return r1, r2, size, qq:put(t, WAIT)
      end, q, tried, putting, N)
      assert.is_true(tried:wait(WAIT))
      assert.are.equal(1, q:qsize())
      putting:set()
      assert.are.equal("first", q:get(WAIT))
      local v = q:get(WAIT)
      assert.is_nil(bad_records(v, 1, N, "big"))
      local r1, r2, size, ok = producer:result(WAIT)
      assert.are.same({ nil, "full" }, r1)
      assert.are.same({ nil, "timeout" }, r2)
      assert.are.equal(1, size)
      assert.is_true(ok)
      q:task_done(2)
      assert.is_true(q:join(1))
    end)

    it("a second big put waits while the first one fills the queue", function()
      local q = loom.Queue(1)
      local producer = spawn(function(qq, n)
        qq:put(records(n, 1)) -- streams: there is room
        qq:put(records(n, 2)) -- full: waits
        return qq:qsize()
      end, q, N)
      assert.is_nil(bad_records(q:get(WAIT), 1, N, 1))
      assert.is_nil(bad_records(q:get(WAIT), 1, N, 2))
      assert.is_true(producer:result(WAIT) <= 1)
      assert.are.same({ nil, "empty" }, { q:get_nowait() })
    end)
  end)
end)
