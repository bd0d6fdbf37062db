//! The composition root: loads the config, locks the spools, starts one
//! glommio executor per shard (each built by `shard::run` out of the
//! stages: spool, queue and delivery, inbound), gives each shard an inbox
//! of typed requests, and turns signals into requests (SIGHUP: reload with
//! a new snapshot; SIGTERM/SIGINT: shutdown).
//!
//! May call every stage and the runtime primitives; nothing imports it but
//! `main`. Must never: bind a socket before every spool is locked, or
//! report a reload as applied when part of it needs a restart.

mod shard;

use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};

use crate::binding::{BindingInbox, BindingMesh, Suspended};
use crate::config::{reload, Config, LogFormat, LogPath};
use crate::events::CounterSnapshot;
use crate::events::{Level, Subsystem};
use crate::inbound::{AuthInbox, AuthMesh};
use crate::runtime::mesh;
use crate::runtime::{allowed_cpus, explain_glommio, raise_limits, tune_allocator};
use crate::spool::SpoolLock;
use crate::throttle::{ThrottleInbox, ThrottleMesh};

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

/// What the main thread asks a shard (its inbox). Later issues add console
/// commands and counters here.
pub enum ShardRequest {
    /// Use this snapshot from now on (live options at once, new-sessions
    /// options for sessions that start after this).
    Reload(Arc<Config>),
    /// This shard's counters.
    Counters,
    /// Every shard's counters added up, gathered by this shard through the
    /// mesh.
    GatherCounters,
    /// Close the log files and open their paths again (log rotation).
    ReopenLogs,
    /// Stop accepting, drain, close the spool and end the shard.
    Shutdown,
}

/// A shard's answer.
#[derive(Debug, PartialEq, Eq)]
pub enum ShardAnswer {
    /// The request was carried out.
    Done,
    /// One shard's counters.
    Counters(CounterSnapshot),
    /// The sum over the shards that answered in time.
    Gathered {
        /// The sum.
        total: CounterSnapshot,
        /// Shards that did not answer: the sum is then a lower bound.
        missing: Vec<usize>,
    },
}

/// A shard's ends of the cross-shard services: its view of every shard's
/// inbox, and its own inbox for the keys it owns.
pub struct Services {
    /// Failed-AUTH accounting per client address.
    pub auth: (AuthMesh, AuthInbox),
    /// Connection slots and rates per domain.
    pub throttle: (ThrottleMesh, ThrottleInbox),
    /// Group member picks and suspensions, with the suspensions read at start.
    pub binding: (BindingMesh, BindingInbox, Suspended),
}

/// Requests waiting in a shard's inbox before the main thread waits.
const INBOX_CAPACITY: usize = 64;
/// Requests waiting in a shard's inbox of a cross-shard service (AUTH
/// accounting, throttles) before the askers wait.
const SERVICE_INBOX_CAPACITY: usize = 1024;
/// How long the main thread waits for a shard to take or answer a request.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);

type Inbox = mesh::Inbox<ShardRequest, ShardAnswer>;
type Address = mesh::Address<ShardRequest, ShardAnswer>;
type Mesh = mesh::Mesh<ShardRequest, ShardAnswer>;

/// Runs the server until SIGTERM/SIGINT.
pub fn serve(config_path: Option<PathBuf>) -> Result<(), ServeError> {
    let config = Config::load(config_path.as_deref())?;
    raise_limits();
    tune_allocator();
    let allowed = allowed_cpus();
    let count = config.shard_count(allowed.len());
    let cpus = config.cpus.clone().unwrap_or_else(|| allowed.clone());
    for n in config.unused_shard_overrides(count) {
        log::warn!("[shard.{n}] is ignored: only {count} shard(s) run");
    }
    // Held until serve returns: no second process, and no second shard,
    // may write to these directories. Taken before anything binds.
    let _locks = lock_spools(&config, count)?;
    let config = Arc::new(config);
    let _ = MAIN_PANICLOG.set(
        config
            .logs
            .paniclog
            .clone()
            .filter(|_| config.logs.errors)
            .map(|p| (p, config.logs.format)),
    );
    // Installed before any shard starts, so an early SIGTERM waits for the
    // signal thread instead of killing the process.
    let signals = install_signals()?;
    let (addresses, inboxes) = mesh::inboxes::<ShardRequest, ShardAnswer>(count, INBOX_CAPACITY);
    let (auth_addresses, auth_inboxes) = mesh::inboxes(count, SERVICE_INBOX_CAPACITY);
    let (throttle_addresses, throttle_inboxes) = mesh::inboxes(count, SERVICE_INBOX_CAPACITY);
    let (binding_addresses, binding_inboxes) = mesh::inboxes(count, SERVICE_INBOX_CAPACITY);
    // Mail meant to wait must not go out because a file went unread.
    let suspended = crate::binding::suspend::load(&config.spoolbase)
        .map_err(|e| ServeError::Startup(format!("suspended bindings: {e}")))?;
    let (tx, rx) = mpsc::channel();
    let mut handles = Vec::new();
    let service_inboxes = auth_inboxes
        .into_iter()
        .zip(throttle_inboxes)
        .zip(binding_inboxes);
    for (shard, (inbox, ((auth_inbox, throttle_inbox), binding_inbox))) in
        inboxes.into_iter().zip(service_inboxes).enumerate()
    {
        // More shards than CPUs run unpinned rather than doubling up on one core.
        let placement = match cpus.get(shard) {
            Some(cpu) if count <= cpus.len() => Placement::Fixed(*cpu),
            _ => Placement::Unbound,
        };
        let (snapshot, tx) = (config.clone(), tx.clone());
        let peers = Mesh::new(shard, addresses.clone());
        let services = Services {
            auth: (AuthMesh::new(shard, auth_addresses.clone()), auth_inbox),
            throttle: (
                ThrottleMesh::new(shard, throttle_addresses.clone()),
                throttle_inbox,
            ),
            binding: (
                BindingMesh::new(shard, binding_addresses.clone()),
                binding_inbox,
                suspended.clone(),
            ),
        };
        let builder = LocalExecutorBuilder::new(placement)
            .name(&format!("shard-{shard}"))
            .io_memory(SHARD_IO_MEMORY);
        match builder.spawn(move || shard::run(shard, snapshot, inbox, peers, services, tx)) {
            Ok(h) => handles.push(h),
            Err(e) => {
                shutdown_all(&addresses);
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
                shutdown_all(&addresses);
            }
            Err(_) => break,
        }
    }
    // The signal thread is started once every shard is up (or has failed),
    // so a reload never races a shard's start-up.
    let signals = signal_thread(signals, addresses.clone(), config, config_path)?;
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

/// The paniclog the main thread writes to (set once at start).
static MAIN_PANICLOG: std::sync::OnceLock<Option<(LogPath, LogFormat)>> =
    std::sync::OnceLock::new();

/// A paniclog line of the main thread (signals, the control of shards):
/// to the process log and, when configured, the paniclog file.
fn paniclog(what: &str) {
    log::error!("paniclog: [ERROR] SIG: {what}");
    if let Some(Some((path, format))) = MAIN_PANICLOG.get() {
        crate::logs::append_blocking(path, *format, Level::Error, Subsystem::Sig, what);
    }
}

/// Asks every shard to close and reopen its log files (SIGHUP, after the
/// reload: rename the files first, as logrotate does).
pub fn reopen_logs(addresses: &[Address]) {
    let mut missed = Vec::new();
    for (shard, a) in addresses.iter().enumerate() {
        if let Err(e) = a.ask_blocking(ShardRequest::ReopenLogs, ASK_TIMEOUT) {
            missed.push(format!("shard {shard} ({e})"));
        }
    }
    if missed.is_empty() {
        log::info!("logs reopened");
    } else {
        paniclog(&format!("reopen logs: not taken by {}", missed.join(", ")));
    }
}

/// Asks every shard to shut down; a shard that already ended is fine.
fn shutdown_all(addresses: &[Address]) {
    for (shard, a) in addresses.iter().enumerate() {
        match a.tell_blocking(ShardRequest::Shutdown, ASK_TIMEOUT) {
            Ok(()) | Err(mesh::AskError::Closed) => {}
            Err(e) => paniclog(&format!("shard {shard}: shutdown request not taken: {e}")),
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
    mut signals: signal_hook::iterator::Signals,
    addresses: Vec<Address>,
    running: Arc<Config>,
    path: Option<PathBuf>,
) -> Result<signal_hook::iterator::Handle, ServeError> {
    use signal_hook::consts::{SIGHUP, SIGUSR1};
    let handle = signals.handle();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut running = running;
            for sig in signals.forever() {
                match sig {
                    SIGHUP => {
                        reload(&addresses, &mut running, path.as_deref());
                        reopen_logs(&addresses);
                    }
                    SIGUSR1 => log_counters(&addresses),
                    _ => {
                        log::info!("signal {sig}: shutting down gracefully");
                        shutdown_all(&addresses);
                    }
                }
            }
        })
        .map_err(|e| ServeError::Startup(format!("cannot start the signal thread: {e}")))?;
    Ok(handle)
}

fn install_signals() -> Result<signal_hook::iterator::Signals, ServeError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
    signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1])
        .map_err(|e| ServeError::Startup(format!("cannot install signal handlers: {e}")))
}

/// SIGUSR1: asks shard 0 to gather every shard's counters through the mesh
/// and logs the sum, saying which shards did not answer.
fn log_counters(addresses: &[Address]) {
    let shards = addresses.len();
    match addresses[0].ask_blocking(ShardRequest::GatherCounters, ASK_TIMEOUT) {
        Ok(ShardAnswer::Gathered { total, missing }) if missing.is_empty() => {
            log::info!("counters ({shards} of {shards} shards): {}", total.render());
        }
        Ok(ShardAnswer::Gathered { total, missing }) => log::warn!(
            "counters (partial: {} of {shards} shards; no answer from shard(s) {missing:?}): {}",
            shards - missing.len(),
            total.render()
        ),
        Ok(other) => paniclog(&format!("counters: unexpected answer {other:?}")),
        Err(e) => paniclog(&format!("counters: shard 0 did not answer: {e}")),
    }
}

/// Loads the file again and hands every shard the new snapshot; logs what
/// was applied, what needs a restart, and any shard that did not take it.
fn reload(addresses: &[Address], running: &mut Arc<Config>, path: Option<&std::path::Path>) {
    match Config::load(path) {
        Ok(mut new) => {
            let plan = reload::plan(running, &new);
            reload::keep_restart_only(&mut new, running);
            let new = Arc::new(new);
            let mut missed = Vec::new();
            for (shard, a) in addresses.iter().enumerate() {
                match a.ask_blocking(ShardRequest::Reload(new.clone()), ASK_TIMEOUT) {
                    Ok(_) => {}
                    Err(e) => missed.push(format!("shard {shard} ({e})")),
                }
            }
            *running = new;
            let name = path.map_or("(embedded)".into(), |p| p.display().to_string());
            let (level, line) = plan.describe(&name);
            log::log!(level, "{line}");
            if !missed.is_empty() {
                paniclog(&format!(
                    "reload: not taken by {}; those shards keep their previous configuration",
                    missed.join(", ")
                ));
            }
        }
        Err(errors) => {
            log::error!("reload: configuration rejected, keeping the running one:\n{errors}");
        }
    }
}
