//! A shard's budget for message content held in memory while it is being
//! received (DATA/BDAT bodies before their 250).
//!
//! Owns the accounting only: a counter shared by the sessions of one shard
//! (`Rc`, never across threads) and the RAII `Charge` each body holds, so
//! that whatever ends a transaction (250, refusal, RSET, close, a dropped
//! session) gives its octets back. No I/O here. May call: nothing in the
//! crate. Must never: keep octets charged after their `Charge` is dropped.

use std::cell::Cell;
use std::fmt;
use std::rc::Rc;

/// After a charge was refused, new transactions are refused until use has
/// fallen to this share of the limit (hysteresis: memory is "back").
pub const RECOVERED_PERCENT: u64 = 50;

#[derive(Debug)]
struct State {
    limit_octets: Cell<u64>,
    used_octets: Cell<u64>,
    /// A charge was refused and use has not yet fallen back.
    pressure: Cell<bool>,
}

/// One shard's content budget; clones share the counter.
#[derive(Clone, Debug)]
pub struct ContentBudget(Rc<State>);

impl ContentBudget {
    /// A budget of `limit_octets`.
    pub fn new(limit_octets: u64) -> Self {
        ContentBudget(Rc::new(State {
            limit_octets: Cell::new(limit_octets),
            used_octets: Cell::new(0),
            pressure: Cell::new(false),
        }))
    }

    /// Changes the limit (a reload); charges already held stay.
    pub fn set_limit(&self, limit_octets: u64) {
        self.0.limit_octets.set(limit_octets);
        self.settle();
    }

    /// The limit in octets.
    pub fn limit_octets(&self) -> u64 {
        self.0.limit_octets.get()
    }

    /// Octets charged now.
    pub fn used_octets(&self) -> u64 {
        self.0.used_octets.get()
    }

    /// True when new transactions should be refused: nothing is left, or a
    /// charge failed and use has not yet fallen to `RECOVERED_PERCENT`.
    pub fn exhausted(&self) -> bool {
        self.0.pressure.get() || self.used_octets() >= self.limit_octets()
    }

    /// A charge of zero octets against this budget.
    pub fn charge(&self) -> Charge {
        Charge {
            budget: self.clone(),
            octets: 0,
        }
    }

    fn try_take(&self, octets: u64) -> bool {
        let used = self.used_octets().saturating_add(octets);
        if used > self.limit_octets() {
            self.0.pressure.set(true);
            return false;
        }
        self.0.used_octets.set(used);
        true
    }

    fn give_back(&self, octets: u64) {
        let used = self.used_octets().saturating_sub(octets);
        self.0.used_octets.set(used);
        self.settle();
    }

    fn settle(&self) {
        let recovered = self.limit_octets() / 100 * RECOVERED_PERCENT;
        if self.used_octets() <= recovered {
            self.0.pressure.set(false);
        }
    }
}

/// Octets one body holds against a budget; given back on drop.
pub struct Charge {
    budget: ContentBudget,
    octets: u64,
}

impl Charge {
    /// Raises the charge to `total` octets; false (and unchanged) when the
    /// budget cannot cover it.
    pub fn try_grow_to(&mut self, total: u64) -> bool {
        if total <= self.octets {
            return true;
        }
        if !self.budget.try_take(total - self.octets) {
            return false;
        }
        self.octets = total;
        true
    }

    /// True when the budget could raise the charge to `total` now; unlike
    /// `try_grow_to`, asking leaves no mark on the budget.
    pub fn could_grow_to(&self, total: u64) -> bool {
        let more = total.saturating_sub(self.octets);
        self.budget.used_octets().saturating_add(more) <= self.budget.limit_octets()
    }

    /// Gives everything back (the body was dropped).
    pub fn release(&mut self) {
        self.budget.give_back(std::mem::take(&mut self.octets));
    }

    /// Octets held.
    pub fn octets(&self) -> u64 {
        self.octets
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.release();
    }
}

impl fmt::Debug for Charge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Charge({} octets)", self.octets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_are_given_back_on_drop_and_refusals_leave_pressure() {
        let b = ContentBudget::new(1000);
        let mut a = b.charge();
        assert!(a.try_grow_to(600));
        assert!(a.try_grow_to(400), "shrinking requests are no-ops");
        assert_eq!(b.used_octets(), 600);
        assert!(!b.exhausted());
        let mut c = b.charge();
        assert!(!c.try_grow_to(500));
        assert_eq!((c.octets(), b.used_octets()), (0, 600));
        assert!(b.exhausted(), "a refusal marks the budget until use falls");
        drop(c);
        assert!(b.exhausted(), "600 is above half of 1000");
        a.release();
        assert_eq!(b.used_octets(), 0);
        assert!(!b.exhausted());
        assert!(a.try_grow_to(1000));
        assert!(b.exhausted(), "full");
        a.release();
        assert!(!a.could_grow_to(1001));
        assert!(!b.exhausted(), "asking is not a refusal");
        drop(a);
        assert_eq!(b.used_octets(), 0);
        assert!(!b.exhausted());
    }
}
