-- The embedding story (csrc/loom.h): a C host with loom linked in, whose
-- hook gives every thread state the host's own library.
describe("embedding host", function()
  it("runs threads that use the host's library from its state hook", function()
    local p = assert(io.popen(
      "LUA_PATH='./lua/?.lua;./lua/?/init.lua;;' timeout 60 ./examples/embed/host examples/embed/script.lua 2>&1"))
    local out = p:read("a")
    local ok = p:close()
    assert.is_true(ok, out)
    local calls = {}
    for n, call in out:gmatch("embed%-example: thread (%d) is call (%d)\n") do
      calls[tonumber(n)] = tonumber(call)
    end
    for i = 1, 4 do assert.is_number(calls[i], out) end
    -- four distinct thread calls, then main's, the pool sized by the host
    -- whose workers got the hook too, then the host's total
    local seen = {}
    for i = 1, 4 do seen[calls[i]] = true end
    for c = 1, 4 do assert.is_true(seen[c], out) end
    assert.matches("main is call 5\npool: 2 workers, host library in workers: true\n" ..
                   "tally after 4 x 1000 adds in the pool: 4000\n" ..
                   "points back from the pool: Point%(1001%.0+, 2%.0+%) Point%(1002%.0+, 4%.0+%) " ..
                   "Point%(1003%.0+, 6%.0+%) Point%(1004%.0+, 8%.0+%)\n" ..
                   "host: 5 calls in total, 0 tallies left\n$", out)
  end)
end)
