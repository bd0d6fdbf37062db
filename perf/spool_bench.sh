#!/usr/bin/env bash
# spool_bench.sh - spool figures for perf/RESULTS.md, all from one run:
#   1. the disk's raw durable-write limits (/work/shared/bench/disk_limits.sh)
#   2. durable acknowledged 4 KiB messages/s through SMTP (Postfix smtp-source
#      -> impulse serve), shards=1 and shards=2
#   3. p99 final-dot -> 250 latency at half that rate (perf/smtp_latency.py,
#      an open-loop Python asyncio client)
#   4. recovery time and memory of 1,000,000 queued 4 KiB messages
#      (examples/spool_fill fills the spool, then `impulse serve` starts on it)
# Env: MSGS (smtp-source messages, 100000), SESSIONS (100), LAT_SECS (10),
#      QUEUED (1000000), DISK_RUNTIME (5 s per disk test, 0 skips),
#      COLD=1 also measures recovery after dropping the page cache (global!).
# Needs: root (io_uring memlock), smtp-source, python3, fio; builds release.
set -euo pipefail
cd "$(dirname "$0")/.."
MSGS=${MSGS:-100000} SESSIONS=${SESSIONS:-100} LAT_SECS=${LAT_SECS:-10}
QUEUED=${QUEUED:-1000000} DISK_RUNTIME=${DISK_RUNTIME:-5} COLD=${COLD:-0}
TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release --bin impulse --example spool_fill >&2
BIN=$TARGET/release/impulse FILL=$TARGET/release/examples/spool_fill
WORK=$(mktemp -d /var/tmp/spoolbench.XXXXXX)
PID=
cleanup() { [ -n "$PID" ] && kill -9 "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
ulimit -l unlimited 2>/dev/null || true

echo "MACHINE cpus=$(nproc) cpu=\"$(lscpu | sed -n 's/^Model name: *//p')\" mem_mib=$(free -m | awk '/Mem:/{print $2}') kernel=$(uname -r) fs=$(findmnt -no FSTYPE -T "$WORK") dev=$(findmnt -no SOURCE -T "$WORK")"
if [ "$DISK_RUNTIME" != 0 ]; then DIR=/var/tmp RUNTIME=$DISK_RUNTIME /work/shared/bench/disk_limits.sh; fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# start SHARDS SPOOLBASE -> sets PID, PORT, and SECS (seconds until "serving with")
start() {
  PORT=$(free_port)
  cat > "$WORK/impulse.toml" <<CONF
[global]
shards = $1
spoolbase = "$2"
log_dir = "$2/log"
hostname = "bench.test"
# Receive-only measurement: queue, never deliver (no DNS, no outbound traffic).
suspend_delivery = true
[listener.esmtp]
listen = ["127.0.0.1:$PORT"]
max_connections_per_ip = 10000
CONF
  local t0; t0=$(date +%s.%N)
  "$BIN" serve --config "$WORK/impulse.toml" > /dev/null 2> "$WORK/serve.log" & PID=$!
  until grep -q "serving with" "$WORK/serve.log"; do
    kill -0 "$PID" 2>/dev/null || { cat "$WORK/serve.log" >&2; exit 1; }
    sleep 0.01
  done
  SECS=$(echo "$(date +%s.%N) - $t0" | bc)
}
stop() { kill -TERM "$PID"; wait "$PID" || true; PID=; }
rss_kib() { awk "/^$1:/{print \$2}" "/proc/$PID/status"; }
spooled() { # live messages over all shards of spoolbase $1
  local n=0 d
  for d in "$1"/shard-*; do n=$((n + $("$BIN" spool inspect "$d" | sed -n 's/^live messages: \([0-9]*\).*/\1/p'))); done
  echo $n
}

for shards in 1 2; do
  base=$WORK/smtp$shards
  start "$shards" "$base"
  t0=$(date +%s.%N)
  smtp-source -d -s "$SESSIONS" -l 4096 -m "$MSGS" -f bench@example.org -t sink@example.net "127.0.0.1:$PORT"
  el=$(echo "$(date +%s.%N) - $t0" | bc)
  rate=$(echo "$MSGS / $el" | bc)
  echo "SMTP shards=$shards sessions=$SESSIONS size=4096 msgs=$MSGS secs=$el durable_acked_msgs_per_s=$rate per_shard=$((rate / shards))"
  half=$((rate / 2))
  python3 perf/smtp_latency.py 127.0.0.1 "$PORT" "$half" "$LAT_SECS" 50 4096 | sed "s/^/SMTP shards=$shards /"
  stop
  echo "SPOOLED shards=$shards live_messages=$(spooled "$base") (smtp-source + latency messages, all durable)"
  rm -rf "$base"
done

# Recovery: QUEUED messages split over the shards, filled in parallel.
for shards in 1 2; do
  base=$WORK/rec$shards
  start "$shards" "$WORK/empty$shards"
  empty_rss=$(rss_kib VmRSS); stop
  per=$((QUEUED / shards))
  for ((s = 0; s < shards; s++)); do "$FILL" "$base/shard-$s" "$s" "$per" 4096 & done
  wait
  start "$shards" "$base"
  rss=$(rss_kib VmRSS) hwm=$(rss_kib VmHWM)
  echo "RECOVERY shards=$shards queued=$QUEUED cache=warm start_to_serving_s=$SECS rss_kib=$rss empty_rss_kib=$empty_rss peak_rss_kib=$hwm bytes_per_queued_msg=$(( (rss - empty_rss) * 1024 / QUEUED ))"
  grep -o "recovered [0-9]* message(s)" "$WORK/serve.log" | sed "s/^/RECOVERY shards=$shards /"
  stop
  if [ "$COLD" = 1 ]; then
    sync; echo 3 > /proc/sys/vm/drop_caches
    start "$shards" "$base"
    echo "RECOVERY shards=$shards queued=$QUEUED cache=cold start_to_serving_s=$SECS"
    stop
  fi
  rm -rf "$base"
done
