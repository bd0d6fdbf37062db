//! One seeded run: a day of mail through intake → spool (on the simulated
//! disk, with faults and crashes) → queue manager → outbound → simulated
//! remote servers, and the invariants checked on what the servers saw.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use impulse::binding::Bindings;
use impulse::config::Config;
use impulse::conn::ShardTls;
use impulse::events::Events;
use impulse::intake::{Arrival, Intake};
use impulse::message::{Envelope, MessageId};
use impulse::outbound::dns::{Resolver, ResolverConfig};
use impulse::outbound::Pools;
use impulse::queue::driver::ShardQueue;
use impulse::runtime::sched;
use impulse::runtime::Current;
use impulse::spool::{Recovered, Spool, SpoolOptions};
use impulse::throttle::Throttles;

use super::disk::{Faults, SimDisk};
use super::exec::{Handle, Ran, Sim, START_WALL_MS};
use super::net::{Behaviour, Seen, SimDialer, SimNet};

/// Length of a run on the virtual clock.
const DAY: Duration = Duration::from_secs(24 * 3600);
/// Messages arrive during this first part of the day.
const ARRIVALS: Duration = Duration::from_secs(2 * 3600);
/// Crashes happen during this part of the day (retries and expiries are
/// still running then; the rest of the day lets everything settle).
const CRASHES: Duration = Duration::from_secs(6 * 3600);
/// `retry_interval` of the run's config: no attempt of a message may
/// follow its previous one sooner (unless a crash came in between).
const RETRY_INTERVAL: Duration = Duration::from_secs(300);
/// `message_expiration` of the run's config.
const EXPIRATION: Duration = Duration::from_secs(4 * 3600);
const SENDER_DOMAIN: &str = "sender.sim";
const SPOOL_DIR: &str = "/sim/spool/shard-0";

/// What one seed came to.
#[derive(Debug, Default)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Messages intake acknowledged.
    pub acked: usize,
    /// Recipients of those.
    pub recipients: usize,
    /// Of those, delivered to their server.
    pub delivered: usize,
    /// Of those, failed with a DSN that reached the sender's server.
    pub bounced: usize,
    /// Of the bounced, those that expired (4.4.7) after deferrals.
    pub expired: usize,
    /// Crashes (power losses) during the run.
    pub crashes: usize,
    /// Disk writes and syncs.
    pub disk_ops: u64,
    /// Disk faults injected.
    pub faults: u64,
    /// Bytes of torn records recovery cut off.
    pub torn_bytes: u64,
    /// Corrupt records recovery skipped.
    pub corrupt_records: u64,
    /// Transactions a server left without a 250 (4xx, 5xx, drop, hang).
    pub unfinished: usize,
    /// Recipients delivered or bounced more than once (after a crash).
    pub repeated: usize,
    /// Task polls the run took.
    pub polls: u64,
    /// Broken invariants; empty on success.
    pub violations: Vec<String>,
}

impl Report {
    /// Adds `o`'s counts to these (seed and violations aside).
    pub fn absorb(&mut self, o: &Report) {
        self.acked += o.acked;
        self.recipients += o.recipients;
        self.delivered += o.delivered;
        self.bounced += o.bounced;
        self.expired += o.expired;
        self.crashes += o.crashes;
        self.disk_ops += o.disk_ops;
        self.faults += o.faults;
        self.torn_bytes += o.torn_bytes;
        self.corrupt_records += o.corrupt_records;
        self.unfinished += o.unfinished;
        self.repeated += o.repeated;
        self.polls += o.polls;
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} message(s) acknowledged, {} recipient(s): {} delivered, {} bounced \
             ({} of them expired), {} delivered or bounced again after a crash; \
             {} remote transaction(s) deferred, refused, dropped or hung; {} crash(es); \
             {} disk writes and syncs, {} failed; {} torn byte(s) and {} corrupt \
             record(s) recovered past; {} task polls",
            self.acked,
            self.recipients,
            self.delivered,
            self.bounced,
            self.expired,
            self.repeated,
            self.unfinished,
            self.crashes,
            self.disk_ops,
            self.faults,
            self.torn_bytes,
            self.corrupt_records,
            self.polls
        )
    }
}

struct Planned {
    at: Duration,
    domain: usize,
    recipients: usize,
    body: Vec<u8>,
}

struct Domain {
    name: String,
    addr: SocketAddr,
    behaviour: Behaviour,
}

fn domains(sim: &Sim) -> Vec<Domain> {
    let mut rng = sim.rng();
    let mut pick = |lo: f64, hi: f64| lo + (hi - lo) * rng.f64();
    let shapes = [
        // Mostly fine.
        (
            pick(0.0, 0.05),
            pick(0.0, 0.02),
            pick(0.0, 0.02),
            pick(0.0, 0.01),
        ),
        // Flaky.
        (
            pick(0.1, 0.4),
            pick(0.0, 0.1),
            pick(0.0, 0.15),
            pick(0.0, 0.05),
        ),
        // Nearly always deferring: messages expire.
        (pick(0.85, 1.0), 0.0, pick(0.0, 0.05), 0.0),
        // Refusing and hanging.
        (pick(0.0, 0.1), pick(0.3, 0.7), 0.0, pick(0.05, 0.2)),
    ];
    shapes
        .iter()
        .enumerate()
        .map(|(i, &(defer, refuse, drop, hang))| Domain {
            name: format!("dom{i}.sim"),
            addr: SocketAddr::from(([127, 0, 1, 10 + i as u8], 25)),
            behaviour: Behaviour {
                defer,
                refuse,
                drop,
                hang,
            },
        })
        .collect()
}

fn sender_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 1, 2], 25))
}

fn config_text(domains: &[Domain]) -> String {
    let mut t = format!(
        "[global]\nshards = 1\nhostname = \"mta.sim\"\ntls = \"no\"\n\
         retry_interval = {}\nmax_retry_interval = 3600\nmessage_expiration = {}\n\
         connect_timeout = 60\nehlo_timeout = 60\nmailfrom_timeout = 60\n\
         rcptto_timeout = 60\nbody_timeout = 120\nrset_timeout = 30\n\
         idle_timeout = 5\nmax_outbound_connections = 3\n\
         [listener.esmtp]\nlisten = [\"127.0.0.1:0\"]\n\
         [domain.\"{SENDER_DOMAIN}\"]\nroutes = [\"{}\"]\n",
        RETRY_INTERVAL.as_secs(),
        EXPIRATION.as_secs(),
        sender_addr()
    );
    for d in domains {
        t.push_str(&format!(
            "[domain.\"{}\"]\nroutes = [\"{}\"]\n",
            d.name, d.addr
        ));
    }
    t
}

fn plan(sim: &Sim, n: usize, domains: usize) -> Vec<Planned> {
    let mut rng = sim.rng();
    let mut v: Vec<Planned> = (0..n)
        .map(|_| {
            let mut body = Vec::new();
            let lines = rng.usize(1..200);
            for l in 0..lines {
                if rng.u8(0..10) == 0 {
                    body.push(b'.'); // a line that needs dot-stuffing
                }
                let len = rng.usize(0..100);
                body.extend((0..len).map(|_| rng.alphanumeric() as u8));
                body.extend_from_slice(format!(" {l}\r\n").as_bytes());
            }
            Planned {
                at: Duration::from_millis(rng.u64(0..ARRIVALS.as_millis() as u64)),
                domain: rng.usize(0..domains),
                recipients: rng.usize(1..=3),
                body,
            }
        })
        .collect();
    v.sort_by_key(|p| p.at);
    v
}

fn sender(i: usize) -> String {
    format!("s{i}@{SENDER_DOMAIN}")
}

fn recipient(i: usize, k: usize, domain: &str) -> String {
    format!("r{i}.{k}@{domain}")
}

fn content(i: usize, p: &Planned, to: &[String]) -> Vec<u8> {
    let mut c = format!(
        "From: <{}>\r\nTo: {}\r\nSubject: sim {i}\r\nMessage-ID: <{i}@sim>\r\n\r\n",
        sender(i),
        to.join(", ")
    )
    .into_bytes();
    c.extend_from_slice(&p.body);
    c
}

/// An acknowledged message.
struct Acked {
    id: MessageId,
    /// When the client began to send it (intake stamps it no earlier).
    arrived: Duration,
    at: Duration,
    recipients: Vec<String>,
    content: Vec<u8>,
}

/// Runs `fut` on the simulation until it finishes (it must not wait for
/// the clock to pass `limit`).
fn block_on<T: 'static>(
    sim: &Sim,
    limit: Duration,
    fut: impl std::future::Future<Output = T> + 'static,
) -> T {
    let out = Rc::new(RefCell::new(None));
    let o = out.clone();
    sched::spawn(async move {
        *o.borrow_mut() = Some(fut.await);
    })
    .detach();
    let until = sim.elapsed() + limit;
    while out.borrow().is_none() {
        let step = until.min(sim.elapsed() + Duration::from_millis(100));
        if sim.run_until(step, &|| false) == Ran::Stalled && out.borrow().is_none() {
            panic!("stalled before the start-up finished");
        }
        assert!(
            sim.elapsed() < until,
            "start-up did not finish in {limit:?}"
        );
    }
    let v = out.borrow_mut().take().unwrap();
    v
}

/// One shard's stages, built on the simulated disk and network.
struct Shard {
    queue: Rc<ShardQueue>,
    recovered: HashMap<MessageId, u64>,
    torn_bytes: u64,
    corrupt_records: u64,
}

fn start(
    sim: &Rc<Sim>,
    disk: &Rc<SimDisk>,
    net: &Rc<SimNet>,
    config: &Arc<Config>,
    opts: &SpoolOptions,
) -> (Shard, Rc<Intake>) {
    // A start-up that meets a disk error fails, and the service manager
    // starts the process again: so does this, a bounded number of times.
    let mut tries = 0;
    let (spool, recovered): (Rc<Spool>, Recovered) = loop {
        let (d, o) = (disk.clone(), opts.clone());
        let opened = block_on(sim, Duration::from_secs(60), async move {
            Spool::open_on(d, Path::new(SPOOL_DIR), 0, o).await
        });
        match opened {
            Ok(x) => break x,
            Err(e) => {
                tries += 1;
                assert!(tries < 20, "the spool does not open: {e}");
                sim.kill_all();
            }
        }
    };
    let (torn_bytes, corrupt_records) =
        (recovered.stats.torn_bytes, recovered.stats.corrupt_records);
    let next: HashMap<MessageId, u64> = recovered
        .messages
        .iter()
        .map(|m| (m.id, m.next_attempt_ms))
        .collect();
    let resolver = Rc::new(Resolver::new(ResolverConfig::load(&config.dns)));
    let current = Rc::new(Current::new(config.clone()));
    let events = Rc::new(Events::new(0));
    let pools = Pools::new(0, Rc::new(ShardTls::default()), events.clone(), resolver);
    pools.set_dialer(Rc::new(SimDialer(net.clone())));
    let bindings = Bindings::standalone(current.clone(), events.clone());
    let queue = ShardQueue::new(
        0,
        current,
        events.clone(),
        impulse::logs::Logs::off(0),
        spool.clone(),
        pools,
        Throttles::standalone(),
        bindings.clone(),
        recovered.messages,
        &recovered.bindings,
    );
    sched::spawn(queue.clone().run()).detach();
    let s = spool.clone();
    sched::spawn(async move {
        loop {
            sched::sleep(Duration::from_secs(30)).await;
            let _ = s.maintain().await;
        }
    })
    .detach();
    let intake = Rc::new(Intake::new(spool, queue.clone(), events, bindings));
    (
        Shard {
            queue,
            recovered: next,
            torn_bytes,
            corrupt_records,
        },
        intake,
    )
}

/// Runs seed `seed` and checks the invariants.
pub fn run(seed: u64) -> Report {
    // Same seed, same run: the shard's hash maps iterate in one order.
    impulse::runtime::hash::fix_keys(seed);
    let sim = Sim::new(seed);
    let _installed = sched::install(Rc::new(Handle(sim.clone())));
    let mut report = Report {
        seed,
        ..Report::default()
    };
    let domains = domains(&sim);
    let (n, faulty, ncrash) = {
        let mut rng = sim.rng();
        (rng.usize(20..80), rng.bool(), rng.usize(0..=3))
    };
    let faults = if faulty {
        Faults {
            write_eio: 0.002,
            write_enospc: 0.002,
            sync_eio: 0.01,
        }
    } else {
        Faults {
            write_eio: 0.0,
            write_enospc: 0.0,
            sync_eio: 0.0,
        }
    };
    let mut disk_crashes_later: Vec<u64>;
    let mut crash_at: Vec<Duration> = (0..ncrash)
        .map(|_| Duration::from_micros(sim.rng().u64(0..CRASHES.as_micros() as u64)))
        .collect();
    crash_at.sort();
    // And power failures right after random disk writes and syncs: those
    // land inside the windows that matter (between a remote 250 and its
    // outcome record, between a DSN and the failure record, mid-batch).
    let op_crashes: Vec<u64> = {
        let mut rng = sim.rng();
        let k = rng.usize(0..=4);
        (0..k).map(|_| rng.u64(1..(n as u64 * 12))).collect()
    };
    disk_crashes_later = op_crashes;
    let opts = SpoolOptions {
        segment_size: 64 << 10,
        batch_max_delay: Duration::from_micros(if sim.rng().bool() { 0 } else { 200 }),
        ..SpoolOptions::default()
    };
    let planned = plan(&sim, n, domains.len());
    let mut servers: HashMap<SocketAddr, Behaviour> =
        domains.iter().map(|d| (d.addr, d.behaviour)).collect();
    servers.insert(sender_addr(), Behaviour::ACCEPT);
    let net = SimNet::new(sim.clone(), servers);
    let disk = SimDisk::new(sim.clone(), faults);
    disk.crash_after_ops(std::mem::take(&mut disk_crashes_later));
    let config = Arc::new(
        Config::from_str("sim.toml", &config_text(&domains), &PathBuf::from("/sim"))
            .expect("the simulation's config is valid"),
    );
    let acked: Rc<RefCell<HashMap<usize, Acked>>> = Rc::default();
    let next_msg = Rc::new(Cell::new(0usize));
    let planned = Rc::new(planned);
    let domain_names: Rc<Vec<String>> = Rc::new(domains.iter().map(|d| d.name.clone()).collect());
    let mut crashes: Vec<Duration> = Vec::new();
    let mut recovered_next: Vec<(Duration, HashMap<MessageId, u64>)> = Vec::new();
    let mut queue;
    loop {
        let (shard, intake) = start(&sim, &disk, &net, &config, &opts);
        if let Ok(want) = std::env::var("SIM_TRACE_ID") {
            for id in shard
                .recovered
                .keys()
                .chain(acked.borrow().values().map(|a| &a.id))
            {
                if id.to_string() == want {
                    eprintln!(
                        "{:?} restart {}: recovered={} on disk: {}",
                        sim.elapsed(),
                        crashes.len(),
                        shard.recovered.contains_key(id),
                        disk.records_of(*id).join(", ")
                    );
                    break;
                }
            }
        }
        queue = shard.queue;
        report.torn_bytes += shard.torn_bytes;
        report.corrupt_records += shard.corrupt_records;
        recovered_next.push((sim.elapsed(), shard.recovered));
        // The clients: each planned message at its time, once.
        let (acked2, next2, planned2, names, clock) = (
            acked.clone(),
            next_msg.clone(),
            planned.clone(),
            domain_names.clone(),
            sim.clone(),
        );
        sched::spawn(async move {
            while next2.get() < planned2.len() {
                let i = next2.get();
                let p = &planned2[i];
                if let Some(wait) = p.at.checked_sub(clock.elapsed()) {
                    sched::sleep(wait).await;
                }
                // A crash from here on loses this message from the
                // client's view (never acknowledged): it is not retried.
                next2.set(i + 1);
                let to: Vec<String> = (0..p.recipients)
                    .map(|k| recipient(i, k, &names[p.domain]))
                    .collect();
                let mut env = Envelope::new(
                    sender(i),
                    &to.iter().map(String::as_str).collect::<Vec<_>>(),
                );
                env.helo = "client.sim".into();
                let c = content(i, p, &to);
                let arrival = Arrival {
                    local: None,
                    peer: None,
                    tls: false,
                    hostname: "mta.sim",
                };
                if let Ok(id) = intake.receive(arrival, env, c.clone()).await {
                    acked2.borrow_mut().insert(
                        i,
                        Acked {
                            id,
                            arrived: p.at,
                            at: clock.elapsed(),
                            recipients: to,
                            content: c,
                        },
                    );
                }
            }
        })
        .detach();
        let stop = crash_at.first().copied().unwrap_or(DAY);
        let ran = sim.run_until(stop, &|| disk.crash_due());
        if ran != Ran::Stopped {
            if crash_at.is_empty() {
                break;
            }
            crash_at.remove(0);
        }
        crashes.push(sim.elapsed());
        drop(queue);
        sim.kill_all();
        disk.crash();
    }
    report.crashes = crashes.len();
    let left = queue.queued();
    if left > 0 {
        report.violations.push(format!(
            "{left} message(s) still queued at the end of the day"
        ));
    }
    drop(queue);
    sim.kill_all();
    // Everything must be settled on disk too: a restart finds nothing.
    disk.crash();
    let (shard, _intake) = start(&sim, &disk, &net, &config, &opts);
    if !shard.recovered.is_empty() {
        let acked_ids: Vec<MessageId> = acked.borrow().values().map(|a| a.id).collect();
        let left: Vec<String> = shard
            .recovered
            .keys()
            .map(|id| {
                let known = if acked_ids.contains(id) {
                    "acknowledged"
                } else {
                    "never acknowledged"
                };
                format!(
                    "{id} ({known}; on disk: {})",
                    disk.records_of(*id).join(", ")
                )
            })
            .collect();
        report.violations.push(format!(
            "{} message(s) live in the spool after the day: {}",
            left.len(),
            left.join(", ")
        ));
    }
    drop(shard);
    sim.kill_all();
    report.polls = sim.polls();
    report.faults = disk.injected();
    report.disk_ops = disk.ops();
    check(
        &mut report,
        &acked.borrow(),
        &net,
        &crashes,
        &recovered_next,
    );
    report
}

fn check(
    report: &mut Report,
    acked: &HashMap<usize, Acked>,
    net: &SimNet,
    crashes: &[Duration],
    recovered: &[(Duration, HashMap<MessageId, u64>)],
) {
    let log = net.log.borrow();
    let sender_server = sender_addr();
    let crash_between = |a: Duration, b: Duration| crashes.iter().any(|&c| c >= a && c <= b);
    report.acked = acked.len();
    report.unfinished = log
        .iter()
        .filter(|(_, _, s)| matches!(s, Seen::Unfinished { .. }))
        .count();
    let mut ids: Vec<&usize> = acked.keys().collect();
    ids.sort();
    for &i in ids {
        let m = &acked[&i];
        let from = sender(i);
        let mut last_event = m.at;
        for r in &m.recipients {
            report.recipients += 1;
            let mut delivered = 0;
            let mut bounced = 0;
            let mut expired = false;
            for (t, addr, seen) in log.iter() {
                let Seen::Accepted {
                    sender,
                    recipients,
                    body,
                } = seen
                else {
                    continue;
                };
                if *addr == sender_server {
                    let status = dsn_failure(body, r);
                    if sender.is_empty() && recipients.contains(&from) && status.is_some() {
                        bounced += 1;
                        expired |= status.as_deref() == Some("4.4.7");
                        last_event = last_event.max(*t);
                    }
                } else if *sender == from && recipients.contains(r) {
                    delivered += 1;
                    last_event = last_event.max(*t);
                    if !body.ends_with(&m.content) {
                        report
                            .violations
                            .push(format!("message {i} reached {r} changed"));
                    }
                }
            }
            match (delivered, bounced) {
                (0, 0) => report.violations.push(format!(
                    "message {i} ({}) to {r}: acknowledged at {:?} and neither delivered nor bounced",
                    m.id, m.at
                )),
                // Only a crash between a remote 250 and its outcome record
                // makes a recipient be sent again, and the second attempt
                // may fail: SMTP is at-least-once, and only then.
                (d, b) if d > 0 && b > 0 && !crash_between(m.at, last_event) => {
                    report.violations.push(format!(
                        "message {i} to {r}: delivered {d} time(s) and bounced {b} time(s) without a crash"
                    ))
                }
                (d, b) if (d > 1 || b > 1) && !crash_between(m.at, last_event) => {
                    report.violations.push(format!(
                        "message {i} to {r}: delivered {d} / bounced {b} times without a crash"
                    ))
                }
                (d, b) => {
                    if d + b > 1 {
                        report.repeated += 1;
                    }
                    if d > 0 {
                        report.delivered += 1;
                    } else {
                        report.bounced += 1;
                        report.expired += usize::from(expired);
                    }
                }
            }
        }
        // Retry times: the next attempt never comes sooner than the retry
        // interval after the previous one, unless a crash came between
        // them (then no sooner than what recovery found on disk).
        let attempts: Vec<Duration> = log
            .iter()
            .filter(|(_, _, s)| matches!(s, Seen::Attempt { sender } if *sender == from))
            .map(|(t, _, _)| *t)
            .collect();
        // The last retry is due at expiry even when that is sooner.
        let expiry = m.arrived + EXPIRATION;
        for w in attempts.windows(2) {
            let (a, b) = (w[0], w[1]);
            // Retry times are kept in whole milliseconds.
            if b - a + Duration::from_millis(1) >= RETRY_INTERVAL || b >= expiry {
                continue;
            }
            let restart = recovered.iter().rev().find(|(at, _)| *at >= a && *at <= b);
            match restart {
                None => report.violations.push(format!(
                    "message {i}: attempt at {b:?} only {:?} after the one at {a:?}",
                    b - a
                )),
                Some((at, next)) => {
                    if let Some(&due_ms) = next.get(&m.id) {
                        let due = wall_ms_to_elapsed(due_ms);
                        if b + Duration::from_millis(1) < due {
                            report.violations.push(format!(
                                "message {i}: attempt at {b:?} before its recovered retry time {due:?} (restart at {at:?})"
                            ));
                        }
                    }
                }
            }
        }
    }
}

/// Virtual elapsed time of a wall-clock millisecond stamp.
fn wall_ms_to_elapsed(ms: u64) -> Duration {
    Duration::from_millis(ms.saturating_sub(START_WALL_MS))
}

/// The status a DSN body gives `rcpt` if it reports it as failed.
fn dsn_failure(body: &[u8], rcpt: &str) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let want = format!("Final-Recipient: rfc822; {rcpt}");
    let mut lines = text.lines().map(str::trim_end);
    lines.find(|l| *l == want)?;
    if lines.next()? != "Action: failed" {
        return None;
    }
    lines.next()?.strip_prefix("Status: ").map(str::to_string)
}
