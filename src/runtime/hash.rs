//! Hash maps for shard state keyed by outside input (domains, message
//! ids): SipHash with random keys, as std's, so crafted keys cannot make
//! them slow; but a thread may fix its keys (the deterministic simulation
//! does), so that iteration order, and with it every scheduling decision
//! that follows it, is the same on every run of a seed.
//!
//! Owns the key choice only. May call: std. Must never: fix keys outside
//! a test (a fixed key lets a sender craft colliding domains).

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;

/// A [`HashMap`] with [`Keys`].
pub type Map<K, V> = HashMap<K, V, Keys>;
/// A [`HashSet`] with [`Keys`].
pub type Set<K> = HashSet<K, Keys>;

thread_local! {
    static FIXED: Cell<Option<(u64, u64)>> = const { Cell::new(None) };
}

/// Makes every map created on this thread from now on use keys derived
/// from `seed` (tests only).
pub fn fix_keys(seed: u64) {
    FIXED.with(|f| f.set(Some((seed, seed.rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15))));
}

/// SipHash keys of one map: random, unless the thread fixed them.
#[derive(Clone, Copy, Debug)]
pub struct Keys(u64, u64);

impl Default for Keys {
    fn default() -> Self {
        if let Some((a, b)) = FIXED.with(Cell::get) {
            return Keys(a, b);
        }
        let r = std::hash::RandomState::new();
        Keys(r.hash_one(0u64), r.hash_one(1u64))
    }
}

#[allow(deprecated)] // std's SipHash-2-4; the only keyed hasher std exposes
impl BuildHasher for Keys {
    type Hasher = std::hash::SipHasher;
    fn build_hasher(&self) -> Self::Hasher {
        std::hash::SipHasher::new_with_keys(self.0, self.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_keys_give_one_order_and_random_keys_differ() {
        let order = || {
            let m: Map<String, ()> = (0..64).map(|i| (format!("d{i}.example"), ())).collect();
            m.into_keys().collect::<Vec<_>>()
        };
        let random: Vec<Vec<String>> = (0..4).map(|_| order()).collect();
        assert!(random.windows(2).any(|w| w[0] != w[1]), "random keys vary");
        fix_keys(7);
        assert_eq!(order(), order());
        FIXED.with(|f| f.set(None));
    }
}
