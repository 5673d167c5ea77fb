# Python peer of bench/net_bench.lua: prints "name value" lines.
#   echo CLIENTS TRIPS: an asyncio echo server and CLIENTS clients in this
#     process, each doing TRIPS round trips of 64-byte messages; prints the
#     round trips per second.
#   idle N: N connections (both ends in this process) idle after one round
#     trip; prints the resident memory they added, per connection, in KB.
import asyncio
import sys
import time

MSG = b"x" * 63 + b"\n"


def rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def handle(reader, writer):
    try:
        while True:
            data = await reader.readexactly(64)
            writer.write(data)
            await writer.drain()
    except asyncio.IncompleteReadError:
        pass
    writer.close()


async def client(port, trips):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(trips):
        writer.write(MSG)
        await writer.drain()
        got = await reader.readexactly(64)
        assert got == MSG
    writer.close()
    await writer.wait_closed()


async def echo(clients, trips):
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    t0 = time.perf_counter()
    await asyncio.gather(*(client(port, trips) for _ in range(clients)))
    dt = time.perf_counter() - t0
    server.close()
    await server.wait_closed()
    return clients * trips / dt


async def idle(n):
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    # warm up the machinery once, so the figure is per connection
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(MSG)
    await r.readexactly(64)
    base = rss_kb()
    conns = []
    for _ in range(n):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(MSG)
        await r.readexactly(64)
        conns.append((r, w))
    await asyncio.sleep(0.05)
    per = (rss_kb() - base) / n
    for r, w in conns:
        w.close()
    server.close()
    await asyncio.sleep(0.2)  # the handlers see the ends and return
    return per


if __name__ == "__main__":
    if sys.argv[1] == "echo":
        print("echo_rate", asyncio.run(echo(int(sys.argv[2]), int(sys.argv[3]))))
    else:
        print("idle_kb", asyncio.run(idle(int(sys.argv[2]))))
