//! The load generator's accounting: live counters each executor bumps
//! (read once a second by the progress line) and the per-executor results
//! merged into the final report. Every failure lands in a counter.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use impulse::smtp::client::{SessionError, TransactionResult};
use serde::Serialize;

use crate::hist::{Latency, Summary};

/// What became of one message.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Class {
    /// Every recipient accepted and the content got 2xx.
    Accepted,
    /// A 4xx decided it (MAIL, every RCPT, or the content).
    Transient,
    /// A 5xx decided it.
    Permanent,
    /// No final reply: connection error, timeout or protocol error.
    Error,
}

/// Classifies a transaction result by the replies that decided it: a
/// refused MAIL; else the RCPT refusals plus, if some RCPT was accepted,
/// a refused content (a 554 "no valid recipients" after every RCPT was
/// refused only echoes those refusals). Any 5xx makes it permanent.
pub fn classify(r: &TransactionResult) -> Class {
    if !r.recipients.is_empty() && r.recipients.iter().all(|x| x.outcome.is_delivered()) {
        return Class::Accepted;
    }
    let class_of = |permanent: bool| {
        if permanent {
            Class::Permanent
        } else {
            Class::Transient
        }
    };
    if let Some(m) = r.mail_reply.as_ref().filter(|m| !m.is_positive()) {
        return class_of(m.is_permanent());
    }
    let replies = || r.recipients.iter().filter_map(|x| x.rcpt_reply.as_ref());
    let any_accepted = replies().any(|x| x.is_positive());
    let mut decisive: Vec<_> = replies().filter(|x| !x.is_positive()).collect();
    if any_accepted {
        match &r.data_reply {
            // Recipients accepted but no final reply: the session failed.
            None => return Class::Error,
            Some(d) if !d.is_positive() => decisive.push(d),
            Some(_) => {}
        }
    }
    if decisive.is_empty() {
        return Class::Error;
    }
    class_of(decisive.iter().any(|x| x.is_permanent()))
}

/// Live counters of one executor; written by it, read by the main thread.
#[derive(Default, Debug)]
pub struct Live {
    /// Messages submitted.
    pub sent: AtomicU64,
    /// Messages fully accepted.
    pub accepted: AtomicU64,
    /// Messages decided by a 4xx.
    pub transient: AtomicU64,
    /// Messages decided by a 5xx.
    pub permanent: AtomicU64,
    /// Messages without a final reply, and connection attempts that failed.
    pub errors: AtomicU64,
    /// Transactions submitted and not yet answered.
    pub in_flight: AtomicI64,
}

impl Live {
    /// Counts a finished message.
    pub fn count(&self, class: Class) {
        let c = match class {
            Class::Accepted => &self.accepted,
            Class::Transient => &self.transient,
            Class::Permanent => &self.permanent,
            Class::Error => &self.errors,
        };
        c.fetch_add(1, Relaxed);
    }
}

/// Sum of several executors' live counters.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Totals {
    /// Messages submitted.
    pub sent: u64,
    /// Messages accepted.
    pub accepted: u64,
    /// Messages refused with 4xx.
    pub transient_4xx: u64,
    /// Messages refused with 5xx.
    pub permanent_5xx: u64,
    /// Messages (and connection attempts) that got no final reply.
    pub errors: u64,
    /// Transactions in flight.
    pub in_flight: i64,
}

impl Totals {
    /// Adds up `live`.
    pub fn of(live: &[std::sync::Arc<Live>]) -> Totals {
        let mut t = Totals::default();
        for l in live {
            t.sent += l.sent.load(Relaxed);
            t.accepted += l.accepted.load(Relaxed);
            t.transient_4xx += l.transient.load(Relaxed);
            t.permanent_5xx += l.permanent.load(Relaxed);
            t.errors += l.errors.load(Relaxed);
            t.in_flight += l.in_flight.load(Relaxed);
        }
        t
    }

    /// Messages that were not accepted.
    pub fn failed(&self) -> u64 {
        self.transient_4xx + self.permanent_5xx + self.errors
    }
}

/// What one executor hands back at the end.
#[derive(Debug, Default)]
pub struct ShardResult {
    /// Time from writing the content's end (final dot or last BDAT) to its reply.
    pub latency: Latency,
    /// Open loop: time from a message's scheduled send to its submission.
    pub schedule_lag: Latency,
    /// Connections opened.
    pub connections: u64,
    /// Failures by kind ("connect: Connection refused", "timeout waiting for rcpt", ...).
    pub failures: BTreeMap<String, u64>,
    /// Refusal replies seen, by their text (first line, code included).
    pub refusals: BTreeMap<String, u64>,
    /// Recipients accepted / refused with 4xx / 5xx / without a reply.
    pub rcpt: RcptCounts,
}

/// Recipients by outcome.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct RcptCounts {
    /// Delivered.
    pub accepted: u64,
    /// 4xx.
    pub transient_4xx: u64,
    /// 5xx.
    pub permanent_5xx: u64,
    /// Session failed before a reply.
    pub errors: u64,
}

/// Distinct refusal texts kept (beyond, they are counted under "other").
const MAX_DISTINCT_REFUSALS: usize = 50;

impl ShardResult {
    /// Counts a failure of a kind.
    pub fn failure(&mut self, kind: String) {
        *self.failures.entry(kind).or_insert(0) += 1;
    }

    /// Records a session failure.
    pub fn session_failed(&mut self, e: &SessionError) {
        self.failure(e.to_string());
    }

    /// Records the per-recipient outcome and refusal texts of a result.
    pub fn recipients(&mut self, r: &TransactionResult, class: Class) {
        for x in &r.recipients {
            let reply = x.outcome.reply();
            match (&x.outcome, class) {
                (o, _) if o.is_delivered() => self.rcpt.accepted += 1,
                (_, Class::Error) if x.rcpt_reply.as_ref().is_none_or(|r| r.is_positive()) => {
                    self.rcpt.errors += 1;
                    continue;
                }
                _ if reply.is_permanent() => self.rcpt.permanent_5xx += 1,
                _ => self.rcpt.transient_4xx += 1,
            }
            if !reply.is_positive() {
                let text = reply.to_string();
                let key = if self.refusals.len() < MAX_DISTINCT_REFUSALS
                    || self.refusals.contains_key(&text)
                {
                    text
                } else {
                    "other".to_string()
                };
                *self.refusals.entry(key).or_insert(0) += 1;
            }
        }
    }

    /// Adds another executor's result.
    pub fn merge(&mut self, o: &ShardResult) {
        self.latency.merge(&o.latency);
        self.schedule_lag.merge(&o.schedule_lag);
        self.connections += o.connections;
        for (k, v) in &o.failures {
            *self.failures.entry(k.clone()).or_insert(0) += v;
        }
        for (k, v) in &o.refusals {
            *self.refusals.entry(k.clone()).or_insert(0) += v;
        }
        self.rcpt.accepted += o.rcpt.accepted;
        self.rcpt.transient_4xx += o.rcpt.transient_4xx;
        self.rcpt.permanent_5xx += o.rcpt.permanent_5xx;
        self.rcpt.errors += o.rcpt.errors;
    }
}

/// The final report (printed, or as JSON).
#[derive(Debug, Serialize)]
pub struct Report {
    /// Targets.
    pub targets: Vec<String>,
    /// Seconds from start to the last reply.
    pub elapsed_s: f64,
    /// Messages by outcome.
    pub messages: Totals,
    /// Recipients by outcome.
    pub recipients: RcptCounts,
    /// Accepted messages per second.
    pub accepted_per_s: f64,
    /// Connections opened.
    pub connections: u64,
    /// Final dot (or last BDAT) to reply, accepted and refused alike.
    pub latency: Summary,
    /// Open loop only: scheduled send to actual submission (queueing).
    pub schedule_lag: Option<Summary>,
    /// Failures by kind.
    pub failures: BTreeMap<String, u64>,
    /// Refusal replies by text.
    pub refusals: BTreeMap<String, u64>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = &self.messages;
        writeln!(f, "impulse-load: {} ", self.targets.join(", "))?;
        writeln!(
            f,
            "  messages  sent {}  accepted {}  4xx {}  5xx {}  errors {}",
            m.sent, m.accepted, m.transient_4xx, m.permanent_5xx, m.errors
        )?;
        let r = &self.recipients;
        writeln!(
            f,
            "  rcpts     accepted {}  4xx {}  5xx {}  errors {}",
            r.accepted, r.transient_4xx, r.permanent_5xx, r.errors
        )?;
        writeln!(
            f,
            "  elapsed   {:.3}s  throughput {:.0} msg/s accepted  connections {}",
            self.elapsed_s, self.accepted_per_s, self.connections
        )?;
        writeln!(f, "  latency   (final dot -> reply) {}", self.latency)?;
        if let Some(lag) = &self.schedule_lag {
            writeln!(f, "  sched lag (open loop, schedule -> send) {lag}")?;
        }
        for (k, v) in &self.failures {
            writeln!(f, "  failure   {v} x {k}")?;
        }
        for (k, v) in &self.refusals {
            writeln!(f, "  refusal   {v} x {k}")?;
        }
        Ok(())
    }
}
