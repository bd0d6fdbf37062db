#!/usr/bin/env python3
"""classify.py < perf script -F comm,tid,ip,sym,dso (with dwarf callchains).
Each cpu-clock sample counted once in (a) a self-time bucket: user leaf -> by its symbol;
kernel leaf -> by the syscall / kernel entry it is under; (b) an inclusive component:
the leaf-most impulse/glommio anchor frame in its chain."""
import re, sys, collections as C
KERNEL_ANCHORS = [  # (bucket, regex on kernel frame) searched from leaf to root, first hit wins
 ('kernel: io-wq worker (spool O_DIRECT write + FSYNC, virtio-blk kick)', r'^(io_wq_worker|io_worker_handle_work)$'),
 ('kernel: io_uring_enter (SQE submit: timeouts/cancels/poll/eventfd write; CQ flush)', r'^(__do_sys_io_uring_enter|__x64_sys_io_uring_enter|io_cqring_wait)$'),
 ('kernel: sendto (TCP send over loopback, incl. receiver softirq)', r'^(__sys_sendto|__x64_sys_sendto)$'),
 ('kernel: recvfrom (TCP recv)', r'^(__sys_recvfrom|__x64_sys_recvfrom)$'),
 ('kernel: setsockopt (TCP_CORK on/off, cork flush sends)', r'^(__sys_setsockopt|__x64_sys_setsockopt)$'),
 ('kernel: membarrier (glommio before sleeping)', r'membarrier'),
 ('kernel: task_work at syscall exit (io_uring completions, fput)', r'^(task_work_run|tctx_task_work|io_handle_tw_list)$'),
 ('kernel: scheduler / context switch', r'^(schedule|__schedule|finish_task_switch.*|schedule_hrtimeout.*)$'),
 ('kernel: irq / softirq / timer interrupt (not in a syscall)', r'^(asm_sysvec.*|sysvec_.*|handle_softirqs|irq_exit_rcu|asm_common_interrupt)$'),
 ('kernel: page faults', r'^(asm_exc_page_fault|exc_page_fault)$'),
 ('kernel: other syscalls', r'^(do_syscall_64|x64_sys_call)$'),
]
USER = [
 ('user: clock reads (clock_gettime / Instant::now)', r'(clock_gettime|Timespec>::now|Instant>::now|sub_timespec|__vdso)'),
 ('user: glommio reactor / io_uring SQE+CQE handling', r'(glommio::sys|glommio::reactor|glommio::parking|glommio::iou|iou::|uring_sys|_io_uring_|io_uring_|__sys_io_uring|glommio::net|glommio::io|SourceMap|^syscall$)'),
 ('user: glommio executor / tasks / wakers / channels', r'(glommio::executor|glommio::task|async_task|glommio::timer|glommio::sync|glommio::channels|flume::|crossbeam|futures_lite|futures_util|core::future|Waker|wake)'),
 ('user: malloc / free', r'(malloc|_int_free|_int_malloc|cfree|calloc|realloc|tcache|__rust_alloc|__rust_dealloc|__rdl_|unlink_chunk|malloc_consolidate|alloc::raw_vec|drop_in_place|alloc::alloc)'),
 ('user: memcpy / memmove / memchr', r'(memcpy|memmove|memset|memcmp|bcmp|memchr|strlen)'),
 ('user: spool (records, CRC, writer, book)', r'(crc32c|impulse::spool)'),
 ('user: SMTP data decoding (dot-unstuffing, line scan)', r'(impulse::smtp::data|DataDecoder|impulse::message)'),
 ('user: SMTP command parsing / replies / sessions', r'(impulse::smtp|impulse::inbound|impulse::outbound|impulse::reply|impulse::conn)'),
 ('user: queue driver / policy', r'impulse::queue'),
 ('user: hashing', r'(hash|Hash|sip::)'),
 ('user: logging / formatting', r'(core::fmt|alloc::fmt|log::|logger|fmt::|itoa|<.* as core::fmt)'),
 ('user: smallvec/btree/collections', r'(smallvec|btree|collections|hashbrown)'),
 ('user: other impulse', r'impulse::'),
]
COMP = [  # leaf-most anchor wins
 ('spool writer / committer', r'impulse::spool::'),
 ('outbound client session (queue worker, deliver)', r'(impulse::outbound::|impulse::queue::driver::worker|impulse::smtp::client)'),
 ('inbound SMTP server session', r'(impulse::inbound::|impulse::smtp::server|impulse::smtp::data)'),
 ('queue driver (accept, settle, scheduler)', r'impulse::queue::'),
 ('glommio reactor loop (poll_io/park/spin_poll_io: Reactor::wait)', r'(glommio::parking|glommio::reactor::Reactor::(react|spin_poll_io)|glommio::sys::uring::Reactor::wait)'),
 ('glommio executor loop (task scheduling)', r'glommio::executor::LocalExecutor::run'),
 ('io-wq kernel worker (spool I/O)', r'^(io_wq_worker)$'),
]
def flush(frames, selfc, compc):
    global other
    if not frames: return
    leaf_sym, leaf_dso = frames[0]
    b = None
    if leaf_dso.startswith('[kernel') or leaf_dso == '[unknown]' and not frames[0][0].startswith('0x'):
        for s, d in frames:
            for name, rx in KERNEL_ANCHORS:
                if re.search(rx, s): b = name; break
            if b: break
        b = b or 'kernel: other'
        if b == 'kernel: other syscalls':  # name the syscall if visible
            pass
    else:
        chain = []
        for sym, d in frames:
            chain.append(sym)
            if d != 'inlined': break
        for sym in chain:
            for name, rx in USER:
                if re.search(rx, sym): b = name; break
            if b: break
        if not b:
            b = 'user: libc other' if 'libc' in leaf_dso else 'user: other'
            other[chain[-1][:70]] += 1
    selfc[b] += 1
    c = None
    for s, d in frames:
        for name, rx in COMP:
            if re.search(rx, s): c = name; break
        if c: break
    compc[c or 'other'] += 1
selfc, compc = C.Counter(), C.Counter(); frames = []; other = C.Counter()
for l in sys.stdin:
    if not l.strip():
        flush(frames, selfc, compc); frames = []; continue
    if l[0] != '\t' and not l.startswith(' ' * 6):
        flush(frames, selfc, compc); frames = []; continue
    m = re.match(r'^\s+([0-9a-f]+)\s+(.*?)\s+\((.*)\)\s*$', l)
    if m: frames.append((re.sub(r'\+0x[0-9a-f]+$', '', m.group(2)), m.group(3)))
flush(frames, selfc, compc)
n = sum(selfc.values())
print(f"samples: {n}\n\n| self-time bucket | % of impulse CPU |\n|---|---|")
for k, v in selfc.most_common(): print(f"| {k} | {100*v/n:.1f} |")
print("\n| inclusive component (leaf-most anchor) | % of impulse CPU |\n|---|---|")
for k, v in compc.most_common(): print(f"| {k} | {100*v/n:.1f} |")
print("\nuser: other, top leaf functions: " + ", ".join(f"{k} {100*v/n:.1f}%" for k, v in other.most_common(8)))
