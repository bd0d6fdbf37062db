#!/usr/bin/env python3
"""trace_summary.py TRACE.txt MSGS: perf trace -s output summed over threads, calls per message."""
import re, sys, collections as C
n = int(sys.argv[2]); calls = C.Counter(); tot = C.Counter(); errs = C.Counter(); thr = []
for l in open(sys.argv[1]):
    m = re.match(r'^\s*(\S.*) \((\d+)\), (\d+) events', l)
    if m: thr.append((m.group(1), m.group(2), int(m.group(3)))); continue
    m = re.match(r'^\s+([a-z_0-9]+)\s+(\d+)\s+(\d+)\s+([\d.]+)', l)
    if m: calls[m.group(1)] += int(m.group(2)); errs[m.group(1)] += int(m.group(3)); tot[m.group(1)] += float(m.group(4))
print(f"# syscalls per message (perf trace -s, MSGS={n}); threads: " + ", ".join(f"{a}({b}) {c} ev" for a, b, c in thr))
print("| syscall | calls/msg | errors/msg | total ms in syscall |"); print("|---|---|---|---|")
for s, c in calls.most_common(): print(f"| {s} | {c/n:.2f} | {errs[s]/n:.2f} | {tot[s]:.0f} |")
print(f"| all | {sum(calls.values())/n:.2f} | | |")
