//! The resident-content cache: a message's envelope and body kept in
//! memory from reception until it is finished or first deferred, so its
//! first attempt (and a DSN for it) reads nothing back from the spool.
//! Bounded per shard by a count and a byte budget (`max_resident_messages`,
//! `max_resident_size`, read at each reception); a message that does not
//! fit is simply read from the spool when due.
//!
//! Owns the cached content and its byte count. May call: message types,
//! runtime (hash maps). Must never: do I/O, or copy a body: the
//! reception's `Content` is shared with the spool's staging and every
//! transaction of the message.

use crate::runtime::hash::Map;
use std::rc::Rc;

use crate::message::{Content, Envelope, MessageId};

/// One message's content.
struct Kept {
    env: Rc<Envelope>,
    body: Content,
}

/// How much content may be kept.
#[derive(Clone, Copy, Debug)]
pub(super) struct Budget {
    /// Messages.
    pub(super) messages: usize,
    /// Their body octets.
    pub(super) octets: usize,
}

/// Content kept from reception.
#[derive(Default)]
pub(super) struct Resident {
    kept: Map<MessageId, Kept>,
    octets: usize,
}

impl Resident {
    /// Keeps a message's content if it fits in `budget`.
    pub(super) fn keep(&mut self, id: MessageId, env: Envelope, content: Content, budget: Budget) {
        let octets = self.octets + content.len();
        if octets <= budget.octets && self.kept.len() < budget.messages {
            self.octets = octets;
            self.kept.insert(
                id,
                Kept {
                    env: Rc::new(env),
                    body: content,
                },
            );
        }
    }

    /// The content, shared, if it is kept.
    pub(super) fn get(&self, id: &MessageId) -> Option<(Rc<Envelope>, Content)> {
        self.kept
            .get(id)
            .map(|k| (Rc::clone(&k.env), k.body.clone()))
    }

    /// Forgets a message's content (done, or deferred).
    pub(super) fn forget(&mut self, id: &MessageId) {
        if let Some(k) = self.kept.remove(id) {
            self.octets = self.octets.saturating_sub(k.body.len());
        }
    }

    /// Bytes of bodies kept now.
    #[cfg(test)]
    fn octets(&self) -> usize {
        self.octets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(seq: u32) -> MessageId {
        MessageId {
            epoch_ms: 1,
            shard: 0,
            seq,
        }
    }

    #[test]
    fn keeps_within_the_budget_and_forgetting_frees_it() {
        let mut r = Resident::default();
        let b = Budget {
            messages: 100,
            octets: 10,
        };
        let env = || Envelope::new("a@example.com", &["b@example.net"]);
        r.keep(id(1), env(), vec![b'x'; 6].into(), b);
        r.keep(id(2), env(), vec![b'y'; 6].into(), b);
        assert!(r.get(&id(1)).is_some());
        assert!(
            r.get(&id(2)).is_none(),
            "over the budget: read from the spool"
        );
        assert_eq!(r.octets(), 6);
        let (_, body) = r.get(&id(1)).unwrap();
        let (_, again) = r.get(&id(1)).unwrap();
        assert!(
            Content::ptr_eq(&body, &again),
            "the body is shared, not copied"
        );
        r.forget(&id(1));
        assert_eq!(r.octets(), 0);
        r.keep(id(3), env(), vec![b'z'; 10].into(), b);
        assert!(r.get(&id(3)).is_some(), "the budget came back");
        r.forget(&id(9));
        assert_eq!(r.octets(), 10);
    }

    #[test]
    fn the_count_bounds_it_too_and_zero_keeps_nothing() {
        let mut r = Resident::default();
        let env = || Envelope::new("a@example.com", &["b@example.net"]);
        let two = Budget {
            messages: 2,
            octets: 1 << 20,
        };
        for n in 1..=3 {
            r.keep(id(n), env(), vec![b'x'; 6].into(), two);
        }
        assert!(r.get(&id(2)).is_some() && r.get(&id(3)).is_none());
        let none = Budget {
            messages: 0,
            octets: 1 << 20,
        };
        r.keep(id(4), env(), vec![b'x'; 6].into(), none);
        assert!(r.get(&id(4)).is_none());
    }
}
