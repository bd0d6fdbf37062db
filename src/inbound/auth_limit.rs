//! Failed-AUTH accounting: the growing wait after each failure in a
//! session, and a budget of failures per client address over a window.
//!
//! The budget is host-wide: an address's failures are counted by its
//! owner shard (`runtime::mesh`, hash of the address), which every shard
//! asks, so a client spread over the shards by SO_REUSEPORT gets the
//! budget once, not once per shard.
//!
//! Owns `AuthFailures` (plain data with the time passed in), the owner's
//! service loop `serve` and its request types, and `failure_delay`. May
//! call: runtime::mesh. Must never: do I/O or arm timers (the session
//! driver sleeps), let parallel checks all pass before one fails (checks
//! in flight count against the budget), or grow past
//! `AUTH_FAILURE_TABLE_MAX_ENTRIES` addresses unless every one has a check
//! in flight.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::runtime::mesh::{Inbox, Mesh};

/// What a shard asks an address's owner shard.
#[derive(Debug)]
pub enum AuthAsk {
    /// A password check is about to start: may it?
    Begin {
        /// The client address.
        ip: IpAddr,
        /// `auth_failures_per_ip` of the asking session (0 = no limit).
        budget: u32,
    },
    /// The check ended.
    Finish {
        /// The client address.
        ip: IpAddr,
        /// `auth_failure_window_secs` of the asking session.
        window: Duration,
        /// The password was wrong.
        failed: bool,
    },
}

/// The owner's answer.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthAnswer {
    /// To `Begin`.
    Verdict(Verdict),
    /// To `Finish`: failures from the address in its window.
    Failures(u32),
}

/// The shards' AUTH accounting, as one shard sees it.
pub type AuthMesh = Mesh<AuthAsk, AuthAnswer>;
/// A shard's inbox for the addresses it owns.
pub type AuthInbox = Inbox<AuthAsk, AuthAnswer>;

/// Answers the requests for the addresses this shard owns until every
/// shard's mesh is gone.
pub async fn serve(inbox: AuthInbox) {
    let mut table = AuthFailures::default();
    while let Some(request) = inbox.recv().await {
        let (ask, reply) = request.split();
        let now = Instant::now();
        reply.send(match ask {
            AuthAsk::Begin { ip, budget } => AuthAnswer::Verdict(table.begin(ip, now, budget)),
            AuthAsk::Finish { ip, window, failed } => {
                AuthAnswer::Failures(table.finish(ip, now, window, failed))
            }
        });
    }
}

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
    /// Credential checks begun and not finished yet: they count against
    /// the budget, or parallel sessions could all pass before one fails.
    in_flight: u32,
    /// End of the window opened by the address's first failure (in the
    /// past while there is no failure).
    until: Instant,
    /// A refusal in this window was already logged.
    reported: bool,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.in_flight > 0 || now < self.until
    }
}

/// What to do with an AUTH attempt from an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Check the credentials, then call [`AuthFailures::finish`].
    Allowed,
    /// Refuse without checking: `failures` in the window already (with
    /// the checks in flight). `first` is true for the first refusal of the
    /// window (log it).
    OverBudget { failures: u32, first: bool },
}

/// One shard's failed-AUTH counts per client address.
#[derive(Debug, Default)]
pub struct AuthFailures {
    entries: HashMap<IpAddr, Entry>,
}

impl AuthFailures {
    /// Decides an attempt from `ip` against `budget` failures per window
    /// (0 = no limit). `Allowed` must be followed by `finish`.
    pub fn begin(&mut self, ip: IpAddr, now: Instant, budget: u32) -> Verdict {
        if !self.entries.contains_key(&ip) && self.entries.len() >= AUTH_FAILURE_TABLE_MAX_ENTRIES {
            self.make_room(now);
        }
        let e = self.entries.entry(ip).or_insert(Entry {
            failures: 0,
            in_flight: 0,
            until: now,
            reported: false,
        });
        if now >= e.until {
            (e.failures, e.reported) = (0, false);
        }
        let counted = e.failures.saturating_add(e.in_flight);
        if budget > 0 && counted >= budget {
            let first = !e.reported;
            e.reported = true;
            return Verdict::OverBudget {
                failures: counted,
                first,
            };
        }
        e.in_flight += 1;
        Verdict::Allowed
    }

    /// Ends a check begun with `begin`; a failure is counted in the window
    /// (opened by the first one). Returns the address's failures in it.
    pub fn finish(&mut self, ip: IpAddr, now: Instant, window: Duration, failed: bool) -> u32 {
        let Some(e) = self.entries.get_mut(&ip) else {
            return 0;
        };
        e.in_flight = e.in_flight.saturating_sub(1);
        if failed {
            if now >= e.until {
                (e.failures, e.until, e.reported) = (0, now + window, false);
            }
            e.failures = e.failures.saturating_add(1);
        }
        let failures = e.failures;
        if !e.live(now) {
            self.entries.remove(&ip);
        }
        failures
    }

    /// Addresses tracked.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    fn make_room(&mut self, now: Instant) {
        self.entries.retain(|_, e| e.live(now));
        if self.entries.len() < AUTH_FAILURE_TABLE_MAX_ENTRIES {
            return;
        }
        let idle = self.entries.iter().filter(|(_, e)| e.in_flight == 0);
        let soonest = idle.min_by_key(|(_, e)| e.until).map(|(ip, _)| *ip);
        if let Some(ip) = soonest {
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

    fn fail(t: &mut AuthFailures, ip: IpAddr, now: Instant, budget: u32) -> u32 {
        assert_eq!(t.begin(ip, now, budget), Verdict::Allowed);
        t.finish(ip, now, WINDOW, true)
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
            assert_eq!(fail(&mut t, ip(1), t0, 3), n);
        }
        let over = |failures, first| Verdict::OverBudget { failures, first };
        let later = t0 + Duration::from_secs(59);
        assert_eq!(t.begin(ip(1), later, 3), over(3, true));
        assert_eq!(t.begin(ip(1), later, 3), over(3, false), "logged once");
        assert_eq!(t.begin(ip(2), t0, 3), Verdict::Allowed, "per address");
        assert_eq!(t.finish(ip(2), t0, WINDOW, false), 0);
        assert_eq!(t.begin(ip(1), t0, 0), Verdict::Allowed, "0 = no limit");
        t.finish(ip(1), t0, WINDOW, false);
        assert_eq!(t.begin(ip(1), t0 + WINDOW, 3), Verdict::Allowed);
        assert_eq!(
            t.finish(ip(1), t0 + WINDOW, WINDOW, true),
            1,
            "a new window"
        );
    }

    #[test]
    fn checks_in_flight_count_against_the_budget() {
        let mut t = AuthFailures::default();
        let t0 = Instant::now();
        assert_eq!(t.begin(ip(1), t0, 2), Verdict::Allowed);
        assert_eq!(t.begin(ip(1), t0, 2), Verdict::Allowed);
        let third = t.begin(ip(1), t0, 2);
        assert!(matches!(third, Verdict::OverBudget { .. }), "{third:?}");
        // A success frees its slot and leaves nothing behind.
        assert_eq!(t.finish(ip(1), t0, WINDOW, false), 0);
        assert_eq!(t.finish(ip(1), t0, WINDOW, false), 0);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn table_stays_bounded() {
        let mut t = AuthFailures::default();
        let t0 = Instant::now();
        let max = AUTH_FAILURE_TABLE_MAX_ENTRIES as u32;
        for n in 0..max {
            fail(
                &mut t,
                ip(n),
                t0 + Duration::from_millis(u64::from(n % 1000)),
                0,
            );
        }
        assert_eq!(t.len(), AUTH_FAILURE_TABLE_MAX_ENTRIES);
        // Full of live entries: the one whose window ends soonest goes.
        fail(&mut t, ip(max), t0 + Duration::from_secs(1), 0);
        assert_eq!(t.len(), AUTH_FAILURE_TABLE_MAX_ENTRIES);
        let refused = t.begin(ip(max), t0 + Duration::from_secs(1), 1);
        assert!(matches!(refused, Verdict::OverBudget { .. }));
        // Later, every old entry has expired: they are all dropped at once.
        fail(&mut t, ip(max + 1), t0 + WINDOW * 2, 0);
        assert_eq!(t.len(), 1);
    }
}
