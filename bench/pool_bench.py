# Python peer of bench/pool_bench.lua: one round of one workload on a
# concurrent.futures.ThreadPoolExecutor(max_workers=2); prints "name value"
# lines (the wall time of each trip or repetition).
#   trip N          N submit -> result round trips of a tiny task
#   burst N REPS    N tiny tasks submitted, then all results collected
#   map N REPS      executor.map over N items, every result consumed
#   cpu N ITEMS     the CPU-bound work serially, then mapped on the pool
import sys
import time
from concurrent.futures import ThreadPoolExecutor


def double(x):
    return x * 2


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


def warm(ex):
    """Starts both workers and runs the function a few times."""
    for f in [ex.submit(double, i) for i in range(100)]:
        f.result()


def trip(ex, n):
    for i in range(n):
        t0 = time.perf_counter()
        ex.submit(double, i).result()
        print("trip%d" % (i + 1), time.perf_counter() - t0)


def burst(ex, n, reps):
    for r in range(reps):
        t0 = time.perf_counter()
        fs = [ex.submit(double, i) for i in range(1, n + 1)]
        s = 0
        for f in fs:
            s += f.result()
        dt = time.perf_counter() - t0
        assert s == n * (n + 1)
        print("burst%d" % (r + 1), dt)


def map_(ex, n, reps):
    items = list(range(1, n + 1))
    for r in range(reps):
        t0 = time.perf_counter()
        s = 0
        for v in ex.map(double, items):
            s += v
        dt = time.perf_counter() - t0
        assert s == n * (n + 1)
        print("map%d" % (r + 1), dt)


def cpu(ex, n, k):
    items = [n] * k
    t0 = time.perf_counter()
    serial = [count_primes(x) for x in items]
    print("serial", time.perf_counter() - t0)
    t0 = time.perf_counter()
    parallel = list(ex.map(count_primes, items))
    print("parallel", time.perf_counter() - t0)
    assert serial == parallel


if __name__ == "__main__":
    mode, args = sys.argv[1], [int(a) for a in sys.argv[2:]]
    with ThreadPoolExecutor(max_workers=2) as ex:
        warm(ex)
        {"trip": trip, "burst": burst, "map": map_, "cpu": cpu}[mode](ex, *args)
