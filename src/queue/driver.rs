//! The queue's driver: a shard's queue manager. Owns the shard's `Queue`
//! and runs it — the scheduler loop (due messages; delivery tasks per
//! domain within the slots of `max_outbound_connections` that the
//! domain's owner shard leases to this one (`throttle`), none while
//! `suspend_delivery`), the hand-off from inbound (`accept`), the resident
//! content cache, the settlement of every job's results (`settle`), DSNs
//! and delay DSNs injected as new messages (`bounces`), and the events for
//! deliveries, failures with their bounce class, and panic-level errors.
//! It decides what is sent and when; outbound carries it and returns a
//! result per recipient.
//!
//! May call: the queue's data structure, outbound (pools and slots),
//! throttle (slot permits and rate tokens), spool, bounce, events,
//! config, message, runtime, smtp (the reply type and the status parser).
//! Must never: speak SMTP or open a socket itself, act on a result before
//! the spool has it, or drop a result it cannot record (it retries).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use super::{Entry, Queue, QueuedRcpt};
use crate::config::Config;
use crate::events::Events;
use crate::message::{Content, Envelope, MessageId};
use crate::outbound::Pools;
use crate::runtime::hash::Map;
use crate::runtime::logger::RepeatLimiter;
use crate::runtime::shutdown::{Notify, Signal};
use crate::runtime::{sched, Current};
use crate::spool::{Spool, SpoolError};
use crate::throttle::Throttles;
use resident::{Budget, Resident};

mod bounces;
mod resident;
mod settle;
mod worker;

/// Longest sleep of the scheduler loop when nothing is due.
const SCHEDULER_IDLE: Duration = Duration::from_millis(500);

/// A shard's queue manager.
pub struct ShardQueue {
    shard: usize,
    config: Rc<Current<Config>>,
    events: Rc<Events>,
    spool: Rc<Spool>,
    pools: Rc<Pools>,
    throttles: Rc<Throttles>,
    queue: RefCell<Queue>,
    resident: RefCell<Resident>,
    /// Physical memory and usable CPUs, for the resident budget's default.
    machine: (u64, usize),
    active: RefCell<Map<Rc<str>, u32>>,
    /// Delivery tasks waiting for work in a domain wait on these.
    idle: RefCell<Map<Rc<str>, Signal>>,
    kick: Rc<Notify>,
    stop: Signal,
    /// Recovered messages whose every recipient is final but whose DONE
    /// record was lost (a crash mid-settlement): written at start.
    unfinished: RefCell<Vec<MessageId>>,
    /// One "settled as" line per domain and kind per interval.
    repeats: RefCell<RepeatLimiter<(Rc<str>, &'static str)>>,
}

/// Interval of the repetitive per-domain operational lines.
const REPEAT_LOG_INTERVAL: Duration = Duration::from_secs(10);

impl ShardQueue {
    /// Builds the driver with the messages recovered from the spool; it
    /// sends through `pools`, within the leases of `throttles`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        shard: usize,
        config: Rc<Current<Config>>,
        events: Rc<Events>,
        spool: Rc<Spool>,
        pools: Rc<Pools>,
        throttles: Rc<Throttles>,
        recovered: Vec<crate::spool::QueuedMessage>,
    ) -> Rc<Self> {
        let d = Rc::new(ShardQueue {
            shard,
            config,
            events,
            spool,
            pools,
            throttles,
            queue: RefCell::new(Queue::new()),
            resident: RefCell::default(),
            machine: (
                crate::runtime::physical_memory(),
                crate::runtime::allowed_cpus().len(),
            ),
            active: RefCell::default(),
            idle: RefCell::default(),
            kick: Rc::default(),
            stop: Signal::default(),
            unfinished: RefCell::default(),
            repeats: RefCell::new(RepeatLimiter::new(REPEAT_LOG_INTERVAL)),
        });
        let now = sched::wall_ms();
        // Recovery's recipients are the queue's: a million-message queue is
        // built without a second round of small allocations.
        for m in recovered {
            if m.pending.is_empty() {
                // The DSN for any failure was durable before its OUTCOME
                // (settle.rs): only the DONE is missing.
                d.unfinished.borrow_mut().push(m.id);
                continue;
            }
            d.queue.borrow_mut().insert(
                Entry::new(
                    m.id,
                    m.received_at_ms,
                    m.attempts,
                    m.next_attempt_ms,
                    m.pending,
                ),
                now,
            );
        }
        d
    }

    /// Messages in this shard's queue.
    pub fn queued(&self) -> usize {
        self.queue.borrow().len()
    }

    /// Queues a message that was just made durable.
    pub fn accept(&self, id: MessageId, env: Envelope, content: Content) {
        let pending: super::PendingRcpts = env
            .recipients
            .iter()
            .enumerate()
            .map(|(i, r)| QueuedRcpt {
                index: i as u32,
                address: r.address.as_str().into(),
            })
            .collect();
        let entry = Entry::new(id, env.received_at_ms, 0, 0, pending);
        let budget = self.resident_budget();
        self.resident.borrow_mut().keep(id, env, content, budget);
        let ready = self.queue.borrow_mut().insert(entry, sched::wall_ms());
        self.work_arrived(&ready);
    }

    /// The resident-content budget the current config gives this shard.
    fn resident_budget(&self) -> Budget {
        let config = self.config.get();
        let (memory, cpus) = self.machine;
        let octets = config.resident_size_per_shard(memory, cpus);
        Budget {
            messages: usize::try_from(config.max_resident_messages).unwrap_or(usize::MAX),
            octets: usize::try_from(octets).unwrap_or(usize::MAX),
        }
    }

    /// Envelope and content of a queued message: the resident copy, else
    /// read from the spool.
    async fn fetch(&self, id: MessageId) -> Result<(Rc<Envelope>, Content), SpoolError> {
        let kept = self.resident.borrow().get(&id);
        if let Some(x) = kept {
            return Ok(x);
        }
        let (env, body) = self.spool.read_live(id).await?;
        Ok((Rc::new(env), Content::from(body)))
    }

    /// Forgets a message's in-memory content (done, or deferred).
    fn release(&self, id: &MessageId) {
        self.resident.borrow_mut().forget(id);
    }

    /// Wakes the delivery tasks waiting for work in these domains, and the
    /// scheduler.
    fn work_arrived(&self, domains: &[Rc<str>]) {
        let mut idle = self.idle.borrow_mut();
        for d in domains {
            if let Some(sig) = idle.remove(d) {
                sig.fire();
            }
        }
        drop(idle);
        if !domains.is_empty() {
            self.wake_scheduler();
        }
    }

    fn wake_scheduler(&self) {
        self.kick.notify();
    }

    /// Delivery tasks running plus outbound connections open (lent out,
    /// idle or closing): shutdown waits for this to reach zero.
    pub fn busy(&self) -> u32 {
        self.active.borrow().values().sum::<u32>() + self.pools.open()
    }

    /// Stops starting new deliveries and closes idle connections (shutdown).
    pub fn stop(&self) {
        self.stop.fire();
        self.pools.shutdown();
        for (_, idle) in self.idle.borrow_mut().drain() {
            idle.fire();
        }
        self.wake_scheduler();
    }

    /// The scheduler: wakes due messages and starts delivery tasks per domain.
    pub async fn run(self: Rc<Self>) {
        let unfinished = std::mem::take(&mut *self.unfinished.borrow_mut());
        for id in unfinished {
            self.until_durable(id, "recording that it is done", || {
                self.spool.append_done(id)
            })
            .await;
        }
        while !self.stop.is_fired() {
            let now = sched::wall_ms();
            let woke = self.queue.borrow_mut().wake(now);
            self.work_arrived(&woke);
            let domains = self.queue.borrow().ready_domains();
            for domain in domains {
                self.start_workers(domain);
            }
            let next = self.queue.borrow().next_wakeup();
            let sleep = next
                .map_or(SCHEDULER_IDLE, |t| {
                    Duration::from_millis(t.saturating_sub(sched::wall_ms()))
                })
                .min(SCHEDULER_IDLE);
            futures_lite::future::or(self.kick.notified(), sched::sleep(sleep)).await;
        }
    }

    fn start_workers(self: &Rc<Self>, domain: Rc<str>) {
        let config = self.config.get();
        let settings = config.delivery.get(&domain).clone();
        if settings.suspend_delivery {
            return;
        }
        let ready = self.queue.borrow().ready_len(&domain) as u32;
        let active = self.active.borrow().get(&domain).copied().unwrap_or(0);
        let limit = settings.max_outbound_connections;
        let want = limit.min(ready).saturating_sub(active);
        // The domain's slots are leased by its owner shard: what this
        // shard holds starts now, the rest when the owner grants it. Told
        // even when nothing more is wanted: a lower limit (a reload) ends
        // running tasks over it.
        let limits = (limit, settings.server_max_outbound_connections);
        let permits = self.throttles.start(&domain, want, limits, &self.kick);
        for permit in permits {
            *self.active.borrow_mut().entry(domain.clone()).or_insert(0) += 1;
            let (me, d, s) = (self.clone(), domain.clone(), settings.clone());
            sched::spawn(async move {
                me.worker(&d, &s, permit).await;
                let mut active = me.active.borrow_mut();
                if let Some(n) = active.get_mut(&d) {
                    *n -= 1;
                    if *n == 0 {
                        active.remove(&d);
                    }
                }
                drop(active);
                me.wake_scheduler();
            })
            .detach();
        }
    }
}
