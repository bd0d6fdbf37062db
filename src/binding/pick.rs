//! Choosing group members by weight: smooth weighted round-robin (each
//! pick adds every member's weight to its credit and takes the member with
//! the most, which then pays the total). Over any run of picks each
//! member's count is within one of its exact share, and members are
//! interleaved rather than sent in bursts.
//!
//! Owns the credits. May call: nothing. Must never: do I/O.

/// The credits of one group's members.
#[derive(Clone, Debug, Default)]
pub struct Credits {
    credit: Vec<i64>,
}

impl Credits {
    /// The index of the next member among `weights` (members whose weight
    /// is 0 are never picked; `None` when every weight is 0). A change in
    /// the number of members starts the credits over.
    pub fn next(&mut self, weights: &[u32]) -> Option<usize> {
        if self.credit.len() != weights.len() {
            self.credit = vec![0; weights.len()];
        }
        let total: i64 = weights.iter().map(|w| i64::from(*w)).sum();
        if total == 0 {
            return None;
        }
        let mut best: Option<usize> = None;
        for (i, w) in weights.iter().enumerate() {
            if *w == 0 {
                continue;
            }
            self.credit[i] += i64::from(*w);
            if best.is_none_or(|b| self.credit[i] > self.credit[b]) {
                best = Some(i);
            }
        }
        let b = best?;
        self.credit[b] -= total;
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_stay_within_one_of_the_weights_and_interleave() {
        let weights = [5, 3, 2];
        let mut c = Credits::default();
        let mut counts = [0u32; 3];
        let mut longest_run = (0, 0, None);
        for n in 1..=1000u32 {
            let i = c.next(&weights).unwrap();
            counts[i] += 1;
            for (k, w) in weights.iter().enumerate() {
                let exact = f64::from(n) * f64::from(*w) / 10.0;
                assert!(
                    (f64::from(counts[k]) - exact).abs() <= 1.0,
                    "pick {n}: {counts:?}"
                );
            }
            longest_run = match longest_run {
                (run, best, Some(p)) if p == i => (run + 1, best.max(run + 1), Some(i)),
                (_, best, _) => (1, best.max(1), Some(i)),
            };
        }
        assert_eq!(counts, [500, 300, 200]);
        assert!(longest_run.1 <= 2, "bursts: {longest_run:?}");
        // A member that drops to weight 0 gets nothing; all 0 picks none.
        assert!((0..20).all(|_| c.next(&[1, 0, 1]) != Some(1)));
        assert_eq!(c.next(&[0, 0, 0]), None);
    }
}
