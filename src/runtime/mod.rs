//! Process runtime primitives: CPU placement and limits, typed requests
//! between threads (inboxes and the shard mesh), shard-local signals, the
//! current-snapshot cell, buffer pools, the logger, and the stages' clock
//! and task spawner ([`sched`]).
//!
//! Imports no pipeline stage and no config type: the composition root
//! (`server`) builds shards out of the stages and these primitives. Must
//! never: hold state shared mutably between shards (cross-shard traffic is
//! requests on bounded channels, see [`mesh`]).

pub mod hash;
pub mod logger;
pub mod mesh;
pub mod pool;
pub mod sched;
pub mod shutdown;

use std::cell::RefCell;
use std::sync::Arc;

/// A shard's current snapshot of something the main thread replaces (the
/// config): stages read it when they start a unit of work (a session, a
/// delivery attempt) and keep that copy for the unit's life. Shard-local:
/// the shard sets it when its inbox brings a new one.
pub struct Current<T>(RefCell<Arc<T>>);

impl<T> Current<T> {
    /// A cell holding `value`.
    pub fn new(value: Arc<T>) -> Self {
        Current(RefCell::new(value))
    }

    /// The snapshot now.
    pub fn get(&self) -> Arc<T> {
        self.0.borrow().clone()
    }

    /// Replaces the snapshot; work already started keeps the one it took.
    pub fn set(&self, value: Arc<T>) {
        *self.0.borrow_mut() = value;
    }
}

const MEMLOCK_HINT: &str =
    "io_uring needs locked memory: raise the limit with `ulimit -l unlimited` (shell), \
LimitMEMLOCK=infinity (systemd unit), or a memlock line in /etc/security/limits.conf";

/// Allocations from this size up get their own mapping (glibc).
const OWN_MAPPING_FROM: i32 = 4 << 20;

/// Makes large allocations (a queue's tables, which grow by doubling)
/// separate mappings that grow by `mremap` and go back to the system when
/// freed. glibc's default raises this threshold as large blocks are freed,
/// up to 32 MiB, so tables below it grow inside the heap and every stage of
/// their growth stays behind as free memory the process keeps: with a
/// million queued messages, about as much as the tables themselves.
/// Blocks below 4 MiB (spool batches, message bodies) stay in the heap,
/// and the heap keeps up to 64 MiB free at its top instead of glibc's
/// fixed 128 KiB (which a fixed mmap threshold implies): else every large
/// message's body lands on pages just given back and faults them in again.
/// Free pages go back at the moments [`release_free_memory`] is called.
pub fn tune_allocator() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets allocator parameters; called before the
    // shards start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, OWN_MAPPING_FROM);
        libc::mallopt(libc::M_TRIM_THRESHOLD, KEEP_FREE_AT_TOP);
    }
}

/// Free memory the heap keeps at its top before giving it back.
const KEEP_FREE_AT_TOP: i32 = 64 << 20;

/// Gives the system back the free pages of every heap (glibc's
/// `malloc_trim`): after a phase that made and freed many small blocks at
/// once (recovery, settling a whole unreachable domain), the heap keeps
/// their pages otherwise. Walks the heaps: call it after such phases, not
/// per message.
pub fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free pages to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Heap bytes in use (every glibc arena, small and mapped blocks): the
/// memory measurements of the queue and the spool book.
#[cfg(all(test, target_env = "gnu"))]
pub(crate) fn heap_in_use() -> usize {
    // SAFETY: mallinfo2 only reads the allocator's counters.
    let m = unsafe { libc::mallinfo2() };
    m.uordblks + m.hblkhd
}

/// Open files wanted when the process may raise its own hard limit (root).
const WANTED_NOFILE: u64 = 1 << 20;

/// Raises soft limits to the hard limits for locked memory and open files
/// (and, where permitted, the open-files hard limit itself: every session
/// is a descriptor).
pub fn raise_limits() {
    for res in [libc::RLIMIT_MEMLOCK, libc::RLIMIT_NOFILE] {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: lim is a valid rlimit for the duration of the calls.
        unsafe {
            if libc::getrlimit(res, &mut lim) != 0 {
                continue;
            }
            if res == libc::RLIMIT_NOFILE && lim.rlim_max < WANTED_NOFILE {
                let more = libc::rlimit {
                    rlim_cur: WANTED_NOFILE,
                    rlim_max: WANTED_NOFILE,
                };
                if libc::setrlimit(res, &more) == 0 {
                    continue;
                }
            }
            if lim.rlim_cur < lim.rlim_max {
                lim.rlim_cur = lim.rlim_max;
                libc::setrlimit(res, &lim);
            }
        }
    }
}

/// Physical memory of the machine in bytes (0 if unknown).
pub fn physical_memory() -> u64 {
    // SAFETY: sysconf only reads system constants.
    let (pages, size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    u64::try_from(pages)
        .unwrap_or(0)
        .saturating_mul(u64::try_from(size).unwrap_or(0))
}

/// CPUs this process may run on, in order.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: set is a plain bitmask struct, valid to zero-initialise and pass by pointer.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
            let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
                .filter(|c| libc::CPU_ISSET(*c, &set))
                .collect();
            if !cpus.is_empty() {
                return cpus;
            }
        }
    }
    (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect()
}

/// An executor start-up error in words, naming the memlock limit when
/// that is the cause.
pub fn explain_glommio(e: impl std::fmt::Display) -> String {
    let text = e.to_string();
    if text.to_ascii_lowercase().contains("memlock") || text.contains("Cannot allocate memory") {
        format!("cannot start the io_uring executor: {text}\n{MEMLOCK_HINT}")
    } else {
        format!("cannot start the executor: {text}")
    }
}

/// Runs `f` on a glommio executor of its own and waits for it (the tests
/// of stages that spawn tasks or use blocking threads).
#[cfg(test)]
pub(crate) fn on_executor<F: std::future::Future<Output = ()> + 'static>(
    f: impl FnOnce() -> F + Send + 'static,
) {
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move { f().await })
        .expect("executor")
        .join()
        .expect("join");
}
