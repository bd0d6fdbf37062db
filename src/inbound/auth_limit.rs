//! Failed-AUTH accounting: the growing wait after each failure in a
//! session, and a budget of failures per client address over a window.
//!
//! Plain data with the time passed in: no I/O, no timers here (the session
//! driver sleeps). The budget is kept **per shard**: each shard counts the
//! failures of the sessions it accepted, so a client spread over N shards
//! by SO_REUSEPORT gets N times the budget. The cross-shard mesh does not
//! exist yet; once it does, the count moves to the address's owner shard
//! and the budget becomes host-wide.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Most client addresses one shard tracks. When full, expired entries go
/// first, then the one whose window ends soonest: memory stays bounded
/// whatever the number of attacking addresses.
pub const AUTH_FAILURE_TABLE_MAX_ENTRIES: usize = 65_536;

/// The wait before the 535 of a session's `n`th failed AUTH (from 1):
/// `base` doubled for each earlier failure, at most `max`.
pub fn failure_delay(n: u32, base: Duration, max: Duration) -> Duration {
    let doublings = n.saturating_sub(1).min(u32::BITS - 1);
    base.saturating_mul(1u32 << doublings).min(max)
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    failures: u32,
    /// End of the window opened by the address's first failure.
    until: Instant,
    /// A refusal in this window was already logged.
    reported: bool,
}

/// What to do with an AUTH attempt from an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Check the credentials.
    Allowed,
    /// Refuse without checking: `failures` in the window already.
    /// `first` is true for the first refusal of the window (log it).
    OverBudget { failures: u32, first: bool },
}

/// One shard's failed-AUTH counts per client address.
#[derive(Debug, Default)]
pub struct AuthFailures {
    entries: HashMap<IpAddr, Entry>,
}

impl AuthFailures {
    /// Decides an attempt from `ip` against `budget` failures per window
    /// (0 = no limit).
    pub fn check(&mut self, ip: IpAddr, now: Instant, budget: u32) -> Verdict {
        let Some(e) = self.entries.get_mut(&ip) else {
            return Verdict::Allowed;
        };
        if now >= e.until {
            self.entries.remove(&ip);
            return Verdict::Allowed;
        }
        if budget == 0 || e.failures < budget {
            return Verdict::Allowed;
        }
        let first = !e.reported;
        e.reported = true;
        Verdict::OverBudget {
            failures: e.failures,
            first,
        }
    }

    /// Counts a failure of `ip`; returns its failures in the window.
    pub fn record(&mut self, ip: IpAddr, now: Instant, window: Duration) -> u32 {
        if !self.entries.contains_key(&ip) && self.entries.len() >= AUTH_FAILURE_TABLE_MAX_ENTRIES {
            self.make_room(now);
        }
        let fresh = Entry {
            failures: 0,
            until: now + window,
            reported: false,
        };
        let e = self.entries.entry(ip).or_insert(fresh);
        if now >= e.until {
            *e = fresh;
        }
        e.failures = e.failures.saturating_add(1);
        e.failures
    }

    /// Addresses tracked.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no address is tracked.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn make_room(&mut self, now: Instant) {
        self.entries.retain(|_, e| now < e.until);
        if self.entries.len() < AUTH_FAILURE_TABLE_MAX_ENTRIES {
            return;
        }
        let soonest = self.entries.iter().min_by_key(|(_, e)| e.until);
        if let Some(ip) = soonest.map(|(ip, _)| *ip) {
            self.entries.remove(&ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(60);

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    #[test]
    fn delay_doubles_up_to_the_cap() {
        let (base, max) = (Duration::from_secs(1), Duration::from_secs(10));
        let d: Vec<u64> = (1..=6)
            .map(|n| failure_delay(n, base, max).as_secs())
            .collect();
        assert_eq!(d, [1, 2, 4, 8, 10, 10]);
        assert_eq!(failure_delay(u32::MAX, base, max), max);
        assert_eq!(failure_delay(3, Duration::ZERO, max), Duration::ZERO);
    }

    #[test]
    fn budget_refuses_within_the_window_and_forgets_after_it() {
        let mut t = AuthFailures::default();
        let t0 = Instant::now();
        for n in 1..=3 {
            assert_eq!(t.check(ip(1), t0, 3), Verdict::Allowed);
            assert_eq!(t.record(ip(1), t0, WINDOW), n);
        }
        let over = t.check(ip(1), t0 + Duration::from_secs(59), 3);
        assert_eq!(
            over,
            Verdict::OverBudget {
                failures: 3,
                first: true
            }
        );
        let again = t.check(ip(1), t0, 3);
        assert_eq!(
            again,
            Verdict::OverBudget {
                failures: 3,
                first: false
            }
        );
        assert_eq!(t.check(ip(2), t0, 3), Verdict::Allowed, "per address");
        assert_eq!(t.check(ip(1), t0, 0), Verdict::Allowed, "0 = no limit");
        assert_eq!(t.check(ip(1), t0 + WINDOW, 3), Verdict::Allowed);
        assert!(t.is_empty(), "an expired entry is dropped");
        assert_eq!(t.record(ip(1), t0 + WINDOW, WINDOW), 1, "a new window");
    }

    #[test]
    fn table_stays_bounded() {
        let mut t = AuthFailures::default();
        let t0 = Instant::now();
        let max = AUTH_FAILURE_TABLE_MAX_ENTRIES as u32;
        for n in 0..max {
            t.record(
                ip(n),
                t0 + Duration::from_millis(u64::from(n % 1000)),
                WINDOW,
            );
        }
        assert_eq!(t.len(), AUTH_FAILURE_TABLE_MAX_ENTRIES);
        // Full of live entries: the one whose window ends soonest goes.
        t.record(ip(max), t0 + Duration::from_secs(1), WINDOW);
        assert_eq!(t.len(), AUTH_FAILURE_TABLE_MAX_ENTRIES);
        assert_eq!(
            t.check(ip(max), t0, 1),
            Verdict::OverBudget {
                failures: 1,
                first: true
            }
        );
        // Later, every old entry has expired: they are all dropped at once.
        t.record(ip(max + 1), t0 + WINDOW * 2, WINDOW);
        assert_eq!(t.len(), 1);
    }
}
