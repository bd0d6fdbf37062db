//! The owner shard's books for the throttles it owns: connection slots
//! per domain leased to shards, and token buckets for message and
//! connection rates, with the requests that wait for either.
//!
//! Sans-IO: every call takes `now`; what is granted comes back as a list
//! of `(back, answer)` for the service to send, `back` being whatever the
//! caller uses to answer (a request's reply handle). May call: config
//! (the rate type), runtime (hash maps). Must never: do I/O, grant a slot
//! beyond the limit while every holder is alive, or serve a waiting
//! request out of turn.
//!
//! ## Connection slots
//! A shard asks for slots before it starts delivery tasks for a domain;
//! what is free is granted at once (at most what it wants), otherwise the
//! request waits here in arrival order. Every `SYNC_INTERVAL` a shard
//! that holds slots returns those it does not use and says how many it
//! holds; the answer is its target. (While no other shard waits, it keeps
//! a small cushion above its recent peak, so that tasks ending and
//! starting again as mail trickles in do not ask anew; a target that
//! comes down below the limit sends its next sync, which returns the
//! cushion, at once.) While requests wait, each holder's
//! target is its fair share (the limit over the shards holding or
//! waiting, rounded up), and a holder over it ends delivery tasks after
//! their current message, so a shard with work gets slots within about
//! one sync interval plus one message time. When the limit is lowered
//! below what is held (a reload, a back-off), the targets add up to the
//! new limit exactly, so the holders together come down to it. Slots are counted as held
//! until the holder returns them, so concurrency never exceeds the limit
//! while the holders live; a holder silent for `LEASE_TTL` (its shard is
//! gone) has its slots taken back.
//!
//! ## Rates and their worst-case overshoot
//! A rate of N per period P is a token bucket filled at r = N/P with room
//! for B = max(1, N/200) tokens. A request takes at most what the bucket
//! holds (and wants); one that finds it empty waits in arrival order. A
//! grant is valid for L = P/200 (at least 1 ms, at most 1 s): a shard
//! drops tokens it has not used by then. So a use at time t comes from a
//! grant in [t − L, t], and the uses in any window of length P come from
//! grants in a span of P + L, of which there are at most B + r(P + L) =
//! N + B + N·L/P. The worst case is N·(1 + 1/200 + 1/200) = 1.01·N for
//! N ≥ 200, and N + 1 + N/200 below that (one message more than the
//! limit). Tokens granted and not used are lost, never given twice: the
//! error is on the side of sending less.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Rate, ThrottleScope};
use crate::runtime::hash::Map;

/// How often a shard holding slots returns unused ones and renews the rest.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(100);
/// A holder silent this long has its slots taken back.
pub const LEASE_TTL: Duration = Duration::from_secs(10);

/// What a rate counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RateKind {
    /// Delivery attempts (`outbound_throttle_messages`).
    Messages,
    /// New connections (`outbound_throttle_connections`).
    Connections,
}

/// One rate counter: what it counts and whose it is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RateKey {
    /// What it counts.
    pub kind: RateKind,
    /// The scope sharing it.
    pub scope: ThrottleScope,
}

/// One shard's word on one domain's slots, sent every `SYNC_INTERVAL`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncItem {
    /// The domain.
    pub domain: Arc<str>,
    /// Slots given back now.
    pub returned: u32,
    /// Slots the shard still holds after that.
    pub holding: u32,
    /// The domain's `max_outbound_connections` in the shard's config.
    pub limit: u32,
}

/// A grant for a waiting or new request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grant {
    /// Connection slots.
    Slots(u32),
    /// Tokens, to be used before `expires`.
    Tokens {
        /// How many.
        count: u32,
        /// When unused ones lapse.
        expires: Instant,
    },
}

/// Grants to send: each with the way back to its asker.
pub type Grants<G> = Vec<(G, Grant)>;
/// The most a shard may hold, per domain.
pub type Targets = Vec<(Arc<str>, u32)>;

/// Slots taken back from a silent holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lapsed {
    /// The domain.
    pub domain: Arc<str>,
    /// The silent shard.
    pub shard: usize,
    /// Slots it held.
    pub slots: u32,
}

/// A request waiting for slots or tokens.
struct Waiting<G> {
    shard: usize,
    want: u32,
    back: G,
}

/// One domain's connection slots.
struct Slots<G> {
    limit: u32,
    held: Vec<u32>,
    heard: Vec<Instant>,
    waiting: VecDeque<Waiting<G>>,
}

impl<G> Slots<G> {
    fn held(&self) -> u32 {
        self.held.iter().sum()
    }

    /// Serves waiting requests in order while slots are free.
    fn serve(&mut self, out: &mut Grants<G>) {
        loop {
            let free = self.limit.saturating_sub(self.held());
            if free == 0 {
                return;
            }
            let Some(w) = self.waiting.pop_front() else {
                return;
            };
            let n = w.want.min(free).max(1);
            self.held[w.shard] += n;
            out.push((w.back, Grant::Slots(n)));
        }
    }

    /// The most `shard` may hold now: the limit, or its fair share while
    /// others wait. When the holders hold more than the limit (it was
    /// lowered), the shares add up to the limit exactly (the remainder to
    /// the lowest shard numbers), so that the holders come down to it.
    fn target(&self, shard: usize) -> u32 {
        let over = self.held() > self.limit;
        if self.waiting.is_empty() && !over {
            return self.limit;
        }
        let mut contenders: Vec<usize> =
            (0..self.held.len()).filter(|&s| self.held[s] > 0).collect();
        for w in &self.waiting {
            if !contenders.contains(&w.shard) {
                contenders.push(w.shard);
            }
        }
        let n = contenders.len().max(1) as u32;
        if !over {
            return self.limit.div_ceil(n).max(1);
        }
        contenders.sort_unstable();
        match contenders.iter().position(|s| *s == shard) {
            Some(i) => self.limit / n + u32::from((i as u32) < self.limit % n),
            None => 0,
        }
    }
}

/// One rate's token bucket.
struct Bucket<G> {
    rate: Rate,
    level: f64,
    at: Instant,
    waiting: VecDeque<Waiting<G>>,
}

impl<G> Bucket<G> {
    fn per_sec(&self) -> f64 {
        f64::from(self.rate.count) / self.rate.per.as_secs_f64().max(1e-3)
    }

    fn room(&self) -> f64 {
        (f64::from(self.rate.count) / 200.0).max(1.0)
    }

    /// How long a grant stays valid.
    fn lifetime(&self) -> Duration {
        (self.rate.per / 200).clamp(Duration::from_millis(1), Duration::from_secs(1))
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + dt * self.per_sec()).min(self.room());
        self.at = now;
    }

    /// Serves waiting requests in order while whole tokens are there.
    fn serve(&mut self, now: Instant, out: &mut Grants<G>) {
        self.refill(now);
        while self.level >= 1.0 {
            let Some(w) = self.waiting.pop_front() else {
                return;
            };
            let n = w.want.max(1).min(self.level.floor() as u32);
            self.level -= f64::from(n);
            let expires = now + self.lifetime();
            out.push((w.back, Grant::Tokens { count: n, expires }));
        }
    }

    /// When the first waiting request can be served.
    fn due(&self) -> Option<Instant> {
        if self.waiting.is_empty() {
            return None;
        }
        let missing = (1.0 - self.level).max(0.0);
        Some(self.at + Duration::from_secs_f64(missing / self.per_sec()))
    }
}

/// What the owner shard keeps for the throttles it owns.
pub struct Ledger<G> {
    shards: usize,
    slots: Map<Arc<str>, Slots<G>>,
    buckets: Map<RateKey, Bucket<G>>,
}

impl<G> Ledger<G> {
    /// Empty books for a server of `shards` shards.
    pub fn new(shards: usize) -> Ledger<G> {
        Ledger {
            shards: shards.max(1),
            slots: Map::default(),
            buckets: Map::default(),
        }
    }

    fn slots_of(&mut self, domain: &Arc<str>, limit: u32, now: Instant) -> &mut Slots<G> {
        let n = self.shards;
        let s = self.slots.entry(domain.clone()).or_insert_with(|| Slots {
            limit,
            held: vec![0; n],
            heard: vec![now; n],
            waiting: VecDeque::new(),
        });
        s.limit = limit.max(1);
        s
    }

    /// Shard `shard` wants `want` more slots for `domain`: granted now (at
    /// most what is free) or when slots come back, in arrival order.
    pub fn ask_slots(
        &mut self,
        domain: &Arc<str>,
        shard: usize,
        want: u32,
        limit: u32,
        back: G,
        now: Instant,
    ) -> Grants<G> {
        let s = self.slots_of(domain, limit, now);
        if shard >= s.held.len() {
            return Vec::new();
        }
        s.heard[shard] = now;
        s.waiting.push_back(Waiting {
            shard,
            want: want.max(1),
            back,
        });
        let mut out = Vec::new();
        s.serve(&mut out);
        out
    }

    /// A shard's periodic word: returned slots come back (and go to
    /// waiting requests), its holding is renewed. Returns its target per
    /// domain, and the grants the returns made possible.
    pub fn sync(&mut self, shard: usize, items: &[SyncItem], now: Instant) -> (Targets, Grants<G>) {
        let mut targets = Vec::with_capacity(items.len());
        let mut out = Vec::new();
        for item in items {
            let s = self.slots_of(&item.domain, item.limit, now);
            if shard >= s.held.len() {
                continue;
            }
            s.held[shard] = s.held[shard].saturating_sub(item.returned);
            // Lapsed while the shard lived (it was silent too long): what
            // it holds is real, so it is counted again.
            s.held[shard] = s.held[shard].max(item.holding);
            s.heard[shard] = now;
            s.serve(&mut out);
            targets.push((item.domain.clone(), s.target(shard)));
        }
        self.forget_idle_slots();
        (targets, out)
    }

    /// Shard `shard` wants `want` tokens of `key`: what the bucket holds
    /// now (at most `want`), or as they accrue, in arrival order.
    pub fn ask_tokens(
        &mut self,
        key: &RateKey,
        shard: usize,
        want: u32,
        rate: Rate,
        back: G,
        now: Instant,
    ) -> Grants<G> {
        let b = self.buckets.entry(key.clone()).or_insert_with(|| {
            let mut fresh = Bucket {
                rate,
                level: 0.0,
                at: now,
                waiting: VecDeque::new(),
            };
            fresh.level = fresh.room();
            fresh
        });
        if b.rate != rate {
            b.refill(now);
            b.rate = rate;
            b.level = b.level.min(b.room());
        }
        b.waiting.push_back(Waiting {
            shard,
            want: want.max(1),
            back,
        });
        let mut out = Vec::new();
        b.serve(now, &mut out);
        out
    }

    /// Serves the token requests whose time has come and takes back the
    /// slots of silent holders. Returns the grants and the shards whose
    /// holdings lapsed, by domain.
    pub fn tick(&mut self, now: Instant) -> (Grants<G>, Vec<Lapsed>) {
        let mut out = Vec::new();
        for b in self.buckets.values_mut() {
            if !b.waiting.is_empty() {
                b.serve(now, &mut out);
            }
        }
        // A full, idle bucket is as good as a new one.
        self.buckets.retain(|_, b| {
            b.refill(now);
            !b.waiting.is_empty() || b.level < b.room()
        });
        let mut lapsed = Vec::new();
        for (domain, s) in self.slots.iter_mut() {
            for shard in 0..s.held.len() {
                if s.held[shard] > 0 && now.saturating_duration_since(s.heard[shard]) >= LEASE_TTL {
                    lapsed.push(Lapsed {
                        domain: domain.clone(),
                        shard,
                        slots: s.held[shard],
                    });
                    s.held[shard] = 0;
                }
            }
            s.serve(&mut out);
        }
        self.forget_idle_slots();
        (out, lapsed)
    }

    /// When `tick` has work next: the first waiting token request's time,
    /// or a lease check while any slots are held.
    pub fn next_due(&self, now: Instant) -> Option<Instant> {
        let bucket = self.buckets.values().filter_map(Bucket::due).min();
        let lease = (!self.slots.is_empty()).then(|| now + SYNC_INTERVAL * 10);
        match (bucket, lease) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Drops the books of domains nobody holds or waits for.
    fn forget_idle_slots(&mut self) {
        self.slots
            .retain(|_, s| s.held() > 0 || !s.waiting.is_empty());
    }

    /// Slots held for `domain` by each shard.
    #[cfg(test)]
    pub fn holdings(&self, domain: &str) -> Vec<u32> {
        self.slots
            .get(domain)
            .map_or_else(|| vec![0; self.shards], |s| s.held.clone())
    }
}

#[cfg(test)]
mod tests;
