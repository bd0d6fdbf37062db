#!/usr/bin/env bash
# queue_1m.sh - issue 6: "a queue of 1,000,000 deferred messages: memory used
# and the time for the first delivery after the receiving side comes back".
#   1. QUEUED 4 KiB messages (one recipient each, all for example.net) are
#      queued through SMTP: smtp-source -> `impulse serve` with
#      suspend_delivery = true, then that server is stopped. (Through SMTP
#      rather than examples/spool_fill, so the spool holds exactly what real
#      reception writes.)
#   2. `impulse serve` starts again on that spool with routes =
#      ["127.0.0.1:PORT"], nothing listening on PORT: every connection is
#      refused, so each shard defers its whole ready queue at once (worker.rs
#      settle_domain: one RETRY record per message, next attempt = now +
#      retry_interval). Measured: start -> "serving with", the "settled as
#      Deferred" log lines, the time until the spool writes stop (all RETRY
#      records durable), VmRSS/VmHWM with QUEUED deferred messages minus an
#      empty server's VmRSS (same config), and `impulse spool inspect` of each
#      shard (retrying count);
#   3. impulse-sink starts on PORT: time from its start to its first accepted
#      message (includes waiting for the retry time), time from the earliest
#      possible retry time (first settle log line + retry_interval; every
#      RETRY record is written after that line, so this is a lower bound of
#      the earliest scheduled retry and the delay derived from it is an upper
#      bound of the scheduler's own delay), and the drain rate for DRAIN_SECS;
#   4. prints a RESULT line; everything started here is stopped on exit.
# Env: QUEUED (1000000), SHARDS (1), RETRY (retry_interval s, 60),
#      DRAIN_SECS (60; the sink also stops once it has all QUEUED), SIZE (4096),
#      CONNS (max_outbound_connections per shard, 32 = impulse's default),
#      SESSIONS (smtp-source sessions for the fill, 100),
#      KEEP=1 keeps the work directory (spool, logs, sink report).
# Needs: root (io_uring memlock), smtp-source (Postfix), python3, bc; builds
# release binaries (CARGO_TARGET_DIR is honoured). Loopback only, no DNS
# (static route or suspend_delivery).
set -euo pipefail
cd "$(dirname "$0")/.."
QUEUED=${QUEUED:-1000000} SHARDS=${SHARDS:-1} RETRY=${RETRY:-60}
DRAIN_SECS=${DRAIN_SECS:-60} SIZE=${SIZE:-4096} CONNS=${CONNS:-32} KEEP=${KEEP:-0}
SESSIONS=${SESSIONS:-100}
export PATH=$PATH:/usr/sbin
TARGET=${CARGO_TARGET_DIR:-target}
cargo build -q --release -p impulse --bin impulse >&2
cargo build -q --release -p impulse-perf --bin impulse-sink --bin impulse-load >&2
BIN=$TARGET/release/impulse
SINK=$TARGET/release/impulse-sink
LOAD=$TARGET/release/impulse-load
# Fairness probe: while the big queue drains, TRICKLE messages for another
# domain (d1.example, same route) are sent; their end-to-end latency shows
# whether one huge domain delays the others.
TRICKLE=${TRICKLE:-20}
WORK=$(mktemp -d /var/tmp/queue1m.XXXXXX)
PID= SINK_PID=
cleanup() {
  set +e
  [ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null
  [ -n "$PID" ] && kill -9 "$PID" 2>/dev/null
  wait 2>/dev/null
  if [ "$KEEP" = 1 ]; then echo "KEPT $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ulimit -l unlimited 2>/dev/null || true

echo "MACHINE cpus=$(nproc) cpu=\"$(lscpu | sed -n 's/^Model name: *//p')\" mem_mib=$(free -m | awk '/Mem:/{print $2}') kernel=$(uname -r) fs=$(findmnt -no FSTYPE -T "$WORK") dev=$(findmnt -no SOURCE -T "$WORK")"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
sub() { echo "$1 - $2" | bc; }
# RFC 3339 log stamp at the start of a log line -> Unix seconds
stamp() { date -d "$(echo "$1" | cut -d' ' -f1)" +%s.%N; }
rss_kib() { awk "/^$1:/{print \$2}" "/proc/$PID/status"; }
wbytes() { awk '/^write_bytes:/{print $2}' "/proc/$PID/io"; }
cpu_ms() { awk -v hz="$(getconf CLK_TCK)" '{print int(($14+$15)*1000/hz)}' "/proc/$PID/stat"; }
json() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }

SINK_PORT=$(free_port)
# start SPOOLBASE [suspend] -> sets PID, PORT, T0 (process start), SECS (start -> "serving with")
start() {
  PORT=$(free_port)
  local mode="# Static route, loopback only (no DNS); nothing listens there until the sink starts.
routes = [\"127.0.0.1:$SINK_PORT\"]"
  [ "${2:-}" = suspend ] && mode="# Fill: queue only, no delivery attempts (no DNS, no outbound traffic).
suspend_delivery = true"
  cat > "$WORK/impulse.toml" <<CONF
[global]
shards = $SHARDS
spoolbase = "$1"
log_dir = "$1/log"
hostname = "queue.test"
$mode
tls = "no"
retry_interval = $RETRY
connect_timeout = 1
max_outbound_connections = $CONNS
[listener.esmtp]
listen = ["127.0.0.1:$PORT"]
CONF
  T0=$(now)
  "$BIN" serve --config "$WORK/impulse.toml" > /dev/null 2> "$WORK/serve.log" & PID=$!
  until grep -q "serving with" "$WORK/serve.log"; do
    kill -0 "$PID" 2>/dev/null || { cat "$WORK/serve.log" >&2; exit 1; }
    sleep 0.01
  done
  SECS=$(sub "$(now)" "$T0")
}
stop() { kill -TERM "$PID"; wait "$PID" || true; PID=; }

# Empty server, same config: baseline RSS.
start "$WORK/empty"
sleep 2
EMPTY_RSS=$(rss_kib VmRSS)
stop
echo "EMPTY shards=$SHARDS rss_kib=$EMPTY_RSS"

# 1. Fill through SMTP (received now, durable before each 250), then stop.
start "$WORK/spool" suspend
t=$(now)
smtp-source -d -s "$SESSIONS" -l "$SIZE" -m "$QUEUED" -f fill@example.org -t queued@example.net "127.0.0.1:$PORT"
echo "FILL via=smtp-source sessions=$SESSIONS msgs=$QUEUED secs=$(sub "$(now)" "$t")"
stop
echo "SPOOL bytes=$(du -sb "$WORK/spool" | cut -f1)"

# 2. Serve; every connection is refused, so everything is deferred.
start "$WORK/spool"
echo "SERVE start_to_serving_s=$SECS rss_kib_at_serving=$(rss_kib VmRSS)"
deferred() { grep -o 'example.net: [0-9]* message(s) settled as Deferred' "$WORK/serve.log" | awk '{n+=$2} END{print n+0}'; }
until [ "$(deferred)" -ge "$QUEUED" ]; do
  kill -0 "$PID" 2>/dev/null || { cat "$WORK/serve.log" >&2; exit 1; }
  if [ "$(sub "$(now)" "$T0" | cut -d. -f1)" -ge $((RETRY + 120)) ]; then
    echo "STUCK: only $(deferred) of $QUEUED settled as Deferred after $((RETRY + 120)) s" >&2
    cat "$WORK/serve.log" >&2; exit 1
  fi
  sleep 0.02
done
FIRST_SETTLE_LINE=$(grep -m1 'example.net: .* settled as Deferred' "$WORK/serve.log")
LAST_SETTLE_LINE=$(grep 'example.net: .* settled as Deferred' "$WORK/serve.log" | tail -1)
SETTLE0=$(stamp "$FIRST_SETTLE_LINE")
# The RETRY records are appended after the log line: wait until the spool
# writes stop (write_bytes unchanged for 2 s); the last change = all durable.
last_w=$(wbytes) last_t=$(now) w0=$last_w
while [ "$(echo "$(now) - $last_t < 2" | bc)" = 1 ]; do
  sleep 0.05
  w=$(wbytes)
  if [ "$w" != "$last_w" ]; then last_w=$w last_t=$(now); fi
done
DEFER_DONE=$last_t
DEFER_SECS=$(sub "$DEFER_DONE" "$SETTLE0")
RSS=$(rss_kib VmRSS) HWM=$(rss_kib VmHWM) CPU_DEFER=$(cpu_ms)
PER_MSG=$(( (RSS - EMPTY_RSS) * 1024 / QUEUED ))
echo "DEFER settle_lines=$(grep -c 'example.net: .* settled as' "$WORK/serve.log") other_settle_lines=$(grep -v 'example.net: ' "$WORK/serve.log" | grep -c ' settled as ') dsns=$(grep -c 'DSN .* queued' "$WORK/serve.log") first_settle_after_start_s=$(sub "$SETTLE0" "$T0") settle_log_to_writes_done_s=$DEFER_SECS start_to_all_deferred_s=$(sub "$DEFER_DONE" "$T0") written_bytes_after_settle_line=$((last_w - w0))+ cpu_ms_since_start=$CPU_DEFER"
echo "DEFER first: ${FIRST_SETTLE_LINE:0:240}"
echo "DEFER last:  ${LAST_SETTLE_LINE:0:240}"
echo "MEMORY queued_deferred=$QUEUED rss_kib=$RSS peak_rss_kib=$HWM empty_rss_kib=$EMPTY_RSS bytes_per_deferred_msg=$PER_MSG"
if [ "$(echo "$(now) - $SETTLE0 >= $RETRY - 5" | bc)" = 1 ]; then
  echo "WARNING: deferral took close to retry_interval ($RETRY s): the first retries may already have come due" >&2
fi
# Independent count of the RETRY records (offline read of the live spool).
for d in "$WORK"/spool/shard-*; do
  "$BIN" spool inspect "$d" | sed -n 's/^live messages:/INSPECT live messages:/p'
done

# 3. The receiving side comes back.
RETRY_AT=$(echo "$SETTLE0 + $RETRY" | bc)
SINK_T0=$(now)
"$SINK" -l "127.0.0.1:$SINK_PORT" -q --json --expect "$((QUEUED + TRICKLE))" --duration "$(echo "$RETRY_AT - $SINK_T0 + $DRAIN_SECS" | bc)" > "$WORK/sink.json" 2> "$WORK/sink.err" & SINK_PID=$!
if [ "$TRICKLE" -gt 0 ]; then
  # Three seconds into the drain, the trickle goes in (1 connection, 10/s).
  sleep "$(echo "$RETRY_AT + 3 - $(now)" | bc | sed 's/^-.*/0/')"
  "$LOAD" -t "127.0.0.1:$PORT" --shards 1 -c 1 -m "$TRICKLE" --rate 10 --domains 1 -s "$SIZE" -q --json > "$WORK/trickle.json" 2>&1 || true
fi
wait "$SINK_PID" || { cat "$WORK/sink.err" >&2; exit 1; }
SINK_PID=
FIRST=$(json "$WORK/sink.json" "d['first_message_unix_us']/1e6")
LAST=$(json "$WORK/sink.json" "d['last_message_unix_us']/1e6")
GOT=$(json "$WORK/sink.json" "d['total']['messages']")
[ "$GOT" -gt 0 ] || { echo "NO DELIVERY: the sink accepted nothing" >&2; cat "$WORK/serve.log" >&2; exit 1; }
SINK_TO_FIRST=$(sub "$FIRST" "$SINK_T0")
RETRY_TO_FIRST=$(sub "$FIRST" "$RETRY_AT")
RATE=$(echo "$GOT / ($LAST - $FIRST)" | bc)
HWM2=$(rss_kib VmHWM)
echo "DELIVERY sink_start_after_settle_s=$(sub "$SINK_T0" "$SETTLE0") sink_start_to_first_s=$SINK_TO_FIRST earliest_retry_to_first_s=$RETRY_TO_FIRST delivered=$GOT first_to_last_s=$(sub "$LAST" "$FIRST") msgs_per_s=$RATE peak_rss_kib_after_drain=$HWM2 rss_kib_after_drain=$(rss_kib VmRSS)"
if [ "$TRICKLE" -gt 0 ]; then
  echo "TRICKLE sent=$TRICKLE accepted_by_impulse=$(json "$WORK/trickle.json" "d['messages']['accepted']") delivered=$(json "$WORK/sink.json" "d['domains'].get('d1.example', {}).get('messages', 0)") e2e_ms p50=$(json "$WORK/sink.json" "d['domains']['d1.example']['latency']['p50_us']/1000") p99=$(json "$WORK/sink.json" "d['domains']['d1.example']['latency']['p99_us']/1000") max=$(json "$WORK/sink.json" "d['domains']['d1.example']['latency']['max_us']/1000") big_domain_delivered_by_then=see_sink_json"
fi
grep -E 'paniclog|ERROR|WARN|dropped' "$WORK/serve.log" | head -5 | sed 's/^/SERVE LOG: /' || true

echo "RESULT queued=$QUEUED size=$SIZE shards=$SHARDS retry_interval_s=$RETRY all_deferred_after_start_s=$(sub "$DEFER_DONE" "$T0") rss_mib=$((RSS / 1024)) peak_rss_mib=$((HWM / 1024)) bytes_per_deferred_msg=$PER_MSG sink_start_to_first_delivery_s=$SINK_TO_FIRST earliest_retry_to_first_delivery_s=$RETRY_TO_FIRST drain_msgs_per_s=$RATE delivered=$GOT"
stop
