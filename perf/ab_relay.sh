#!/usr/bin/env bash
# perf/ab_relay.sh A B — two impulse binaries, interleaved, through Postfix's
# smtp-source -> impulse -> smtp-sink (../shared/bench/peer_relay_bench.sh,
# 20 sessions, reused connections, impulse on impulse_relay.toml.in): ROUNDS
# pairs (A then B), one line each with msg/s end to end and impulse's CPU µs
# per message. For a change whose effect is smaller than the machine's
# noise: compare within a pair. Run as root. Env: ROUNDS (4), SIZE (4096),
# MSGS (20000), SHARED (../shared/bench), A_EXTRA / B_EXTRA (TOML lines added
# to the relay domain's table for A / B: the same binary twice with and
# without an option, e.g. B_EXTRA='outbound_throttle_messages = "10000000/1"').
set -euo pipefail
cd "$(dirname "$0")/.."
A=$(readlink -f "${1:?binary A}") B=$(readlink -f "${2:?binary B}")
SHARED=$(readlink -f "${SHARED:-../shared/bench}")
ROUNDS=${ROUNDS:-4} SIZE=${SIZE:-4096} MSGS=${MSGS:-20000}
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
for r in $(seq "$ROUNDS"); do
  for which in A B; do
    if [ "$which" = A ]; then bin=$A extra=${A_EXTRA:-}; else bin=$B extra=${B_EXTRA:-}; fi
    rm -rf "$W/spool"; sed "s|@SPOOL@|$W/spool|" "$SHARED/impulse_relay.toml.in" > "$W/relay.toml"
    # The template ends with the relay domain's table: extra lines land in it.
    printf '%s\n' "$extra" >> "$W/relay.toml"
    line=$(SIZE=$SIZE MSGS=$MSGS SESSIONS=20 REUSE=1 MTA=impulse MTA_CMD="$bin serve --config $W/relay.toml" \
      "$SHARED/peer_relay_bench.sh" 2>&1 | grep '^RESULT' || echo "RESULT failed")
    echo "round $r $which $(echo "$line" | grep -o 'e2e_msgs_per_s=[0-9]*\|mta_cpu_us_per_msg=[0-9]*\|machine_busy_pct=[0-9]*' | tr '\n' ' ')"
  done
done
