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
use std::sync::Arc;
use std::time::Duration;

use super::{Dest, Entry, Queue, QueuedRcpt};
use crate::binding::Bindings;
use crate::config::Config;
use crate::events::{Events, Level, Subsystem};
use crate::logs::Logs;
use crate::message::{BindingId, Content, Envelope, MessageId};
use crate::outbound::Pools;
use crate::runtime::hash::Map;
use crate::runtime::logger::RepeatLimiter;
use crate::runtime::shutdown::{Notify, Signal};
use crate::runtime::{sched, Current};
use crate::spool::{Spool, SpoolError};
use crate::throttle::{slot_keys, SlotKeys, Throttles};
use resident::{Budget, Resident};

mod bounces;
mod resident;
mod settle;
mod worker;

/// Destinations whose slot keys are kept between scheduler passes.
const SLOT_KEYS_CACHED: usize = 4096;

/// Most messages moved off a held binding in one scheduler pass (one
/// spool batch of REBIND records).
const REBIND_BATCH: usize = 10_000;

/// Longest sleep of the scheduler loop when nothing is due.
const SCHEDULER_IDLE: Duration = Duration::from_millis(500);

/// A shard's queue manager.
pub struct ShardQueue {
    shard: usize,
    config: Rc<Current<Config>>,
    events: Rc<Events>,
    logs: Rc<Logs>,
    spool: Rc<Spool>,
    pools: Rc<Pools>,
    throttles: Rc<Throttles>,
    bindings: Rc<Bindings>,
    queue: RefCell<Queue>,
    resident: RefCell<Resident>,
    /// Physical memory and usable CPUs, for the resident budget's default.
    machine: (u64, usize),
    active: RefCell<Map<Dest, u32>>,
    /// Delivery tasks waiting for work in a destination wait on these.
    idle: RefCell<Map<Dest, Signal>>,
    /// Each destination's slot keys under one config snapshot.
    keys: RefCell<Map<Dest, (Arc<Config>, SlotKeys)>>,
    kick: Rc<Notify>,
    stop: Signal,
    /// Recovered messages whose every recipient is final but whose DONE
    /// record was lost (a crash mid-settlement): written at start.
    unfinished: RefCell<Vec<MessageId>>,
    /// One "settled as" line per destination and kind per interval.
    repeats: RefCell<RepeatLimiter<(Dest, &'static str)>>,
}

/// Interval of the repetitive per-domain operational lines.
const REPEAT_LOG_INTERVAL: Duration = Duration::from_secs(10);

impl ShardQueue {
    /// The shard's logs (the intake waits on them too).
    pub fn logs(&self) -> &Rc<Logs> {
        &self.logs
    }

    /// Builds the driver with the messages recovered from the spool (their
    /// `binding` fields index `recovered_bindings`, from 1); it sends
    /// through `pools`, within the leases of `throttles`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        shard: usize,
        config: Rc<Current<Config>>,
        events: Rc<Events>,
        logs: Rc<Logs>,
        spool: Rc<Spool>,
        pools: Rc<Pools>,
        throttles: Rc<Throttles>,
        bindings: Rc<Bindings>,
        recovered: Vec<crate::spool::QueuedMessage>,
        recovered_bindings: &[Box<str>],
    ) -> Rc<Self> {
        let d = Rc::new(ShardQueue {
            shard,
            config,
            events,
            logs,
            spool,
            pools,
            throttles,
            bindings,
            queue: RefCell::new(Queue::new()),
            resident: RefCell::default(),
            machine: (
                crate::runtime::physical_memory(),
                crate::runtime::allowed_cpus().len(),
            ),
            active: RefCell::default(),
            idle: RefCell::default(),
            keys: RefCell::default(),
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
            let name = usize::from(m.binding)
                .checked_sub(1)
                .and_then(|i| recovered_bindings.get(i));
            let binding = d.bindings.id_of(name.map(|n| &**n));
            d.queue.borrow_mut().insert(
                Entry::new(
                    m.id,
                    m.received_at_ms,
                    m.attempts,
                    m.next_attempt_ms,
                    m.pending,
                )
                .from(binding),
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
        let binding = self.bindings.id_of(env.binding.as_deref());
        let entry = Entry::new(id, env.received_at_ms, 0, 0, pending).from(binding);
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

    /// Wakes the delivery tasks waiting for work in these destinations,
    /// and the scheduler.
    fn work_arrived(&self, domains: &[Dest]) {
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
            let dests = self.queue.borrow().ready_dests();
            for dest in dests {
                self.start_workers(dest);
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

    fn start_workers(self: &Rc<Self>, dest: Dest) {
        let config = self.config.get();
        // A binding no longer configured keeps its mail until it is back:
        // sending it from another address is not ours to decide.
        let Some(slot) = self.bindings.slot(dest.binding) else {
            self.held_back(&dest, "its binding is no longer configured");
            return;
        };
        let settings = config.delivery.for_binding(slot, &dest.domain).clone();
        if settings.suspend_delivery || self.bindings.holds(dest.binding, &dest.domain) {
            self.rebind_held(&dest);
            return;
        }
        let mut keys = self.slot_keys(&dest, slot, &settings, &config);
        let mut limit = settings.max_outbound_connections;
        // A back-off in force on this binding × domain lowers its limit
        // (to 0 while it pauses), or fails what is queued.
        if let Some(effect) = self.throttles.effect(&keys[0].0) {
            if let Some(reply) = effect.fail {
                self.fail_backed_off(&dest, &reply, &settings);
            }
            if let Some(c) = effect.connections {
                limit = limit.min(c);
                let mut lowered: Vec<_> = keys.iter().cloned().collect();
                lowered[0].1 = limit;
                keys = lowered.into();
            }
        }
        let ready = self.queue.borrow().ready_len(&dest) as u32;
        let active = self.active.borrow().get(&dest).copied().unwrap_or(0);
        let want = limit.min(ready).saturating_sub(active);
        // The slots are leased by their owner shards: what this shard
        // holds starts now, the rest when the owners grant it. Told even
        // when nothing more is wanted: a lower limit (a reload, a
        // back-off) ends running tasks over it.
        let permits = self.throttles.start(&keys, want, &self.kick);
        let source = crate::outbound::Binding {
            id: dest.binding,
            from: config.bindings.get(slot).bind_address,
        };
        for permit in permits {
            *self.active.borrow_mut().entry(dest.clone()).or_insert(0) += 1;
            let (me, d, s) = (self.clone(), dest.clone(), settings.clone());
            sched::spawn(async move {
                me.worker(&d, source, &s, permit).await;
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

    /// The slot keys of `dest` (binding in `slot`) under `config`, made
    /// once per destination and config snapshot.
    fn slot_keys(
        &self,
        dest: &Dest,
        slot: usize,
        settings: &crate::config::Delivery,
        config: &Arc<Config>,
    ) -> SlotKeys {
        if let Some((c, k)) = self.keys.borrow().get(dest) {
            if Arc::ptr_eq(c, config) {
                return k.clone();
            }
        }
        let b = config.bindings.get(slot);
        let group = config
            .bindings
            .group(&b.group)
            .map(|g| &config.bindings.groups[g]);
        let keys = slot_keys(b, group, &dest.domain, settings);
        let mut cache = self.keys.borrow_mut();
        // Stale entries (an old snapshot; destinations long drained) go at
        // a reload, or when the long tail of domains fills the cache.
        if cache.len() >= SLOT_KEYS_CACHED
            || cache
                .values()
                .next()
                .is_some_and(|(c, _)| !Arc::ptr_eq(c, config))
        {
            cache.clear();
        }
        cache.insert(dest.clone(), (config.clone(), keys.clone()));
        keys
    }

    /// Fails the ready mail of `dest` (a back-off rule says so), with the
    /// receiver's reply that set it off.
    fn fail_backed_off(
        self: &Rc<Self>,
        dest: &Dest,
        reply: &str,
        settings: &Arc<crate::config::Delivery>,
    ) {
        if self.queue.borrow().ready_len(dest) == 0 {
            return;
        }
        let r = Rc::new(crate::reply::Reply::internal(
            554,
            (5, 7, 0),
            &format!("failed by an adaptive back-off rule after: {reply}"),
        ));
        let (me, d, s) = (self.clone(), dest.clone(), settings.clone());
        sched::spawn(async move {
            me.settle_domain(&d, super::RcptResult::Failed(r), &s).await;
        })
        .detach();
    }

    /// Moves the ready mail of a held destination to the other members of
    /// its binding's group, when the group says so (`rebind_suspended`).
    /// The REBIND records are staged before anything else is appended for
    /// these messages; one lost to a crash only means the move is made
    /// again after the restart.
    fn rebind_held(self: &Rc<Self>, dest: &Dest) {
        let (moved, ready) = self.queue.borrow_mut().rebind(dest, REBIND_BATCH, || {
            self.bindings.rebind_target(dest.binding, &dest.domain)
        });
        if moved.is_empty() {
            return;
        }
        let names: Vec<(MessageId, Option<Arc<str>>)> = moved
            .iter()
            .map(|(id, b)| {
                (
                    *id,
                    (*b != BindingId::default()).then(|| self.bindings.name(*b)),
                )
            })
            .collect();
        let durable = self
            .spool
            .append_rebinds(names.iter().map(|(id, n)| (*id, n.as_deref())));
        let (from, group) = self.bindings.source(dest.binding);
        let admitted = self
            .repeats
            .borrow_mut()
            .admit(&(dest.clone(), "rebind"), sched::now());
        if let Some(lines) = admitted {
            log::warn!(
                "shard {}: {}: moved {} messages from held binding {from} to the other members of group {group}{}",
                self.shard,
                dest.domain,
                moved.len(),
                if lines > 0 {
                    format!(" ({lines} such moves not logged since the last line)")
                } else {
                    String::new()
                }
            );
        }
        let (events, n) = (self.events.clone(), moved.len());
        sched::spawn(async move {
            if let Err(e) = durable.await {
                events.panic(Subsystem::Spool, &format!(
                    "binding {from}: the move of {n} messages was not recorded ({e}); after a restart they move again"
                ));
            }
        })
        .detach();
        self.work_arrived(&ready);
    }

    /// Logs (at most once per interval per destination) why its mail waits.
    fn held_back(&self, dest: &Dest, why: &str) {
        let admitted = self
            .repeats
            .borrow_mut()
            .admit(&(dest.clone(), "held"), sched::now());
        if admitted.is_some() {
            self.events.report(
                Level::Warning,
                Subsystem::General,
                &format!(
                    "{}: mail from binding {} waits: {why}",
                    dest.domain,
                    self.bindings.name(dest.binding)
                ),
            );
        }
    }
}
