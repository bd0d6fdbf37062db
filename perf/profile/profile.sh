#!/usr/bin/env bash
# perf/profile/profile.sh — where impulse's CPU per relayed message goes: per-message counts
# (syscalls, io_uring submissions by opcode, reads and writes and their sizes, context switches,
# allocations) and a sampled profile grouped by component. Run as root from the repository after
# `cargo build --release --workspace`. Env: B (directory with impulse, impulse-load, impulse-sink,
# impulse-counted; default target/release), WORK (default /tmp/impulse-profile), SHARED
# (default ../shared/bench), TAG (suffix of the run directory), MSGS.
#
#   profile.sh harness W     peer_relay_bench.sh RESULT line (W = w1 | w3; w2 has no harness)
#   profile.sh ceiling W     peer_relay_bench.sh MTA=direct (smtp-source -> smtp-sink, no impulse)
#   W = w3i: w3 but impulse-sink as the destination (is smtp-sink the bottleneck?)
#   Post-processing of a record run: perf script -i runs/W-record/perf.data -F comm,tid,ip,sym,dso | python3 classify.py
#   profile.sh MODE W        own runner: sink, impulse, (instrument attached to impulse), load; whole run
#       MODE = plain   no instrument: CPU user/sys from /proc/PID/stat, ctx switches from /proc/PID/task/*/status
#              stat    perf stat: task-clock, context switches, syscalls, io_uring tracepoints, wakeups
#              uring   perf record of io_uring submit/complete/file_get + io_uring_enter args -> uring_summary.py
#              trace   perf trace -s (syscall summary per thread)
#              record  perf record -e ${EV:-cpu-clock} ${EVF:--F 999} --call-graph dwarf -> perf report self / children
#                      (EV=syscalls:sys_enter_io_uring_enter EVF="-c 50": who calls io_uring_enter)
#   profile.sh alloc         perf/alloc_count.sh --bin-dir $B (counting allocator, impulse-load -> impulse-counted -> impulse-sink)
#   W = w1  4 KiB  smtp-source -d -s 20 -> impulse -> smtp-sink        20000 msgs
#       w2  4 KiB  impulse-load -c 20   -> impulse -> impulse-sink     20000 msgs
#       w3  100 KB smtp-source -d -s 20 -> impulse -> smtp-sink         5000 msgs
# Every run writes $WORK/runs/W-MODE[-TAG]/ : summary.txt (counts / msg), monitor.tsv (0.5 s samples:
# sink count, outbound/inbound conns, /proc/PID/io read/write bytes, RSS), and the instrument's output.
set -euo pipefail
export PATH=$PATH:/usr/sbin:/usr/lib/postfix/sbin
cd "$(dirname "$0")/../.."
HERE=perf/profile SHARED=${SHARED:-../shared/bench}
P=${WORK:-/tmp/impulse-profile} B=$(readlink -f "${B:-target/release}")
mkdir -p "$P"
MODE=${1:?mode} WL=${2:-w1}
case $WL in
  w1) SIZE=4096 MSGS=${MSGS:-20000} LOAD=smtp;;
  w2) SIZE=4096 MSGS=${MSGS:-20000} LOAD=impulse;;
  w3) SIZE=102400 MSGS=${MSGS:-5000} LOAD=smtp;;
  w3i) SIZE=102400 MSGS=${MSGS:-5000} LOAD=smtp SINKT=impulse;;  # w3 with impulse-sink instead of smtp-sink
  *) [ "$MODE" = alloc ] || { echo "unknown workload $WL" >&2; exit 2; };;
esac
listening() { ss -Hltn "sport = :$1" | grep -q .; }
wait_port() { for _ in $(seq 400); do listening "$1" && return 0; sleep 0.05; done; echo "nothing on $1" >&2; exit 1; }
wait_gone() { for _ in $(seq 400); do listening "$1" || return 0; sleep 0.05; done; }
sed "s|@SPOOL@|$P/spool|" $SHARED/impulse_relay.toml.in > $P/relay.toml

if [ "$MODE" = ceiling ]; then  # smtp-source -> smtp-sink directly, no MTA (the sink's own limit)
  SIZE=$SIZE MSGS=$MSGS SESSIONS=20 REUSE=1 MTA=direct $SHARED/peer_relay_bench.sh 2>&1 | grep '^RESULT'; exit 0
fi
if [ "$MODE" = harness ]; then
  rm -rf $P/spool
  SIZE=$SIZE MSGS=$MSGS SESSIONS=20 REUSE=1 MTA=impulse MTA_CMD="$B/impulse serve --config $P/relay.toml" \
    $SHARED/peer_relay_bench.sh 2>&1 | grep '^RESULT'
  exit 0
fi

if [ "$MODE" = alloc ]; then  # perf/alloc_count.sh on the binaries in $B (no build)
  perf/alloc_count.sh --bin-dir "$B" --messages "${N:-5000}"; exit 0
fi

O=$P/runs/$WL-$MODE${TAG:+-$TAG}; rm -rf $O; mkdir -p $O
listening 2625 && { echo "port 2625 busy" >&2; exit 1; }
listening 2626 && { echo "port 2626 busy" >&2; exit 1; }
PIDS=()
cleanup() { set +e; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT
# 1. sink
if [ ${SINKT:-$LOAD} = smtp ]; then
  smtp-sink -u nobody -c -M "$MSGS" 127.0.0.1:2626 1024 >$O/sink.out 2>&1 & SINK=$!
else
  $B/impulse-sink -l 127.0.0.1:2626 --shards 1 -q --json --expect "$MSGS" --duration 600 >$O/sink.json 2>$O/sink.err & SINK=$!
fi
PIDS+=($SINK); wait_port 2626
# 2. impulse
rm -rf $P/spool
$B/impulse serve --config $P/relay.toml >$O/imp.log 2>&1 & IMP=$!; PIDS+=($IMP); wait_port 2625
# 3. instrument, attached to impulse for the whole run (stopped by killing its `sleep` marker)
INST=
case $MODE in
  plain) ;;
  tc) perf stat --per-thread -o $O/perfstat.txt -e task-clock -p $IMP -- sleep 600 & INST=$!;;
  stat) perf stat -o $O/perfstat.txt -e context-switches,cpu-migrations,page-faults,raw_syscalls:sys_enter,syscalls:sys_enter_io_uring_enter,syscalls:sys_enter_fdatasync,syscalls:sys_enter_futex,syscalls:sys_enter_write,syscalls:sys_enter_epoll_wait,io_uring:io_uring_submit_req,io_uring:io_uring_complete,io_uring:io_uring_task_work_run,io_uring:io_uring_local_work_run,io_uring:io_uring_poll_arm,io_uring:io_uring_queue_async_work,io_uring:io_uring_cqring_wait,io_uring:io_uring_task_add,io_uring:io_uring_short_write,sched:sched_wakeup,sched:sched_switch,block:block_rq_issue,block:block_rq_complete \
          -p $IMP -- sleep 600 & INST=$!;;
  uring) perf record -q -o $O/uring.data -e io_uring:io_uring_submit_req,io_uring:io_uring_complete,io_uring:io_uring_file_get,syscalls:sys_enter_io_uring_enter,syscalls:sys_exit_io_uring_enter,syscalls:sys_enter_recvfrom,syscalls:sys_exit_recvfrom,syscalls:sys_enter_sendto,syscalls:sys_exit_sendto,syscalls:sys_enter_setsockopt,syscalls:sys_enter_writev,syscalls:sys_exit_writev,syscalls:sys_enter_sendmsg,syscalls:sys_exit_sendmsg \
          -m 4096 -p $IMP -- sleep 600 >$O/perf.err 2>&1 & INST=$!;;
  trace) perf trace -s -o $O/trace.txt -p $IMP -- sleep 600 >/dev/null 2>&1 & INST=$!;;
  record) perf record -q -o $O/perf.data -e ${EV:-cpu-clock} ${EVF:--F 999} --call-graph dwarf,16384 -m 8192 -p $IMP -- sleep 600 >$O/perf.err 2>&1 & INST=$!;;
  *) echo "unknown mode $MODE" >&2; exit 2;;
esac
[ -n "$INST" ] && { PIDS+=($INST); sleep 1.5; }
snap() { # utime stime (ticks) vol invol (summed over threads) read_bytes write_bytes
  local ut st; read -r ut st < <(awk '{print $14, $15}' /proc/$IMP/stat)
  local v=0 nv=0 a b
  for t in /proc/$IMP/task/*; do
    read -r a b < <(awk '/^voluntary_ctxt/{v=$2} /^nonvoluntary_ctxt/{n=$2} END{print v, n}' $t/status 2>/dev/null || echo "0 0")
    v=$((v + a)); nv=$((nv + b)); done
  echo "$ut $st $v $nv $(awk '/^read_bytes/{r=$2} /^write_bytes/{w=$2} END{print r, w}' /proc/$IMP/io)"
}
sink_count() { if [ ${SINKT:-$LOAD} = smtp ]; then tr '\r' '\n' <$O/sink.out | grep -o 'mesg=[0-9]*' | tail -1 | cut -d= -f2; else echo -; fi; }
# 4. monitor every 0.5 s
( echo -e "t_s\tsink_msgs\tconns_out\tconns_in\tread_bytes\twrite_bytes\trss_kb\tthreads\timpulse_cpu_ticks\tsink_cpu_ticks\tsink_recvq_bytes"; t0=$(date +%s%N)
  while kill -0 $IMP 2>/dev/null; do
    echo -e "$(awk -v a=$t0 -v b=$(date +%s%N) 'BEGIN{printf "%.1f",(b-a)/1e9}')\t$(sink_count)\t$(ss -Htn state established dst 127.0.0.1:2626 | wc -l)\t$(ss -Htn state established src 127.0.0.1:2625 | wc -l)\t$(awk '/^read_bytes/{print $2}' /proc/$IMP/io)\t$(awk '/^write_bytes/{print $2}' /proc/$IMP/io)\t$(awk '/VmRSS/{print $2}' /proc/$IMP/status)\t$(ls /proc/$IMP/task | wc -l)\t$(awk '{print $14+$15}' /proc/$IMP/stat)\t$(awk '{print $14+$15}' /proc/$SINK/stat 2>/dev/null)\t$(ss -Htn state established sport = :2626 | awk '{q+=$1} END{print q+0}')"
    [ "$MODE" = uring ] && { ls -l /proc/$IMP/fd > $O/fd.$(date +%s%N) 2>/dev/null; ss -Htnp 2>/dev/null | grep "pid=$IMP," > $O/ss.$(date +%s%N); }
    sleep 0.5; done ) >$O/monitor.tsv 2>/dev/null & MON=$!; PIDS+=($MON)
s0=$(snap); t0=$(date +%s%N)
# 5. load
if [ $LOAD = smtp ]; then
  smtp-source -d -s 20 -m "$MSGS" -l "$SIZE" -f a@example.com -t b@example.net 127.0.0.1:2625
else
  $B/impulse-load -t 127.0.0.1:2625 --shards 1 -c 20 -m "$MSGS" -s "$SIZE" -r 1 --domains 1 --domain-pattern example.net -q --json >$O/load.json
fi
t1=$(date +%s%N)
wait $SINK || true; t2=$(date +%s%N)
s1=$(snap)
# 6. stop the instrument, then impulse
if [ -n "$INST" ]; then kill $(pgrep -P $INST sleep) 2>/dev/null || true; wait $INST 2>/dev/null || true; fi
kill -TERM $IMP; wait $IMP 2>/dev/null || true; kill $MON 2>/dev/null; wait $MON 2>/dev/null || true
hz=$(getconf CLK_TCK)
read -r u0 st0 v0 nv0 r0 w0 <<<"$s0"; read -r u1 st1 v1 nv1 r1 w1 <<<"$s1"
awk -v n=$MSGS -v hz=$hz -v u=$((u1-u0)) -v s=$((st1-st0)) -v v=$((v1-v0)) -v nv=$((nv1-nv0)) -v r=$((r1-r0)) -v w=$((w1-w0)) \
    -v inj=$(( (t1-t0)/1000000 )) -v e2e=$(( (t2-t0)/1000000 )) -v wl=$WL -v mode=$MODE 'BEGIN{
  printf "RUN wl=%s mode=%s msgs=%d inject_s=%.2f e2e_s=%.2f cpu_us_per_msg=%.0f user_us_per_msg=%.0f sys_us_per_msg=%.0f vol_cs_per_msg=%.2f invol_cs_per_msg=%.2f disk_read_KB_per_msg=%.1f disk_write_KB_per_msg=%.1f\n",
    wl, mode, n, inj/1000, e2e/1000, (u+s)*1e6/hz/n, u*1e6/hz/n, s*1e6/hz/n, v/n, nv/n, r/1024/n, w/1024/n }' | tee $O/summary.txt
echo "MSGS=$MSGS" >>$O/summary.txt
# The sink's own CPU per message it took, from the last monitor sample that has both (the sink
# exits after the last message): is the destination the bottleneck?
awk -F'\t' -v hz=$hz 'NR > 1 && $2 > 0 && $10 != "" {m = $2; t = $10} END {
  if (m) printf "SINK cpu_us_per_msg=%.0f over %d messages\n", t * 1e6 / hz / m, m }' $O/monitor.tsv | tee -a $O/summary.txt
case $MODE in
  stat) awk -v n=$MSGS '/^ *[0-9,.]+ +[a-z_:-]+/{c=$1; gsub(",","",c); printf "%-40s %14s  %10.3f /msg\n", $2, $1, c/n}' $O/perfstat.txt | tee -a $O/summary.txt;;
  uring) perf script -i $O/uring.data -F tid,time,event,trace 2>/dev/null > $O/uring.txt
         python3 $HERE/uring_summary.py $O $MSGS $IMP $P/spool | tee -a $O/summary.txt;;
  trace) python3 $HERE/trace_summary.py $O/trace.txt $MSGS | tee -a $O/summary.txt;;
  record) perf report -i $O/perf.data --no-children --sort symbol --percent-limit 0.3 --stdio -g none -w 8,120 2>/dev/null | grep -v '^$' | head -60 > $O/self.txt || true
          perf report -i $O/perf.data --children --sort symbol --percent-limit 2 --stdio -g none -w 8,8,120 2>/dev/null | grep -v '^$' | head -80 > $O/children.txt || true
          perf report -i $O/perf.data --no-children --sort dso --stdio -g none 2>/dev/null | grep -v '^$' | head -20 > $O/dso.txt || true
          perf report -i $O/perf.data --no-children --sort dso,symbol --percent-limit 0 --stdio -g none 2>/dev/null > $O/self_dso_sym.txt
          python3 $HERE/buckets.py $O/self_dso_sym.txt > $O/buckets.txt
          perf script -i $O/perf.data -F comm,tid,ip,sym,dso 2>/dev/null | python3 $HERE/classify.py > $O/classify.txt
          head -45 $O/self.txt; cat $O/classify.txt;;
esac
