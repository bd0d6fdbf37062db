//! Queue: one shard's partition of the queue — which recipients of which
//! messages still need delivery, per destination domain, and when.
//!
//! Sans-IO: no clock (every call takes `now_ms`), no disk, no sockets. The
//! driver (`driver`, the only part here that does I/O) asks it for jobs,
//! reports results, and writes to the spool what `settle` says before
//! acting on it. Per-domain ready queues keep one slow or dead domain from
//! delaying any other.
//!
//! May call (this file and `policy`): message, smtp (the reply type),
//! config (the retry policy), runtime (hash maps).
//! Must never: import the driver, or anything that does I/O.

pub mod driver;
pub mod policy;
#[cfg(test)]
mod tests;

use crate::runtime::hash::{Map, Set};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::rc::Rc;

pub use crate::message::{domain_of, PendingRcpts, QueuedRcpt, RcptResult};
use crate::message::{BindingId, IdTable, MessageId};
use crate::reply::Reply;
pub use policy::{AfterDeferral, RetryPolicy};

/// Where jobs wait and delivery tasks run: a destination domain from
/// one binding (Momentum's binding × domain queue), so a suspended or
/// throttled binding holds up no other binding's mail to the domain.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Dest {
    /// The binding the mail is sent from.
    pub binding: BindingId,
    /// The destination domain.
    pub domain: Rc<str>,
}

/// A message to queue.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Message id.
    pub id: MessageId,
    /// The binding it is sent from.
    pub binding: BindingId,
    /// Reception time (for expiry).
    pub received_at_ms: u64,
    /// Rounds of attempts that ended with a deferral.
    pub attempts: u32,
    /// Not before this time.
    pub next_attempt_ms: u64,
    /// Recipients without a final outcome.
    pub pending: PendingRcpts,
}

impl Entry {
    /// A message to queue, from the default binding ([`Entry::from`] sets another).
    pub fn new(
        id: MessageId,
        received_at_ms: u64,
        attempts: u32,
        next_attempt_ms: u64,
        pending: impl Into<PendingRcpts>,
    ) -> Entry {
        Entry {
            id,
            binding: BindingId::default(),
            received_at_ms,
            attempts,
            next_attempt_ms,
            pending: pending.into(),
        }
    }

    /// The same message, sent from `binding`.
    pub fn from(mut self, binding: BindingId) -> Entry {
        self.binding = binding;
        self
    }
}

/// A message as the queue holds it: 72 bytes and the recipients' addresses
/// for the bulk case of one recipient (`perf/queue_1m.sh` keeps a million).
#[derive(Clone, Debug)]
pub struct Held {
    /// Reception time (for expiry).
    pub received_at_ms: u64,
    /// Not before this time.
    pub next_attempt_ms: u64,
    pending: PendingRcpts,
    /// Last deferral reply, for expiry reports.
    last_reply: Option<Rc<Reply>>,
    /// Rounds of attempts that ended with a deferral.
    pub attempts: u32,
    /// The binding it is sent from.
    pub binding: BindingId,
    /// Domain jobs of the current round (queued or handed out) not yet settled.
    outstanding: u16,
    /// Delay notices sent so far (kept in memory only; stops counting at 255).
    pub delay_notices: u8,
    /// Some recipient was deferred in the current round.
    deferred: bool,
}

impl Held {
    /// Recipients without a final outcome.
    pub fn pending(&self) -> &[QueuedRcpt] {
        &self.pending
    }
}

/// Work for one connection: a message's recipients in one domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    /// Message id.
    pub id: MessageId,
    /// The binding it is sent from.
    pub binding: BindingId,
    /// Destination domain.
    pub domain: Rc<str>,
    /// Its recipients there.
    pub recipients: Vec<QueuedRcpt>,
}

/// Final state of one recipient, to record in the spool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Final {
    /// The recipient.
    pub rcpt: QueuedRcpt,
    /// True when delivered, false when failed.
    pub delivered: bool,
    /// The reply that settled it.
    pub reply: Rc<Reply>,
}

/// What the message needs next, once a job is settled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Other domains of this message are not settled yet.
    Waiting,
    /// Nothing pending: write DONE.
    Done,
    /// Write RETRY and try again at `at`.
    Retry {
        /// Next attempt, ms since the epoch.
        at: u64,
        /// Deferred rounds so far.
        attempts: u32,
    },
}

/// Everything to write to the spool (in this order) and act on after a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settlement {
    /// Message id.
    pub id: MessageId,
    /// Rounds of attempts that had ended in a deferral before this one.
    pub retries: u32,
    /// When the message was received (epoch ms).
    pub received_at_ms: u64,
    /// Recipients settled now (OUTCOME records; failures may need a DSN).
    pub finals: Vec<Final>,
    /// Then DONE, RETRY or nothing.
    pub next: Next,
}

/// Expiry wording (Momentum 2.2, §7.1), after `554 5.4.7 [internal]`.
pub const EXPIRED_TEXT: &str = "exceeded max time without delivery";
/// `max_retries` wording (Momentum 2.2, §7.1), after `554 5.4.7 [internal]`.
pub const RETRIES_TEXT: &str = "exceeded max retries without delivery";
/// Reply code of both.
const GAVE_UP_CODE: u16 = 554;
/// Enhanced status of both (RFC 3463 X.4.7: delivery time expired).
const GAVE_UP_STATUS: (u8, u16, u16) = (5, 4, 7);

/// The reply for recipients the queue gave up on (`text` says why), with
/// the last deferral's reply if there was one.
fn gave_up(text: &str, last: Option<&Reply>) -> Reply {
    match last {
        Some(l) => Reply::internal(
            GAVE_UP_CODE,
            GAVE_UP_STATUS,
            &format!("{text} (last error: {l})"),
        ),
        None => Reply::internal(GAVE_UP_CODE, GAVE_UP_STATUS, text),
    }
}

/// True for the reply of a recipient whose message expired in the queue.
pub fn is_expiry(reply: &Reply) -> bool {
    reply.code == GAVE_UP_CODE
        && reply
            .enhanced
            .is_some_and(|e| (e.class, e.subject, e.detail) == GAVE_UP_STATUS)
        && reply
            .internal_text()
            .is_some_and(|t| t.starts_with(EXPIRED_TEXT))
}

/// One shard's queue partition.
#[derive(Default)]
pub struct Queue {
    entries: IdTable<Held>,
    /// Delayed messages by next attempt time. A message whose time changed
    /// or that is ready already leaves a stale item, skipped on wake.
    delayed: BinaryHeap<Reverse<(u64, MessageId)>>,
    /// Ready jobs per binding, then per domain.
    lanes: Map<BindingId, Map<Rc<str>, VecDeque<MessageId>>>,
}

impl Queue {
    /// An empty queue.
    pub fn new() -> Queue {
        Queue::default()
    }

    /// Messages held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Messages waiting for their next attempt time.
    pub fn delayed_len(&self) -> usize {
        self.delayed.len()
    }

    /// Jobs ready for a destination (an upper bound: stale ids are
    /// skipped on take).
    pub fn ready_len(&self, dest: &Dest) -> usize {
        self.lanes
            .get(&dest.binding)
            .and_then(|l| l.get(&*dest.domain))
            .map_or(0, VecDeque::len)
    }

    /// Destinations with ready work.
    pub fn ready_dests(&self) -> Vec<Dest> {
        let mut out = Vec::new();
        for (b, lane) in &self.lanes {
            for (d, q) in lane {
                if !q.is_empty() {
                    out.push(Dest {
                        binding: *b,
                        domain: d.clone(),
                    });
                }
            }
        }
        out
    }

    /// The message held for an id.
    pub fn get(&self, id: &MessageId) -> Option<&Held> {
        self.entries.get(id)
    }

    /// If a delay notice is due for a deferred message, counts it and
    /// returns the pending recipients and the last deferral reply. The k-th
    /// notice is due once the message is `interval × (2^k − 1)` old (each
    /// gap doubling, capped at `max_interval`).
    pub fn delay_notice_due(
        &mut self,
        id: &MessageId,
        interval_ms: u64,
        max_interval_ms: u64,
        now_ms: u64,
    ) -> Option<(Vec<QueuedRcpt>, Option<Rc<Reply>>)> {
        let e = self.entries.get_mut(id)?;
        let mut due_at = e.received_at_ms;
        for k in 0..=e.delay_notices.min(63) {
            due_at = due_at.saturating_add(interval_ms.saturating_mul(1 << k).min(max_interval_ms));
        }
        if now_ms < due_at || e.pending.is_empty() {
            return None;
        }
        e.delay_notices = e.delay_notices.saturating_add(1);
        Some((e.pending().to_vec(), e.last_reply.clone()))
    }

    /// Adds a message: ready now if its time has come, else delayed.
    /// Returns the destinations that got ready work.
    pub fn insert(&mut self, entry: Entry, now_ms: u64) -> Vec<Dest> {
        let id = entry.id;
        let due = entry.next_attempt_ms;
        if entry.pending.is_empty() {
            return Vec::new();
        }
        let held = Held {
            received_at_ms: entry.received_at_ms,
            next_attempt_ms: due,
            pending: entry.pending,
            last_reply: None,
            attempts: entry.attempts,
            binding: entry.binding,
            outstanding: 0,
            delay_notices: 0,
            deferred: false,
        };
        self.entries.insert(id, held);
        if due <= now_ms {
            self.make_ready(id)
        } else {
            self.delayed.push(Reverse((due, id)));
            Vec::new()
        }
    }

    /// Earliest delayed attempt time, for the driver's timer.
    pub fn next_wakeup(&self) -> Option<u64> {
        self.delayed.peek().map(|Reverse((t, _))| *t)
    }

    /// Moves every message whose time has come to the ready queues.
    pub fn wake(&mut self, now_ms: u64) -> Vec<Dest> {
        let mut woke = Set::default();
        while let Some(&Reverse((t, id))) = self.delayed.peek() {
            if t > now_ms {
                break;
            }
            self.delayed.pop();
            // Stale: gone, ready already, or rescheduled.
            if self
                .entries
                .get(&id)
                .is_some_and(|e| e.outstanding == 0 && e.next_attempt_ms == t)
            {
                woke.extend(self.make_ready(id));
            }
        }
        woke.into_iter().collect()
    }

    fn make_ready(&mut self, id: MessageId) -> Vec<Dest> {
        let Some(e) = self.entries.get(&id) else {
            return Vec::new();
        };
        let binding = e.binding;
        let lane = self.lanes.entry(binding).or_default();
        let mut out: Vec<Dest> = Vec::new();
        for r in e.pending() {
            let d = r.domain();
            if out.iter().all(|o| *o.domain != *d) {
                let domain = lane
                    .get_key_value(&*d)
                    .map_or_else(|| Rc::from(&*d), |(k, _)| k.clone());
                out.push(Dest { binding, domain });
            }
        }
        for d in &out {
            lane.entry(d.domain.clone()).or_default().push_back(id);
        }
        if let Some(e) = self.entries.get_mut(&id) {
            e.outstanding = out.len() as u16;
        }
        out
    }

    /// Hands out the next job for a destination, if any.
    pub fn take(&mut self, dest: &Dest) -> Option<Job> {
        let lane = self.lanes.get_mut(&dest.binding)?;
        let domain = &*dest.domain;
        loop {
            let id = lane.get_mut(domain)?.pop_front()?;
            let Some(e) = self.entries.get_mut(&id) else {
                continue;
            };
            let recipients: Vec<QueuedRcpt> = e
                .pending()
                .iter()
                .filter(|r| r.in_domain(domain))
                .cloned()
                .collect();
            debug_assert!(
                !recipients.is_empty(),
                "a message is queued only for domains it has recipients in"
            );
            if recipients.is_empty() {
                continue;
            }
            if lane.get(domain).is_some_and(VecDeque::is_empty) {
                lane.remove(domain);
            }
            return Some(Job {
                id,
                binding: dest.binding,
                domain: dest.domain.clone(),
                recipients,
            });
        }
    }

    /// Moves up to `max` messages of `dest`'s ready mail to other bindings
    /// (its binding is suspended and its group moves such mail): each
    /// message whose one job of this round is that one goes to the binding
    /// `to` gives it. A message with other jobs out (another domain, or
    /// in flight) stays until they settle; when `to` gives `None`, the
    /// rest stay. Returns the moves and the destinations that got work.
    pub fn rebind(
        &mut self,
        dest: &Dest,
        max: usize,
        mut to: impl FnMut() -> Option<BindingId>,
    ) -> (Vec<(MessageId, BindingId)>, Vec<Dest>) {
        let mut moved = Vec::new();
        let Some(lane) = self.lanes.get_mut(&dest.binding) else {
            return (moved, Vec::new());
        };
        let Some(ids) = lane.get_mut(&*dest.domain) else {
            return (moved, Vec::new());
        };
        // From the front, so that a pass costs what it moves, not the
        // length of the lane; what it passes over goes back in order.
        let mut skipped = Vec::new();
        while moved.len() < max {
            let Some(id) = ids.pop_front() else { break };
            let Some(e) = self.entries.get_mut(&id) else {
                continue; // settled since (stale)
            };
            if e.outstanding != 1 || e.binding != dest.binding {
                skipped.push(id);
                continue;
            }
            match to() {
                Some(b) if b != dest.binding => {
                    e.binding = b;
                    e.outstanding = 0;
                    moved.push((id, b));
                }
                _ => {
                    skipped.push(id);
                    break;
                }
            }
        }
        for id in skipped.into_iter().rev() {
            ids.push_front(id);
        }
        if ids.is_empty() {
            lane.remove(&*dest.domain);
        }
        let mut ready: Vec<Dest> = Vec::new();
        for (id, _) in &moved {
            for d in self.make_ready(*id) {
                if !ready.contains(&d) {
                    ready.push(d);
                }
            }
        }
        (moved, ready)
    }

    /// Takes back up to `n` ready jobs of a domain (e.g. its hosts are
    /// unreachable), so they can be settled together; in pieces, so that
    /// settling a million of them holds one piece in memory at a time.
    pub fn take_up_to(&mut self, dest: &Dest, n: usize) -> Vec<Job> {
        let mut jobs = Vec::new();
        while jobs.len() < n {
            let Some(j) = self.take(dest) else { break };
            jobs.push(j);
        }
        jobs
    }

    /// Records a job's results. `policy` is the retry policy of the job's domain.
    pub fn settle(
        &mut self,
        job: &Job,
        results: &[(u32, RcptResult)],
        policy: &RetryPolicy,
        now_ms: u64,
    ) -> Settlement {
        let mut finals = Vec::new();
        let Some(e) = self.entries.get_mut(&job.id) else {
            return Settlement {
                id: job.id,
                retries: 0,
                received_at_ms: 0,
                finals,
                next: Next::Waiting,
            };
        };
        e.outstanding = e.outstanding.saturating_sub(1);
        let (retries, received_at_ms) = (e.attempts, e.received_at_ms);
        for (index, result) in results {
            let Some(pos) = e.pending().iter().position(|r| r.index == *index) else {
                continue;
            };
            match result {
                RcptResult::Delivered(reply) | RcptResult::Failed(reply) => {
                    let rcpt = e.pending.remove(pos);
                    let delivered = matches!(result, RcptResult::Delivered(_));
                    finals.push(Final {
                        rcpt,
                        delivered,
                        reply: reply.clone(),
                    });
                }
                RcptResult::Deferred(reply) => {
                    e.deferred = true;
                    e.last_reply = Some(reply.clone());
                }
            }
        }
        // A recipient the job carried but the results did not mention is deferred.
        if job.recipients.iter().any(|r| {
            e.pending().iter().any(|p| p.index == r.index)
                && !results.iter().any(|(i, _)| *i == r.index)
        }) {
            e.deferred = true;
        }
        if e.outstanding > 0 {
            return Settlement {
                id: job.id,
                retries,
                received_at_ms,
                finals,
                next: Next::Waiting,
            };
        }
        if e.pending.is_empty() {
            self.entries.remove(&job.id);
            return Settlement {
                id: job.id,
                retries,
                received_at_ms,
                finals,
                next: Next::Done,
            };
        }
        e.deferred = false;
        e.attempts += 1;
        match policy.after_deferral(e.attempts, e.received_at_ms, now_ms) {
            AfterDeferral::RetryAt(at) => {
                e.next_attempt_ms = at;
                let attempts = e.attempts;
                self.delayed.push(Reverse((at, job.id)));
                Settlement {
                    id: job.id,
                    retries,
                    received_at_ms,
                    finals,
                    next: Next::Retry { at, attempts },
                }
            }
            reason => {
                let text = if reason == AfterDeferral::Expired {
                    EXPIRED_TEXT
                } else {
                    RETRIES_TEXT
                };
                let reply = Rc::new(gave_up(text, e.last_reply.take().as_deref()));
                for rcpt in e.pending.take() {
                    finals.push(Final {
                        rcpt,
                        delivered: false,
                        reply: reply.clone(),
                    });
                }
                self.entries.remove(&job.id);
                Settlement {
                    id: job.id,
                    retries,
                    received_at_ms,
                    finals,
                    next: Next::Done,
                }
            }
        }
    }
}
