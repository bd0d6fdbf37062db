#!/usr/bin/env python3
"""uring_summary.py DIR MSGS PID [SPOOL]: io_uring ops per message by opcode and by file kind
(inbound socket = local port 2625, outbound = peer port 2626, spool file, other) from
DIR/uring.txt (perf script of io_uring:io_uring_submit_req/complete/file_get and
io_uring_enter enter/exit), DIR/fd.* (ls -l /proc/PID/fd) and DIR/ss.* (ss -tnp) snapshots."""
import re, sys, glob, os, collections as C
d, n, pid = sys.argv[1], int(sys.argv[2]), sys.argv[3]
SPOOL = sys.argv[4] if len(sys.argv) > 4 else '/tmp/impulse-profile/spool'
# fd -> kind
kinds = C.defaultdict(set); inode_kind = {}
for f in sorted(glob.glob(f"{d}/ss.*")):
    for l in open(f):
        p = l.split()
        if len(p) < 5: continue
        loc, peer = p[3], p[4]
        k = 'in' if loc.endswith(':2625') else 'out' if peer.endswith(':2626') else 'othersock'
        for m in re.finditer(rf'pid={pid},fd=(\d+)', l): kinds[int(m.group(1))].add(k)
for f in sorted(glob.glob(f"{d}/fd.*")):
    for l in open(f):
        m = re.search(r' (\d+) -> (.*)$', l)
        if not m: continue
        fd, tgt = int(m.group(1)), m.group(2)
        if tgt.startswith(SPOOL):
            kinds[fd].add('spool:' + re.sub(r'\d+', 'N', os.path.basename(tgt)))
        elif not tgt.startswith('socket:'):
            kinds[fd].add('other:' + re.sub(r'\d+', 'N', tgt)[:30])
def kind(fd):
    if fd is None: return 'nofd/fixed'
    s = kinds.get(fd)
    if not s: return 'unknown-fd'
    return '+'.join(sorted(s))
op_of, fd_of = {}, {}
sub = C.Counter(); comp = C.Counter(); bytes_ = C.Counter(); pos = C.Counter(); errs = C.Counter()
sizes = C.defaultdict(list); rings = C.Counter(); enter = C.Counter(); enter_sub = 0; enter_wait = 0
enter_thr = C.Counter(); comp_thr = C.Counter(); sub_thr = C.Counter()
pend_enter = {}; sysc = C.Counter(); sysb = C.Counter(); syss = C.defaultdict(list)
rx = re.compile(r'^\s*(\d+)\s+([\d.]+):\s+(\S+):\s+(.*)$')
for l in open(f"{d}/uring.txt"):
    m = rx.match(l)
    if not m: continue
    tid, ev, a = m.group(1), m.group(3), m.group(4)
    if ev == 'io_uring:io_uring_file_get':
        req = re.search(r'req (0x[0-9a-f]+)', a).group(1); fd_of[req] = int(re.search(r'fd (-?\d+)', a).group(1))
    elif ev == 'io_uring:io_uring_submit_req':
        req = re.search(r'req (0x[0-9a-f]+)', a).group(1); op = re.search(r'opcode (\S+),', a).group(1)
        ring = re.search(r'ring (0x[0-9a-f]+)', a).group(1)
        op_of[req] = op; fd_of.pop(req, None); rings[ring] += 1; sub_thr[tid] += 1
        sub[op] += 1
    elif ev == 'io_uring:io_uring_complete':
        req = re.search(r'req (0x[0-9a-f]+)', a).group(1); res = int(re.search(r'result (-?\d+)', a).group(1))
        op = op_of.get(req, '?'); k = kind(fd_of.get(req)); comp_thr[tid] += 1
        comp[(op, k)] += 1
        if res > 0: pos[(op, k)] += 1; bytes_[(op, k)] += res; sizes[(op, k)].append(res)
        elif res < 0: errs[(op, k, res)] += 1
    elif ev in ('syscalls:sys_enter_recvfrom', 'syscalls:sys_enter_sendto', 'syscalls:sys_enter_writev', 'syscalls:sys_enter_sendmsg', 'syscalls:sys_enter_setsockopt'):
        fd = int(re.search(r'fd: (0x[0-9a-f]+)', a).group(1), 16); name = ev.split('sys_enter_')[1]
        if name == 'setsockopt':
            opt = int(re.search(r'optname: (0x[0-9a-f]+)', a).group(1), 16); sysc[(f'setsockopt({opt})', kind(fd))] += 1
        else: pend_enter[tid] = (name, kind(fd))
    elif ev in ('syscalls:sys_exit_recvfrom', 'syscalls:sys_exit_sendto', 'syscalls:sys_exit_writev', 'syscalls:sys_exit_sendmsg'):
        ret = int(re.search(r'(0x[0-9a-f]+)', a).group(1), 16)
        if ret >= 1 << 63: ret -= 1 << 64
        name, k = pend_enter.pop(tid, ('?', '?')); sysc[(name, k)] += 1
        if ret > 0: sysb[(name, k)] += ret; syss[(name, k)].append(ret)
        elif ret < 0: sysc[(name + f' err{ret}', k)] += 1
    elif ev == 'syscalls:sys_enter_io_uring_enter':
        ts = int(re.search(r'to_submit: (0x[0-9a-f]+)', a).group(1), 16)
        mc = int(re.search(r'min_complete: (0x[0-9a-f]+)', a).group(1), 16)
        enter['calls'] += 1; enter_sub += ts; enter_thr[tid] += 1
        if mc > 0: enter_wait += 1
        if ts == 0: enter['to_submit=0'] += 1
print(f"# io_uring per message (MSGS={n})")
print(f"io_uring_enter calls/msg {enter['calls']/n:.2f}  (with min_complete>0: {enter_wait/n:.2f}/msg, to_submit=0: {enter['to_submit=0']/n:.2f}/msg, avg SQEs per enter {enter_sub/max(1,enter['calls']):.2f})")
print(f"submitted SQEs/msg {sum(sub.values())/n:.2f}; completions/msg {sum(comp.values())/n:.2f}; rings used {len(rings)} (SQEs/ring: {', '.join(str(v) for v in rings.values())})")
print(f"threads: enter {dict(enter_thr)}  submit {dict(sub_thr)}")
print("\n| opcode | SQEs/msg |"); print("|---|---|")
for op, c in sub.most_common(): print(f"| {op} | {c/n:.2f} |")
print("\n| opcode | fd kind | completions/msg | res>0 /msg | avg bytes (res>0) | median bytes | bytes/msg |"); print("|---|---|---|---|---|---|---|")
for (op, k), c in sorted(comp.items(), key=lambda x: -x[1]):
    s = sorted(sizes[(op, k)]); med = s[len(s)//2] if s else 0
    print(f"| {op} | {k} | {c/n:.2f} | {pos[(op,k)]/n:.2f} | {bytes_[(op,k)]/max(1,pos[(op,k)]):.0f} | {med} | {bytes_[(op,k)]/n:.0f} |")
print("\n| opcode | fd kind | result<0 | per msg |"); print("|---|---|---|---|")
for (op, k, r), c in errs.most_common(12): print(f"| {op} | {k} | {r} | {c/n:.3f} |")
print("\n| syscall | fd kind | calls/msg | avg bytes | median bytes | bytes/msg |"); print("|---|---|---|---|---|---|")
for (nm, k), c in sorted(sysc.items(), key=lambda x: -x[1]):
    s_ = sorted(syss.get((nm, k), [])); med = s_[len(s_)//2] if s_ else 0
    print(f"| {nm} | {k} | {c/n:.2f} | {sysb[(nm,k)]/max(1,len(s_)):.0f} | {med} | {sysb[(nm,k)]/n:.0f} |")
for (nm, k), s_ in syss.items():
    if k == 'in' and nm == 'recvfrom':
        h = C.Counter(min(17, v.bit_length()) for v in s_)
        print(f"\ninbound recvfrom size histogram (count of reads with bytes < 2^k): " + ", ".join(f"<{1<<b}:{h[b]}" for b in sorted(h)))
# size histogram of inbound reads
for (op, k), s in sizes.items():
    if k == 'in' and op in ('RECV', 'READ', 'RECVMSG', 'READV', 'READ_FIXED'):
        h = C.Counter(min(15, v.bit_length()) for v in s)
        print(f"\ninbound {op} size histogram (bytes < 2^k): " + ", ".join(f"<{1<<b}:{h[b]}" for b in sorted(h)))
