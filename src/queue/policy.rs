//! Retry and expiry decisions (Momentum's `retry_interval`,
//! `max_retry_interval`, `max_retries`, `message_expiration`): pure
//! arithmetic on milliseconds over the compiled [`RetryPolicy`], which
//! `config` owns as data.
//!
//! May call: config (the policy's fields). Must never: read a clock (time
//! comes in as a parameter) or do I/O.

pub use crate::config::RetryPolicy;

/// What to do after a transient failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterDeferral {
    /// Try again at this time (ms since the epoch).
    RetryAt(u64),
    /// Lifetime exceeded: fail permanently.
    Expired,
    /// `max_retries` used up: fail permanently.
    RetriesExhausted,
}

impl RetryPolicy {
    /// Delay after transient failure number `n` (n ≥ 1):
    /// `min(retry_interval × 2^(n−1), max_retry_interval)`.
    pub fn delay_ms(&self, n: u32) -> u64 {
        let doublings = n.saturating_sub(1).min(63);
        self.retry_interval_ms
            .saturating_mul(1u64 << doublings)
            .min(self.max_retry_interval_ms)
            .max(1)
    }

    /// The time a message received at `received_at_ms` expires.
    pub fn expires_at(&self, received_at_ms: u64) -> u64 {
        received_at_ms.saturating_add(self.message_expiration_ms)
    }

    /// Decides after failure number `attempts` at `now_ms`. A retry never
    /// lands after expiry: the last one is at the expiry time itself.
    pub fn after_deferral(&self, attempts: u32, received_at_ms: u64, now_ms: u64) -> AfterDeferral {
        let expires = self.expires_at(received_at_ms);
        if now_ms >= expires {
            return AfterDeferral::Expired;
        }
        if self.max_retries.is_some_and(|max| attempts > max) {
            return AfterDeferral::RetriesExhausted;
        }
        AfterDeferral::RetryAt(now_ms.saturating_add(self.delay_ms(attempts)).min(expires))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubling_with_cap() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay_ms(1), 1_200_000);
        assert_eq!(p.delay_ms(2), 2_400_000);
        assert_eq!(p.delay_ms(6), 38_400_000);
        assert_eq!(p.delay_ms(7), 43_200_000);
        assert_eq!(p.delay_ms(500), 43_200_000);
    }

    #[test]
    fn max_retries_example_from_the_reference() {
        // max_retries 5, interval 1200 s, no cap: fails after 37200 s.
        let p = RetryPolicy {
            max_retries: Some(5),
            max_retry_interval_ms: u64::MAX,
            message_expiration_ms: u64::MAX / 2,
            ..Default::default()
        };
        let mut now = 0;
        let mut n = 0;
        loop {
            n += 1;
            match p.after_deferral(n, 0, now) {
                AfterDeferral::RetryAt(t) => now = t,
                other => {
                    assert_eq!(other, AfterDeferral::RetriesExhausted);
                    break;
                }
            }
        }
        assert_eq!(now, 37_200_000);
        assert_eq!(n, 6, "five retries, then the sixth failure is final");
    }

    #[test]
    fn never_retries_past_expiry() {
        let p = RetryPolicy::default();
        let received = 1_000;
        let near_end = p.expires_at(received) - 10;
        assert_eq!(
            p.after_deferral(9, received, near_end),
            AfterDeferral::RetryAt(p.expires_at(received))
        );
        assert_eq!(
            p.after_deferral(10, received, p.expires_at(received)),
            AfterDeferral::Expired
        );
    }
}
