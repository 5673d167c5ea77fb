# Python peer of bench/thread_bench.lua: prints "name value" lines.
import multiprocessing as mp
import pickle
import sys
import threading
import time


def timings(n, fn):
    """The wall time of each of n calls of fn."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def best(reps, fn):
    return min(timings(reps, fn))


def noop():
    pass


def spawn_join(n):
    def run():
        for _ in range(n):
            t = threading.Thread(target=noop)
            t.start()
            t.join()
    return best(3, run) / n


def count_primes(n):
    c = 0
    for i in range(2, n + 1):
        p = True
        d = 2
        while d * d <= i:
            if i % d == 0:
                p = False
                break
            d += 1
        if p:
            c += 1
    return c


def cpu_speedup(n, runs=4):
    def par():
        ts = [threading.Thread(target=count_primes, args=(n,)) for _ in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    serial = parallel = float("inf")
    for _ in range(runs):  # alternating, as the Lua side does
        serial = min(serial, best(1, lambda: (count_primes(n), count_primes(n))))
        parallel = min(parallel, best(1, par))
    return serial / parallel


def child(conn):
    while True:
        data = conn.recv()  # unpickles in this process
        if data is None:
            return
        conn.send(len(data))


def records():
    return [{"x": i, "y": "s%d" % i} for i in range(10000)]


def copy_times(n):
    """Times n round trips of the records through pickle.dumps + loads."""
    data = records()
    proto = pickle.HIGHEST_PROTOCOL
    return timings(n, lambda: pickle.loads(pickle.dumps(data, proto)))


def send_trips(n):
    """Times n trips of the records through a Pipe to a child process that
    unpickles them and replies (after one trip to warm up)."""
    data = records()
    parent, kid = mp.Pipe()
    p = mp.Process(target=child, args=(kid,))
    p.start()

    def trip():
        parent.send(data)
        parent.recv()
    trip()
    times = timings(n, trip)
    parent.send(None)
    p.join()
    return times


def rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])


def idle_kb(n=200):
    ev, started = threading.Event(), threading.Semaphore(0)

    def wait():
        started.release()
        ev.wait()
    before = rss_kb()
    ts = [threading.Thread(target=wait) for _ in range(n)]
    for t in ts:
        t.start()
    for _ in range(n):
        started.acquire()
    after = rss_kb()
    ev.set()
    for t in ts:
        t.join()
    return (after - before) / n


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("send", "copy"):
        timed = send_trips if sys.argv[1] == "send" else copy_times
        for i, t in enumerate(timed(int(sys.argv[2])), 1):
            print("trip%d" % i, t)
        sys.exit(0)
    spawn_n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    primes_n = int(sys.argv[2]) if len(sys.argv) > 2 else 100000
    print("spawn_join", spawn_join(spawn_n))
    print("cpu_speedup", cpu_speedup(primes_n))
    print("idle_kb", idle_kb())
