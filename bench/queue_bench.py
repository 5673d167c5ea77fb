# Python peer of bench/queue_bench.lua: prints "name value" lines.
import queue
import sys
import threading
import time

N, BOUNCES, UNCONTENDED, BATCH = (int(a) for a in sys.argv[1:5])
STR = "x" * 100


def best(reps, fn):
    return min(fn() for _ in range(reps))


def producer(q, n, item):
    if item is None:
        for i in range(n):
            q.put(i)
    else:
        for _ in range(n):
            q.put(item)


def one_to_one(item):
    def run():
        q = queue.Queue()
        t0 = time.perf_counter()
        t = threading.Thread(target=producer, args=(q, N, item))
        t.start()
        for _ in range(N):
            q.get()
        dt = time.perf_counter() - t0
        t.join()
        return dt
    return N / best(3, run)


def echo(inq, outq, n):
    for _ in range(n):
        outq.put(inq.get())


def pingpong():
    ping, pong = queue.Queue(), queue.Queue()
    t = threading.Thread(target=echo, args=(ping, pong, BOUNCES))
    t.start()
    ping.put(0)
    pong.get()
    t0 = time.perf_counter()
    for i in range(2, BOUNCES + 1):
        ping.put(i)
        pong.get()
    dt = time.perf_counter() - t0
    t.join()
    return dt / (BOUNCES - 1)


def uncontended():
    q = queue.Queue()
    t0 = time.perf_counter()
    for i in range(UNCONTENDED):
        q.put(i)
        q.get()
    return (time.perf_counter() - t0) / UNCONTENDED


def batch_producer(q, n, batch):
    items = list(range(batch))
    for _ in range(n // batch):
        q.put(list(items))


def batches():
    q = queue.Queue(16)
    t0 = time.perf_counter()
    t = threading.Thread(target=batch_producer, args=(q, N, BATCH))
    t.start()
    got = 0
    while got < N:
        got += len(q.get())
    dt = time.perf_counter() - t0
    t.join()
    return dt


print("int_rate", one_to_one(None))
print("str_rate", one_to_one(STR))
print("pingpong", best(3, pingpong))
print("uncontended", best(3, uncontended))
print("batch_rate", N / best(3, batches))
