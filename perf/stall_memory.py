#!/usr/bin/env python3
"""Server memory under sessions that stall in the middle of a message: each
of --sessions clients starts a --message-mb message (MAIL SIZE=, RCPT, DATA),
sends --stall-fraction of it, and stops sending. Prints the server's RSS
before, with every session stalled, its peak (VmHWM) and after the clients
left, plus how many sessions got into DATA and how many were refused at
MAIL (452 4.3.1 once the shard's inbound_data_budget is spent).

With --data-first, every session gets its 354 before any content is sent
(so none is refused at MAIL: sessions whose content does not fit the budget
must drop it and read on).

usage: perf/stall_memory.py [--bin target/release/impulse] [--sessions 1000]
       [--message-mb 10] [--stall-fraction 0.5] [--budget 256M] [--port 27026]
       [--data-first]
Starts its own server (1 shard) on 127.0.0.1 with suspend_delivery, opens
the sessions from 127.0.0.2..127.x.y.z source addresses, measures, stops.
Needs root (io_uring memlock) and an open-files limit above 2 x --sessions.
"""
import argparse, os, resource, signal, socket, subprocess, sys, tempfile, threading, time

LINE = b"x" * 998 + b"\r\n"


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def settle_rss(pid, quiet_s=2.0, limit_s=60.0):
    """RSS once it has stopped moving for quiet_s (the server read all)."""
    start, last, since = time.time(), -1, time.time()
    while time.time() - start < limit_s:
        now = status_kib(pid, "VmRSS")
        if now != last:
            last, since = now, time.time()
        elif time.time() - since >= quiet_s:
            break
        time.sleep(0.2)
    return last


def reply(s):
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            return data.decode(errors="replace")
        data += chunk
        lines = data.split(b"\r\n")
        if len(lines) >= 2 and len(lines[-2]) >= 4 and lines[-2][3:4] == b" ":
            return data.decode(errors="replace")


def start_message(i, port, size):
    """Opens one session up to the 354; returns (socket, outcome)."""
    src = f"127.{1 + (i // 200) % 250}.{(i // 50000) % 250}.{2 + i % 200}"
    s = socket.socket()
    s.settimeout(120)
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    reply(s)
    s.sendall(b"EHLO stall.test\r\n")
    reply(s)
    s.sendall(f"MAIL FROM:<a@example.org> SIZE={size}\r\n".encode())
    r = reply(s)
    if not r.startswith("250"):
        return s, "mail:" + r[:9]
    s.sendall(b"RCPT TO:<b@example.net>\r\nDATA\r\n")
    r = reply(s)
    if "354" not in r:
        r = r + reply(s)
    if "354" not in r:
        return s, "data:" + r[:9]
    return s, "stalled"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/impulse")
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--message-mb", type=float, default=10)
    ap.add_argument("--stall-fraction", type=float, default=0.5)
    ap.add_argument("--budget", default=None, help="inbound_data_budget (default: the server's)")
    ap.add_argument("--port", type=int, default=27026)
    ap.add_argument("--data-first", action="store_true", help="all sessions reach DATA before any content")
    a = ap.parse_args()
    want = 2 * a.sessions + 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    d = tempfile.mkdtemp()
    conf = os.path.join(d, "c.toml")
    size = int(a.message_mb * 1024 * 1024)
    budget = f'inbound_data_budget = "{a.budget}"\n' if a.budget else ""
    with open(conf, "w") as f:
        f.write(f"""[global]
shards = 1
spoolbase = "{d}/spool"
log_dir = "{d}/log"
suspend_delivery = true
listener_sessions = 1000000
max_connections_per_ip = 0
message_size = {2 * size}
{budget}[listener.esmtp]
listen = ["127.0.0.1:{a.port}"]
""")
    srv = subprocess.Popen([a.bin, "serve", "--config", conf], stderr=subprocess.PIPE, text=True)
    try:
        run(a, srv, size)
    finally:
        srv.send_signal(signal.SIGTERM)
        srv.wait(timeout=120)


def run(a, srv, size):
    while True:
        line = srv.stderr.readline()
        if not line or "serving with" in line:
            break
    threading.Thread(target=lambda: [None for _ in srv.stderr], daemon=True).start()
    time.sleep(0.5)
    before = status_kib(srv.pid, "VmRSS")
    stall = int(size * a.stall_fraction)
    payload = LINE * (stall // len(LINE) + 1)
    socks, outcomes, t0 = [], {}, time.time()
    in_data = []
    for i in range(a.sessions):
        try:
            s, what = start_message(i, a.port, size)
            socks.append(s)
            if what == "stalled":
                if a.data_first:
                    in_data.append(s)
                else:
                    s.sendall(payload[:stall])
        except OSError as e:
            what = f"error:{e.__class__.__name__}"
        outcomes[what] = outcomes.get(what, 0) + 1
    for s in in_data:
        try:
            s.sendall(payload[:stall])
        except OSError as e:
            what = f"send-error:{e.__class__.__name__}"
            outcomes[what] = outcomes.get(what, 0) + 1
    stalled = settle_rss(srv.pid)
    peak = status_kib(srv.pid, "VmHWM")
    print(f"sessions: {a.sessions}, message {size} octets, each stalled after {stall} "
          f"({time.time() - t0:.1f}s to open and send)")
    print("outcomes:", ", ".join(f"{k}={v}" for k, v in sorted(outcomes.items())))
    print(f"server RSS: {before} KiB before, {stalled} KiB with all sessions stalled, "
          f"peak {peak} KiB")
    for s in socks:
        s.close()
    print(f"server RSS after the clients left: {settle_rss(srv.pid)} KiB")


if __name__ == "__main__":
    main()
