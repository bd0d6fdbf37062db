//! The load generator: one pinned glommio executor per core, each running
//! its share of the connections (`conn`) over impulse's client engine;
//! a closed loop (each connection sends as fast as replies come) or an
//! open loop (a pacer per executor releases messages at the target rate).
//! The main thread prints a progress line a second and the final report.
//!
//! May call: `impulse::smtp::client`, glommio, rustls. Never hides a
//! failure: every message not accepted is counted and shown, and the exit
//! code says so unless `--allow-failures`.

pub mod args;
mod conn;
pub mod stats;
pub mod workload;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use impulse::smtp::client::{ClientSettings, TlsPolicy};

use args::Args;
use stats::{Live, Report, ShardResult, Totals};

/// How often the progress line is printed.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// Longest single pacer sleep (to notice a stop quickly).
const PACER_MAX_SLEEP: Duration = Duration::from_millis(100);

/// State every executor shares: the message budget and the stop flag.
struct Shared {
    stop: AtomicBool,
    claimed: AtomicU64,
    budget: Option<u64>,
    deadline: Option<Instant>,
}

impl Shared {
    /// Claims permission to send one more message.
    fn claim(&self) -> bool {
        if self.stop.load(Relaxed) || self.deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        match self.budget {
            None => true,
            Some(n) => self.claimed.fetch_add(1, Relaxed) < n,
        }
    }

    fn over(&self) -> bool {
        self.stop.load(Relaxed)
            || self.deadline.is_some_and(|d| Instant::now() >= d)
            || self.budget.is_some_and(|n| self.claimed.load(Relaxed) >= n)
    }
}

/// Open loop: messages released by the executor's pacer.
struct Paced {
    rx: LocalReceiver<Instant>,
    queued: Cell<u64>,
    done: Cell<bool>,
}

/// Where a connection gets permission to send its next message.
#[derive(Clone)]
pub struct Tickets {
    shared: Arc<Shared>,
    paced: Option<Rc<Paced>>,
}

impl Tickets {
    /// `None` when the run is over; `Some(Some(t))` in an open loop, where
    /// `t` is when the message was scheduled.
    pub async fn take(&self) -> Option<Option<Instant>> {
        match &self.paced {
            None => self.shared.claim().then_some(None),
            Some(p) => {
                let t = p.rx.recv().await?;
                p.queued.set(p.queued.get().saturating_sub(1));
                Some(Some(t))
            }
        }
    }

    /// True once no more tickets will come.
    pub fn exhausted(&self) -> bool {
        match &self.paced {
            None => self.shared.over(),
            Some(p) => p.done.get() && p.queued.get() == 0,
        }
    }
}

/// Runs the load; returns the process exit code.
pub fn main(args: Args) -> i32 {
    if let Err(e) = args.validate() {
        eprintln!("impulse-load: {e}");
        return 2;
    }
    crate::shards::raise_limits();
    let shards = crate::shards::default_count(args.shards).min(args.connections);
    let tls = match args.starttls.as_str() {
        "off" => None,
        _ => match crate::net::insecure_client() {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("impulse-load: {e}");
                return 2;
            }
        },
    };
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        claimed: AtomicU64::new(0),
        budget: args.message_budget(),
        deadline: args
            .duration
            .map(|d| Instant::now() + Duration::from_secs_f64(d)),
    });
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // On a signal: stop handing out messages, finish those in flight, report.
        let flag = Arc::new(AtomicBool::new(false));
        let _ = signal_hook::flag::register(sig, flag.clone());
        let s = shared.clone();
        std::thread::spawn(move || loop {
            if flag.load(Relaxed) {
                s.stop.store(true, Relaxed);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        });
    }
    let live: Vec<Arc<Live>> = (0..shards).map(|_| Arc::new(Live::default())).collect();
    let start = Instant::now();
    let runner = {
        let (args, shared, live) = (args.clone(), shared.clone(), live.clone());
        std::thread::spawn(move || {
            crate::shards::run("load", shards, move |shard| {
                executor(
                    args.clone(),
                    shard,
                    shards,
                    shared.clone(),
                    live[shard].clone(),
                    tls.clone(),
                )
            })
        })
    };
    let mut last = (Instant::now(), 0u64);
    while !runner.is_finished() {
        std::thread::sleep(Duration::from_millis(50));
        if !args.quiet && last.0.elapsed() >= PROGRESS_INTERVAL {
            let t = Totals::of(&live);
            let done = t.accepted + t.failed();
            let rate = (done - last.1) as f64 / last.0.elapsed().as_secs_f64();
            eprintln!(
                "[{:7.1}s] sent {} accepted {} rate {:.0}/s 4xx {} 5xx {} errors {} in-flight {}",
                start.elapsed().as_secs_f64(),
                t.sent,
                t.accepted,
                rate,
                t.transient_4xx,
                t.permanent_5xx,
                t.errors,
                t.in_flight
            );
            last = (Instant::now(), done);
        }
    }
    let results = match runner.join() {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            eprintln!("impulse-load: {e}");
            return 2;
        }
        Err(_) => {
            eprintln!("impulse-load: an executor panicked");
            return 2;
        }
    };
    let elapsed = start.elapsed().as_secs_f64();
    let mut all = ShardResult::default();
    for r in &results {
        all.merge(r);
    }
    let totals = Totals::of(&live);
    let report = Report {
        targets: args.targets.iter().map(|t| t.to_string()).collect(),
        elapsed_s: elapsed,
        messages: totals,
        recipients: all.rcpt,
        accepted_per_s: totals.accepted as f64 / elapsed.max(1e-9),
        connections: all.connections,
        latency: all.latency.summary(),
        schedule_lag: (args.rate > 0.0).then(|| all.schedule_lag.summary()),
        failures: all.failures,
        refusals: all.refusals,
    };
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(j) => println!("{j}"),
            Err(e) => eprintln!("impulse-load: JSON: {e}"),
        }
    } else {
        print!("{report}");
    }
    if totals.failed() > 0 && !args.allow_failures {
        eprintln!(
            "impulse-load: {} message(s) not accepted (exit 1; --allow-failures to ignore)",
            totals.failed()
        );
        return 1;
    }
    0
}

/// One executor: its share of the connections, and in an open loop a pacer.
async fn executor(
    args: Args,
    shard: usize,
    shards: usize,
    shared: Arc<Shared>,
    live: Arc<Live>,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> ShardResult {
    let mut settings = ClientSettings::new(args.ehlo.clone());
    settings.use_pipelining = !args.no_pipelining;
    settings.use_chunking = args.chunking;
    settings.max_recipients_per_batch = 0;
    settings.tls = match args.starttls.as_str() {
        "required" => TlsPolicy::Required,
        "opportunistic" => TlsPolicy::Opportunistic,
        _ => TlsPolicy::Off,
    };
    let (paced, pacer) = if args.rate > 0.0 {
        let (tx, rx) = local_channel::new_unbounded();
        let p = Rc::new(Paced {
            rx,
            queued: Cell::new(0),
            done: Cell::new(false),
        });
        (Some(p.clone()), Some((tx, p)))
    } else {
        (None, None)
    };
    let ctx = Rc::new(conn::Ctx {
        settings,
        tls,
        per_connection: args.per_connection,
        timeout: args.reply_timeout(),
        tickets: Tickets {
            shared: shared.clone(),
            paced,
        },
        live,
        result: RefCell::new(ShardResult::default()),
        workload: RefCell::new(workload::Workload::new(&args, shard)),
    });
    let mut tasks = Vec::new();
    if let Some((tx, p)) = pacer {
        let rate = args.rate / shards as f64;
        tasks.push(glommio::spawn_local(pace(tx, p, shared, rate)).detach());
    }
    // Connection i runs on executor i % shards, to target i % targets.
    for i in (shard..args.connections).step_by(shards) {
        let target = args.targets[i % args.targets.len()];
        tasks.push(glommio::spawn_local(conn::run(ctx.clone(), target)).detach());
    }
    for t in tasks {
        t.await;
    }
    let result = std::mem::take(&mut *ctx.result.borrow_mut());
    result
}

/// Releases messages at `rate` per second until the budget or the time is
/// up; schedules are absolute, so a late release never slows the rate.
async fn pace(tx: LocalSender<Instant>, paced: Rc<Paced>, shared: Arc<Shared>, rate: f64) {
    let interval = Duration::from_secs_f64(1.0 / rate.max(1e-6));
    let start = Instant::now();
    let mut n: u32 = 0;
    loop {
        let due = start + interval.saturating_mul(n);
        let now = Instant::now();
        if due > now {
            glommio::timer::sleep((due - now).min(PACER_MAX_SLEEP)).await;
            if shared.over() {
                break;
            }
            continue;
        }
        if !shared.claim() || tx.try_send(due).is_err() {
            break;
        }
        paced.queued.set(paced.queued.get() + 1);
        n = n.saturating_add(1);
    }
    paced.done.set(true);
}
