//! One delivery task's life for a domain: take a connection slot from the
//! pools, send the domain's jobs over it until the queue is empty (the slot
//! goes back to the pools while the task waits `idle_timeout` for more),
//! the connection breaks or is used up. Results are settled through the
//! queue and recorded in the spool before anything else happens.
//!
//! May call: the queue, outbound (pools and slots), settlement, smtp (the
//! reply type). Must never: hold a slot while it waits for work (another
//! task may use it), or take a connection once the shard is shutting down.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use super::ShardQueue;
use crate::config::Delivery;
use crate::outbound::{Binding, PoolKey, Slot, Unroutable};
use crate::queue::{Job, RcptResult};
use crate::reply::Reply;

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
                let more =
                    !self.stop.is_fired() && self.wait_for_work(domain, d.idle_timeout).await;
                // A task woken by the shutdown takes no connection again.
                if !more || self.stop.is_fired() {
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
                crate::runtime::sched::sleep(limit).await;
                false
            },
        )
        .await;
        woke && self.queue.borrow().ready_len(domain) > 0
    }

    /// Sends one job over `slot` and settles its results.
    async fn deliver(&self, slot: &mut Slot, job: Job, d: &Arc<Delivery>) {
        let (env, body) = match self.fetch(job.id).await {
            Ok(x) => x,
            Err(e) => {
                self.events
                    .panic(&format!("reading {} from the spool: {e}", job.id));
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
                self.finish(&job, &results, None, d).await;
                return;
            }
        };
        let results = slot.send(&env, &body, &job.recipients).await;
        self.finish(&job, &results, Some(slot.host()), d).await;
    }
}
