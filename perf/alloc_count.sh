#!/usr/bin/env bash
# perf/alloc_count.sh — allocations, body-sized buffers and body copies per
# relayed message: impulse-load -> impulse-counted (impulse serve with a
# counting allocator and a counting memcpy/memmove, one shard) -> impulse-sink,
# run with N and with 2N messages; the difference divided by N is the cost of
# one message with start-up and shutdown taken out.
#
# Body copies: impulse-counted counts every byte the server copies with
# memcpy/memmove (any call size, so a body copied line by line counts in full)
# plus the bytes of realloc'd blocks the allocator moved (copied_bytes_per_msg:
# that includes moves of futures and small structs, commands, log lines);
# heap_copied_bytes_per_msg leaves out copies whose source is on the copying
# thread's stack (moves of locals and async state, never message content).
# The whole measurement runs again with messages of SIZE2 octets, and
#   body_copies_per_msg = (heap_copied_bytes_per_msg at SIZE2 - at SIZE)
#                         / (SIZE2 - SIZE)
# so everything that does not grow with the body cancels out and what is left
# is how many times each body octet is copied. No code in impulse reports it:
# a copy cannot hide from it by being split up or made by a library. It is
# noisy (about +-0.3 here): how many messages share a spool batch, and so how
# often the spool's partial last block is rewritten, depends on timing.
# big_copies_per_msg counts single copies (or moved reallocs) of at least 90%
# of SIZE at SIZE. The kernel's copies in read/write are not counted: socket ->
# first user buffer and the last user buffer -> socket.
#
# Usage: perf/alloc_count.sh [--at COMMIT] [--messages N] [--size BYTES]
#                            [--size2 BYTES] [--sessions S] [--bin-dir DIR]
#   --bin-dir DIR use DIR's impulse-counted, impulse-load and impulse-sink
#                 as they are (no build)
#   --size2 BYTES the second message size for body_copies (default 4*SIZE)
#   --at COMMIT   measure the tree of COMMIT instead (built in a temporary
#                 worktree with this script's impulse-counted.rs copied in)
# Run from the repository. Prints one RESULT line. With ALLOC_COUNT_KEEP=DIR
# the server's log of each run is kept there (its last lines: the counters and
# the bytes copied by call size).
set -euo pipefail
cd "$(dirname "$0")/.."
AT= N=5000 SIZE=4096 SIZE2= S=20 BIN_DIR=
while [ $# -gt 0 ]; do
  case $1 in
    --at) AT=$2; shift;; --bin-dir) BIN_DIR=$(readlink -f "$2"); shift;; --messages) N=$2; shift;; --size) SIZE=$2; shift;; --size2) SIZE2=$2; shift;; --sessions) S=$2; shift;;
    -h|--help) sed -n '2,35p' "$0"; exit 0;;
    *) echo "alloc_count: unknown option $1" >&2; exit 2;;
  esac; shift
done
SIZE2=${SIZE2:-$((4 * SIZE))}
ROOT=$PWD
W=$(mktemp -d /tmp/impulse-alloc.XXXXXX)
PIDS=()
cleanup() { set +e; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null
  [ -n "$AT" ] && git -C "$ROOT" worktree remove --force "$W/tree" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
if [ -n "$BIN_DIR" ]; then
  TOOLS=$BIN_DIR
else
  cargo build --release -q -p impulse-perf --bin impulse-load --bin impulse-sink --bin impulse-counted
  TOOLS=${CARGO_TARGET_DIR:-$ROOT/target}/release
fi
COUNTED=$TOOLS/impulse-counted
LABEL=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo "+changes")
if [ -n "$AT" ]; then
  git worktree add -q --detach "$W/tree" "$AT"
  cp perf/src/bin/impulse-counted.rs "$W/tree/perf/src/bin/"
  grep -q impulse-counted "$W/tree/perf/Cargo.toml" ||
    printf '\n[[bin]]\nname = "impulse-counted"\npath = "src/bin/impulse-counted.rs"\n' >> "$W/tree/perf/Cargo.toml"
  (cd "$W/tree" && CARGO_TARGET_DIR=$ROOT/target/alloc-at cargo build --release -q -p impulse-perf --bin impulse-counted)
  COUNTED=$ROOT/target/alloc-at/release/impulse-counted
  LABEL=$(git rev-parse --short "$AT")
fi
MTA_PORT=2725 SINK_PORT=2726
listening() { ss -Hltn "sport = :$1" | grep -q .; }
wait_port() { for _ in $(seq 400); do listening "$1" && return 0; sleep 0.05; done; echo "nothing on port $1" >&2; exit 1; }
wait_gone() { for _ in $(seq 400); do listening "$1" || return 0; sleep 0.05; done; }
one_run() { # messages size -> prints "allocs bytes big_allocs big_bytes realloc_copied copied big_copies heap_copied"
  local n=$1 size=$2
  rm -rf "$W/spool"; mkdir -p "$W/spool"
  cat > "$W/impulse.toml" <<IM
[global]
shards = 1
spoolbase = "$W/spool"
log_dir = "$W/log"
relay_hosts = ["127.0.0.0/8"]
routes = ["127.0.0.1:$SINK_PORT"]
max_outbound_connections = 50
tls = "no"
[listener.esmtp]
listen = ["127.0.0.1:$MTA_PORT"]
max_connections_per_ip = 0
IM
  "$TOOLS/impulse-sink" -l 127.0.0.1:$SINK_PORT --shards 1 -q --json --expect "$n" --duration 600 >"$W/sink.json" 2>"$W/sink.err" &
  local sink=$!; PIDS+=("$sink"); wait_port $SINK_PORT
  IMPULSE_COUNT_BIG=$((size * 9 / 10)) "$COUNTED" "$W/impulse.toml" 2>"$W/imp.log" &
  local imp=$!; PIDS+=("$imp")
  for _ in $(seq 400); do grep -q "serving with" "$W/imp.log" && break; sleep 0.05; done
  "$TOOLS/impulse-load" -t 127.0.0.1:$MTA_PORT --shards 1 -c "$S" -m "$n" -s "$size" -r 1 --domains 10 -q --json >"$W/load.json"
  wait "$sink" || true
  kill -TERM "$imp"; wait "$imp" || true; wait_gone $MTA_PORT; wait_gone $SINK_PORT
  [ -n "${ALLOC_COUNT_KEEP:-}" ] && cp "$W/imp.log" "$ALLOC_COUNT_KEEP/impulse-counted-$n-$size.log"
  grep '^ALLOC' "$W/imp.log" | sed -E 's/ALLOC allocs=([0-9]+) bytes=([0-9]+) big_allocs=([0-9]+) big_bytes=([0-9]+) realloc_copied=([0-9]+) copied=([0-9]+) big_copies=([0-9]+) realloc_moved=[0-9]+ heap_copied=([0-9]+).*/\1 \2 \3 \4 \5 \6 \7 \8/'
}
read -r a1 b1 g1 gb1 r1 c1 k1 h1 < <(one_run "$N" "$SIZE")
read -r a2 b2 g2 gb2 r2 c2 k2 h2 < <(one_run $((2 * N)) "$SIZE")
read -r _ _ _ _ _ _ _ d1 < <(one_run "$N" "$SIZE2")
read -r _ _ _ _ _ _ _ d2 < <(one_run $((2 * N)) "$SIZE2")
awk -v n="$N" -v size="$SIZE" -v size2="$SIZE2" -v label="$LABEL" -v a1="$a1" -v a2="$a2" -v b1="$b1" -v b2="$b2" \
    -v g1="$g1" -v g2="$g2" -v gb1="$gb1" -v gb2="$gb2" -v r1="$r1" -v r2="$r2" \
    -v c1="$c1" -v c2="$c2" -v k1="$k1" -v k2="$k2" -v d1="$d1" -v d2="$d2" \
    -v h1="$h1" -v h2="$h2" 'BEGIN {
  printf "RESULT tree=%s size=%d size2=%d messages=%d allocs_per_msg=%.1f bytes_per_msg=%.0f body_sized_buffers_per_msg=%.2f body_sized_bytes_per_msg=%.0f realloc_copied_per_msg=%.0f copied_bytes_per_msg=%.0f heap_copied_bytes_per_msg=%.0f body_copies_per_msg=%.2f big_copies_per_msg=%.2f\n",
    label, size, size2, n, (a2-a1)/n, (b2-b1)/n, (g2-g1)/n, (gb2-gb1)/n, (r2-r1)/n, (c2-c1)/n, (h2-h1)/n, ((d2-d1)-(h2-h1))/n/(size2-size), (k2-k1)/n }'
