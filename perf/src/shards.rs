//! One glommio executor per core, pinned, like the server's shards; and
//! the process limits they need. Runs closures; knows nothing of SMTP.

use glommio::{LocalExecutorBuilder, Placement};

/// Locked memory each executor's ring registers.
const IO_MEMORY_OCTETS: usize = 1 << 20;

pub use impulse::runtime::{allowed_cpus, raise_limits};

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
