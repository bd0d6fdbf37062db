//! impulse-counted: `impulse serve` with a counting allocator, for
//! allocation counts per relayed message (perf/alloc_count.sh). Counts
//! every allocation, the bytes asked for, and the "body-sized" ones (at
//! least IMPULSE_COUNT_BIG bytes, default 4000): each body-sized buffer is
//! filled by a copy of (most of) a message, so their number per message is
//! a count of body copies that made a new buffer. Copies into buffers that
//! already exist are not seen here. Prints one `ALLOC ...` line to stderr
//! when the server stops.
//!
//! Usage: impulse-counted CONFIG.toml

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
static BIG_ALLOCS: AtomicU64 = AtomicU64::new(0);
static BIG_BYTES: AtomicU64 = AtomicU64::new(0);
static REALLOC_COPIED: AtomicU64 = AtomicU64::new(0);
static BIG: AtomicUsize = AtomicUsize::new(usize::MAX);

fn count(size: usize) {
    ALLOCS.fetch_add(1, Relaxed);
    BYTES.fetch_add(size as u64, Relaxed);
    if size >= BIG.load(Relaxed) {
        BIG_ALLOCS.fetch_add(1, Relaxed);
        BIG_BYTES.fetch_add(size as u64, Relaxed);
    }
}

// SAFETY: every call is passed to the system allocator unchanged; the
// counters are atomics and allocate nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Counted as a new buffer; the old contents may be copied into it.
        count(new_size);
        REALLOC_COPIED.fetch_add(layout.size().min(new_size) as u64, Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() -> std::process::ExitCode {
    let big = std::env::var("IMPULSE_COUNT_BIG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    BIG.store(big, Relaxed);
    let Some(config) = std::env::args().nth(1) else {
        eprintln!("usage: impulse-counted CONFIG.toml");
        return std::process::ExitCode::from(2);
    };
    // SAFETY: main thread, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    impulse::runtime::logger::init();
    let result = impulse::server::serve(Some(config.into()));
    impulse::runtime::logger::drain();
    eprintln!(
        "ALLOC allocs={} bytes={} big_allocs={} big_bytes={} realloc_copied={} big_threshold={big}",
        ALLOCS.load(Relaxed),
        BYTES.load(Relaxed),
        BIG_ALLOCS.load(Relaxed),
        BIG_BYTES.load(Relaxed),
        REALLOC_COPIED.load(Relaxed)
    );
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("impulse-counted: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
