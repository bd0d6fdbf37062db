//! The resident-content cache: a message's envelope and body kept in
//! memory from reception until it is finished or first deferred, so its
//! first attempt (and a DSN for it) reads nothing back from the spool. Bounded by a byte budget per shard;
//! a message that does not fit is simply read from the spool when due.
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

/// Content kept from reception, within a budget of `max_octets`.
pub(super) struct Resident {
    kept: Map<MessageId, Kept>,
    octets: usize,
    max_octets: usize,
}

impl Resident {
    /// An empty cache that holds at most `max_octets` of bodies.
    pub(super) fn new(max_octets: usize) -> Resident {
        Resident {
            kept: Map::default(),
            octets: 0,
            max_octets,
        }
    }

    /// Keeps a message's content if it fits in the budget.
    pub(super) fn keep(&mut self, id: MessageId, env: Envelope, content: Content) {
        let octets = self.octets + content.len();
        if octets <= self.max_octets {
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
        let mut r = Resident::new(10);
        let env = || Envelope::new("a@example.com", &["b@example.net"]);
        r.keep(id(1), env(), vec![b'x'; 6].into());
        r.keep(id(2), env(), vec![b'y'; 6].into());
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
        r.keep(id(3), env(), vec![b'z'; 10].into());
        assert!(r.get(&id(3)).is_some(), "the budget came back");
        r.forget(&id(9));
        assert_eq!(r.octets(), 10);
    }
}
