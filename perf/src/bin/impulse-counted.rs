//! impulse-counted: `impulse serve` with a counting allocator and counting
//! `memcpy`/`memmove`, for allocations and copies per relayed message
//! (perf/alloc_count.sh).
//!
//! Allocations: every allocation, the bytes asked for, and the
//! "body-sized" ones (at least IMPULSE_COUNT_BIG bytes, default 4000).
//!
//! Copies: this binary defines the `memcpy` and `memmove` symbols, so every
//! out-of-line copy the Rust code makes (`copy_from_slice`,
//! `extend_from_slice`, `Vec` growth through the allocator's own copy
//! aside, `Rc::from(Vec)`, `to_vec`, ...) goes through a counter before
//! it is done with `rep movsb`. Counted: all bytes copied, whatever the
//! size of each call, so a body copied line by line counts in full; the
//! calls of at least IMPULSE_COUNT_BIG bytes; and `realloc`s that moved a
//! block (their bytes copied inside the allocator). Not counted: the
//! kernel's copies in read(2)/write(2), and copies the compiler inlines
//! (small constant sizes only). alloc_count.sh turns the bytes into body
//! copies by measuring at two message sizes. Prints one `ALLOC ...` line
//! and one `COPIES ...` line (bytes copied by call size) to stderr when
//! the server stops.
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
static COPIED: AtomicU64 = AtomicU64::new(0);
static BIG_COPIES: AtomicU64 = AtomicU64::new(0);
static REALLOC_MOVED: AtomicU64 = AtomicU64::new(0);

/// Bytes copied by size class (calls of 2^k..2^(k+1) octets).
static COPY_CLASSES: [AtomicU64; 32] = [const { AtomicU64::new(0) }; 32];

static HEAP_COPIED: AtomicU64 = AtomicU64::new(0);

std::thread_local! {
    /// This thread's stack (low, high), once known; (1, 0) while asking.
    static STACK: std::cell::Cell<(usize, usize)> = const { std::cell::Cell::new((0, 0)) };
}

/// True when `p` is on the calling thread's stack: a move of a local (an
/// async fn's state, a struct passed by value), not a copy of data.
fn on_stack(p: usize) -> bool {
    let Ok((lo, hi)) = STACK.try_with(|s| {
        if s.get() == (0, 0) {
            s.set((1, 0)); // a copy made while asking is not on the stack
            s.set(stack_bounds());
        }
        s.get()
    }) else {
        return false;
    };
    p >= lo && p < hi
}

fn stack_bounds() -> (usize, usize) {
    // SAFETY: pthread_getattr_np fills `attr` for the calling thread; it is
    // destroyed after reading the stack's address and size.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return (1, 0);
        }
        let (mut addr, mut size) = (std::ptr::null_mut(), 0usize);
        let ok = libc::pthread_attr_getstack(&attr, &mut addr, &mut size) == 0;
        libc::pthread_attr_destroy(&mut attr);
        if ok {
            (addr as usize, addr as usize + size)
        } else {
            (1, 0)
        }
    }
}

fn count_copy_from(src: *const u8, n: usize) {
    if !on_stack(src as usize) {
        HEAP_COPIED.fetch_add(n as u64, Relaxed);
    }
    count_copy(n);
}

fn count_copy(n: usize) {
    COPIED.fetch_add(n as u64, Relaxed);
    let class = (usize::BITS - n.leading_zeros()).min(31) as usize;
    COPY_CLASSES[class].fetch_add(n as u64, Relaxed);
    if n >= BIG.load(Relaxed) {
        BIG_COPIES.fetch_add(1, Relaxed);
    }
}

/// Forward byte copy; the caller guarantees `n` bytes at both ends.
#[cfg(target_arch = "x86_64")]
unsafe fn copy_forward(dst: *mut u8, src: *const u8, n: usize) {
    // SAFETY: `rep movsb` copies rcx bytes from rsi to rdi, low to high
    // (the direction flag is clear, as the ABI requires on entry).
    unsafe {
        std::arch::asm!("rep movsb", inout("rcx") n => _, inout("rdi") dst => _,
            inout("rsi") src => _, options(nostack, preserves_flags));
    }
}

/// Backward byte copy (for an overlapping move to a higher address).
#[cfg(target_arch = "x86_64")]
unsafe fn copy_backward(dst: *mut u8, src: *const u8, n: usize) {
    // SAFETY: with the direction flag set, `rep movsb` copies from the last
    // byte down; the flag is cleared again before returning.
    unsafe {
        std::arch::asm!("std", "rep movsb", "cld", inout("rcx") n => _,
            inout("rdi") dst.add(n - 1) => _, inout("rsi") src.add(n - 1) => _,
            options(nostack));
    }
}

/// The process's `memcpy`: counted, then copied.
///
/// # Safety
/// The C contract: `n` valid bytes at `src` and `dst`, not overlapping.
#[cfg(target_arch = "x86_64")]
#[no_mangle]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    count_copy_from(src, n);
    unsafe { copy_forward(dst, src, n) };
    dst
}

/// The process's `memmove`: counted, then copied in the safe direction.
///
/// # Safety
/// The C contract: `n` valid bytes at `src` and `dst`, which may overlap.
#[cfg(target_arch = "x86_64")]
#[no_mangle]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    count_copy_from(src, n);
    if n > 0 && (dst as usize) > (src as usize) && (dst as usize) < (src as usize) + n {
        unsafe { copy_backward(dst, src, n) };
    } else {
        unsafe { copy_forward(dst, src, n) };
    }
    dst
}

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
        let kept = layout.size().min(new_size);
        REALLOC_COPIED.fetch_add(kept as u64, Relaxed);
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() && new != ptr {
            // Moved: the allocator copied the old contents (not through
            // our memcpy), so it is counted here.
            REALLOC_MOVED.fetch_add(kept as u64, Relaxed);
            COPIED.fetch_add(kept as u64, Relaxed);
            HEAP_COPIED.fetch_add(kept as u64, Relaxed);
            if kept >= BIG.load(Relaxed) {
                BIG_COPIES.fetch_add(1, Relaxed);
            }
        }
        new
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
        "ALLOC allocs={} bytes={} big_allocs={} big_bytes={} realloc_copied={} copied={} big_copies={} realloc_moved={} heap_copied={} big_threshold={big}",
        ALLOCS.load(Relaxed),
        BYTES.load(Relaxed),
        BIG_ALLOCS.load(Relaxed),
        BIG_BYTES.load(Relaxed),
        REALLOC_COPIED.load(Relaxed),
        COPIED.load(Relaxed),
        BIG_COPIES.load(Relaxed),
        REALLOC_MOVED.load(Relaxed),
        HEAP_COPIED.load(Relaxed)
    );
    let classes: Vec<String> = COPY_CLASSES
        .iter()
        .enumerate()
        .filter(|(_, c)| c.load(Relaxed) > 0)
        .map(|(k, c)| format!("{}={}", 1u64 << k.saturating_sub(1), c.load(Relaxed)))
        .collect();
    eprintln!(
        "COPIES by call size (from octets=bytes): {}",
        classes.join(" ")
    );
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("impulse-counted: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
