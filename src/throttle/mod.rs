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

pub mod backoff;
pub mod ledger;
#[cfg(test)]
mod tests;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use crate::config::{BackoffRule, BindingSettings, Delivery, GroupSettings, Rate, Throttle};
use crate::events::{Event, Events};
use crate::runtime::hash::Map;
use crate::runtime::mesh::{self, AskError, Inbox, Mesh, Reply};
use crate::runtime::sched;
use crate::runtime::shutdown::{Notify, Signal};
pub use backoff::{BackoffBook, Change, ChangeKind, Effect};
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
    /// A receiver's reply on `key` matched a back-off rule (to the key's owner).
    Backoff {
        /// The binding × domain slot key.
        key: Arc<str>,
        /// The rule, from the asker's config.
        rule: Box<BackoffRule>,
        /// The reply, one line.
        reply: String,
        /// The key's configured connection limit.
        limit: u32,
    },
    /// A back-off changed (from the key's owner to every shard).
    Effect(Change),
}

/// The owner's answer.
#[derive(Debug, PartialEq, Eq)]
pub enum ThrottleAnswer {
    /// To `Slots` and `Tokens`.
    Granted(Grant),
    /// To `Sync`: the most the shard may hold, per domain.
    Targets(Vec<(Arc<str>, u32)>),
    /// To `Backoff` and `Effect`.
    Noted,
}

/// The throttle counters, as one shard sees them.
pub type ThrottleMesh = Mesh<ThrottleAsk, ThrottleAnswer>;
/// A shard's inbox for the counters it owns.
pub type ThrottleInbox = Inbox<ThrottleAsk, ThrottleAnswer>;

/// Keeps the books of the counters this shard owns (and their back-offs)
/// and answers for them until every shard's mesh is gone; `throttles` is
/// this shard's side, which takes the back-off changes.
pub async fn serve(inbox: ThrottleInbox, throttles: Rc<Throttles>) {
    let mut books: Ledger<Reply<ThrottleAnswer>> = Ledger::new(throttles.mesh.shards());
    let mut backoffs = BackoffBook::default();
    loop {
        let due = match (books.next_due(sched::now()), backoffs.next_due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
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
                ThrottleAsk::Backoff {
                    key,
                    rule,
                    reply: text,
                    limit,
                } => {
                    reply.send(ThrottleAnswer::Noted);
                    if let Some(change) = backoffs.matched(&key, &rule, &text, limit, now) {
                        throttles.announce(change, &text);
                    }
                }
                ThrottleAsk::Effect(change) => {
                    reply.send(ThrottleAnswer::Noted);
                    throttles.take_effect(change);
                }
            }
        }
        if due.is_some_and(|at| at <= now) {
            for change in backoffs.tick(now) {
                throttles.announce(change, "");
            }
            let (g, lapsed) = books.tick(now);
            grants.extend(g);
            for l in lapsed {
                let whose = if l.domain.is_empty() {
                    "the server".to_string()
                } else {
                    l.domain.to_string()
                };
                crate::events::paniclog(
                    crate::events::Level::Warning,
                    crate::events::Subsystem::Net,
                    &format!("throttle: shard {} was silent for {}s: its {} connection slot(s) of {whose} are taken back",
                    l.shard,
                    LEASE_TTL.as_secs(),
                    l.slots,
                ),
                );
            }
        }
        for (reply, g) in grants {
            reply.send(ThrottleAnswer::Granted(g));
        }
    }
}

/// Most one shard reports a matching reply per key (the owner only needs
/// to hear it once per hold).
const BACKOFF_REPORT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The binding and domain of a slot key `domain@binding`.
pub fn split_key(key: &str) -> (&str, &str) {
    match key.rsplit_once('@') {
        Some((domain, binding)) => (binding, domain),
        None => ("", key),
    }
}

/// What an effect allows, in words.
fn allows(effect: Option<&Effect>) -> String {
    let Some(e) = effect else {
        return "the configured limits".into();
    };
    let mut parts = Vec::new();
    if let Some(c) = e.connections {
        parts.push(format!("{c} connection(s)"));
    }
    if let Some(r) = e.rate {
        parts.push(format!(
            "{}/{} messages per second(s)",
            r.count,
            r.per.as_secs()
        ));
    }
    if e.fail.is_some() {
        parts.push("queued mail fails".into());
    }
    parts.join(", ")
}

/// One domain's slots on this shard.
#[derive(Debug)]
struct Held {
    /// Lent by the owner.
    granted: u32,
    /// Delivery tasks running on them.
    used: u32,
    /// The most tasks that ran at once lately (since the last sync, or
    /// fading from earlier ones).
    peak: u32,
    /// When a task last ran on these slots (at a start or a sync).
    busy: Instant,
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

/// The fewest slots a shard asks for when it needs more than it holds,
/// and the cushion it keeps above its recent peak while alone.
const SLOTS_AHEAD: u32 = 4;
/// How long a shard keeps its cushion of a key no task runs on.
const CUSHION_LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// The slot key of the whole server's connections: no recipient domain
/// is empty.
const SERVER: &str = "";

/// The connection slots a delivery task holds, each under its limit.
pub type SlotKeys = Rc<[(Arc<str>, u32)]>;

/// The slots a delivery task to `domain` from `binding` (a member of
/// `group`) needs, under `d`'s limits: the binding × domain's
/// (`max_outbound_connections`), the domain's over bindings or over the
/// group (`scope_max_outbound_connections`, when set), the binding's and
/// the group's (`server_max_outbound_connections` in their tables, when
/// set) and the server's. Names cannot collide: domains hold no `@`,
/// binding names no `@` or `:`.
pub fn slot_keys(
    binding: &BindingSettings,
    group: Option<&GroupSettings>,
    domain: &str,
    d: &Delivery,
) -> SlotKeys {
    let mut keys: Vec<(Arc<str>, u32)> = vec![(
        format!("{domain}@{}", binding.name).into(),
        d.max_outbound_connections,
    )];
    if let Some(cap) = &d.scope_max_outbound_connections {
        let key = match &cap.group {
            None => domain.into(),
            Some(g) => format!("{domain}@group:{g}").into(),
        };
        keys.push((key, cap.limit));
    }
    if let Some(n) = binding.server_max_outbound_connections {
        keys.push((format!("@{}", binding.name).into(), n));
    }
    if let Some((g, n)) = group.and_then(|g| Some((g, g.server_max_outbound_connections?))) {
        keys.push((format!("@group:{}", g.name).into(), n));
    }
    keys.push((SERVER.into(), d.server_max_outbound_connections));
    keys.into()
}

impl Held {
    /// Tasks that may still start: under the limit and the owner's target.
    fn room(&self) -> u32 {
        self.target.min(self.limit).saturating_sub(self.used)
    }

    /// The slots to keep at a sync at `now`: those in use and, while no
    /// other shard waits for this key (the owner's target is the limit)
    /// and a task ran on it within `CUSHION_LINGER`, a cushion of
    /// `SLOTS_AHEAD` above the recent peak, so that tasks ending and
    /// starting again as mail trickles in, or a small burst, start
    /// without asking the owner.
    fn keep(&self, now: Instant) -> u32 {
        if self.target < self.limit || now.saturating_duration_since(self.busy) > CUSHION_LINGER {
            return self.used;
        }
        self.used.max((self.peak + SLOTS_AHEAD).min(self.limit))
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
                peak: 0,
                busy: sched::now(),
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
    events: Rc<Events>,
    /// Back-offs in force, by slot key (every shard has them all).
    effects: RefCell<Map<Arc<str>, Change>>,
    /// When this shard last reported a matching reply, by slot key.
    reported: RefCell<Map<Arc<str>, Instant>>,
    /// Fired when a task could not start for want of slots, or a target
    /// went down: tasks that hold slots while they wait idle give them up.
    contended: RefCell<Signal>,
    slots: RefCell<Map<Arc<str>, Held>>,
    stock: RefCell<Map<RateKey, Stock>>,
    syncing: Cell<bool>,
    /// Requests sent to another shard, by kind (`CROSS_KINDS`).
    cross: [Cell<u64>; 4],
}

/// The kinds of requests counted in [`Throttles::cross_shard_by_kind`].
pub const CROSS_KINDS: [&str; 4] = ["slots", "syncs", "tokens", "backoffs"];

impl Throttles {
    /// This shard's side, asking the owners through `mesh`; back-off
    /// changes of the keys it owns go to `events`.
    pub fn new(mesh: ThrottleMesh, events: Rc<Events>) -> Rc<Throttles> {
        Rc::new(Throttles {
            mesh,
            events,
            effects: RefCell::default(),
            reported: RefCell::default(),
            contended: RefCell::default(),
            slots: RefCell::default(),
            stock: RefCell::default(),
            syncing: Cell::new(false),
            cross: Default::default(),
        })
    }

    /// The throttles of a server of one shard: starts its owner's service
    /// on this thread (tests and tools that build one shard by hand).
    pub fn standalone() -> Rc<Throttles> {
        let (address, inbox) = mesh::inbox(1024);
        let t = Throttles::new(Mesh::new(0, vec![address]), Rc::new(Events::new(0)));
        sched::spawn(serve(inbox, t.clone())).detach();
        t
    }

    /// Fires when slots are wanted that idle tasks hold (see `contend`).
    pub fn contended(&self) -> Signal {
        self.contended.borrow().clone()
    }

    /// Tells the tasks waiting idle on their slots to give them up.
    fn contend(&self) {
        std::mem::take(&mut *self.contended.borrow_mut()).fire();
    }

    /// What the back-off on a slot key allows now, if one is in force.
    pub fn effect(&self, key: &str) -> Option<Effect> {
        let effects = self.effects.borrow();
        if effects.is_empty() {
            return None;
        }
        effects.get(key).and_then(|c| c.effect.clone())
    }

    /// The back-offs in force: (binding, domain, rule, last change, what
    /// it allows), by key (the console and the HTTP API list these).
    pub fn backoffs(&self) -> Vec<(String, String, String, String, String)> {
        let mut out: Vec<_> = self
            .effects
            .borrow()
            .values()
            .map(|c| {
                let (binding, domain) = split_key(&c.key);
                (
                    binding.to_string(),
                    domain.to_string(),
                    c.rule.to_string(),
                    change_text(&c.what),
                    allows(c.effect.as_ref()),
                )
            })
            .collect();
        out.sort();
        out
    }

    /// A receiver's reply on `key` matched `rule`: tells the key's owner
    /// (at most once per `BACKOFF_REPORT_INTERVAL` per key from this shard).
    pub fn report_backoff(
        self: &Rc<Self>,
        key: Arc<str>,
        rule: &BackoffRule,
        reply: String,
        limit: u32,
    ) {
        let now = sched::now();
        {
            let mut reported = self.reported.borrow_mut();
            if reported
                .get(&key)
                .is_some_and(|t| now.saturating_duration_since(*t) < BACKOFF_REPORT_INTERVAL)
            {
                return;
            }
            reported.retain(|_, t| now.saturating_duration_since(*t) < BACKOFF_REPORT_INTERVAL);
            reported.insert(key.clone(), now);
        }
        let me = self.clone();
        let ask = ThrottleAsk::Backoff {
            key: key.clone(),
            rule: Box::new(rule.clone()),
            reply,
            limit,
        };
        sched::spawn(async move {
            let _ = me.ask(me.mesh.owner(&*key), ask).await;
        })
        .detach();
    }

    /// Owner side: a back-off of a key this shard owns changed: the event,
    /// then every shard takes it.
    fn announce(self: &Rc<Self>, change: Change, reply: &str) {
        let (binding, domain) = split_key(&change.key);
        let (what, now) = (change_text(&change.what), allows(change.effect.as_ref()));
        self.events.emit(Event::Backoff {
            binding,
            domain,
            rule: &change.rule,
            change: &what,
            allows: &now,
        });
        let after = if reply.is_empty() {
            String::new()
        } else {
            format!(" after {reply:?}")
        };
        log::warn!(
            "backoff: {domain} from binding {binding}: rule {} {what}{after}: allows {now}",
            change.rule
        );
        self.take_effect(change.clone());
        let me = self.clone();
        sched::spawn(async move {
            for n in (0..me.mesh.shards()).filter(|n| *n != me.mesh.me()) {
                let _ = me.ask(n, ThrottleAsk::Effect(change.clone())).await;
            }
        })
        .detach();
    }

    fn take_effect(&self, change: Change) {
        let mut effects = self.effects.borrow_mut();
        if change.effect.is_none() {
            effects.remove(&change.key);
        } else {
            effects.insert(change.key.clone(), change);
        }
    }

    /// Requests this shard has sent to other shards.
    pub fn cross_shard_requests(&self) -> u64 {
        self.cross.iter().map(Cell::get).sum()
    }

    /// [`Throttles::cross_shard_requests`] by kind, in `CROSS_KINDS` order.
    pub fn cross_shard_by_kind(&self) -> [u64; 4] {
        std::array::from_fn(|i| self.cross[i].get())
    }

    /// Asks shard `owner`, counting the request when it crosses shards.
    async fn ask(&self, owner: usize, ask: ThrottleAsk) -> Result<ThrottleAnswer, AskError> {
        if owner != self.mesh.me() {
            let kind = match ask {
                ThrottleAsk::Slots { .. } => 0,
                ThrottleAsk::Sync { .. } => 1,
                ThrottleAsk::Tokens { .. } => 2,
                ThrottleAsk::Backoff { .. } | ThrottleAsk::Effect(_) => 3,
            };
            self.cross[kind].set(self.cross[kind].get() + 1);
        }
        self.mesh.peer(owner).ask(ask).await
    }

    /// Up to `want` more delivery tasks may start on the slots of `keys`:
    /// returns a permit for each that may start now, within every key's
    /// limit. When fewer slots of a key are free here than wanted, asks its
    /// owner for the rest and notifies `granted` once an answer is in (call
    /// again then). Slots of one key held without the others go back at
    /// the next sync.
    pub fn start(self: &Rc<Self>, keys: &SlotKeys, want: u32, granted: &Rc<Notify>) -> Vec<Permit> {
        let mut slots = self.slots.borrow_mut();
        let mut now = want;
        let mut shorts = vec![0u32; keys.len()];
        let mut shared_full = false;
        for (i, (key, limit)) in keys.iter().enumerate() {
            let h = held(&mut slots, key, *limit);
            let can = want.min(h.room());
            // The first key is this destination's own; the others (scope,
            // binding, group, server) are shared with other destinations.
            shared_full |= i > 0 && can < want;
            let free = h.granted.saturating_sub(h.used);
            now = now.min(can).min(free);
            if can > free && !h.asking {
                h.asking = true;
                // Asks ahead (half again what it holds, at least a few,
                // within its target): as a destination's traffic grows,
                // each ask covers several more tasks. What no task uses
                // goes back at the next sync.
                let short = can - free;
                let ahead = (h.granted / 2).max(SLOTS_AHEAD);
                let most = h.target.min(h.limit).saturating_sub(h.granted);
                shorts[i] = short.max(ahead.min(most));
            }
        }
        for (key, limit) in keys.iter() {
            let h = held(&mut slots, key, *limit);
            h.used += now;
            h.peak = h.peak.max(h.used);
            if now > 0 {
                h.busy = sched::now();
            }
        }
        drop(slots);
        if shared_full {
            // Idle tasks of other destinations may hold what this one needs.
            self.contend();
        }
        for (i, (key, limit)) in keys.iter().enumerate() {
            if shorts[i] > 0 {
                self.ask_slots(key, shorts[i], *limit, granted.clone());
            }
        }
        (0..now)
            .map(|_| Permit {
                throttles: self.clone(),
                keys: keys.clone(),
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
    /// no task uses (all but the cushion `Held::keep` allows), renews the
    /// rest, and takes the owners' targets.
    async fn sync_loop(self: Rc<Self>) {
        // Set when a target came down while this shard kept a cushion:
        // the next sync goes at once (never twice in a row) and returns
        // it, so a waiting shard is not kept an extra interval.
        let mut hurry = false;
        loop {
            let hurried = std::mem::take(&mut hurry);
            if !hurried {
                sched::sleep(SYNC_INTERVAL).await;
            }
            let mut by_owner: Map<usize, Vec<SyncItem>> = Map::default();
            let now = sched::now();
            {
                let mut slots = self.slots.borrow_mut();
                for (domain, h) in slots.iter_mut() {
                    if h.used > 0 {
                        h.busy = now;
                    }
                    let returned = h.granted.saturating_sub(h.keep(now));
                    h.granted -= returned;
                    // The peak fades by an eighth per interval, so the
                    // cushion follows the destination's traffic down.
                    h.peak = h.used.max(h.peak - h.peak.div_ceil(8));
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
                    let mut lowered = false;
                    for (domain, target) in targets {
                        if let Some(h) = slots.get_mut(&domain) {
                            let cushioned = h.target >= h.limit && h.granted > h.used;
                            h.target = target;
                            lowered |= h.over();
                            hurry |= !hurried && cushioned && target < h.limit;
                        }
                    }
                    drop(slots);
                    if lowered {
                        self.contend();
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

/// A change in words: `started`, `restarted`, `step N/M`, `ended`.
fn change_text(c: &ChangeKind) -> String {
    match c {
        ChangeKind::Started => "started".into(),
        ChangeKind::Restarted => "restarted".into(),
        ChangeKind::Step { n, of } => format!("step {n}/{of}"),
        ChangeKind::Ended => "ended".into(),
    }
}

/// One delivery task's connection slots; given back when dropped.
pub struct Permit {
    throttles: Rc<Throttles>,
    keys: SlotKeys,
    leaving: bool,
}

impl Permit {
    /// The binding × domain key its slots are leased under.
    pub fn key(&self) -> &Arc<str> {
        &self.keys[0].0
    }

    /// True when this shard runs more tasks than the owner's target or
    /// the limit allow, of any of its keys: this task is then
    /// one of those that end (after its current message); each call past
    /// the first also says true.
    pub fn leave(&mut self) -> bool {
        if self.leaving {
            return true;
        }
        let mut slots = self.throttles.slots.borrow_mut();
        let over = self
            .keys
            .iter()
            .any(|(k, _)| slots.get(&**k).is_some_and(Held::over));
        if over {
            for (k, _) in self.keys.iter() {
                if let Some(h) = slots.get_mut(&**k) {
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
        for (k, _) in self.keys.iter() {
            if let Some(h) = slots.get_mut(&**k) {
                h.used = h.used.saturating_sub(1);
                if self.leaving {
                    h.leaving = h.leaving.saturating_sub(1);
                }
            }
        }
    }
}
