//! The per-shard DNS cache: entries that expire at `now + ttl`, with TTLs
//! clamped by `min_dns_ttl`/`max_dns_ttl` and negative answers capped.
//!
//! Owns `TtlCache` and `TtlPolicy`. Sans-IO: every call that depends on
//! time takes `now`, so tests (and the scheduler's simulated clock) decide
//! what time it is. May call: nothing in the crate (std only). Must never:
//! do I/O or read a clock, return an expired entry, or hold more than
//! `max_entries` (a full cache purges, then drops the soonest to expire).

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// How TTLs from the wire become cache lifetimes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TtlPolicy {
    /// `min_dns_ttl`: floor for every cached answer, seconds.
    pub min_ttl_secs: u32,
    /// `max_dns_ttl`: ceiling for every cached answer, seconds.
    pub max_ttl_secs: u32,
    /// Ceiling for NXDOMAIN/NODATA before the clamp (RFC 2308 §5 advises
    /// hours at most).
    pub max_negative_ttl_secs: u32,
}

/// RFC 2308 §5: "values of one to three hours have been found to work well";
/// we keep the short end so a newly created domain is seen soon.
pub const DEFAULT_MAX_NEGATIVE_TTL_SECS: u32 = 3600;

impl Default for TtlPolicy {
    fn default() -> Self {
        TtlPolicy {
            min_ttl_secs: 0,
            max_ttl_secs: u32::MAX,
            max_negative_ttl_secs: DEFAULT_MAX_NEGATIVE_TTL_SECS,
        }
    }
}

impl TtlPolicy {
    /// Lifetime of a positive answer with wire TTL `ttl`.
    pub fn positive(&self, ttl: u32) -> Duration {
        self.clamp(ttl)
    }

    /// Lifetime of a negative answer; `None` (no SOA) is not cached unless
    /// `min_dns_ttl` asks for a floor.
    pub fn negative(&self, ttl: Option<u32>) -> Duration {
        self.clamp(ttl.unwrap_or(0).min(self.max_negative_ttl_secs))
    }

    fn clamp(&self, ttl: u32) -> Duration {
        let secs = ttl.max(self.min_ttl_secs).min(self.max_ttl_secs);
        Duration::from_secs(u64::from(secs))
    }
}

struct Entry<V> {
    value: V,
    expires: Instant,
}

/// A map whose entries vanish at their expiry time.
pub struct TtlCache<K, V> {
    entries: HashMap<K, Entry<V>>,
    max_entries: usize,
}

impl<K: Hash + Eq + Clone, V: Clone> TtlCache<K, V> {
    /// An empty cache holding at most `max_entries` live entries.
    pub fn new(max_entries: usize) -> Self {
        TtlCache {
            entries: HashMap::new(),
            max_entries: max_entries.max(1),
        }
    }

    /// The value of a live entry.
    pub fn get(&self, key: &K, now: Instant) -> Option<V> {
        self.entries
            .get(key)
            .filter(|e| now < e.expires)
            .map(|e| e.value.clone())
    }

    /// The remaining lifetime of a live entry.
    pub fn ttl(&self, key: &K, now: Instant) -> Option<Duration> {
        self.entries
            .get(key)
            .filter(|e| now < e.expires)
            .map(|e| e.expires - now)
    }

    /// Stores `value` until `now + ttl`; a zero (or unrepresentable) `ttl`
    /// stores nothing.
    pub fn insert(&mut self, key: K, value: V, ttl: Duration, now: Instant) {
        let expires = match now.checked_add(ttl) {
            Some(t) if !ttl.is_zero() => t,
            _ => {
                self.entries.remove(&key);
                return;
            }
        };
        if self.entries.len() >= self.max_entries && !self.entries.contains_key(&key) {
            self.purge(now);
            if self.entries.len() >= self.max_entries {
                // Still full of live entries: drop the one that expires first
                // (O(n), but only on a full cache).
                let soonest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.expires)
                    .map(|(k, _)| k.clone());
                if let Some(k) = soonest {
                    self.entries.remove(&k);
                }
            }
        }
        self.entries.insert(key, Entry { value, expires });
    }

    /// Drops every expired entry (the `dns_expire_interval` scan).
    pub fn purge(&mut self, now: Instant) {
        self.entries.retain(|_, e| now < e.expires);
    }

    /// Drops one entry (`refresh domain`).
    pub fn remove(&mut self, key: &K) {
        self.entries.remove(key);
    }

    /// Entries held, live or not yet purged.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_live_until_their_ttl() {
        let t0 = Instant::now();
        let mut c = TtlCache::new(10);
        c.insert("a", 1, Duration::from_secs(30), t0);
        assert_eq!(c.get(&"a", t0 + Duration::from_secs(29)), Some(1));
        assert_eq!(
            c.ttl(&"a", t0 + Duration::from_secs(20)),
            Some(Duration::from_secs(10))
        );
        assert_eq!(c.get(&"a", t0 + Duration::from_secs(30)), None);
        c.insert("z", 0, Duration::ZERO, t0);
        assert_eq!(c.get(&"z", t0), None);
        c.purge(t0 + Duration::from_secs(31));
        assert!(c.is_empty());
    }

    #[test]
    fn a_full_cache_evicts_the_soonest_expiry() {
        let t0 = Instant::now();
        let mut c = TtlCache::new(2);
        c.insert("long", 1, Duration::from_secs(100), t0);
        c.insert("short", 2, Duration::from_secs(10), t0);
        c.insert("new", 3, Duration::from_secs(50), t0);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(&"short", t0), None);
        assert_eq!(c.get(&"long", t0), Some(1));
    }

    #[test]
    fn policy_clamps_and_caps() {
        let p = TtlPolicy {
            min_ttl_secs: 60,
            max_ttl_secs: 600,
            max_negative_ttl_secs: 300,
        };
        assert_eq!(p.positive(5), Duration::from_secs(60));
        assert_eq!(p.positive(86_400), Duration::from_secs(600));
        assert_eq!(p.negative(Some(86_400)), Duration::from_secs(300));
        assert_eq!(p.negative(None), Duration::from_secs(60));
        assert_eq!(TtlPolicy::default().negative(None), Duration::ZERO);
    }
}
