# Python peer of bench/async_bench.lua: prints "name value" lines.
# With the argument "sleepers N" it runs only N tasks sleeping 10 ms and
# prints the peak resident memory (its own process), for the memory row.
import asyncio
import sys
import time
from concurrent.futures import ThreadPoolExecutor


def peak_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


async def sleepers(n):
    ts = [asyncio.create_task(asyncio.sleep(0.01)) for _ in range(n)]
    for t in ts:
        await t


def time_sleepers(n):
    t0 = time.perf_counter()
    asyncio.run(sleepers(n))
    return time.perf_counter() - t0


async def switches(tasks, each):
    count = 0

    async def spin():
        nonlocal count
        for _ in range(each):
            await asyncio.sleep(0)
            count += 1
    await asyncio.gather(*(spin() for _ in range(tasks)))
    return count


def switch_rate():
    t0 = time.perf_counter()
    n = asyncio.run(switches(4, 25000))
    return n / (time.perf_counter() - t0)


def tiny(x):
    return x


async def bridge(n, pool):
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(pool, tiny, 0)
    t0 = time.perf_counter()
    for i in range(n):
        await loop.run_in_executor(pool, tiny, i)
    return (time.perf_counter() - t0) / n


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "sleepers":
        n = int(sys.argv[2])
        base = peak_kb()
        asyncio.run(sleepers(n))
        print("peak_kb", peak_kb() - base)
        return
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    for _ in range(rounds):
        print("sleepers10k", time_sleepers(10000))
        print("switch_rate", switch_rate())
        with ThreadPoolExecutor(max_workers=2) as pool:
            print("bridge", asyncio.run(bridge(2000, pool)))
    print("sleepers100k", time_sleepers(100000))


main()
