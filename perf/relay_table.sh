#!/usr/bin/env bash
# perf/relay_table.sh — the three workloads of the relay CPU issue, each beside
# Postfix and the no-MTA ceiling in the same run, min/median/max of ROUNDS:
#   1. 4 KiB, Postfix's smtp-source -> MTA -> smtp-sink, 20 sessions, reused
#      connections (../shared/bench/impulse_vs_postfix.sh);
#   2. 4 KiB, impulse-load -> MTA -> impulse-sink (perf/bench, 4k, 20 sessions);
#   3. 100 KB, smtp-source -> MTA -> smtp-sink (impulse_vs_postfix.sh with
#      SIZE=102400 MSGS=5000).
# Prints each part's summary (msg/s, MTA CPU µs per message, the ratios).
# Run as root from the repository after `cargo build --release`; takes about
# 12 minutes, twice that with BEFORE. Env: ROUNDS (3), BIN
# (target/release/impulse), BEFORE (another impulse binary, e.g. a build of
# an older commit, run through parts 1 and 3 in the same run and as
# perf/bench's --before), SHARED (../shared/bench). Nothing else may run
# meanwhile: the machine is measured.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared/bench}
ROUNDS=${ROUNDS:-3}
export ROUNDS BIN=${BIN:-target/release/impulse}
BEFORE=${BEFORE:-}
both() { # runs "$@" with BIN, then (if BEFORE) with BIN=BEFORE
  echo "-- impulse = $BIN"; "$@" | tail -4
  [ -z "$BEFORE" ] || { echo "-- impulse = $BEFORE"; BIN=$BEFORE "$@" | tail -4; }
}
echo "== 1. 4 KiB, smtp-source -> MTA -> smtp-sink (10000 messages x $ROUNDS rounds)"
both "$SHARED/impulse_vs_postfix.sh"
echo "== 2. 4 KiB, impulse-load -> MTA -> impulse-sink (perf/bench)"
perf/bench --sizes 4k --sessions 20 --modes ceiling,postfix,impulse --no-append ${BEFORE:+--before "$BEFORE"} 2>&1 | grep -E '^\|' || true
echo "== 3. 100 KB, smtp-source -> MTA -> smtp-sink (5000 messages x $ROUNDS rounds)"
export SIZE=102400 MSGS=5000
both "$SHARED/impulse_vs_postfix.sh"
