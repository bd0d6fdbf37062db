//! One delivery task's life for a destination (a domain from a binding):
//! it runs on connection slots leased from their owner shards (its
//! `Permit`), takes a
//! connection from the pools, and sends the domain's jobs over it until
//! the queue is empty (the connection goes back to the pools while the
//! task waits `idle_timeout` for more), the connection breaks or is used
//! up, or the owner wants the slot back. Each job waits for its token of
//! `outbound_throttle_messages`, each new connection for one of
//! `outbound_throttle_connections`. Results are settled through the queue
//! and recorded in the spool before anything else happens.
//!
//! May call: the queue, outbound (pools and slots), settlement, throttle
//! (permits and tokens), smtp (the reply type). Must never: hold a
//! connection while it waits for work (another task may use it), leave
//! its connection open once its permit is given back, or take a
//! connection once the shard is shutting down.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use super::settle::Sent;
use super::ShardQueue;
use crate::config::{Delivery, Throttle, ThrottleScope};
use crate::events::Subsystem;
use crate::outbound::{Binding, PoolKey, Slot, Unroutable};
use crate::queue::{Dest, Job, RcptResult};
use crate::reply::Reply;
use crate::throttle::{Permit, RateKind};

/// How long a task waits idle, once slots are wanted elsewhere, before
/// it gives its own up.
const IDLE_YIELD_AFTER: Duration = Duration::from_millis(200);

impl ShardQueue {
    /// Runs one delivery task for `dest`, connecting from `source`: sends its jobs over a slot
    /// from the pools; while the domain has no work the slot goes back to
    /// the pools and the task waits `idle_timeout` for more.
    /// The connection is closed before `permit` is given back, so the
    /// slot's next holder (perhaps on another shard) never overlaps it.
    pub(super) async fn worker(
        self: &Rc<Self>,
        dest: &Dest,
        source: Binding,
        d: &Arc<Delivery>,
        mut permit: Permit,
    ) {
        let Some(mut slot) = self.slot(dest, source, d, None).await else {
            return;
        };
        loop {
            if permit.leave() {
                // The owner wants the slot for another shard.
                self.pools.close(slot).await;
                return;
            }
            let job = self.queue.borrow_mut().take(dest);
            let Some(job) = job else {
                let key = slot.key().clone();
                self.pools.release(slot).await;
                let more = !self.stop.is_fired() && self.wait_for_work(dest, d.idle_timeout).await;
                // A task woken by the shutdown takes no connection again.
                if !more || self.stop.is_fired() {
                    if let Some(idle) = self.pools.reclaim(&key, d) {
                        self.pools.close(idle).await;
                    }
                    return;
                }
                let Some(s) = self.slot(dest, source, d, Some(&key)).await else {
                    return;
                };
                slot = s;
                continue;
            };
            // Taken first so that no token is spent on work another task
            // took; waiting for it is no attempt (nothing is settled). At
            // a shutdown the job stays unsettled: the spool still has it.
            if let Some(t) = &d.throttle_messages {
                if !self
                    .until_stopped(self.throttles.token(RateKind::Messages, t))
                    .await
                {
                    return;
                }
            }
            // A back-off's lowered rate holds on top of the configured one.
            if let Some(rate) = self.throttles.effect(permit.key()).and_then(|e| e.rate) {
                let t = Throttle {
                    rate,
                    scope: ThrottleScope::Backoff(permit.key().clone()),
                };
                if !self
                    .until_stopped(self.throttles.token(RateKind::Messages, &t))
                    .await
                {
                    return;
                }
            }
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

    /// Runs `wait` unless the shard stops first: false then.
    async fn until_stopped(&self, wait: impl std::future::Future<Output = ()>) -> bool {
        futures_lite::future::or(
            async {
                wait.await;
                !self.stop.is_fired()
            },
            async {
                self.stop.wait().await;
                false
            },
        )
        .await
    }

    /// A connection slot for `dest` from `source`: the idle one at `last` if it is
    /// still there, else one from the pools. `None` when the domain cannot
    /// be reached now; its ready jobs are then settled with the reason.
    async fn slot(
        self: &Rc<Self>,
        dest: &Dest,
        source: Binding,
        d: &Arc<Delivery>,
        last: Option<&PoolKey>,
    ) -> Option<Slot> {
        if let Some(slot) = last.and_then(|k| self.pools.reclaim(k, d)) {
            return Some(slot);
        }
        // A connection may be opened: it takes a token of the connection
        // rate first (also when an idle one of another task is reused).
        if let Some(t) = &d.throttle_connections {
            if !self
                .until_stopped(self.throttles.token(RateKind::Connections, t))
                .await
            {
                return None;
            }
        }
        let result = match self.pools.acquire(source, &dest.domain, d).await {
            Ok(slot) => return Some(slot),
            Err(Unroutable::Permanent(r)) => RcptResult::Failed(r),
            Err(Unroutable::Transient(r)) => RcptResult::Deferred(r),
        };
        self.settle_domain(dest, result, d).await;
        None
    }

    /// Waits until `dest` has ready work or `limit` passes.
    async fn wait_for_work(&self, dest: &Dest, limit: Duration) -> bool {
        if self.queue.borrow().ready_len(dest) > 0 {
            return true;
        }
        let signal = self
            .idle
            .borrow_mut()
            .entry(dest.clone())
            .or_default()
            .clone();
        // Slots wanted elsewhere end the wait once it has lasted
        // `IDLE_YIELD_AFTER`: an idle task gives its slots (and its
        // connection) up rather than hold them for `idle_timeout` while
        // another destination waits for them, and a task idle between two
        // messages of a busy destination keeps its connection.
        let contended = self.throttles.contended();
        let woke = futures_lite::future::or(
            async {
                signal.wait().await;
                true
            },
            futures_lite::future::or(
                async {
                    contended.wait().await;
                    crate::runtime::sched::sleep(IDLE_YIELD_AFTER.min(limit)).await;
                    false
                },
                async {
                    crate::runtime::sched::sleep(limit).await;
                    false
                },
            ),
        )
        .await;
        woke && self.queue.borrow().ready_len(dest) > 0
    }

    /// Sends one job over `slot` and settles its results.
    async fn deliver(&self, slot: &mut Slot, job: Job, d: &Arc<Delivery>) {
        let (env, body) = match self.fetch(job.id).await {
            Ok(x) => x,
            Err(e) => {
                self.events.panic(
                    Subsystem::Spool,
                    &format!("reading {} from the spool: {e}", job.id),
                );
                let r = Rc::new(Reply::internal(
                    451,
                    (4, 3, 0),
                    &format!("spool read failed: {e}"),
                ));
                let results = job
                    .recipients
                    .iter()
                    .map(|q| (q.index, RcptResult::Deferred(r.clone())))
                    .collect::<Vec<_>>();
                self.finish(&job, &results, Sent::default(), d).await;
                return;
            }
        };
        let (results, stages) = slot.send(&env, &body, &job.recipients).await;
        let sent = Sent {
            host: Some(slot.host()),
            remote: Some(slot.remote()),
            octets: body.len(),
            sender: &env.mail_from,
            stages: &stages,
        };
        self.finish(&job, &results, sent, d).await;
    }
}
