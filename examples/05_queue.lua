-- Tip 5: producer/consumer with a queue (Python: queue.Queue).
-- Items are copied into the queue and out of it, so any value the
-- transfer rules allow can travel: numbers, strings, tables, even other
-- queues (those go by reference).
local loom = require "loom"

local function producer(q)
  q:put("Product")
end

local function consumer(q)
  local product = q:get()
  print(product)
end

local q = loom.Queue()
local t1 = loom.Thread { target = producer, args = { q } }
local t2 = loom.Thread { target = consumer, args = { q } }
t1:start()
t2:start()
t1:join()
t2:join()

-- A little more: a bounded queue between a producer of orders and a
-- consumer that reports back on a second queue; task_done/join says when
-- every order has been handled, close() ends the consumer's loop.
local orders, receipts = loom.Queue(2), loom.Queue()

local worker = loom.thread(function(inbox, outbox)
  local total = 0
  for order in inbox:iter() do -- ends when inbox is closed and drained
    total = total + order.qty * order.price
    outbox:put(("%d x %s"):format(order.qty, order.item))
    inbox:task_done()
  end
  return total
end, orders, receipts)

local menu = {
  { item = "apple", qty = 3, price = 2 },
  { item = "pear", qty = 1, price = 5 },
  { item = "plum", qty = 4, price = 1 },
}
for _, order in ipairs(menu) do
  orders:put(order) -- blocks while two orders are already waiting
end
orders:join()   -- every order has been marked done
orders:close()  -- no more orders: the worker's loop ends

for _ = 1, #menu do print("handled: " .. receipts:get()) end
print("total: " .. worker:result())
