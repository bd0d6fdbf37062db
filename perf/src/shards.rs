//! One glommio executor per core, pinned, like the server's shards; and
//! the process limits they need. Runs closures; knows nothing of SMTP.

use glommio::{LocalExecutorBuilder, Placement};

/// Locked memory each executor's ring registers.
const IO_MEMORY_OCTETS: usize = 1 << 20;
/// Open files wanted (every connection is a descriptor).
const WANTED_NOFILE: u64 = 1 << 20;

/// CPUs this process may run on, in order.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is valid; the pointer lives for the call.
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

/// Raises the soft limits for locked memory and open files.
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
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(res, &lim);
        }
    }
}

/// Runs `count` executors (pinned to the allowed CPUs while there are
/// enough), each running `task(shard)`; returns their results in order.
pub fn run<T, F, Fut>(name: &str, count: usize, task: F) -> Result<Vec<T>, String>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Clone + 'static,
    Fut: std::future::Future<Output = T> + 'static,
{
    let cpus = allowed_cpus();
    let mut handles = Vec::new();
    for shard in 0..count {
        let placement = match cpus.get(shard) {
            Some(cpu) if count <= cpus.len() => Placement::Fixed(*cpu),
            _ => Placement::Unbound,
        };
        let task = task.clone();
        let h = LocalExecutorBuilder::new(placement)
            .name(&format!("{name}-{shard}"))
            .io_memory(IO_MEMORY_OCTETS)
            .spawn(move || task(shard))
            .map_err(|e| {
                format!("cannot start executor {shard}: {e} (io_uring needs `ulimit -l unlimited`)")
            })?;
        handles.push(h);
    }
    handles
        .into_iter()
        .enumerate()
        .map(|(i, h)| h.join().map_err(|e| format!("executor {i}: {e}")))
        .collect()
}

/// Executors to run when the user says 0: one per allowed CPU.
pub fn default_count(requested: usize) -> usize {
    if requested > 0 {
        requested
    } else {
        allowed_cpus().len()
    }
}
