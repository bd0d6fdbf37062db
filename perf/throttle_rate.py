#!/usr/bin/env python3
"""perf/throttle_rate.py — a throttled domain under full load, for minutes.

impulse (2 shards, the release build) gets a backlog of mail for one domain
on both shards, with max_outbound_connections = CONNS and
outbound_throttle_messages = "RATE/PERIOD"; a recording sink on loopback
notes when each message is accepted and how many connections are open.
Prints the fewest and most messages in any window of PERIOD seconds (one
window starting every second of the run), their deviation from RATE, and
the peak concurrency at the sink.

Usage: perf/throttle_rate.py [--minutes 3] [--rate 600] [--period 60]
                             [--conns 5] [--bin target/release/impulse]
"""

import argparse
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time


class Sink:
    """A threaded SMTP sink that records acceptance times and concurrency."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.accepted = []
        self.open = 0
        self.peak = 0
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            conn, _ = self.sock.accept()
            with self.lock:
                self.open += 1
                self.peak = max(self.peak, self.open)
            threading.Thread(target=self.session, args=(conn,), daemon=True).start()

    def session(self, conn):
        f = conn.makefile("rb")
        try:
            conn.sendall(b"220 sink\r\n")
            while True:
                line = f.readline()
                if not line:
                    return
                cmd = line.strip().upper()
                if cmd.startswith(b"EHLO") or cmd.startswith(b"HELO"):
                    conn.sendall(b"250 sink\r\n")
                elif cmd == b"DATA":
                    conn.sendall(b"354 go\r\n")
                    while f.readline() not in (b".\r\n", b".\n", b""):
                        pass
                    with self.lock:
                        self.accepted.append(time.monotonic())
                    conn.sendall(b"250 2.0.0 ok\r\n")
                elif cmd == b"QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                else:
                    conn.sendall(b"250 ok\r\n")
        except OSError:
            pass
        finally:
            with self.lock:
                self.open -= 1
            conn.close()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def inject(port, count, clients):
    def one(k):
        c = smtplib.SMTP("127.0.0.1", port, timeout=60)
        c.ehlo("load")
        for i in range(k, count, clients):
            c.sendmail("a@example.com", [f"u{i}@example.net"], f"Subject: {i}\r\n\r\nbody {i}\r\n")
        c.quit()

    threads = [threading.Thread(target=one, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--minutes", type=float, default=3)
    ap.add_argument("--rate", type=int, default=600)
    ap.add_argument("--period", type=int, default=60)
    ap.add_argument("--conns", type=int, default=5)
    ap.add_argument("--bin", default="target/release/impulse")
    a = ap.parse_args()
    sink = Sink()
    work = tempfile.mkdtemp(prefix="impulse-throttle.")
    port = free_port()
    cfg = os.path.join(work, "impulse.toml")
    with open(cfg, "w") as f:
        f.write(f"""[global]
shards = 2
spoolbase = "{work}/spool"
log_dir = "{work}/log"
relay_domains = ["example.net"]
[listener.esmtp]
listen = ["127.0.0.1:{port}"]
max_connections_per_ip = 0
[domain."example.net"]
routes = ["127.0.0.1:{sink.port}"]
tls = "no"
max_outbound_connections = {a.conns}
outbound_throttle_messages = "{a.rate}/{a.period}"
""")
    log = open(os.path.join(work, "log"), "w")
    imp = subprocess.Popen([a.bin, "serve", "--config", cfg], stderr=log, stdout=subprocess.DEVNULL)
    try:
        for _ in range(400):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        run = a.minutes * 60
        # More than the run can deliver, on both shards, before it starts.
        backlog = int(a.rate * run / a.period * 1.2) + 100
        t0 = time.monotonic()
        inject(port, backlog, 8)
        print(f"injected {backlog} messages in {time.monotonic() - t0:.1f}s", file=sys.stderr)
        time.sleep(max(0.0, run - (time.monotonic() - t0)))
        with sink.lock:
            times = sorted(sink.accepted)
            peak = sink.peak
    finally:
        imp.send_signal(signal.SIGTERM)
        imp.wait(timeout=60)
        log.close()
    stops = [l for l in open(os.path.join(work, "log")) if " stopped: " in l]
    shutil.rmtree(work, ignore_errors=True)
    if not times:
        print("RESULT no messages arrived")
        return 1
    first, last = times[0], times[-1]
    counts = []
    start = first
    while start + a.period <= last:
        counts.append(sum(1 for t in times if start <= t < start + a.period))
        start += 1.0
    lo, hi = min(counts), max(counts)
    dev = lambda n: (n - a.rate) * 100.0 / a.rate
    for l in stops:
        print(l.strip().split("] ")[-1], file=sys.stderr)
    print(
        f"RESULT rate={a.rate}/{a.period}s conns={a.conns} delivered={len(times)} "
        f"span_s={last - first:.1f} windows={len(counts)} fewest={lo} ({dev(lo):+.2f}%) "
        f"most={hi} ({dev(hi):+.2f}%) peak_connections={peak}"
    )
    return 0 if abs(dev(lo)) <= 2 and abs(dev(hi)) <= 2 and peak <= a.conns else 1


if __name__ == "__main__":
    sys.exit(main())
