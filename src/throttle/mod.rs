//! Throttles: the delivery limits that hold over all shards — a domain's
//! concurrent connections (`max_outbound_connections`) and the rates of
//! delivery attempts and new connections (`outbound_throttle_messages`,
//! `outbound_throttle_connections`). One of the two places where shards
//! talk to each other.
//!
//! The owner shard of a counter (hash of the domain or the rate's scope)
//! keeps its books (`ledger`) in its `serve` loop and leases slots and
//! tokens out in batches; each shard's `Throttles` holds what it was
//! lent, starts delivery tasks within it, returns what it does not use
//! and renews the rest every `SYNC_INTERVAL`. The ledger's header has the
//! scheme and its worst-case overshoot.
//!
//! Owns the request types, the owner's service loop and the shard's side.
//! May call: config (limits and rates), runtime (mesh, tasks, time, hash
//! maps, signals). Must never: block a shard, ask its owner once per
//! message when a lease can cover many, or let a slot it holds outlive
//! the delivery task (and connection) it was lent for.

pub mod ledger;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use crate::config::{Rate, Throttle};
use crate::runtime::hash::Map;
use crate::runtime::mesh::{self, AskError, Inbox, Mesh, Reply};
use crate::runtime::sched;
use crate::runtime::shutdown::{Notify, Signal};
pub use ledger::{Grant, Ledger, RateKey, RateKind, SyncItem, LEASE_TTL, SYNC_INTERVAL};

/// What a shard asks a counter's owner shard.
#[derive(Debug)]
pub enum ThrottleAsk {
    /// `want` more connection slots for `domain`.
    Slots {
        /// The destination domain.
        domain: Arc<str>,
        /// The asking shard.
        shard: usize,
        /// How many more it wants.
        want: u32,
        /// `max_outbound_connections` in the asker's config.
        limit: u32,
    },
    /// The periodic return and renewal of slots.
    Sync {
        /// The asking shard.
        shard: usize,
        /// Per domain it holds slots of.
        items: Vec<SyncItem>,
    },
    /// `want` tokens of a rate.
    Tokens {
        /// The counter.
        key: RateKey,
        /// The asking shard.
        shard: usize,
        /// How many it wants.
        want: u32,
        /// The rate in the asker's config.
        rate: Rate,
    },
}

/// The owner's answer.
#[derive(Debug, PartialEq, Eq)]
pub enum ThrottleAnswer {
    /// To `Slots` and `Tokens`.
    Granted(Grant),
    /// To `Sync`: the most the shard may hold, per domain.
    Targets(Vec<(Arc<str>, u32)>),
}

/// The throttle counters, as one shard sees them.
pub type ThrottleMesh = Mesh<ThrottleAsk, ThrottleAnswer>;
/// A shard's inbox for the counters it owns.
pub type ThrottleInbox = Inbox<ThrottleAsk, ThrottleAnswer>;

/// Keeps the books of the counters this shard owns and answers for them
/// until every shard's mesh is gone.
pub async fn serve(inbox: ThrottleInbox, shards: usize) {
    let mut books: Ledger<Reply<ThrottleAnswer>> = Ledger::new(shards);
    loop {
        let due = books.next_due(sched::now());
        let request = match due {
            None => inbox.recv().await.map(Some),
            Some(at) => {
                let wait = at.saturating_duration_since(sched::now());
                futures_lite::future::or(async { inbox.recv().await.map(Some) }, async {
                    sched::sleep(wait).await;
                    Some(None)
                })
                .await
            }
        };
        let Some(request) = request else {
            return;
        };
        let now = sched::now();
        let mut grants = Vec::new();
        if let Some(request) = request {
            let (ask, reply) = request.split();
            match ask {
                ThrottleAsk::Slots {
                    domain,
                    shard,
                    want,
                    limit,
                } => grants = books.ask_slots(&domain, shard, want, limit, reply, now),
                ThrottleAsk::Sync { shard, items } => {
                    let (targets, g) = books.sync(shard, &items, now);
                    reply.send(ThrottleAnswer::Targets(targets));
                    grants = g;
                }
                ThrottleAsk::Tokens {
                    key,
                    shard,
                    want,
                    rate,
                } => grants = books.ask_tokens(&key, shard, want, rate, reply, now),
            }
        }
        if due.is_some_and(|at| at <= now) {
            let (g, lapsed) = books.tick(now);
            grants.extend(g);
            for l in lapsed {
                let whose = if l.domain.is_empty() {
                    "the server".to_string()
                } else {
                    l.domain.to_string()
                };
                log::error!(
                    "paniclog: throttle: shard {} was silent for {}s: its {} connection slot(s) of {whose} are taken back",
                    l.shard,
                    LEASE_TTL.as_secs(),
                    l.slots,
                );
            }
        }
        for (reply, g) in grants {
            reply.send(ThrottleAnswer::Granted(g));
        }
    }
}

/// One domain's slots on this shard.
#[derive(Debug)]
struct Held {
    /// Lent by the owner.
    granted: u32,
    /// Delivery tasks running on them.
    used: u32,
    /// Tasks told to end after their current message.
    leaving: u32,
    /// The most the owner wants this shard to hold.
    target: u32,
    /// A request for more is out.
    asking: bool,
    limit: u32,
}

/// Tokens of one rate on this shard.
#[derive(Default)]
struct Stock {
    count: u32,
    expires: Option<Instant>,
    /// Tasks waiting for the next grant.
    waiters: u32,
    asking: bool,
    arrived: Signal,
}

/// The slot key of the whole server's connections: no recipient domain
/// is empty.
const SERVER: &str = "";

impl Held {
    /// Tasks that may still start: under the limit and the owner's target.
    fn room(&self) -> u32 {
        self.target.min(self.limit).saturating_sub(self.used)
    }

    /// True when more tasks run than the limit and target allow, not
    /// counting those already leaving.
    fn over(&self) -> bool {
        self.used.saturating_sub(self.leaving) > self.target.min(self.limit)
    }
}

/// The entry for `key`, made if new, with its limit brought up to date.
fn held<'a>(slots: &'a mut Map<Arc<str>, Held>, key: &str, limit: u32) -> &'a mut Held {
    if !slots.contains_key(key) {
        slots.insert(
            Arc::from(key),
            Held {
                granted: 0,
                used: 0,
                leaving: 0,
                target: limit,
                asking: false,
                limit,
            },
        );
    }
    let h = slots.get_mut(key).expect("inserted above");
    h.limit = limit;
    h
}

/// A shard's side of the throttles.
pub struct Throttles {
    mesh: ThrottleMesh,
    slots: RefCell<Map<Arc<str>, Held>>,
    stock: RefCell<Map<RateKey, Stock>>,
    syncing: Cell<bool>,
    /// Requests sent to another shard.
    cross: Cell<u64>,
}

impl Throttles {
    /// This shard's side, asking the owners through `mesh`.
    pub fn new(mesh: ThrottleMesh) -> Rc<Throttles> {
        Rc::new(Throttles {
            mesh,
            slots: RefCell::default(),
            stock: RefCell::default(),
            syncing: Cell::new(false),
            cross: Cell::new(0),
        })
    }

    /// The throttles of a server of one shard: starts its owner's service
    /// on this thread (tests and tools that build one shard by hand).
    pub fn standalone() -> Rc<Throttles> {
        let (address, inbox) = mesh::inbox(1024);
        sched::spawn(serve(inbox, 1)).detach();
        Throttles::new(Mesh::new(0, vec![address]))
    }

    /// Requests this shard has sent to other shards.
    pub fn cross_shard_requests(&self) -> u64 {
        self.cross.get()
    }

    /// Asks shard `owner`, counting the request when it crosses shards.
    async fn ask(&self, owner: usize, ask: ThrottleAsk) -> Result<ThrottleAnswer, AskError> {
        if owner != self.mesh.me() {
            self.cross.set(self.cross.get() + 1);
        }
        self.mesh.peer(owner).ask(ask).await
    }

    /// Up to `want` more delivery tasks for `domain` may start: returns a
    /// permit for each that may start now, within both the domain's
    /// `limits.0` and the server's `limits.1` (`server_max_outbound_connections`).
    /// When fewer slots of either are free here than wanted, asks its
    /// owner for the rest and notifies `granted` once an answer is in
    /// (call again then). Slots of one kind held without the other go back at
    /// the next sync.
    pub fn start(
        self: &Rc<Self>,
        domain: &Rc<str>,
        want: u32,
        limits: (u32, u32),
        granted: &Rc<Notify>,
    ) -> Vec<Permit> {
        let keys: [(&str, u32); 2] = [(domain, limits.0), (SERVER, limits.1)];
        let mut slots = self.slots.borrow_mut();
        let mut now = want;
        let mut shorts = [0u32; 2];
        for (i, (key, limit)) in keys.iter().enumerate() {
            let h = held(&mut slots, key, *limit);
            let can = want.min(h.room());
            let free = h.granted.saturating_sub(h.used);
            now = now.min(can).min(free);
            if can > free && !h.asking {
                h.asking = true;
                shorts[i] = can - free;
            }
        }
        for (key, limit) in keys {
            held(&mut slots, key, limit).used += now;
        }
        drop(slots);
        for (i, (key, limit)) in keys.iter().enumerate() {
            if shorts[i] > 0 {
                self.ask_slots(key, shorts[i], *limit, granted.clone());
            }
        }
        (0..now)
            .map(|_| Permit {
                throttles: self.clone(),
                domain: domain.clone(),
                leaving: false,
            })
            .collect()
    }

    fn ask_slots(self: &Rc<Self>, key: &str, want: u32, limit: u32, granted: Rc<Notify>) {
        let me = self.clone();
        let domain: Arc<str> = Arc::from(key);
        sched::spawn(async move {
            let ask = ThrottleAsk::Slots {
                domain: domain.clone(),
                shard: me.mesh.me(),
                want,
                limit,
            };
            let answer = me.ask(me.mesh.owner(&*domain), ask).await;
            if let Some(h) = me.slots.borrow_mut().get_mut(&*domain) {
                h.asking = false;
                if let Ok(ThrottleAnswer::Granted(Grant::Slots(n))) = answer {
                    h.granted += n;
                }
            }
            me.keep_syncing();
            granted.notify();
        })
        .detach();
    }

    /// Starts the sync task if it is not running.
    fn keep_syncing(self: &Rc<Self>) {
        if !self.syncing.replace(true) {
            sched::spawn(self.clone().sync_loop()).detach();
        }
    }

    /// Every `SYNC_INTERVAL` while this shard holds slots: returns those
    /// no task uses, renews the rest, and takes the owners' targets.
    async fn sync_loop(self: Rc<Self>) {
        loop {
            sched::sleep(SYNC_INTERVAL).await;
            let mut by_owner: Map<usize, Vec<SyncItem>> = Map::default();
            {
                let mut slots = self.slots.borrow_mut();
                for (domain, h) in slots.iter_mut() {
                    let returned = h.granted.saturating_sub(h.used);
                    h.granted -= returned;
                    if returned > 0 || h.granted > 0 {
                        by_owner
                            .entry(self.mesh.owner(&**domain))
                            .or_default()
                            .push(SyncItem {
                                domain: domain.clone(),
                                returned,
                                holding: h.granted,
                                limit: h.limit,
                            });
                    }
                }
                slots.retain(|_, h| h.granted > 0 || h.used > 0 || h.asking);
                if slots.is_empty() && by_owner.is_empty() {
                    self.syncing.set(false);
                    return;
                }
            }
            for (owner, items) in by_owner {
                let ask = ThrottleAsk::Sync {
                    shard: self.mesh.me(),
                    items,
                };
                if let Ok(ThrottleAnswer::Targets(targets)) = self.ask(owner, ask).await {
                    let mut slots = self.slots.borrow_mut();
                    for (domain, target) in targets {
                        if let Some(h) = slots.get_mut(&domain) {
                            h.target = target;
                        }
                    }
                }
            }
        }
    }

    /// Waits for one token of `throttle`'s counter of `kind`.
    pub async fn token(self: &Rc<Self>, kind: RateKind, throttle: &Throttle) {
        let key = RateKey {
            kind,
            scope: throttle.scope.clone(),
        };
        loop {
            let arrived = {
                let mut stock = self.stock.borrow_mut();
                let s = stock.entry(key.clone()).or_default();
                if s.count > 0 && s.expires.is_some_and(|e| sched::now() < e) {
                    s.count -= 1;
                    return;
                }
                s.count = 0;
                s.waiters += 1;
                if !s.asking {
                    s.asking = true;
                    // A fast rate is asked for in batches: this shard's
                    // share of the bucket, so that a rate far above the
                    // traffic costs one ask per many messages.
                    let share = (throttle.rate.count / 200).div_ceil(self.mesh.shards() as u32);
                    let want = s.waiters.max(share);
                    drop(stock);
                    self.ask_tokens(key.clone(), want, throttle.rate);
                    self.stock
                        .borrow_mut()
                        .entry(key.clone())
                        .or_default()
                        .arrived
                        .clone()
                } else {
                    s.arrived.clone()
                }
            };
            arrived.wait().await;
        }
    }

    fn ask_tokens(self: &Rc<Self>, key: RateKey, want: u32, rate: Rate) {
        let me = self.clone();
        sched::spawn(async move {
            let ask = ThrottleAsk::Tokens {
                key: key.clone(),
                shard: me.mesh.me(),
                want,
                rate,
            };
            let answer = me.ask(me.mesh.owner(&key), ask).await;
            let mut stock = me.stock.borrow_mut();
            let Some(s) = stock.get_mut(&key) else {
                return;
            };
            s.asking = false;
            if let Ok(ThrottleAnswer::Granted(Grant::Tokens { count, expires })) = answer {
                s.count = count;
                s.expires = Some(expires);
            }
            // Every waiter looks again; those left without a token ask anew.
            s.waiters = 0;
            std::mem::take(&mut s.arrived).fire();
        })
        .detach();
    }
}

/// One delivery task's connection slot; given back when dropped.
pub struct Permit {
    throttles: Rc<Throttles>,
    domain: Rc<str>,
    leaving: bool,
}

impl Permit {
    /// True when this shard runs more tasks than the owner's target or
    /// the limit allow, of the domain or of the server: this task is then
    /// one of those that end (after its current message); each call past
    /// the first also says true.
    pub fn leave(&mut self) -> bool {
        if self.leaving {
            return true;
        }
        let mut slots = self.throttles.slots.borrow_mut();
        let over = [&*self.domain, SERVER]
            .iter()
            .any(|k| slots.get(*k).is_some_and(Held::over));
        if over {
            for k in [&*self.domain, SERVER] {
                if let Some(h) = slots.get_mut(k) {
                    h.leaving += 1;
                }
            }
            self.leaving = true;
        }
        self.leaving
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut slots = self.throttles.slots.borrow_mut();
        for k in [&*self.domain, SERVER] {
            if let Some(h) = slots.get_mut(k) {
                h.used = h.used.saturating_sub(1);
                if self.leaving {
                    h.leaving = h.leaving.saturating_sub(1);
                }
            }
        }
    }
}
