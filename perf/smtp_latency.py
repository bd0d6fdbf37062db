#!/usr/bin/env python3
"""Open-loop SMTP latency probe: time from sending the final dot to the 250.

usage: smtp_latency.py HOST PORT RATE_PER_S SECONDS [SESSIONS=50] [SIZE=4096]

Each of SESSIONS connections sends messages on a fixed schedule (RATE /
SESSIONS per second each, staggered). Prints achieved rate and percentiles
of (final dot -> 250 reply) in microseconds; messages that started late
because the previous one on the same connection was still running are
counted ("late") so coordinated omission is visible.
"""
import asyncio, sys, time

async def session(host, port, interval, offset, end, body, lat, stats):
    r, w = await asyncio.open_connection(host, port)
    async def reply():
        while True:
            line = await r.readline()
            if not line:
                raise ConnectionError("closed")
            if len(line) < 4 or line[3:4] != b"-":
                return line
    await reply()
    w.write(b"EHLO latency.test\r\n"); await w.drain(); await reply()
    nxt = time.monotonic() + offset
    while nxt < end:
        now = time.monotonic()
        if nxt > now:
            await asyncio.sleep(nxt - now)
        else:
            stats["late"] += 1
        nxt += interval
        w.write(b"MAIL FROM:<lat@example.org>\r\nRCPT TO:<sink@example.net>\r\nDATA\r\n")
        await w.drain()
        for _ in range(3):
            await reply()
        w.write(body)
        t0 = time.perf_counter()
        await w.drain()
        rep = await reply()
        dt = time.perf_counter() - t0
        if rep.startswith(b"250"):
            lat.append(dt)
        else:
            stats["failed"] += 1
    w.write(b"QUIT\r\n"); await w.drain()
    w.close()

async def main():
    host, port, rate, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
    sessions = int(sys.argv[5]) if len(sys.argv) > 5 else 50
    size = int(sys.argv[6]) if len(sys.argv) > 6 else 4096
    line = b"x" * 76 + b"\r\n"
    body = b"Subject: latency\r\n\r\n" + line * (size // len(line)) + b".\r\n"
    interval = sessions / rate
    lat, stats = [], {"late": 0, "failed": 0}
    start = time.monotonic()
    end = start + secs
    await asyncio.gather(*(session(host, port, interval, interval * i / sessions, end, body, lat, stats)
                           for i in range(sessions)))
    el = time.monotonic() - start
    lat.sort()
    pct = lambda p: lat[min(len(lat) - 1, int(len(lat) * p))] * 1e6 if lat else 0
    print(f"LATENCY target_rate={rate:.0f} achieved_rate={len(lat)/el:.0f} msgs={len(lat)} late={stats['late']} "
          f"failed={stats['failed']} dot_to_250_us p50={pct(0.5):.0f} p90={pct(0.9):.0f} p99={pct(0.99):.0f} "
          f"p999={pct(0.999):.0f} max={pct(1.0):.0f}")

asyncio.run(main())
