//! Bindings (Momentum's MultiVIP): which source address a message is sent
//! from. One of the two places where shards talk to each other.
//!
//! At intake a message is assigned, in Momentum's order: its envelope
//! sender's domain (`match_domain`), else the first `regex_binding2` rule
//! that matches; policy may then assign another (`set_binding`,
//! `set_binding_group`: the last assignment wins); else `default`. A group
//! member is chosen by the group's owner shard (hash of the group's name),
//! which hands out picks by weight in batches, so that weights hold over
//! the whole server and a shard asks once per batch (`PICK_BATCH`
//! messages, doubling up to `PICK_BATCH_MAX` while its traffic is fast).
//! Suspended members are skipped. A binding, or a binding × domain, can be
//! suspended at run time; shard 0 owns that set, keeps it in a file beside
//! the spool, and tells every shard.
//!
//! Owns the shard's binding names (`BindingId`s), the suspension set, the
//! owner's pick credits and the shard's batches of picks. May call: config
//! (the binding table and rules), message (the envelope, the binding id),
//! events (the paniclog), runtime (mesh, tasks, hash maps, signals). Must
//! never: block the shard (the file is written on a blocking thread), or
//! ask a group's owner once per message.

mod fields;
mod pick;
pub mod suspend;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

pub use fields::MessageFields;
use pick::Credits;
pub use suspend::{Suspended, Suspension};

use crate::config::rule::Fields;
use crate::config::{Assign, Config};
use crate::events::{Events, Subsystem};
use crate::message::{BindingId, Envelope};
use crate::runtime::hash::Map;
use crate::runtime::mesh::{self, Inbox, Mesh};
use crate::runtime::shutdown::Signal;
use crate::runtime::{sched, Current};

/// Picks a shard takes from a group's owner at once, at first and when
/// its traffic is slow.
pub const PICK_BATCH: u32 = 64;
/// The largest batch: a busy shard's batch doubles up to this.
const PICK_BATCH_MAX: u32 = 1024;
/// A batch used up faster than this makes the next one twice as large;
/// one that lasts longer than `PICK_SLOW` halves it.
const PICK_FAST: Duration = Duration::from_millis(250);
const PICK_SLOW: Duration = Duration::from_secs(2);
/// How long shard 0 waits for every shard to take a suspension.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// The shard that owns the suspension set and its file.
const SUSPENSION_OWNER: usize = 0;

/// What a shard asks another about bindings.
#[derive(Debug)]
pub enum BindingAsk {
    /// `want` members of `group`, by weight (to the group's owner).
    Picks {
        /// The group.
        group: Arc<str>,
        /// How many.
        want: u32,
    },
    /// Suspend (`on`) or resume one (to shard 0, which keeps the file).
    Suspend {
        /// What.
        what: Suspension,
        /// Suspend or resume.
        on: bool,
    },
    /// Take this change of the set (from shard 0 to every shard).
    Apply {
        /// What.
        what: Suspension,
        /// Suspend or resume.
        on: bool,
    },
}

/// The answer.
#[derive(Debug, PartialEq, Eq)]
pub enum BindingAnswer {
    /// To `Picks`: member names, in order.
    Picks(Vec<Arc<str>>),
    /// To `Suspend` and `Apply`: whether the set changed, or why not.
    Done(Result<bool, String>),
}

/// The bindings service, as one shard sees it.
pub type BindingMesh = Mesh<BindingAsk, BindingAnswer>;
/// A shard's inbox for the groups (and, on shard 0, the suspensions) it owns.
pub type BindingInbox = Inbox<BindingAsk, BindingAnswer>;

/// One group's picks on this shard.
#[derive(Default)]
struct Batch {
    picks: VecDeque<Arc<str>>,
    asking: bool,
    arrived: Signal,
    /// The size of the next batch (0: `PICK_BATCH`).
    size: u32,
    /// When the last batch was asked for.
    asked: Option<std::time::Instant>,
}

impl Batch {
    /// Whether to ask for the next batch now (a quarter of the last one
    /// is left), and how many: doubled when the last went fast, halved
    /// when it went slowly.
    fn next(&mut self) -> Option<u32> {
        let size = self.size.max(PICK_BATCH);
        if self.asking || self.picks.len() >= (size / 4) as usize {
            return None;
        }
        let now = sched::now();
        let lasted = self.asked.map(|t| now.saturating_duration_since(t));
        self.size = match lasted {
            Some(d) if d < PICK_FAST => (size * 2).min(PICK_BATCH_MAX),
            Some(d) if d > PICK_SLOW => (size / 2).max(PICK_BATCH),
            _ => size,
        };
        self.asked = Some(now);
        self.asking = true;
        Some(self.size)
    }
}

/// A shard's side of the bindings.
pub struct Bindings {
    mesh: BindingMesh,
    config: Rc<Current<Config>>,
    events: Rc<Events>,
    spoolbase: PathBuf,
    names: RefCell<Vec<Arc<str>>>,
    ids: RefCell<Map<Arc<str>, BindingId>>,
    suspended: RefCell<Suspended>,
    /// Owner side: pick credits per group this shard owns.
    credits: RefCell<Map<Arc<str>, Credits>>,
    /// Asker side: picks per group.
    batches: RefCell<Map<Arc<str>, Batch>>,
    /// Turns of the rules with several bindings on the left, by rule index.
    turns: RefCell<Map<usize, usize>>,
    /// Credits of the moves of suspended members' mail, per group.
    moves: RefCell<Map<Arc<str>, Credits>>,
    cross: Cell<u64>,
}

impl Bindings {
    /// The shard's side; `suspended` is the set read from the file at start.
    pub fn new(
        mesh: BindingMesh,
        config: Rc<Current<Config>>,
        events: Rc<Events>,
        spoolbase: PathBuf,
        suspended: Suspended,
    ) -> Rc<Bindings> {
        let b = Rc::new(Bindings {
            mesh,
            config,
            events,
            spoolbase,
            names: RefCell::default(),
            ids: RefCell::default(),
            suspended: RefCell::new(suspended),
            credits: RefCell::default(),
            batches: RefCell::default(),
            turns: RefCell::default(),
            moves: RefCell::default(),
            cross: Cell::new(0),
        });
        b.id(crate::config::binding::DEFAULT_BINDING);
        b
    }

    /// The bindings of a server of one shard, answering its own asks
    /// (tests and tools that build one shard by hand).
    pub fn standalone(config: Rc<Current<Config>>, events: Rc<Events>) -> Rc<Bindings> {
        let (address, inbox) = mesh::inbox(1024);
        let spoolbase = config.get().spoolbase.clone();
        let b = Bindings::new(
            Mesh::new(0, vec![address]),
            config,
            events,
            spoolbase,
            Suspended::default(),
        );
        sched::spawn(b.clone().serve(inbox)).detach();
        b
    }

    /// Requests this shard has sent to other shards.
    pub fn cross_shard_requests(&self) -> u64 {
        self.cross.get()
    }

    /// The shard's id for a binding name (made on first use).
    pub fn id(&self, name: &str) -> BindingId {
        if let Some(id) = self.ids.borrow().get(name) {
            return *id;
        }
        let mut names = self.names.borrow_mut();
        let id = BindingId(names.len() as u16);
        let name: Arc<str> = name.into();
        names.push(name.clone());
        self.ids.borrow_mut().insert(name, id);
        id
    }

    /// The id of a spooled assignment (`None`: `default`).
    pub fn id_of(&self, binding: Option<&str>) -> BindingId {
        binding.map_or(BindingId::default(), |n| self.id(n))
    }

    /// The name behind an id.
    pub fn name(&self, id: BindingId) -> Arc<str> {
        self.names.borrow()[usize::from(id.0)].clone()
    }

    /// The binding behind an id and its group (`default` for a binding
    /// no longer configured), for events.
    pub fn source(&self, id: BindingId) -> (Arc<str>, Arc<str>) {
        let name = self.name(id);
        let config = self.config.get();
        let group = config.bindings.slot(&name).map_or_else(
            || crate::config::binding::DEFAULT_GROUP.into(),
            |s| config.bindings.get(s).group.clone(),
        );
        (name, group)
    }

    /// [`Bindings::source`] of a spooled assignment (`None`: `default`).
    pub fn source_of(&self, binding: Option<&str>) -> (Arc<str>, Arc<str>) {
        self.source(self.id_of(binding))
    }

    /// The binding's slot in the current config (`None`: no longer configured).
    pub fn slot(&self, id: BindingId) -> Option<usize> {
        if id == BindingId::default() {
            return Some(0);
        }
        self.config.get().bindings.slot(&self.name(id))
    }

    /// True when mail from `id` to `domain` must wait: suspended at run
    /// time, or by config (its `suspend_delivery`, `default_binding =
    /// "suspended"`).
    pub fn holds(&self, id: BindingId, domain: &str) -> bool {
        let name = self.name(id);
        if self.suspended.borrow().holds(&name, domain) {
            return true;
        }
        let config = self.config.get();
        config
            .bindings
            .slot(&name)
            .is_some_and(|s| self.suspended_binding(&config, s))
    }

    /// Where the held mail of `id` to `domain` moves: another member of its
    /// group, by weight among those that may send to `domain` now, when
    /// the group says so (`rebind_suspended`); `None`: it waits. Chosen on
    /// this shard (moves are rare; new mail's weights are the owner's).
    pub fn rebind_target(&self, id: BindingId, domain: &str) -> Option<BindingId> {
        let config = self.config.get();
        let t = &config.bindings;
        let me = t.slot(&self.name(id))?;
        let g = t.group(&t.get(me).group)?;
        let group = &t.groups[g];
        if !group.rebind_suspended {
            return None;
        }
        let weights: Vec<u32> = group
            .members
            .iter()
            .map(|(m, w)| {
                let b = t.get(*m);
                let open = *m != me
                    && !b.suspended
                    && !self.suspended.borrow().holds(&b.name, domain)
                    && !config.delivery.for_binding(*m, domain).suspend_delivery;
                if open {
                    *w
                } else {
                    0
                }
            })
            .collect();
        let i = self
            .moves
            .borrow_mut()
            .entry(group.name.clone())
            .or_default()
            .next(&weights)?;
        Some(self.id(&t.get(group.members[i].0).name))
    }

    /// True when `match_domain` or `regex_binding2` can assign anything.
    pub fn has_rules(&self) -> bool {
        let config = self.config.get();
        !config.bindings.by_sender_domain.is_empty() || !config.bindings.rules.is_empty()
    }

    /// True when mail nothing assigns is refused (`default_binding = "none"`).
    pub fn default_refused(&self) -> bool {
        self.config.get().bindings.default_binding == crate::config::DefaultBinding::None
    }

    /// The suspensions in force.
    pub fn suspensions(&self) -> Vec<Suspension> {
        self.suspended.borrow().iter().cloned().collect()
    }

    /// Assigns a binding by `match_domain` and `regex_binding2`, or
    /// `None` (`default`, unless policy assigns one).
    pub async fn assign(self: &Rc<Self>, fields: &dyn Fields) -> Option<Arc<str>> {
        let config = self.config.get();
        let table = &config.bindings;
        let sender = fields.mail_from();
        if let Some((_, domain)) = sender.rsplit_once('@') {
            if let Some(slot) = table.by_sender_domain.get(&domain.to_ascii_lowercase()) {
                return Some(table.get(*slot).name.clone());
            }
        }
        let (i, assign) = table
            .rules
            .iter()
            .enumerate()
            .find(|(_, (rule, _))| rule.matches(fields))
            .map(|(i, (_, a))| (i, a.clone()))?;
        match assign {
            Assign::Binding(s) => Some(table.get(s).name.clone()),
            Assign::Each(slots) => {
                let mut turns = self.turns.borrow_mut();
                let t = turns.entry(i).or_insert(0);
                let s = slots[*t % slots.len()];
                *t = t.wrapping_add(1);
                Some(table.get(s).name.clone())
            }
            Assign::Group(g) => {
                let group = table.groups[g].name.clone();
                drop(config);
                self.pick(&group).await
            }
        }
    }

    /// Policy's assignment of a binding by name (Momentum's
    /// `ec_set_binding`): an unknown name is a paniclog line and leaves
    /// the assignment as it was.
    pub fn set_binding(&self, env: &mut Envelope, name: &str) -> Result<(), String> {
        let config = self.config.get();
        if config.bindings.slot(name).is_none() {
            let e =
                format!("set_binding: there is no binding {name:?}: the assignment is unchanged");
            self.events.panic(Subsystem::General, &e);
            return Err(e);
        }
        env.binding = (name != crate::config::binding::DEFAULT_BINDING).then(|| name.to_string());
        Ok(())
    }

    /// Policy's assignment of a group (`ec_set_binding_group`): a member
    /// by weight, as for a rule; an unknown group is a paniclog line and
    /// leaves the assignment as it was.
    pub async fn set_binding_group(
        self: &Rc<Self>,
        env: &mut Envelope,
        group: &str,
    ) -> Result<(), String> {
        if self.config.get().bindings.group(group).is_none() {
            let e = format!(
                "set_binding_group: there is no binding group {group:?}: the assignment is unchanged"
            );
            self.events.panic(Subsystem::General, &e);
            return Err(e);
        }
        if let Some(name) = self.pick(group).await {
            env.binding = Some(name.to_string());
        }
        Ok(())
    }

    /// Whether the binding `name` of `group` may take new mail: it exists,
    /// and it is not suspended (unless every member is).
    fn usable(&self, group: &str, name: &str) -> bool {
        let config = self.config.get();
        let t = &config.bindings;
        let Some(slot) = t.slot(name) else {
            return false;
        };
        if !self.suspended_binding(&config, slot) {
            return true;
        }
        let Some(g) = t.group(group) else {
            return false;
        };
        t.groups[g]
            .members
            .iter()
            .all(|(m, _)| self.suspended_binding(&config, *m))
    }

    fn suspended_binding(&self, config: &Config, slot: usize) -> bool {
        let b = config.bindings.get(slot);
        b.suspended || self.suspended.borrow().binding(&b.name)
    }

    /// A member of `group`: the next of this shard's batch, which the
    /// group's owner refills.
    async fn pick(self: &Rc<Self>, group: &str) -> Option<Arc<str>> {
        loop {
            let arrived = {
                let mut batches = self.batches.borrow_mut();
                let b = batches.entry(group.into()).or_default();
                let mut found = None;
                while let Some(n) = b.picks.pop_front() {
                    if self.usable(group, &n) {
                        found = Some(n);
                        break;
                    }
                }
                let wait = b.arrived.clone();
                if let Some(want) = b.next() {
                    drop(batches);
                    self.refill(group.into(), want);
                }
                if found.is_some() {
                    return found;
                }
                wait
            };
            arrived.wait().await;
            // A group gone at a reload assigns nothing (default).
            self.config.get().bindings.group(group)?;
        }
    }

    fn refill(self: &Rc<Self>, group: Arc<str>, want: u32) {
        let me = self.clone();
        sched::spawn(async move {
            let owner = me.mesh.owner(&*group);
            if owner != me.mesh.me() {
                me.cross.set(me.cross.get() + 1);
            }
            let ask = BindingAsk::Picks {
                group: group.clone(),
                want,
            };
            // A shard that cannot reach the owner (it is stopping) picks
            // for itself rather than hold mail.
            let picks = match me.mesh.peer(owner).ask(ask).await {
                Ok(BindingAnswer::Picks(p)) if !p.is_empty() => p,
                _ => me.choose(&group, want),
            };
            let mut batches = me.batches.borrow_mut();
            let b = batches.entry(group).or_default();
            b.picks.extend(picks);
            b.asking = false;
            std::mem::take(&mut b.arrived).fire();
        })
        .detach();
    }

    /// Owner side: `want` members of `group` by weight, skipping suspended
    /// members while any is not suspended.
    fn choose(&self, group: &str, want: u32) -> Vec<Arc<str>> {
        let config = self.config.get();
        let t = &config.bindings;
        let Some(g) = t.group(group) else {
            return Vec::new();
        };
        let members = &t.groups[g].members;
        let open = members
            .iter()
            .any(|(m, _)| !self.suspended_binding(&config, *m));
        let weights: Vec<u32> = members
            .iter()
            .map(|(m, w)| {
                if open && self.suspended_binding(&config, *m) {
                    0
                } else {
                    *w
                }
            })
            .collect();
        let mut credits = self.credits.borrow_mut();
        let c = credits.entry(group.into()).or_default();
        (0..want)
            .filter_map(|_| c.next(&weights))
            .map(|i| t.get(members[i].0).name.clone())
            .collect()
    }

    /// Suspends (`on`) or resumes a binding, or one domain from it; the
    /// change is durable (in the file) and taken by every shard before
    /// this returns. `Ok(false)`: it was so already.
    pub async fn suspend(&self, what: Suspension, on: bool) -> Result<bool, String> {
        if self.config.get().bindings.slot(&what.binding).is_none() {
            return Err(format!("there is no binding {:?}", what.binding));
        }
        if SUSPENSION_OWNER != self.mesh.me() {
            self.cross.set(self.cross.get() + 1);
        }
        match self
            .mesh
            .peer(SUSPENSION_OWNER)
            .ask(BindingAsk::Suspend { what, on })
            .await
        {
            Ok(BindingAnswer::Done(r)) => r,
            Ok(other) => Err(format!("unexpected answer {other:?}")),
            Err(e) => Err(format!("shard {SUSPENSION_OWNER} did not answer: {e:?}")),
        }
    }

    /// Shard 0: changes the set, writes the file, tells every shard.
    async fn own_suspend(&self, what: Suspension, on: bool) -> Result<bool, String> {
        let mut next = self.suspended.borrow().clone();
        if !next.set(what.clone(), on) {
            return Ok(false);
        }
        let (base, text) = (self.spoolbase.clone(), next.to_text());
        glommio::executor()
            .spawn_blocking(move || suspend::store(&base, &text))
            .await
            .map_err(|e| format!("writing {}: {e}", suspend::path(&self.spoolbase).display()))?;
        self.apply(&what, on);
        for n in (0..self.mesh.shards()).filter(|n| *n != self.mesh.me()) {
            let ask = BindingAsk::Apply {
                what: what.clone(),
                on,
            };
            let told = futures_lite::future::or(
                async { self.mesh.peer(n).ask(ask).await.is_ok() },
                async {
                    sched::sleep(APPLY_TIMEOUT).await;
                    false
                },
            )
            .await;
            if !told {
                // It is in the file: the shard takes it at its next start.
                self.events.panic(
                    Subsystem::Sig,
                    &format!(
                        "binding: shard {n} did not take \"{what}\" ({}) within {}s",
                        if on { "suspended" } else { "resumed" },
                        APPLY_TIMEOUT.as_secs()
                    ),
                );
            }
        }
        Ok(true)
    }

    fn apply(&self, what: &Suspension, on: bool) {
        if self.suspended.borrow_mut().set(what.clone(), on) {
            log::warn!(
                "shard {}: {what} {}",
                self.mesh.me(),
                if on { "suspended" } else { "resumed" }
            );
        }
    }

    /// Answers the picks of the groups this shard owns (and, on shard 0,
    /// suspensions) until every shard's mesh is gone.
    pub async fn serve(self: Rc<Self>, inbox: BindingInbox) {
        while let Some(request) = inbox.recv().await {
            let (ask, reply) = request.split();
            let answer = match ask {
                BindingAsk::Picks { group, want } => {
                    BindingAnswer::Picks(self.choose(&group, want.min(PICK_BATCH_MAX)))
                }
                BindingAsk::Suspend { what, on } => {
                    BindingAnswer::Done(self.own_suspend(what, on).await)
                }
                BindingAsk::Apply { what, on } => {
                    self.apply(&what, on);
                    BindingAnswer::Done(Ok(true))
                }
            };
            reply.send(answer);
        }
    }
}

#[cfg(test)]
mod tests;
