//! The owner's book of back-offs in force: per slot key (a binding ×
//! domain), the rule that matched, until when it holds, and how far it
//! has recovered. A matching reply (re)starts the hold; once the hold is
//! over, each quiet `recover_after` is one step back towards the
//! configured limits, and after `steps` steps the back-off is gone.
//!
//! Sans-IO: every call takes `now`. May call: config (the rule and rate
//! types), runtime (hash maps). Must never: do I/O.

use std::sync::Arc;
use std::time::Instant;

use crate::config::{BackoffAction, BackoffRule, Rate};
use crate::runtime::hash::Map;

/// One back-off in force.
#[derive(Clone, Debug)]
struct Active {
    rule: BackoffRule,
    /// The key's configured connection limit, which recovery goes back to.
    limit: u32,
    /// The reply that started or last renewed it.
    reply: Arc<str>,
    hold_until: Instant,
    /// Recovery steps taken (0 while it holds).
    step: u32,
    next_step: Instant,
}

/// What a back-off allows on its key now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Effect {
    /// Connections allowed (over all shards), when lowered.
    pub connections: Option<u32>,
    /// Message rate allowed, when lowered.
    pub rate: Option<Rate>,
    /// Queued mail fails with this reply.
    pub fail: Option<Arc<str>>,
}

/// A change, for the events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The slot key.
    pub key: Arc<str>,
    /// The rule.
    pub rule: Arc<str>,
    /// What happened.
    pub what: ChangeKind,
    /// What it allows from now on (`None`: the configured limits).
    pub effect: Option<Effect>,
}

/// What happened to a back-off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// A matching reply started it.
    Started,
    /// A matching reply while it was recovering started it over.
    Restarted,
    /// Recovery step `n` of `of`.
    Step {
        /// This step.
        n: u32,
        /// Of so many.
        of: u32,
    },
    /// It is over.
    Ended,
}

/// The back-offs of the keys one shard owns.
#[derive(Default)]
pub struct BackoffBook {
    active: Map<Arc<str>, Active>,
}

impl BackoffBook {
    /// A reply matching `rule` on `key`: starts the back-off, restarts a
    /// recovering one, or extends the hold (no change then).
    pub fn matched(
        &mut self,
        key: &Arc<str>,
        rule: &BackoffRule,
        reply: &str,
        limit: u32,
        now: Instant,
    ) -> Option<Change> {
        let hold_until = now + rule.duration;
        let what = match self.active.get_mut(key) {
            Some(a) if a.step == 0 && a.rule.name == rule.name => {
                a.hold_until = hold_until;
                a.next_step = hold_until + rule.recover_after;
                a.limit = limit;
                return None;
            }
            Some(_) => ChangeKind::Restarted,
            None => ChangeKind::Started,
        };
        self.active.insert(
            key.clone(),
            Active {
                rule: rule.clone(),
                limit,
                reply: reply.into(),
                hold_until,
                step: 0,
                next_step: hold_until + rule.recover_after,
            },
        );
        Some(Change {
            key: key.clone(),
            rule: rule.name.clone(),
            what,
            effect: self.effect(key),
        })
    }

    /// Recovery steps and ends due by `now`.
    pub fn tick(&mut self, now: Instant) -> Vec<Change> {
        let mut out = Vec::new();
        let due: Vec<Arc<str>> = self
            .active
            .iter()
            .filter(|(_, a)| a.next_step <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            let Some(a) = self.active.get_mut(&key) else {
                continue;
            };
            a.step += 1;
            a.next_step = now + a.rule.recover_after;
            let (rule, n, of) = (a.rule.name.clone(), a.step, a.rule.steps);
            // Suspend and fail come back at once; the others step.
            let immediate = matches!(a.rule.action, BackoffAction::Suspend | BackoffAction::Fail);
            if n >= of || immediate {
                self.active.remove(&key);
                out.push(Change {
                    key,
                    rule,
                    what: ChangeKind::Ended,
                    effect: None,
                });
            } else {
                let effect = self.effect(&key);
                out.push(Change {
                    key,
                    rule,
                    what: ChangeKind::Step { n, of },
                    effect,
                });
            }
        }
        out
    }

    /// When `tick` next has work.
    pub fn next_due(&self) -> Option<Instant> {
        self.active.values().map(|a| a.next_step).min()
    }

    /// What the back-off on `key` allows now (`None`: no back-off).
    pub fn effect(&self, key: &str) -> Option<Effect> {
        let a = self.active.get(key)?;
        let limit = a.limit;
        let (k, n) = (a.step, a.rule.steps.max(1));
        // Step k of n goes k/n of the way back to the configured limit.
        let towards = |low: u32| low + (limit.saturating_sub(low)) * k / n;
        let mut e = Effect {
            connections: None,
            rate: None,
            fail: None,
        };
        match &a.rule.action {
            BackoffAction::Connections(c) => e.connections = Some(towards((*c).min(limit))),
            BackoffAction::Pause => {
                e.connections = Some(if k == 0 { 0 } else { towards(1).max(1) })
            }
            BackoffAction::Suspend => e.connections = Some(0),
            BackoffAction::Fail => {
                e.connections = Some(0);
                e.fail = Some(a.reply.clone());
            }
            // A lowered rate doubles with each step.
            BackoffAction::Rate(r) => {
                e.rate = Some(Rate {
                    count: r.count.saturating_mul(1 << k.min(16)),
                    per: r.per,
                })
            }
        }
        Some(e)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn rule(action: BackoffAction) -> BackoffRule {
        BackoffRule {
            name: "r".into(),
            code: Some("421".into()),
            status: None,
            text: None,
            domains: Vec::new(),
            action,
            duration: Duration::from_secs(10),
            recover_after: Duration::from_secs(5),
            steps: 3,
        }
    }

    #[test]
    fn holds_then_steps_back_then_ends() {
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        let key: Arc<str> = "d@b".into();
        let r = rule(BackoffAction::Connections(1));
        let mut b = BackoffBook::default();
        let c = b.matched(&key, &r, "421 slow down", 10, t0).unwrap();
        assert_eq!(c.what, ChangeKind::Started);
        assert_eq!(c.effect.unwrap().connections, Some(1));
        // Another match while it holds only extends the hold.
        assert_eq!(b.matched(&key, &r, "421 slow down", 10, s(8)), None);
        assert!(b.tick(s(22)).is_empty(), "hold 18 + quiet 5 = 23");
        let steps: Vec<_> = [23, 28, 33]
            .iter()
            .flat_map(|t| b.tick(s(*t)))
            .map(|c| (c.what, c.effect.and_then(|e| e.connections)))
            .collect();
        assert_eq!(
            steps,
            vec![
                (ChangeKind::Step { n: 1, of: 3 }, Some(4)),
                (ChangeKind::Step { n: 2, of: 3 }, Some(7)),
                (ChangeKind::Ended, None),
            ]
        );
        assert_eq!(b.effect(&key), None);
        assert_eq!(b.next_due(), None);
        // A match while recovering starts it over.
        b.matched(&key, &r, "x", 10, s(40));
        b.tick(s(55));
        assert_eq!(
            b.matched(&key, &r, "x", 10, s(56)).map(|c| c.what),
            Some(ChangeKind::Restarted)
        );
    }

    #[test]
    fn each_action_has_its_effect() {
        let t0 = Instant::now();
        let key: Arc<str> = "d@b".into();
        let rate = Rate {
            count: 60,
            per: Duration::from_secs(60),
        };
        let mut b = BackoffBook::default();
        b.matched(&key, &rule(BackoffAction::Rate(rate)), "x", 10, t0);
        assert_eq!(b.effect(&key).unwrap().rate, Some(rate));
        b.tick(t0 + Duration::from_secs(15));
        assert_eq!(b.effect(&key).unwrap().rate.unwrap().count, 120, "doubles");
        let mut b = BackoffBook::default();
        b.matched(&key, &rule(BackoffAction::Pause), "x", 10, t0);
        assert_eq!(b.effect(&key).unwrap().connections, Some(0));
        b.tick(t0 + Duration::from_secs(15));
        assert_eq!(b.effect(&key).unwrap().connections, Some(4));
        let mut b = BackoffBook::default();
        b.matched(&key, &rule(BackoffAction::Fail), "421 go away", 10, t0);
        let e = b.effect(&key).unwrap();
        assert_eq!(
            (e.connections, e.fail.as_deref()),
            (Some(0), Some("421 go away"))
        );
        let ended = b.tick(t0 + Duration::from_secs(15));
        assert_eq!(ended[0].what, ChangeKind::Ended, "fail comes back at once");
    }
}
