return function(out, status)
  assert.are.equal(0, status, out)
  assert.matches("blocking call in task: data data in [%d.]+ s, ticker ticked %d+ times\n", out)
  assert.matches("async.to_thread:%s+data data in [%d.]+ s, ticker ticked %d+ times\n", out)
  -- the debug mode named the tasks that held the loop, and where
  assert.matches("loom.async: task 'Task%-%d+' blocked the loop for [%d.]+ seconds %(a step that " ..
                 "ran to the end of the function at examples/07_async_limits.lua:%d+%)", out)
  assert.matches("the loop only kept ticking with to_thread\n", out, 1, true)
end
