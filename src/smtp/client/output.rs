//! What the client session has to write, in order: its own bytes
//! (commands, and the few octets DATA framing adds) and runs of a
//! transaction's content, referred to rather than copied, so that a body
//! goes from the shared `Content` to the socket without a copy here.
//!
//! Owns `Output`. May call: `crate::message` (`Content`). Must never: do
//! I/O, or copy content into its own bytes (`to_vec` aside, asked for by
//! name).

use std::ops::Range;

use crate::message::Content;

/// One run of the output.
#[derive(Clone, Debug)]
enum Run {
    /// Bytes of `Output::bytes`.
    Own(Range<usize>),
    /// Octets of one part of a content.
    Shared {
        content: Content,
        part: usize,
        range: Range<usize>,
    },
}

/// Bytes to write, in order (see the module comment).
#[derive(Clone, Debug, Default)]
pub struct Output {
    bytes: Vec<u8>,
    /// Empty while the output is only `bytes`.
    runs: Vec<Run>,
    /// `bytes` before this offset are in `runs` already.
    mark: usize,
}

impl Output {
    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty() && self.runs.is_empty()
    }

    /// Octets to write in all.
    pub fn len(&self) -> usize {
        self.slices().map(<[u8]>::len).sum()
    }

    /// The session's own bytes, to append to.
    pub(super) fn bytes(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// Appends the session's own octets.
    pub(super) fn extend_from_slice(&mut self, b: &[u8]) {
        self.bytes.extend_from_slice(b);
    }

    /// Appends `range` of `content`'s part `part`, by reference.
    pub(super) fn push_shared(&mut self, content: &Content, part: usize, range: Range<usize>) {
        if range.is_empty() {
            return;
        }
        if let Some(Run::Shared {
            content: c,
            part: p,
            range: r,
        }) = self.runs.last_mut()
        {
            if self.mark == self.bytes.len()
                && *p == part
                && r.end == range.start
                && Content::ptr_eq(c, content)
            {
                r.end = range.end;
                return;
            }
        }
        self.close_own();
        self.runs.push(Run::Shared {
            content: content.clone(),
            part,
            range,
        });
    }

    fn close_own(&mut self) {
        if self.mark < self.bytes.len() {
            self.runs.push(Run::Own(self.mark..self.bytes.len()));
            self.mark = self.bytes.len();
        }
    }

    /// The octets to write, in order, borrowed.
    pub fn slices(&self) -> impl Iterator<Item = &[u8]> {
        let whole = self.runs.is_empty().then_some(&self.bytes[..]);
        let runs = self.runs.iter().map(|r| match r {
            Run::Own(range) => &self.bytes[range.clone()],
            Run::Shared {
                content,
                part,
                range,
            } => &content.parts()[*part][range.clone()],
        });
        let tail = (!self.runs.is_empty()).then_some(&self.bytes[self.mark..]);
        whole
            .into_iter()
            .chain(runs)
            .chain(tail)
            .filter(|s| !s.is_empty())
    }

    /// Empties it, keeping its buffers for the next output.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.runs.clear();
        self.mark = 0;
    }

    /// The octets joined into one buffer (a copy when content is referred to).
    pub fn into_vec(self) -> Vec<u8> {
        if self.runs.is_empty() {
            return self.bytes;
        }
        let mut v = Vec::with_capacity(self.len());
        for s in self.slices() {
            v.extend_from_slice(s);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_come_out_in_order_and_refer_to_the_content() {
        let c = Content::new(b"H\r\n".to_vec(), b"abc\r\n".to_vec());
        let mut o = Output::default();
        assert!(o.is_empty());
        o.extend_from_slice(b"X");
        o.push_shared(&c, 0, 0..3);
        o.push_shared(&c, 1, 0..2);
        o.push_shared(&c, 1, 2..5);
        o.push_shared(&c, 1, 5..5);
        o.extend_from_slice(b".\r\n");
        let slices: Vec<&[u8]> = o.slices().collect();
        assert_eq!(slices, [&b"X"[..], b"H\r\n", b"abc\r\n", b".\r\n"]);
        assert_eq!(slices[2].as_ptr(), c.body().as_ptr(), "not copied");
        assert_eq!(o.len(), 12);
        assert_eq!(o.clone().into_vec(), b"XH\r\nabc\r\n.\r\n");
        o.clear();
        assert!(o.is_empty() && o.slices().next().is_none());
        o.extend_from_slice(b"QUIT\r\n");
        assert_eq!(o.into_vec(), b"QUIT\r\n");
    }
}
