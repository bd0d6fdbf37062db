#!/usr/bin/env bash
# perf/queue_heap.sh — heap of a deferred queue: N 4 KiB messages (one recipient) are
# queued through smtp-source into `impulse serve` with suspend_delivery, which then
# stops; impulse serves the spool again with a route nothing listens on, so every
# message is deferred. Prints VmRSS at "serving with" and once the RETRY records are
# written, then glibc malloc_stats() of that process (called through gdb, which ends
# it) per arena: system bytes (what the heap holds) against in-use bytes. Also the
# largest mappings. Run as root after `cargo build --release`. Env: N (200000), BIN.
# Needs: smtp-source (Postfix), gdb, python3. Loopback only.
set -euo pipefail
N=${N:-200000} BIN=$(readlink -f "${BIN:-target/release/impulse}")
W=$(mktemp -d /var/tmp/queueheap.XXXXXX); trap 'rm -rf "$W"' EXIT
export PATH=$PATH:/usr/sbin
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
P=$(port) D=$(port)
conf() { cat > $W/i.toml <<C
[global]
shards = 1
spoolbase = "$W/spool"
log_dir = "$W/log"
hostname = "q.test"
$1
tls = "no"
retry_interval = 600
connect_timeout = 1
[listener.esmtp]
listen = ["127.0.0.1:$P"]
C
}
conf 'suspend_delivery = true'
$BIN serve --config $W/i.toml 2>$W/fill.log & pid=$!
until grep -q 'serving with' $W/fill.log; do sleep 0.05; done
smtp-source -d -s 50 -l 4096 -m $N -f f@example.org -t q@example.net 127.0.0.1:$P
kill -TERM $pid; wait $pid || true
conf "routes = [\"127.0.0.1:$D\"]"
$BIN serve --config $W/i.toml 2>$W/serve.log & pid=$!
until grep -q 'serving with' $W/serve.log; do sleep 0.05; done
echo "serving rss_kib=$(awk '/VmRSS/{print $2}' /proc/$pid/status)"
until grep -q 'settled as Deferred' $W/serve.log; do sleep 0.05; done
w=0; while :; do sleep 2; n=$(awk '/write_bytes/{print $2}' /proc/$pid/io); [ "$n" = "$w" ] && break; w=$n; done
echo "deferred rss_kib=$(awk '/VmRSS/{print $2}' /proc/$pid/status) hwm_kib=$(awk '/VmHWM/{print $2}' /proc/$pid/status)"
echo "largest mappings (Rss KiB, name):"
awk '/^[0-9a-f]+-[0-9a-f]+ /{name=$6} /^Rss:/{if ($2>4000) print $2, name}' /proc/$pid/smaps | sort -n | tail -8
gdb -p $pid -batch -ex 'call (void)malloc_stats()' >/dev/null 2>&1 || true
sleep 0.5
grep -A3 'Arena\|Total' $W/serve.log | grep -v INFO | head -40
kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null || true
