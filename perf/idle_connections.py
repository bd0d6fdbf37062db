#!/usr/bin/env python3
"""How many idle SMTP sessions one impulse shard holds, and the user-space
memory each costs (server RSS growth / sessions). Kernel socket buffers are
not in RSS; they are reported separately from /proc/net/sockstat.

usage: perf/idle_connections.py [--bin target/release/impulse] [--count 10000]
Starts its own server (1 shard) on 127.0.0.1, opens --count connections from
127.0.0.2..127.0.0.N source addresses, reads each banner, measures, stops.
"""
import argparse, os, resource, selectors, signal, socket, subprocess, sys, tempfile, threading, time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def server_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def sockstat():
    with open("/proc/net/sockstat") as f:
        return f.read().strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/impulse")
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--port", type=int, default=27025)
    a = ap.parse_args()
    want = a.count + 4096
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(want, hard)))
    except (ValueError, OSError) as e:
        print(f"cannot raise the open-files limit to {want}: {e}", file=sys.stderr)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print("open-files limit:", resource.getrlimit(resource.RLIMIT_NOFILE), file=sys.stderr)
    d = tempfile.mkdtemp()
    conf = os.path.join(d, "c.toml")
    with open(conf, "w") as f:
        f.write(f"""[global]
shards = 1
spoolbase = "{d}/spool"
log_dir = "{d}/log"
listener_sessions = 1000000
max_connections_per_ip = 0
[listener.esmtp]
listen = ["127.0.0.1:{a.port}"]
idle_time = 3600
""")
    srv = subprocess.Popen([a.bin, "serve", "--config", conf], stderr=subprocess.PIPE, text=True)
    try:
        run(a, srv)
    finally:
        srv.send_signal(signal.SIGTERM)
        srv.wait(timeout=120)


def run(a, srv):
    while True:
        line = srv.stderr.readline()
        if not line or "serving with" in line:
            break
    # Keep draining the server's log so it never waits on a full pipe.
    threading.Thread(target=lambda: [None for _ in srv.stderr], daemon=True).start()
    time.sleep(0.5)
    base = rss_kib(srv.pid)
    socks, opened = [], 0
    sel = selectors.DefaultSelector()
    t0 = time.time()
    try:
        for i in range(a.count):
            src = f"127.{1 + (i // 200) % 250}.{(i // 50000) % 250}.{2 + i % 200}"
            s = socket.socket()
            s.bind((src, 0))
            s.connect(("127.0.0.1", a.port))
            socks.append(s)
            opened += 1
    except OSError as e:
        print(f"stopped opening at {opened}: {e}", file=sys.stderr)
    got = 0
    for s in socks:
        s.settimeout(30)
        try:
            if s.recv(512).startswith(b"220"):
                got += 1
        except OSError:
            pass
    time.sleep(1.0)
    after = rss_kib(srv.pid)
    per = (after - base) * 1024 / max(got, 1)
    print(f"idle sessions held: {got} of {opened} opened in {time.time() - t0:.1f}s")
    print(f"server RSS: {base} KiB before, {after} KiB after => {per:.0f} bytes per idle session (user space)")
    print("kernel:", sockstat().replace("\n", " | "))
    print(f"server descriptors: {server_fds(srv.pid)}")
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
