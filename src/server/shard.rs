//! One shard's life: recover its spool, bind its listeners, serve, keep
//! the spool compacted, answer its inbox (reload, shutdown), and shut down
//! gracefully when asked.
//!
//! The shard's composition root: builds its stages bottom-up (spool,
//! outbound pools, the queue's driver, inbound) and wires them. May call:
//! every stage, runtime. Must never: share a stage's state with another
//! shard (other shards are reached through the mesh).

use std::rc::Rc;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Inbox, Mesh, Services, ShardAnswer, ShardRequest, Startup};
use crate::binding::Bindings;
use crate::config::Config;
use crate::conn::ShardTls;
use crate::events::{CounterSnapshot, Counters, Events, Subsystem};
use crate::inbound::ShardInbound;
use crate::intake::Intake;
use crate::logs::Logs;
use crate::outbound::dns::{Resolver, ResolverConfig};
use crate::outbound::Pools;
use crate::queue::driver::ShardQueue;
use crate::runtime::shutdown::Signal;
use crate::runtime::Current;
use crate::spool::{Spool, SpoolOptions};
use crate::throttle::Throttles;

/// Spool maintenance interval while the disk is full.
const LOW_SPACE_MAINTAIN_INTERVAL: Duration = Duration::from_secs(1);
/// How long the logs get to write their last lines at shutdown.
const LOG_CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long sessions get to write their 421 and close after the deadline.
const FORCE_CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How often a draining shard looks whether its sessions and connections
/// have ended.
const DRAIN_POLL: Duration = Duration::from_millis(10);

/// The shard's main task.
pub async fn run(
    shard: usize,
    config: Arc<Config>,
    inbox: Inbox,
    mesh: Mesh,
    services: Services,
    tx: Sender<Startup>,
) {
    let Services {
        auth,
        throttle,
        binding,
    } = services;
    let current = Rc::new(Current::new(config.clone()));
    let tls = Rc::new(ShardTls::default());
    let dir = super::shard_spool_dir(&config, shard);
    let opts = SpoolOptions {
        segment_size: config.spool.segment_size,
        batch_max_bytes: config.spool.batch_max_bytes,
        batch_max_delay: config.spool.batch_max_delay,
        reserve_bytes: config.spool.reserve_bytes,
    };
    // The bus and the logs come first: recovery's paniclog lines go there.
    let events = Rc::new(Events::new(shard));
    let counters = Rc::new(Counters::default());
    events.subscribe(counters.clone());
    let logs = Logs::new(shard, &config.logs);
    if let Err(error) = logs.start(events.clone()) {
        let _ = tx.send(Startup::Failed { shard, error });
        return;
    }
    events.subscribe(logs.clone());
    crate::events::install(events.clone());
    let (spool, mut recovered) = match Spool::open(&dir, shard as u16, opts).await {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.send(Startup::Failed {
                shard,
                error: format!("spool {}: {e}", dir.display()),
            });
            return;
        }
    };
    // Reads /etc/resolv.conf once, before the shard serves anything.
    let resolver = Rc::new(Resolver::new(ResolverConfig::load(&config.dns)));
    let pools = Pools::new(shard, tls.clone(), events.clone(), resolver);
    // The books of the throttle counters this shard owns, and its side of
    // every other shard's.
    let (throttle_mesh, throttle_inbox) = throttle;
    let throttles = Throttles::new(throttle_mesh, events.clone());
    glommio::spawn_local(crate::throttle::serve(throttle_inbox, throttles.clone())).detach();
    // The groups this shard picks members for (on shard 0 also the
    // suspensions), and its side of every other shard's.
    let (binding_mesh, binding_inbox, suspended) = binding;
    let bindings = Bindings::new(
        binding_mesh,
        current.clone(),
        events.clone(),
        config.spoolbase.clone(),
        suspended,
    );
    glommio::spawn_local(bindings.clone().serve(binding_inbox)).detach();
    let queue = ShardQueue::new(
        shard,
        current.clone(),
        events.clone(),
        logs.clone(),
        spool.clone(),
        pools,
        throttles.clone(),
        bindings.clone(),
        std::mem::take(&mut recovered.messages),
        &recovered.bindings,
    );
    // Recovery's transient blocks are freed now: their pages go back.
    crate::runtime::release_free_memory();
    let intake = Rc::new(Intake::new(
        spool.clone(),
        queue.clone(),
        events.clone(),
        bindings.clone(),
    ));
    let started = ShardInbound::start(
        shard,
        current.clone(),
        tls.clone(),
        events.clone(),
        intake,
        auth,
    );
    let (inbound, bound) = match started {
        Ok(x) => x,
        Err(error) => {
            let _ = spool.close().await;
            let _ = tx.send(Startup::Failed { shard, error });
            return;
        }
    };
    let addrs: Vec<String> = bound.iter().map(|a| a.to_string()).collect();
    let s = &recovered.stats;
    let summary = format!(
        "listening on {}; spool {} recovered {} message(s), {} recipient(s) pending, {} torn byte(s) truncated, {} corrupt record(s) skipped",
        addrs.join(" "),
        dir.display(),
        s.messages,
        s.recipients_pending,
        s.torn_bytes,
        s.corrupt_records
    );
    let _ = tx.send(Startup::Ready { shard, summary });
    drop(recovered);
    // Recovery's transient lists are gone: hand their pages back.
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe {
        libc::malloc_trim(0);
    }
    let scheduler = glommio::spawn_local(queue.clone().run());
    let stopping = Signal::default();
    let compactor = glommio::spawn_local(compact_loop(
        shard,
        spool.clone(),
        current.clone(),
        stopping.clone(),
    ));
    let here = Here {
        current: &current,
        tls: &tls,
        events: &events,
        counters: &counters,
        logs: &logs,
        mesh: &mesh,
    };
    serve_inbox(&inbox, here).await;
    stopping.fire();
    let timeout = current.get().shutdown_timeout;
    let deadline = Instant::now() + timeout;
    drain(&inbound, timeout).await;
    queue.stop();
    scheduler.await;
    while queue.busy() > 0 && Instant::now() < deadline + FORCE_CLOSE_GRACE {
        glommio::timer::sleep(DRAIN_POLL).await;
    }
    // It stops at the signal once its current pass is through.
    compactor.await;
    if let Err(e) = spool.close().await {
        events.panic(Subsystem::Spool, &format!("closing the spool: {e}"));
    }
    logs.close(LOG_CLOSE_TIMEOUT).await;
    crate::events::uninstall();
    let kinds: String = crate::throttle::CROSS_KINDS
        .iter()
        .zip(throttles.cross_shard_by_kind())
        .map(|(k, n)| format!(" throttle_{k}_to_other_shards={n}"))
        .collect();
    log::info!(
        "shard {shard} stopped: {} throttle_requests_to_other_shards={}{kinds} binding_requests_to_other_shards={}",
        counters.snapshot(&events).render(),
        throttles.cross_shard_requests(),
        bindings.cross_shard_requests()
    );
    drop(spool);
    drop(Rc::try_unwrap(inbound).ok());
}

/// What the inbox loop works on.
#[derive(Clone, Copy)]
struct Here<'a> {
    current: &'a Current<Config>,
    tls: &'a ShardTls,
    events: &'a Events,
    counters: &'a Counters,
    logs: &'a Logs,
    mesh: &'a Mesh,
}

impl Here<'_> {
    fn counters(&self) -> CounterSnapshot {
        let mut c = self.counters.snapshot(self.events);
        let l = self.logs.stats();
        c.log_waits = l.waits;
        c.log_refusals = l.refusals;
        c.log_write_errors = l.write_errors;
        c
    }
}

/// How long a gathering shard waits for the others' counters.
const GATHER_TIMEOUT: Duration = Duration::from_secs(2);

/// Answers the inbox until it asks for shutdown (or the main thread is gone).
async fn serve_inbox(inbox: &Inbox, here: Here<'_>) {
    while let Some(request) = inbox.recv().await {
        let (body, reply) = request.split();
        match body {
            ShardRequest::Reload(config) => {
                here.current.set(config);
                here.tls.prune();
                reply.send(ShardAnswer::Done);
            }
            ShardRequest::Counters => {
                reply.send(ShardAnswer::Counters(here.counters()));
            }
            ShardRequest::GatherCounters => {
                // Its own task: this shard is one of those asked, so this
                // loop must go on answering while the answers come in.
                let mesh = here.mesh.clone();
                glommio::spawn_local(async move {
                    let g = mesh
                        .ask_all(|_| ShardRequest::Counters, GATHER_TIMEOUT)
                        .await;
                    let missing = g.missing();
                    let mut total = CounterSnapshot::default();
                    for a in g.answers.into_iter().flatten() {
                        if let ShardAnswer::Counters(c) = a {
                            total.add(&c);
                        }
                    }
                    reply.send(ShardAnswer::Gathered { total, missing });
                })
                .detach();
            }
            ShardRequest::ReopenLogs => {
                here.logs.reopen();
                reply.send(ShardAnswer::Done);
            }
            ShardRequest::Shutdown => {
                reply.send(ShardAnswer::Done);
                return;
            }
        }
    }
}

/// Stops accepting, lets sessions finish until `timeout`, then ends the rest with 421.
async fn drain(inbound: &ShardInbound, timeout: Duration) {
    inbound.begin_shutdown();
    let deadline = Instant::now() + timeout;
    while inbound.active_sessions() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(DRAIN_POLL).await;
    }
    if inbound.active_sessions() > 0 {
        log::info!(
            "{} session(s) still open at the shutdown deadline: closing them with 421",
            inbound.active_sessions()
        );
        inbound.force_close();
        let grace = Instant::now() + FORCE_CLOSE_GRACE;
        while inbound.active_sessions() > 0 && Instant::now() < grace {
            glommio::timer::sleep(DRAIN_POLL).await;
        }
    }
}

/// Runs a spool maintenance pass (`Spool::maintain`) every
/// `spool_compact_interval_secs` (read at each pass: a reload may change
/// it), and every second while the disk is full, until `stopping` fires.
/// Glommio I/O only, so the shard keeps serving while it runs.
async fn compact_loop(
    shard: usize,
    spool: Rc<Spool>,
    config: Rc<Current<Config>>,
    stopping: Signal,
) {
    let mut last = Instant::now();
    loop {
        // Wakes at least once a second: low space may begin at any time,
        // and then space must come back soon whatever the interval.
        let interval = config.get().spool.compact_interval;
        let due = if interval.is_zero() {
            LOW_SPACE_MAINTAIN_INTERVAL
        } else {
            interval.saturating_sub(last.elapsed())
        };
        let stop = futures_lite::future::or(
            async {
                glommio::timer::sleep(due.min(LOW_SPACE_MAINTAIN_INTERVAL)).await;
                false
            },
            async {
                stopping.wait().await;
                true
            },
        );
        if stop.await {
            return;
        }
        let interval = if spool.low_on_space() {
            LOW_SPACE_MAINTAIN_INTERVAL
        } else {
            config.get().spool.compact_interval
        };
        if interval.is_zero() || last.elapsed() < interval {
            continue;
        }
        match spool.maintain().await {
            Ok(r) if !r.deleted.is_empty() || r.copied > 0 => log::info!(
                "shard {shard}: spool compaction deleted segment(s) {:?}, copied {} live message(s) ({} bytes) forward",
                r.deleted,
                r.copied,
                r.copied_bytes
            ),
            Ok(_) => {}
            Err(e) => crate::events::paniclog(
                crate::events::Level::Error,
                Subsystem::Spool,
                &format!("shard {shard}: spool compaction: {e}"),
            ),
        }
        last = Instant::now();
    }
}
