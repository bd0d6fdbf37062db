//! RFC 5321 §5.1 MX ordering: ascending preference, random order among
//! equal preferences, RFC 7505 null MX. Pure: the caller supplies the RNG.
//! May call: `outbound::dns::wire` (`MxRecord`). Must never: do I/O or
//! draw randomness of its own.

use super::wire::MxRecord;

/// Most exchanges kept per domain; more only add queries (and an
/// amplification lever for a hostile zone).
pub const MAX_EXCHANGES: usize = 20;

/// What the MX records of a domain tell us to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MxPlan {
    /// Exchanges `(preference, name)` in the order to try them.
    Exchanges(Vec<(u16, String)>),
    /// RFC 7505: the domain accepts no mail.
    NullMx,
}

/// Orders `records`. A root exchange (`"."`) can never be delivered to:
/// when nothing else is published the domain is a null MX (RFC 7505 asks
/// for exactly one such record with preference 0; we read any root-only set
/// that way), otherwise root entries are dropped. Duplicate exchanges keep
/// their best preference.
pub fn order_mx(records: &[MxRecord], rng: &mut fastrand::Rng) -> MxPlan {
    let mut list: Vec<(u16, String)> = records
        .iter()
        .filter(|r| !r.exchange.is_empty())
        .map(|r| (r.preference, r.exchange.clone()))
        .collect();
    // Sorting by name first makes the shuffle below depend only on the seed
    // and the record set, not on the order the server sent; it also makes
    // duplicates adjacent (O(n log n) even for a hostile 64 KiB answer).
    list.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
    list.dedup_by(|later, first| later.1 == first.1);
    if list.is_empty() {
        return MxPlan::NullMx;
    }
    // Shuffle first, then a stable sort: equal preferences keep the random
    // order, so load spreads across them (RFC 5321 §5.1).
    rng.shuffle(&mut list);
    list.sort_by_key(|(pref, _)| *pref);
    list.truncate(MAX_EXCHANGES);
    MxPlan::Exchanges(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mx(preference: u16, exchange: &str) -> MxRecord {
        MxRecord {
            preference,
            exchange: exchange.into(),
        }
    }

    fn names(plan: &MxPlan) -> Vec<&str> {
        match plan {
            MxPlan::Exchanges(l) => l.iter().map(|(_, n)| n.as_str()).collect(),
            MxPlan::NullMx => vec![],
        }
    }

    #[test]
    fn preference_order_and_dedup() {
        let recs = [mx(20, "b"), mx(10, "a"), mx(30, "c"), mx(5, "b")];
        let plan = order_mx(&recs, &mut fastrand::Rng::with_seed(1));
        assert_eq!(
            plan,
            MxPlan::Exchanges(vec![(5, "b".into()), (10, "a".into()), (30, "c".into())])
        );
    }

    #[test]
    fn equal_preferences_are_shuffled_deterministically_per_seed() {
        let recs: Vec<_> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|n| mx(10, n))
            .chain([mx(5, "first"), mx(50, "last")])
            .collect();
        let run = |seed| order_mx(&recs, &mut fastrand::Rng::with_seed(seed));
        assert_eq!(run(7), run(7));
        let mut seen = std::collections::HashSet::new();
        for seed in 0..20 {
            let n = names(&run(seed))
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>();
            assert_eq!(n.first().map(String::as_str), Some("first"));
            assert_eq!(n.last().map(String::as_str), Some("last"));
            seen.insert(n);
        }
        assert!(seen.len() > 5, "equal preferences must spread: {seen:?}");
    }

    #[test]
    fn order_does_not_depend_on_the_order_received() {
        let a = [mx(10, "x"), mx(10, "y"), mx(10, "z")];
        let b = [mx(10, "z"), mx(10, "x"), mx(10, "y")];
        let run = |recs: &[MxRecord]| order_mx(recs, &mut fastrand::Rng::with_seed(3));
        assert_eq!(run(&a), run(&b));
    }

    #[test]
    fn null_mx() {
        let rng = &mut fastrand::Rng::with_seed(0);
        assert_eq!(order_mx(&[mx(0, "")], rng), MxPlan::NullMx);
        // A stray root among real exchanges is only dropped.
        assert_eq!(names(&order_mx(&[mx(0, ""), mx(10, "a")], rng)), vec!["a"]);
    }

    #[test]
    fn long_lists_are_cut() {
        let recs: Vec<_> = (0..50).map(|i| mx(i, &format!("h{i}"))).collect();
        let plan = order_mx(&recs, &mut fastrand::Rng::with_seed(0));
        assert_eq!(names(&plan).len(), MAX_EXCHANGES);
        assert_eq!(names(&plan)[0], "h0");
    }
}
