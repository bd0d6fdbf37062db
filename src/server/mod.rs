//! The composition root: loads the config, locks the spools, starts one
//! glommio executor per shard (each built by `shard::run` out of the
//! stages: spool, queue and delivery, inbound) and handles signals.
//!
//! May call every stage and the runtime primitives; nothing imports it but
//! `main`. Must never: bind a socket before every spool is locked, or
//! report a reload as applied when part of it needs a restart.

mod shard;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use arc_swap::ArcSwap;
use glommio::{LocalExecutorBuilder, Placement};

use crate::config::{reload, Config};
use crate::runtime::{allowed_cpus, explain_glommio, raise_limits, Control};
use crate::spool::SpoolLock;

/// A shard's start-up report to the main thread.
pub enum Startup {
    /// Spool recovered and listeners bound.
    Ready {
        /// Shard number.
        shard: usize,
        /// Human-readable summary (addresses, recovered counts).
        summary: String,
    },
    /// The shard could not start.
    Failed {
        /// Shard number.
        shard: usize,
        /// Why.
        error: String,
    },
}

/// Why `serve` stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is invalid.
    #[error("invalid configuration:\n{0}")]
    Config(#[from] crate::config::ConfigErrors),
    /// A shard failed to start.
    #[error("{0}")]
    Startup(String),
}

/// Runs the server until SIGTERM/SIGINT.
pub fn serve(config_path: Option<PathBuf>) -> Result<(), ServeError> {
    let config = Config::load(config_path.as_deref())?;
    raise_limits();
    let allowed = allowed_cpus();
    let count = config.shard_count(allowed.len());
    let cpus = config.cpus.clone().unwrap_or_else(|| allowed.clone());
    for n in config.unused_shard_overrides(count) {
        log::warn!("[shard.{n}] is ignored: only {count} shard(s) run");
    }
    // Held until serve returns: no second process, and no second shard,
    // may write to these directories. Taken before anything binds.
    let _locks = lock_spools(&config, count)?;
    let control = Arc::new(Control {
        config: ArcSwap::from_pointee(config),
        shutdown: AtomicBool::new(false),
    });
    let signals = signal_thread(control.clone(), config_path)?;
    let (tx, rx) = mpsc::channel();
    let mut handles = Vec::new();
    for shard in 0..count {
        // More shards than CPUs run unpinned rather than doubling up on one core.
        let placement = match cpus.get(shard) {
            Some(cpu) if count <= cpus.len() => Placement::Fixed(*cpu),
            _ => Placement::Unbound,
        };
        let (ctl, tx) = (control.clone(), tx.clone());
        let builder = LocalExecutorBuilder::new(placement)
            .name(&format!("shard-{shard}"))
            .io_memory(SHARD_IO_MEMORY);
        match builder.spawn(move || shard::run(shard, ctl, tx)) {
            Ok(h) => handles.push(h),
            Err(e) => {
                control.shutdown.store(true, Ordering::SeqCst);
                return Err(ServeError::Startup(explain_glommio(e)));
            }
        }
    }
    drop(tx);
    let mut failure = None;
    for _ in 0..count {
        match rx.recv() {
            Ok(Startup::Ready { shard, summary }) => log::info!("shard {shard} ready: {summary}"),
            Ok(Startup::Failed { shard, error }) => {
                failure.get_or_insert(format!("shard {shard}: {error}"));
                control.shutdown.store(true, Ordering::SeqCst);
            }
            Err(_) => break,
        }
    }
    if failure.is_none() {
        log::info!(
            "impulse {} serving with {count} shard(s)",
            env!("CARGO_PKG_VERSION")
        );
    }
    for (shard, h) in handles.into_iter().enumerate() {
        if let Err(e) = h.join() {
            failure.get_or_insert(format!("shard {shard}: {}", explain_glommio(e)));
        }
    }
    signals.close();
    match failure {
        Some(f) => Err(ServeError::Startup(f)),
        None => {
            log::info!("impulse stopped");
            Ok(())
        }
    }
}

/// Locks every shard's spool directory (see [`SpoolLock`]).
fn lock_spools(config: &Config, count: usize) -> Result<Vec<SpoolLock>, ServeError> {
    (0..count)
        .map(|shard| {
            let dir = shard_spool_dir(config, shard);
            SpoolLock::acquire(&dir, shard as u16)
                .map_err(|e| ServeError::Startup(format!("shard {shard}: spool: {e}")))
        })
        .collect()
}

/// Shard `shard`'s spool directory; relative paths are taken from the
/// working directory at start-up.
pub fn shard_spool_dir(config: &Config, shard: usize) -> PathBuf {
    let dir = config.spool_dir(shard);
    std::path::absolute(&dir).unwrap_or(dir)
}

/// Locked memory each shard's ring registers.
const SHARD_IO_MEMORY: usize = 1 << 20;

/// SIGTERM/SIGINT start a graceful shutdown; SIGHUP reloads the config.
fn signal_thread(
    control: Arc<Control>,
    path: Option<PathBuf>,
) -> Result<signal_hook::iterator::Handle, ServeError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| ServeError::Startup(format!("cannot install signal handlers: {e}")))?;
    let handle = signals.handle();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                match sig {
                    SIGHUP => reload(&control, path.as_deref()),
                    _ => {
                        log::info!("signal {sig}: shutting down gracefully");
                        control.shutdown.store(true, Ordering::SeqCst);
                    }
                }
            }
        })
        .map_err(|e| ServeError::Startup(format!("cannot start the signal thread: {e}")))?;
    Ok(handle)
}

fn reload(control: &Control, path: Option<&std::path::Path>) {
    match Config::load(path) {
        Ok(mut new) => {
            let old = control.config.load();
            let plan = reload::plan(&old, &new);
            reload::keep_restart_only(&mut new, &old);
            control.config.store(Arc::new(new));
            let name = path.map_or("(embedded)".into(), |p| p.display().to_string());
            let (level, line) = plan.describe(&name);
            log::log!(level, "{line}");
        }
        Err(errors) => {
            log::error!("reload: configuration rejected, keeping the running one:\n{errors}");
        }
    }
}
