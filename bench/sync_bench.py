# Python peer of bench/sync_bench.lua: prints "name value" lines.
import sys
import threading
import time

N, CONTENDED, BOUNCES = (int(a) for a in sys.argv[1:4])


def best(reps, fn):
    return min(fn() for _ in range(reps))


def timed(fn):
    def run():
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    return run


def uncontended(make):
    def body():
        lock = make()
        for _ in range(N):
            lock.acquire()
            lock.release()
    return best(3, timed(body)) / N


def guard_scope():
    lock = threading.Lock()
    for _ in range(N):
        with lock:
            pass


def hammer(lock, n, go):
    go.wait()
    for _ in range(n):
        lock.acquire()
        lock.release()


def two_threads(target, *args):
    def run():
        go = threading.Event()
        ts = [threading.Thread(target=target, args=args + (go,)) for _ in range(2)]
        for t in ts:
            t.start()
        t0 = time.perf_counter()
        go.set()
        for t in ts:
            t.join()
        return time.perf_counter() - t0
    return run


def contended():
    return best(3, lambda: two_threads(hammer, threading.Lock(), CONTENDED)()) / (2 * CONTENDED)


def event_echo(ping, pong, n):
    for _ in range(n):
        ping.wait()
        ping.clear()
        pong.set()


def event_pingpong():
    ping, pong = threading.Event(), threading.Event()
    t = threading.Thread(target=event_echo, args=(ping, pong, BOUNCES))
    t.start()
    t0 = time.perf_counter()
    for _ in range(BOUNCES):
        ping.set()
        pong.wait()
        pong.clear()
    dt = time.perf_counter() - t0
    t.join()
    return dt / BOUNCES


def sem_echo(ping, pong, n):
    for _ in range(n):
        ping.acquire()
        pong.release()


def sem_pingpong():
    ping, pong = threading.Semaphore(0), threading.Semaphore(0)
    t = threading.Thread(target=sem_echo, args=(ping, pong, BOUNCES))
    t.start()
    t0 = time.perf_counter()
    for _ in range(BOUNCES):
        ping.release()
        pong.acquire()
    dt = time.perf_counter() - t0
    t.join()
    return dt / BOUNCES


def bump(lock, d, n, go):
    go.wait()
    for _ in range(n):
        with lock:
            d["n"] += 1


def shared_incr():
    def run():
        d = {"n": 0}
        dt = two_threads(bump, threading.Lock(), d, CONTENDED)()
        assert d["n"] == 2 * CONTENDED
        return dt
    return best(3, run) / (2 * CONTENDED)


print("uncontended_lock", uncontended(threading.Lock))
print("uncontended_rlock", uncontended(threading.RLock))
print("guard_scope", best(3, timed(guard_scope)) / N)
print("contended", contended())
print("event_pingpong", best(3, event_pingpong))
print("sem_pingpong", best(3, sem_pingpong))
print("shared_incr", shared_incr())
