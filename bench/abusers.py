#!/usr/bin/env python3
"""Abusive HTTP clients against one node, for bench/abuse.sh: slowloris connections that send
one header line every few seconds (and reconnect when the node closes them), requests with
oversized heads, and requests announcing oversized bodies. Runs until killed (SIGTERM), then
prints what the node did with them.

    bench/abusers.py HOST PORT [SLOW_CLIENTS] [LINE_EVERY_S]
"""
import asyncio
import signal
import sys

host, port = sys.argv[1], int(sys.argv[2])
slow_clients = int(sys.argv[3]) if len(sys.argv) > 3 else 200
line_every = float(sys.argv[4]) if len(sys.argv) > 4 else 3.0
counts = {"slow_closed": 0, "slow_served": 0, "431": 0, "413": 0, "other": 0}


async def slowloris(i):
    while True:
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"GET /fn/hello/slow HTTP/1.1\r\nhost: x\r\n")
            await writer.drain()
            n = 0
            while True:
                try:
                    got = await asyncio.wait_for(reader.read(1024), line_every)
                except asyncio.TimeoutError:
                    writer.write(f"x-slow-{n}: {i}\r\n".encode())
                    await writer.drain()
                    n += 1
                    continue
                counts["slow_served" if got else "slow_closed"] += 1
                break
            writer.close()
        except (ConnectionError, OSError):
            counts["slow_closed"] += 1


async def one_shot(request, expect):
    try:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(64), 10)
        writer.close()
        status = answer[9:12].decode(errors="replace")
        counts[status if status == expect else "other"] += 1
    except (ConnectionError, OSError, asyncio.TimeoutError):
        counts["other"] += 1


async def big_heads():
    head = b"GET /fn/hello/big HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * (200 << 10) + b"\r\n\r\n"
    while True:
        await one_shot(head, "431")
        await asyncio.sleep(0.05)


async def big_bodies():
    head = (b"POST /fn/hello/big HTTP/1.1\r\nhost: x\r\ncontent-length: 2147483648\r\n\r\n"
            + b"b" * (64 << 10))
    while True:
        await one_shot(head, "413")
        await asyncio.sleep(0.05)


async def main():
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    tasks = [asyncio.create_task(slowloris(i)) for i in range(slow_clients)]
    tasks += [asyncio.create_task(big_heads()), asyncio.create_task(big_bodies())]
    await stop.wait()
    for t in tasks:
        t.cancel()
    print(" ".join(f"{k}={v}" for k, v in counts.items()), flush=True)


asyncio.run(main())
