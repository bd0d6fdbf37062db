//! A message's content once received: the trace header intake wrote, kept
//! beside the body as the client sent it (dot-unstuffed), shared by every
//! stage that needs it without being copied or joined.
//!
//! Owns `Content`. May call: nothing (std only). Must never: copy the
//! parts it holds (only `to_vec`, asked for by name, makes one buffer).

use std::rc::Rc;

/// The content of one message: `head` (header fields the server added)
/// followed by `body`. Cloning shares it. The spool writes both into one
/// MESSAGE record, the queue keeps it resident, outbound sends it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Content(Rc<Parts>);

#[derive(Debug, Default, PartialEq, Eq)]
struct Parts {
    head: Vec<u8>,
    body: Vec<u8>,
}

impl Content {
    /// Content made of `head` then `body`, neither copied.
    pub fn new(head: Vec<u8>, body: Vec<u8>) -> Self {
        Content(Rc::new(Parts { head, body }))
    }

    /// Octets in all.
    pub fn len(&self) -> usize {
        self.0.head.len() + self.0.body.len()
    }

    /// True when there is no content at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The parts in order; together they are the message.
    pub fn parts(&self) -> [&[u8]; 2] {
        [&self.0.head, &self.0.body]
    }

    /// The added header fields.
    pub fn head(&self) -> &[u8] {
        &self.0.head
    }

    /// The body as received.
    pub fn body(&self) -> &[u8] {
        &self.0.body
    }

    /// A contiguous copy (for the few users that need one, such as a DSN
    /// quoting the message).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len());
        v.extend_from_slice(&self.0.head);
        v.extend_from_slice(&self.0.body);
        v
    }

    /// True when both share the same parts (no copy was made).
    pub fn ptr_eq(a: &Content, b: &Content) -> bool {
        Rc::ptr_eq(&a.0, &b.0)
    }
}

impl From<Vec<u8>> for Content {
    /// Content in one part (a body read back from the spool, a DSN).
    fn from(body: Vec<u8>) -> Self {
        Content::new(Vec::new(), body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_make_the_message_and_clones_share_them() {
        let c = Content::new(
            b"Received: x\r\n".to_vec(),
            b"Subject: y\r\n\r\nz\r\n".to_vec(),
        );
        assert_eq!(c.len(), 30);
        assert_eq!(c.parts().concat(), c.to_vec());
        assert!(c.to_vec().starts_with(b"Received: x\r\nSubject"));
        let d = c.clone();
        assert!(Content::ptr_eq(&c, &d));
        assert!(!Content::ptr_eq(&c, &Content::from(c.to_vec())));
        assert_eq!(
            Content::from(b"ab".to_vec()).parts(),
            [&b""[..], &b"ab"[..]]
        );
        assert!(Content::default().is_empty());
    }
}
