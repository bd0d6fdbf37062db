//! One delivery task's life for a domain: take a connection slot from the
//! pools, send the domain's jobs over it until the queue is empty (the slot
//! goes back to the pools while the task waits `idle_timeout` for more),
//! the connection breaks or is used up. Results are settled through the
//! queue and recorded in the spool before anything else happens.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use super::{now_ms, ShardQueue};
use crate::bounce::{classify, BounceClass};
use crate::config::Delivery;
use crate::events::Event;
use crate::message::{Envelope, MessageId};
use crate::outbound::{Binding, PoolKey, Slot, Unroutable};
use crate::queue::{Job, Next, RcptResult, Settlement};
use crate::spool::{Outcome, Record, SpoolError};

/// First wait before writing an outcome again after a spool failure.
const RECORD_RETRY_FIRST: Duration = Duration::from_millis(20);
/// Longest wait between such attempts.
const RECORD_RETRY_MAX: Duration = Duration::from_secs(2);

/// Jobs settled concurrently when a whole domain is settled at once.
const SETTLE_CONCURRENCY: usize = 256;

/// A reply as recorded (`"550 5.1.1 text"`) and its Momentum bounce class.
fn bounce_class(reply: &str) -> BounceClass {
    let code = reply
        .get(..3)
        .and_then(|c| c.parse::<u16>().ok())
        .unwrap_or(0);
    let text = reply.get(3..).unwrap_or("").trim_start();
    classify(code, None, text)
}

impl ShardQueue {
    /// Runs one delivery task for `domain`: sends its jobs over a slot
    /// from the pools; while the domain has no work the slot goes back to
    /// the pools and the task waits `idle_timeout` for more.
    pub(super) async fn worker(self: &Rc<Self>, domain: &Rc<str>, d: &Arc<Delivery>) {
        let Some(mut slot) = self.slot(domain, d, None).await else {
            return;
        };
        loop {
            let job = self.queue.borrow_mut().take(domain);
            let Some(job) = job else {
                let key = slot.key().clone();
                self.pools.release(slot).await;
                if self.stop.is_fired() || !self.wait_for_work(domain, d.idle_timeout).await {
                    return;
                }
                let Some(s) = self.slot(domain, d, Some(&key)).await else {
                    return;
                };
                slot = s;
                continue;
            };
            self.deliver(&mut slot, job, d).await;
            if slot.is_broken() {
                return;
            }
            if slot.used_up() || self.stop.is_fired() {
                break;
            }
        }
        self.pools.release(slot).await;
    }

    /// A connection slot for `domain`: the idle one at `last` if it is
    /// still there, else one from the pools. `None` when the domain cannot
    /// be reached now; its ready jobs are then settled with the reason.
    async fn slot(
        self: &Rc<Self>,
        domain: &Rc<str>,
        d: &Arc<Delivery>,
        last: Option<&PoolKey>,
    ) -> Option<Slot> {
        if let Some(slot) = last.and_then(|k| self.pools.reclaim(k, d)) {
            return Some(slot);
        }
        let result = match self.pools.acquire(Binding::Default, domain, d).await {
            Ok(slot) => return Some(slot),
            Err(Unroutable::Permanent(r)) => RcptResult::Failed(r),
            Err(Unroutable::Transient(r)) => RcptResult::Deferred(r),
        };
        self.settle_domain(domain, result, d).await;
        None
    }

    /// Waits until `domain` has ready work or `limit` passes.
    async fn wait_for_work(&self, domain: &Rc<str>, limit: Duration) -> bool {
        if self.queue.borrow().ready_len(domain) > 0 {
            return true;
        }
        let signal = self
            .idle
            .borrow_mut()
            .entry(domain.clone())
            .or_default()
            .clone();
        let woke = futures_lite::future::or(
            async {
                signal.wait().await;
                true
            },
            async {
                glommio::timer::sleep(limit).await;
                false
            },
        )
        .await;
        woke && self.queue.borrow().ready_len(domain) > 0
    }

    /// Envelope and content of a queued message.
    pub(super) async fn fetch(
        &self,
        id: MessageId,
    ) -> Result<(Rc<Envelope>, Rc<[u8]>), SpoolError> {
        if let Some(r) = self.resident.borrow().get(&id) {
            return Ok((r.env.clone(), r.body.clone()));
        }
        let (env, body) = self.spool.read_live(id).await?;
        Ok((Rc::new(env), Rc::from(body)))
    }

    /// Sends one job over `slot` and settles its results.
    async fn deliver(&self, slot: &mut Slot, job: Job, d: &Arc<Delivery>) {
        let (env, body) = match self.fetch(job.id).await {
            Ok(x) => x,
            Err(e) => {
                self.events
                    .panic(&format!("reading {} from the spool: {e}", job.id));
                let r: Rc<str> = Rc::from(format!("451 4.3.0 [internal] spool read failed: {e}"));
                let results = job
                    .recipients
                    .iter()
                    .map(|q| (q.index, RcptResult::Deferred(r.clone())))
                    .collect::<Vec<_>>();
                self.finish(&job, &results, None, d).await;
                return;
            }
        };
        let results = slot.send(&env, &body, &job.recipients).await;
        self.finish(&job, &results, Some(slot.host()), d).await;
    }

    /// Settles a job in the queue, spools a DSN for failures, then
    /// records the settlement. The DSN goes first: a crash in between
    /// repeats an attempt (and perhaps a DSN) but never loses the DSN.
    async fn finish(
        &self,
        job: &Job,
        results: &[(u32, RcptResult)],
        remote: Option<&str>,
        d: &Delivery,
    ) {
        let s = self
            .queue
            .borrow_mut()
            .settle(job, results, &d.retry, now_ms());
        self.report(job, results, &s, remote);
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
    fn report(&self, job: &Job, results: &[(u32, RcptResult)], s: &Settlement, host: Option<&str>) {
        for f in &s.finals {
            let (recipient, reply) = (&*f.rcpt.address, &*f.reply);
            self.events.emit(if f.delivered {
                Event::Delivery {
                    id: s.id,
                    recipient,
                    host,
                    reply,
                }
            } else {
                Event::PermanentFailure {
                    id: s.id,
                    recipient,
                    host,
                    reply,
                    class: bounce_class(reply),
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
                id: s.id,
                recipient: &q.address,
                host,
                reply,
                class: bounce_class(reply),
            });
        }
    }

    /// Writes OUTCOME records, then DONE or RETRY, in one batch.
    async fn record(&self, s: &Settlement) -> Result<(), SpoolError> {
        let finals: Vec<(u32, Outcome, &str)> = s
            .finals
            .iter()
            .map(|f| {
                let outcome = if f.delivered {
                    Outcome::Delivered
                } else {
                    Outcome::Failed
                };
                (f.rcpt.index, outcome, &*f.reply)
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
    async fn until_durable<F, Fut>(&self, id: MessageId, what: &str, mut write: F)
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
                    self.events.panic(&format!(
                        "{id}: {what}: spool closed; the attempt is repeated after restart"
                    ));
                    return;
                }
                Err(e) => {
                    failures += 1;
                    // 1st, 2nd, 4th, 8th ... failure: the log shows it is
                    // stuck without a line per retry.
                    if failures.is_power_of_two() {
                        self.events.panic(&format!("{id}: {what} failed ({failures} time(s) so far): {e}; retrying, delivery of this message waits"));
                    }
                    glommio::timer::sleep(delay).await;
                    delay = (delay * 2).min(RECORD_RETRY_MAX);
                }
            }
        }
    }

    /// Settles every ready job of a domain with the same result.
    async fn settle_domain(
        self: &Rc<Self>,
        domain: &Rc<str>,
        result: RcptResult,
        d: &Arc<Delivery>,
    ) {
        let jobs = self.queue.borrow_mut().take_all(domain);
        if jobs.is_empty() {
            return;
        }
        let kind = match &result {
            RcptResult::Delivered(_) => "delivered",
            RcptResult::Failed(_) => "failed",
            RcptResult::Deferred(_) => "deferred",
        };
        let admitted = self
            .repeats
            .borrow_mut()
            .admit(&(domain.clone(), kind), std::time::Instant::now());
        if let Some(held) = admitted {
            let also = if held > 0 {
                format!(" ({held} similar line(s) for this domain held back)")
            } else {
                String::new()
            };
            log::info!(
                "shard {}: {domain}: {} message(s) settled as {result:?}{also}",
                self.shard,
                jobs.len()
            );
        }
        let jobs = Rc::new(jobs);
        let per_task = jobs.len().div_ceil(SETTLE_CONCURRENCY);
        let mut tasks = Vec::new();
        for start in (0..jobs.len()).step_by(per_task.max(1)) {
            let (me, jobs, result, d) = (self.clone(), jobs.clone(), result.clone(), d.clone());
            tasks.push(glommio::spawn_local(async move {
                for job in jobs.iter().skip(start).take(per_task) {
                    let results: Vec<(u32, RcptResult)> = job
                        .recipients
                        .iter()
                        .map(|q| (q.index, result.clone()))
                        .collect();
                    me.finish(job, &results, None, &d).await;
                }
            }));
        }
        for t in tasks {
            t.await;
        }
    }
}
