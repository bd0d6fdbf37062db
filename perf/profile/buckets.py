#!/usr/bin/env python3
"""buckets.py SELF.txt: perf report --no-children --sort dso,symbol (percent per symbol) grouped into buckets."""
import re, sys, collections as C
rules = [  # first match wins; patterns on "dso symbol"
 ('kernel: io_uring (enter, submit, timeouts, cancel, task_work, poll)', r'\[kernel.*\] .*(io_uring|io_\w+|__io_|tctx_|io-wq|io_wq|hrtimer|timerqueue|_raw_spin|task_work)'),
 ('kernel: TCP/IP send/recv (loopback)', r'\[kernel.*\] .*(tcp|inet|sock|skb|ip_|__ip|net_|netif|dev_|loopback|__dev|napi|sk_|release_sock|lock_sock|__sys_send|__sys_recv|csum|nf_|__netif|process_backlog|__napi|do_softirq|__local_bh|validate_xmit|eth_|raw_v4|__kfree_skb|kfree_skb|consume_skb|__alloc_skb|memcg_|mod_memcg|page_counter|__build_skb)'),
 ('kernel: filesystem/block (O_DIRECT write, fsync)', r'\[kernel.*\] .*(ext4|jbd2|iomap|blk|bio|virtio|vring|submit_bio|__x64_sys_fdatasync|vfs_fsync|file_write|filemap|nvme|dio|direct_io|writeback|xfs)'),
 ('kernel: scheduler/wakeup/idle', r'\[kernel.*\] .*(schedule|sched|pick_next|enqueue|dequeue|update_curr|update_load|try_to_wake|wake_up|finish_task|switch|futex|idle|psi_|cpuacct|__update|select_task|ttwu|set_next|put_prev|rseq|membarrier|smp_call|ipi|flush_tlb)'),
 ('kernel: syscall entry/exit, copy to/from user', r'\[kernel.*\] .*(entry_SYSCALL|syscall|do_syscall|copy_user|_copy_to_iter|_copy_from_iter|copyin|copyout|rep_movs|__check_object|check_heap|__virt_addr|clear_bhb|x64_sys_call|fpregs|exit_to_user|restore_fpregs|srso|retbleed|__x86_return|syscall_exit)'),
 ('kernel: memory alloc (slab/page)', r'\[kernel.*\] .*(kmem_cache|kmalloc|kfree|slab|__slab|alloc_pages|free_pages|__free|get_page|page_|folio|rmqueue|__kmalloc|__memcg)'),
 ('kernel: other', r'\[kernel'),
 ('glommio reactor / io_uring submission+completion (user)', r'(glommio::sys|glommio::reactor|glommio::parking|iou::|uring_sys|io_uring_|glommio::sys::source|SourceMap|consume_rings|flush_rings|UringQueueState|glommio::net|glommio::io)'),
 ('glommio task scheduling / wakers / timers (user)', r'(glommio::executor|glommio::task|async_task|glommio::timer|Waker|wake_by|raw_waker|futures_lite|futures_util|glommio::sync|glommio::channels|LocalExecutor|TaskQueue|poll_fn|core::future)'),
 ('allocation / free (malloc)', r'(malloc|_int_free|_int_malloc|cfree|__libc_calloc|realloc|tcache|alloc::alloc|__rust_alloc|__rust_dealloc|__rdl_|mi_|je_|sdallocx|unlink_chunk|malloc_consolidate|alloc::raw_vec|RawVec|drop_in_place)'),
 ('memcpy / memmove / memset', r'(memcpy|memmove|memset|__memcmp|memchr|bcmp|memcmp|strlen)'),
 ('spool write / CRC / records', r'(crc|Crc|spool::|impulse::spool|crc32|crc64)'),
 ('SMTP parsing / reply formatting (inbound+outbound)', r'(smtp::|impulse::smtp|impulse::reply|impulse::inbound|impulse::outbound|parse|Command|Reply|impulse::server)'),
 ('body decoding / dot-unstuffing / message', r'(impulse::message|dot|unstuff|Content|body|header)'),
 ('queue driver / policy', r'(impulse::queue|queue::)'),
 ('hashing', r'(hash|Hash|SipHasher|ahash|fxhash|foldhash)'),
 ('logging / formatting', r'(core::fmt|alloc::fmt|log::|impulse::runtime::logger|fmt::|Display|Debug|write_fmt|itoa|ryu|chrono|time::)'),
 ('impulse other', r'impulse'),
 ('libc other', r'libc'),
]
acc = C.Counter(); top = C.defaultdict(list)
for l in open(sys.argv[1]):
    m = re.match(r'^\s+([\d.]+)%\s+(\S+)\s+\[[.kx]\]\s+(.*)$', l)
    if not m: continue
    pct, dso, sym = float(m.group(1)), m.group(2), m.group(3).strip()
    key = f"{dso} {sym}"
    if dso.startswith('[kernel') or dso == '[unknown]' and sym.startswith('0xffff'): key = f"[kernel] {sym}"
    for name, rx in rules:
        if re.search(rx, key): acc[name] += pct; top[name].append((pct, sym)); break
    else: acc['other'] += pct; top['other'].append((pct, sym))
print("| bucket | % of impulse CPU samples | top symbols |"); print("|---|---|---|")
for name, p in acc.most_common():
    t = ", ".join(f"{s[:60]} {q:.1f}" for q, s in sorted(top[name], reverse=True)[:4])
    print(f"| {name} | {p:.1f} | {t} |")
print(f"| total | {sum(acc.values()):.1f} | |")
