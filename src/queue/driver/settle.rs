//! Settling a job's results: the queue decides (delivered, failed, retry
//! when, done), a DSN for the failures is spooled and queued first, then
//! the OUTCOME records and DONE or RETRY go to the spool in one batch; each
//! write is retried until it is durable. Emits an event per recipient
//! result, with the bounce class of failures.
//!
//! May call: the queue, spool, bounce (classes, DSNs through `bounces`),
//! events, config. Must never: give up on a write while the spool is open
//! (the message's delivery waits instead), or record a failure before its
//! DSN is durable.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use super::ShardQueue;
use crate::bounce::classify_reply;
use crate::config::Delivery;
use crate::events::{Event, Source, Subsystem, Try};
use crate::message::MessageId;
use crate::queue::{Dest, Job, Next, RcptResult, Settlement};
use crate::runtime::sched;
use crate::smtp::client::Stage;
use crate::spool::{Outcome, Record, SpoolError};

/// First wait before writing an outcome again after a spool failure.
const RECORD_RETRY_FIRST: Duration = Duration::from_millis(20);
/// Longest wait between such attempts.
const RECORD_RETRY_MAX: Duration = Duration::from_secs(2);

/// Jobs settled concurrently when a whole domain is settled at once.
const SETTLE_CONCURRENCY: usize = 256;
/// Jobs taken from the queue at a time then: what is handed out is a copy
/// of each recipient, so a million-message domain is settled in pieces.
const SETTLE_PIECE: usize = 16 * 1024;

/// How an attempt went besides its results: for the logs and the DSN.
#[derive(Clone, Copy, Default)]
pub(super) struct Sent<'a> {
    /// The remote host's name, when a connection was made.
    pub host: Option<&'a str>,
    /// Its address.
    pub remote: Option<std::net::IpAddr>,
    /// Octets of the message sent (zero when it was not read).
    pub octets: usize,
    /// Its envelope sender (empty when it was not read).
    pub sender: &'a str,
    /// The session stage each result ended in, in results order (empty:
    /// no connection).
    pub stages: &'a [Stage],
}

impl ShardQueue {
    /// Settles a job in the queue, spools a DSN for failures, then
    /// records the settlement. The DSN goes first: a crash in between
    /// repeats an attempt (and perhaps a DSN) but never loses the DSN.
    pub(super) async fn finish(
        &self,
        job: &Job,
        results: &[(u32, RcptResult)],
        sent: Sent<'_>,
        d: &Delivery,
    ) {
        let remote = sent.host;
        let s = self
            .queue
            .borrow_mut()
            .settle(job, results, &d.retry, sched::wall_ms());
        self.report(job, results, &s, sent);
        // The lines for these results are out before the spool records
        // them settled: a crash in between repeats a line, never loses one.
        self.logs.written().await;
        let failures: Vec<&crate::queue::Final> =
            s.finals.iter().filter(|f| !f.delivered).collect();
        // Neither may be forgotten: each is retried until it is durable,
        // and this connection (with this message) waits for it.
        if !failures.is_empty() && d.generate_bounces {
            if let Some(dsn) = self.make_dsn(s.id, &failures, remote, d).await {
                self.until_durable(s.id, "spooling its DSN", || self.store_dsn(&dsn))
                    .await;
                self.accept_dsn(dsn);
            }
        }
        self.until_durable(s.id, "recording its results", || self.record(&s))
            .await;
        match s.next {
            Next::Done => self.release(&s.id),
            Next::Retry { .. } => {
                self.delay_notice(s.id, d).await;
                self.release(&s.id);
            }
            Next::Waiting => {}
        }
    }

    /// Emits one event per recipient result: delivered or failed for good
    /// as the settlement says (a deferral past its expiry is a failure),
    /// deferred otherwise.
    fn report(&self, job: &Job, results: &[(u32, RcptResult)], s: &Settlement, sent: Sent<'_>) {
        let (binding, group) = self.bindings.source(job.binding);
        self.check_backoff(job, &binding, results);
        let source = Source {
            binding: &binding,
            group: &group,
        };
        let attempt = |index: u32, recipient| Try {
            source,
            id: s.id,
            recipient,
            sender: sent.sender,
            octets: sent.octets,
            retries: s.retries,
            received_at_ms: s.received_at_ms,
            host: sent.host,
            remote: sent.remote,
            stage: results
                .iter()
                .position(|(i, _)| *i == index)
                .and_then(|at| sent.stages.get(at).copied()),
        };
        for f in &s.finals {
            let (recipient, reply) = (&*f.rcpt.address, &*f.reply);
            let attempt = attempt(f.rcpt.index, recipient);
            self.events.emit(if f.delivered {
                Event::Delivery { attempt, reply }
            } else {
                Event::PermanentFailure {
                    attempt,
                    reply,
                    class: classify_reply(reply),
                }
            });
        }
        for (index, r) in results {
            let RcptResult::Deferred(reply) = r else {
                continue;
            };
            if s.finals.iter().any(|f| f.rcpt.index == *index) {
                continue;
            }
            let Some(q) = job.recipients.iter().find(|q| q.index == *index) else {
                continue;
            };
            self.events.emit(Event::TransientFailure {
                attempt: attempt(*index, &q.address),
                reply,
                class: classify_reply(reply),
            });
        }
    }

    /// Writes OUTCOME records (each with its reply's one-line form, as the
    /// spool format records it), then DONE or RETRY, in one batch.
    async fn record(&self, s: &Settlement) -> Result<(), SpoolError> {
        let replies: Vec<String> = s.finals.iter().map(|f| f.reply.to_string()).collect();
        let finals: Vec<(u32, Outcome, &str)> = s
            .finals
            .iter()
            .zip(&replies)
            .map(|(f, reply)| {
                let outcome = if f.delivered {
                    Outcome::Delivered
                } else {
                    Outcome::Failed
                };
                (f.rcpt.index, outcome, reply.as_str())
            })
            .collect();
        let then = match s.next {
            Next::Done => Some(Record::Done { id: s.id }),
            Next::Retry { at, attempts } => Some(Record::Retry {
                id: s.id,
                next_attempt_ms: at,
                attempts,
            }),
            Next::Waiting => None,
        };
        self.spool.append_settlement(s.id, &finals, then).await
    }

    /// Runs `write` until it succeeds, waiting longer after each failure
    /// (a full disk, an I/O error). Gives up only when the spool is closed
    /// (shutdown): the work is then repeated after the restart, never lost.
    pub(super) async fn until_durable<F, Fut>(&self, id: MessageId, what: &str, mut write: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), SpoolError>>,
    {
        let mut delay = RECORD_RETRY_FIRST;
        let mut failures = 0u64;
        loop {
            match write().await {
                Ok(()) => {
                    if failures > 0 {
                        log::info!(
                            "shard {}: {id}: {what} succeeded after {failures} failed attempt(s)",
                            self.shard
                        );
                    }
                    return;
                }
                Err(SpoolError::Closed) => {
                    self.events.panic(
                        Subsystem::Spool,
                        &format!(
                            "{id}: {what}: spool closed; the attempt is repeated after restart"
                        ),
                    );
                    return;
                }
                Err(e) => {
                    failures += 1;
                    // 1st, 2nd, 4th, 8th ... failure: the log shows it is
                    // stuck without a line per retry.
                    if failures.is_power_of_two() {
                        self.events.panic(Subsystem::Spool, &format!("{id}: {what} failed ({failures} time(s) so far): {e}; retrying, delivery of this message waits"));
                    }
                    sched::sleep(delay).await;
                    delay = (delay * 2).min(RECORD_RETRY_MAX);
                }
            }
        }
    }

    /// Tells the throttles when a receiver's reply in `results` matches a
    /// back-off rule (the first that does, for the first such reply).
    fn check_backoff(&self, job: &Job, binding: &str, results: &[(u32, RcptResult)]) {
        let config = self.config.get();
        if config.backoff.is_empty() {
            return;
        }
        for (_, r) in results {
            let reply = match r {
                RcptResult::Deferred(reply) | RcptResult::Failed(reply) => reply,
                RcptResult::Delivered(_) => continue,
            };
            if reply.internal_text().is_some() {
                continue;
            }
            let status = reply.enhanced.map(|e| e.to_string()).unwrap_or_default();
            let text = reply.text();
            let hit = config
                .backoff
                .iter()
                .find(|rule| rule.matches(reply.code, &status, &text, &job.domain));
            if let Some(rule) = hit {
                let key: Arc<str> = format!("{}@{binding}", job.domain).into();
                let limit = config.bindings.slot(binding).map_or(0, |s| {
                    config
                        .delivery
                        .for_binding(s, &job.domain)
                        .max_outbound_connections
                });
                self.throttles
                    .report_backoff(key, rule, reply.to_string(), limit);
                return;
            }
        }
    }

    /// Settles every ready job of a destination with the same result.
    pub(super) async fn settle_domain(
        self: &Rc<Self>,
        dest: &Dest,
        result: RcptResult,
        d: &Arc<Delivery>,
    ) {
        // What is ready now; what arrives meanwhile waits for a connection.
        let ready = self.queue.borrow().ready_len(dest);
        if ready == 0 {
            return;
        }
        let (kind, name) = match &result {
            RcptResult::Delivered(_) => ("delivered", "Delivered"),
            RcptResult::Failed(_) => ("failed", "Failed"),
            RcptResult::Deferred(_) => ("deferred", "Deferred"),
        };
        let admitted = self
            .repeats
            .borrow_mut()
            .admit(&(dest.clone(), kind), sched::now());
        if let Some(held) = admitted {
            let also = if held > 0 {
                format!(" ({held} similar line(s) for this domain held back)")
            } else {
                String::new()
            };
            // The reply's one-line form, quoted; tools grep "settled as Deferred".
            log::info!(
                "shard {}: {}: {ready} message(s) settled as {name}({:?}){also}",
                self.shard,
                dest.domain,
                result.reply().to_string()
            );
        }
        let mut left = ready;
        while left > 0 {
            let jobs = self
                .queue
                .borrow_mut()
                .take_up_to(dest, left.min(SETTLE_PIECE));
            if jobs.is_empty() {
                break;
            }
            left -= jobs.len();
            self.settle_jobs(jobs, &result, d).await;
        }
        if ready >= SETTLE_PIECE {
            // Each piece's copies of recipients are freed: their pages go back.
            crate::runtime::release_free_memory();
        }
    }

    /// Settles `jobs` with the same result, `SETTLE_CONCURRENCY` at a time.
    async fn settle_jobs(self: &Rc<Self>, jobs: Vec<Job>, result: &RcptResult, d: &Arc<Delivery>) {
        let jobs = Rc::new(jobs);
        let per_task = jobs.len().div_ceil(SETTLE_CONCURRENCY);
        let mut tasks = Vec::new();
        for start in (0..jobs.len()).step_by(per_task.max(1)) {
            let (me, jobs, result, d) = (self.clone(), jobs.clone(), result.clone(), d.clone());
            tasks.push(sched::spawn(async move {
                for job in jobs.iter().skip(start).take(per_task) {
                    let results: Vec<(u32, RcptResult)> = job
                        .recipients
                        .iter()
                        .map(|q| (q.index, result.clone()))
                        .collect();
                    me.finish(job, &results, Sent::default(), &d).await;
                }
            }));
        }
        for t in tasks {
            t.await;
        }
    }
}
