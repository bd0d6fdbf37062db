//! The sink's accounting. Connection events (rare with reused
//! connections) update shared counters, so peaks are exact across cores;
//! message events (the hot path) update the executor's own tables, merged
//! at the end. Plain data and reports; no I/O.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

use crate::hist::{Latency, Summary};

/// Counters shared by every executor and the main thread.
#[derive(Debug, Default)]
pub struct Global {
    /// Set to stop the sink.
    pub stop: AtomicBool,
    /// Messages accepted.
    pub messages: AtomicU64,
    /// Recipients accepted.
    pub recipients: AtomicU64,
    /// Connections accepted (not refused).
    pub connections: AtomicU64,
    /// Connections open now.
    pub current: AtomicI64,
    /// RCPTs and messages refused on purpose (injected or greylisting).
    pub refused: AtomicU64,
    /// One entry per listening address.
    pub addrs: Vec<AddrStat>,
    /// Connections by client IP.
    pub sources: Mutex<HashMap<IpAddr, ConnCount>>,
    /// Greylisting: (client IP, recipient) pairs seen once.
    pub greylist: Mutex<HashSet<(IpAddr, String)>>,
}

/// Connections per listening address.
#[derive(Debug)]
pub struct AddrStat {
    /// The address.
    pub addr: SocketAddr,
    /// Open now.
    pub current: AtomicU32,
    /// Most open at once.
    pub peak: AtomicU32,
    /// Accepted.
    pub connections: AtomicU64,
    /// Refused with 421 (over `max_connections`).
    pub refused: AtomicU64,
}

impl AddrStat {
    /// A fresh entry.
    pub fn new(addr: SocketAddr) -> Self {
        AddrStat {
            addr,
            current: AtomicU32::new(0),
            peak: AtomicU32::new(0),
            connections: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }
}

/// Connections from one client IP.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct ConnCount {
    /// Accepted.
    pub connections: u64,
    /// Open now.
    #[serde(skip)]
    pub current: u32,
    /// Most open at once.
    pub peak_concurrent: u32,
}

impl Global {
    /// Counts an accepted connection from `ip`.
    pub fn open(&self, ip: IpAddr) {
        self.connections.fetch_add(1, Relaxed);
        self.current.fetch_add(1, Relaxed);
        if let Ok(mut m) = self.sources.lock() {
            let c = m.entry(ip).or_default();
            c.connections += 1;
            c.current += 1;
            c.peak_concurrent = c.peak_concurrent.max(c.current);
        }
    }

    /// Counts a connection from `ip` ending.
    pub fn close(&self, ip: IpAddr) {
        self.current.fetch_sub(1, Relaxed);
        if let Ok(mut m) = self.sources.lock() {
            if let Some(c) = m.get_mut(&ip) {
                c.current = c.current.saturating_sub(1);
            }
        }
    }

    /// Greylisting: true the first time a pair is seen.
    pub fn first_attempt(&self, ip: IpAddr, rcpt: &str) -> bool {
        self.greylist
            .lock()
            .map(|mut s| s.insert((ip, rcpt.to_ascii_lowercase())))
            .unwrap_or(false)
    }
}

/// Per recipient domain.
#[derive(Clone, Debug, Default)]
pub struct DomainStat {
    /// Messages accepted with a recipient here.
    pub messages: u64,
    /// Recipients accepted.
    pub recipients: u64,
    /// Connections that carried a RCPT for this domain.
    pub connections: u64,
    /// RCPTs refused with 4xx / 5xx, messages refused with 4xx / 5xx.
    pub rcpt_4xx: u64,
    /// See above.
    pub rcpt_5xx: u64,
    /// See above.
    pub data_4xx: u64,
    /// See above.
    pub data_5xx: u64,
    /// First and last accepted message.
    pub first: Option<Instant>,
    /// See above.
    pub last: Option<Instant>,
    /// End-to-end latency from the `X-Impulse-Sent` header.
    pub latency: Latency,
}

impl DomainStat {
    fn merge(&mut self, o: &DomainStat) {
        self.messages += o.messages;
        self.recipients += o.recipients;
        self.connections += o.connections;
        self.rcpt_4xx += o.rcpt_4xx;
        self.rcpt_5xx += o.rcpt_5xx;
        self.data_4xx += o.data_4xx;
        self.data_5xx += o.data_5xx;
        self.first = min_opt(self.first, o.first);
        self.last = self.last.max(o.last);
        self.latency.merge(&o.latency);
    }

    /// Marks a message accepted now.
    pub fn accepted(&mut self, now: Instant, recipients: u64, latency: Option<u64>) {
        self.messages += 1;
        self.recipients += recipients;
        self.first.get_or_insert(now);
        self.last = Some(now);
        if let Some(l) = latency {
            self.latency.record(l);
        }
    }
}

fn min_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

/// One executor's message-level tables.
#[derive(Debug, Default)]
pub struct Local {
    /// By recipient domain.
    pub domains: HashMap<String, DomainStat>,
    /// Messages and recipients by client IP.
    pub sources: HashMap<IpAddr, (u64, u64)>,
    /// Every accepted message (domain "*").
    pub all: DomainStat,
    /// Messages without a readable `X-Impulse-Sent` header.
    pub unstamped: u64,
    /// Messages that could not be stored (`--store`).
    pub store_errors: u64,
    /// Wall clock of the first and last accepted message (Unix µs; 0 = none).
    pub first_unix_us: u64,
    /// See above.
    pub last_unix_us: u64,
}

impl Local {
    /// Adds another executor's tables.
    pub fn merge(&mut self, o: &Local) {
        for (k, v) in &o.domains {
            self.domains.entry(k.clone()).or_default().merge(v);
        }
        for (k, v) in &o.sources {
            let e = self.sources.entry(*k).or_default();
            e.0 += v.0;
            e.1 += v.1;
        }
        self.all.merge(&o.all);
        self.unstamped += o.unstamped;
        self.store_errors += o.store_errors;
        self.note_time(o.first_unix_us);
        self.note_time(o.last_unix_us);
    }

    /// Widens the first/last window to include `unix_us` (0 is ignored).
    pub fn note_time(&mut self, unix_us: u64) {
        if unix_us == 0 {
            return;
        }
        if self.first_unix_us == 0 || unix_us < self.first_unix_us {
            self.first_unix_us = unix_us;
        }
        self.last_unix_us = self.last_unix_us.max(unix_us);
    }
}

/// One row of the per-domain report.
#[derive(Debug, Serialize)]
pub struct DomainRow {
    /// Messages accepted.
    pub messages: u64,
    /// Recipients accepted.
    pub recipients: u64,
    /// Connections that carried a RCPT for the domain.
    pub connections: u64,
    /// Refusals by stage and class.
    pub rcpt_4xx: u64,
    /// See above.
    pub rcpt_5xx: u64,
    /// See above.
    pub data_4xx: u64,
    /// See above.
    pub data_5xx: u64,
    /// Messages per second between its first and last message.
    pub msgs_per_s: f64,
    /// End-to-end latency (send timestamp to acceptance here).
    pub latency: Summary,
}

impl DomainRow {
    /// The row for `d`.
    pub fn of(d: &DomainStat) -> DomainRow {
        let span = match (d.first, d.last) {
            (Some(a), Some(b)) => (b - a).as_secs_f64(),
            _ => 0.0,
        };
        DomainRow {
            messages: d.messages,
            recipients: d.recipients,
            connections: d.connections,
            rcpt_4xx: d.rcpt_4xx,
            rcpt_5xx: d.rcpt_5xx,
            data_4xx: d.data_4xx,
            data_5xx: d.data_5xx,
            msgs_per_s: if span > 0.0 {
                d.messages as f64 / span
            } else {
                0.0
            },
            latency: d.latency.summary(),
        }
    }
}

/// One row per listening address.
#[derive(Debug, Serialize)]
pub struct AddrRow {
    /// Connections accepted.
    pub connections: u64,
    /// Refused with 421 over the limit.
    pub refused_connections: u64,
    /// Most open at once.
    pub peak_concurrent: u32,
}

/// One row per client IP.
#[derive(Debug, Serialize)]
pub struct SourceRow {
    /// Connections.
    #[serde(flatten)]
    pub conns: ConnCount,
    /// Messages accepted.
    pub messages: u64,
    /// Recipients accepted.
    pub recipients: u64,
}

/// The final report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Seconds the sink ran.
    pub elapsed_s: f64,
    /// Every accepted message.
    pub total: DomainRow,
    /// Messages without the timestamp header (no latency for them).
    pub unstamped: u64,
    /// Messages that could not be written to --store.
    pub store_errors: u64,
    /// Wall clock of the first accepted message, Unix microseconds (0 = none).
    pub first_message_unix_us: u64,
    /// Wall clock of the last accepted message, Unix microseconds (0 = none).
    pub last_message_unix_us: u64,
    /// By listening address.
    pub addresses: BTreeMap<String, AddrRow>,
    /// By recipient domain.
    pub domains: BTreeMap<String, DomainRow>,
    /// By client IP.
    pub sources: BTreeMap<String, SourceRow>,
}

impl Report {
    /// Builds the report from the shared counters and the merged tables.
    pub fn build(g: &Global, local: &Local, elapsed_s: f64) -> Report {
        let addresses = g
            .addrs
            .iter()
            .map(|a| {
                let row = AddrRow {
                    connections: a.connections.load(Relaxed),
                    refused_connections: a.refused.load(Relaxed),
                    peak_concurrent: a.peak.load(Relaxed),
                };
                (a.addr.to_string(), row)
            })
            .collect();
        let conns = g.sources.lock().map(|m| m.clone()).unwrap_or_default();
        let mut sources = BTreeMap::new();
        for (ip, c) in conns {
            let (messages, recipients) = local.sources.get(&ip).copied().unwrap_or_default();
            let row = SourceRow {
                conns: c,
                messages,
                recipients,
            };
            sources.insert(ip.to_string(), row);
        }
        Report {
            elapsed_s,
            total: DomainRow::of(&local.all),
            unstamped: local.unstamped,
            store_errors: local.store_errors,
            first_message_unix_us: local.first_unix_us,
            last_message_unix_us: local.last_unix_us,
            addresses,
            domains: local
                .domains
                .iter()
                .map(|(k, v)| (k.clone(), DomainRow::of(v)))
                .collect(),
            sources,
        }
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = &self.total;
        writeln!(
            f,
            "impulse-sink: {} messages, {} recipients in {:.3}s ({:.0} msg/s while receiving)",
            t.messages, t.recipients, self.elapsed_s, t.msgs_per_s
        )?;
        writeln!(
            f,
            "  end-to-end latency (X-Impulse-Sent -> accepted) {}",
            t.latency
        )?;
        if self.unstamped > 0 || self.store_errors > 0 {
            writeln!(
                f,
                "  unstamped messages {}  store errors {}",
                self.unstamped, self.store_errors
            )?;
        }
        for (a, r) in &self.addresses {
            writeln!(
                f,
                "  address {a}: connections {} refused {} peak {}",
                r.connections, r.refused_connections, r.peak_concurrent
            )?;
        }
        for (d, r) in &self.domains {
            writeln!(
                f,
                "  domain {d}: msgs {} rcpts {} conns {} refused rcpt 4xx/5xx {}/{} data 4xx/5xx {}/{} {:.0} msg/s latency {}",
                r.messages, r.recipients, r.connections, r.rcpt_4xx, r.rcpt_5xx, r.data_4xx,
                r.data_5xx, r.msgs_per_s, r.latency
            )?;
        }
        for (ip, r) in &self.sources {
            writeln!(
                f,
                "  source {ip}: connections {} peak {} msgs {} rcpts {}",
                r.conns.connections, r.conns.peak_concurrent, r.messages, r.recipients
            )?;
        }
        Ok(())
    }
}
