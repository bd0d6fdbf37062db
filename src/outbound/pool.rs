//! A shard's outbound connection pools, keyed by (source binding, remote
//! host): `acquire` lends a ready connection for a domain — an idle one
//! to one of the domain's hosts if there is one, else a new one, trying
//! the hosts in order — and `release` takes it back. An idle connection is
//! kept `idle_timeout` for the next job to the same key, then QUIT.
//!
//! Owns the idle connections, their expiry, and the count of open
//! outbound connections. May call: routes (the hosts to try), the session
//! (connect and handshake), conn (the shard's TLS configs and its dialer),
//! events, config (a domain's settings), runtime (a wake-up, the clock,
//! tasks, hash maps), smtp (the reply type). Must never: touch the spool
//! or the queue, limit connections per domain (the queue's driver does),
//! or block the shard.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use super::dns::Resolver;
use super::key::{Binding, PoolKey};
use super::route::{targets, Unroutable};
use super::session::Outbound;
use super::slot::{Opened, Slot};
use crate::config::Delivery;
use crate::conn::{Dialer, ShardTls, TcpDialer};
use crate::events::Events;
use crate::reply::Reply;
use crate::runtime::hash::Map;
use crate::runtime::sched;
use crate::runtime::shutdown::Notify;

/// A connection waiting for its next job.
struct Idle {
    slot: Slot,
    until: Instant,
}

/// A shard's outbound connections.
pub struct Pools {
    shard: usize,
    tls: Rc<ShardTls>,
    events: Rc<Events>,
    resolver: Rc<Resolver>,
    dialer: RefCell<Rc<dyn Dialer>>,
    /// Connections open now: lent out, idle or closing.
    open: Rc<Cell<u32>>,
    idle: RefCell<Map<PoolKey, Vec<Idle>>>,
    /// When the expiry task next looks; `None` while none runs.
    reaper_due: Cell<Option<Instant>>,
    reaper_kick: Notify,
    /// Shut down: idle connections are closed, released ones too.
    closed: Cell<bool>,
}

impl Pools {
    /// Empty pools for one shard.
    pub fn new(
        shard: usize,
        tls: Rc<ShardTls>,
        events: Rc<Events>,
        resolver: Rc<Resolver>,
    ) -> Rc<Pools> {
        Rc::new(Pools {
            shard,
            tls,
            events,
            resolver,
            dialer: RefCell::new(Rc::new(TcpDialer)),
            open: Rc::new(Cell::new(0)),
            idle: RefCell::default(),
            reaper_due: Cell::new(None),
            reaper_kick: Notify::default(),
            closed: Cell::new(false),
        })
    }

    /// Opens new connections with `dialer` instead of TCP (the simulation).
    pub fn set_dialer(&self, dialer: Rc<dyn Dialer>) {
        *self.dialer.borrow_mut() = dialer;
    }

    /// Outbound connections open now (lent out, idle or closing).
    pub fn open(&self) -> u32 {
        self.open.get()
    }

    /// A ready connection for `domain` from `binding`: an idle one to one
    /// of its hosts (under these settings), else a new one to the first
    /// host that completes the handshake. `Err` says why none can be had.
    pub async fn acquire(
        &self,
        binding: Binding,
        domain: &str,
        settings: &Arc<Delivery>,
    ) -> Result<Slot, Unroutable> {
        let targets = targets(&self.resolver, domain, settings).await?;
        for t in &targets {
            let key = PoolKey {
                binding,
                host: t.host.clone(),
                addr: t.addr,
            };
            if let Some(slot) = self.reclaim(&key, settings) {
                return Ok(slot);
            }
        }
        let mut last = None;
        let dialer = self.dialer.borrow().clone();
        for t in targets {
            let tls = self.tls.client(&settings.tls_client);
            match Outbound::open(&*dialer, binding.from, t.addr, &t.host, settings, tls).await {
                Ok(c) => {
                    log::debug!(
                        "shard {}: {domain}: connected to {} [{}]",
                        self.shard,
                        c.host,
                        c.addr
                    );
                    let opened = Opened::new(self.events.clone(), self.open.clone(), c.addr);
                    let key = PoolKey {
                        binding,
                        host: t.host,
                        addr: t.addr,
                    };
                    return Ok(Slot::new(c, key, settings.clone(), opened));
                }
                Err(r) => {
                    log::debug!(
                        "shard {}: {domain}: {} [{}]: {r}",
                        self.shard,
                        t.host,
                        t.addr
                    );
                    last = Some(r);
                }
            }
        }
        let why = last.map_or(
            "no MXs for this domain could be reached at this time".into(),
            |r| r.to_string(),
        );
        Err(Unroutable::Transient(Rc::new(Reply::internal(
            421,
            (4, 4, 0),
            &format!("no MXs for this domain could be reached at this time (last: {why})"),
        ))))
    }

    /// The most recently idled connection for `key` that was opened under
    /// these very settings (a reload, or another domain's table, means
    /// other EHLO, TLS and limits), without resolving anything.
    pub fn reclaim(&self, key: &PoolKey, settings: &Arc<Delivery>) -> Option<Slot> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(key)?;
        let pos = list
            .iter()
            .rposition(|i| Arc::ptr_eq(&i.slot.settings, settings))?;
        Some(list.remove(pos).slot)
    }

    /// Takes a connection back. A broken one is closed, a used-up one (or
    /// any, once the pools are shut down) QUIT; any other waits
    /// `idle_timeout` for its next job.
    pub async fn release(self: &Rc<Self>, slot: Slot) {
        if slot.is_broken() {
            return;
        }
        let keep = slot.settings.idle_timeout;
        if slot.used_up() || self.closed.get() || keep.is_zero() {
            slot.quit().await;
            return;
        }
        let until = sched::now() + keep;
        self.idle
            .borrow_mut()
            .entry(slot.key().clone())
            .or_default()
            .push(Idle { slot, until });
        self.expire_at(until);
    }

    /// QUITs a connection and closes it, whatever its state.
    pub async fn close(&self, slot: Slot) {
        if !slot.is_broken() {
            slot.quit().await;
        }
    }

    /// Closes every idle connection (QUIT), and from now on every released
    /// one: the shard is shutting down.
    pub fn shutdown(&self) {
        self.closed.set(true);
        self.reaper_kick.notify();
    }

    /// Makes sure the expiry task looks at `until` at the latest.
    fn expire_at(self: &Rc<Self>, until: Instant) {
        match self.reaper_due.get() {
            None => {
                self.reaper_due.set(Some(until));
                sched::spawn(self.clone().reap()).detach();
            }
            Some(due) if until < due => self.reaper_kick.notify(),
            Some(_) => {}
        }
    }

    /// Runs while any connection is idle: QUITs each at its expiry (all at
    /// shutdown), each on its own task so a stalled peer holds up no other.
    async fn reap(self: Rc<Self>) {
        loop {
            let now = sched::now();
            let (expired, next) = self.take_expired(now);
            for slot in expired {
                sched::spawn(slot.quit()).detach();
            }
            let Some(next) = next else {
                self.reaper_due.set(None);
                return;
            };
            self.reaper_due.set(Some(next));
            futures_lite::future::or(
                sched::sleep(next.saturating_duration_since(now)),
                self.reaper_kick.notified(),
            )
            .await;
        }
    }

    /// Removes the idle connections due at `now` (all of them once shut
    /// down); returns them and the next expiry among those left.
    fn take_expired(&self, now: Instant) -> (Vec<Slot>, Option<Instant>) {
        let all = self.closed.get();
        let mut expired = Vec::new();
        let mut next: Option<Instant> = None;
        self.idle.borrow_mut().retain(|_, list| {
            let mut i = 0;
            while i < list.len() {
                if all || list[i].until <= now {
                    expired.push(list.remove(i).slot);
                } else {
                    next = Some(next.map_or(list[i].until, |n| n.min(list[i].until)));
                    i += 1;
                }
            }
            !list.is_empty()
        });
        (expired, next)
    }
}
