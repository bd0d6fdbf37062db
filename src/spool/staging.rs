//! What waits for the next group commit: the staged frames, the
//! bookkeeping each must apply once durable, the batch its waiters share,
//! and the copy-forward frames put in front of a batch.
//!
//! A MESSAGE frame of new mail is staged as its encoded start (header,
//! id, envelope, body length) in the staging buffer plus a shared
//! reference to its content: the content is not copied here, only read
//! once for the payload CRC; the committer copies it into the write
//! buffer.
//!
//! In-memory only; no I/O. Used by the writer (which stages and commits)
//! and by maintenance (which stages copies). Must never: complete a batch
//! twice, or let a copy of a message that has ended or moved since it was
//! read into a batch. May call: `spool::book`, `spool::record`, `spool`
//! (`SpoolError`), `message`.

use std::cell::RefCell;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

use super::book::Book;
use super::record::{encode_message_head, encode_record, Outcome, Record};
use super::SpoolError;
use crate::message::{Content, Envelope, MessageId};

/// Completion shared by every waiter of one batch.
#[derive(Default)]
pub(super) struct Batch {
    result: RefCell<Option<Result<(), SpoolError>>>,
    wakers: RefCell<Vec<Waker>>,
}

impl Batch {
    pub(super) fn complete(&self, r: Result<(), SpoolError>) {
        *self.result.borrow_mut() = Some(r);
        for w in self.wakers.borrow_mut().drain(..) {
            w.wake();
        }
    }
}

/// What the bookkeeping must learn once a frame is durable.
pub(super) enum BookOp {
    Message(MessageId),
    Outcome(MessageId, u32, Outcome, Box<str>),
    Retry(MessageId, u64, u32),
    Done(MessageId),
    Rebind(MessageId, Option<Box<str>>),
}

/// A live message's MESSAGE frame, read back from an old segment, to be
/// written again at the front of the next batch (copy-forward).
pub(super) struct CopyReq {
    pub(super) id: MessageId,
    /// Segment the frame was read from; the copy is dropped if the message
    /// moved or ended meanwhile.
    pub(super) from: u32,
    pub(super) frame: Vec<u8>,
}

/// One staged frame, `len` octets: the first `len - shared.len()` are in
/// the staging buffer at `start`, the rest are `shared`'s parts.
pub(super) struct Staged {
    pub(super) start: usize,
    pub(super) len: usize,
    pub(super) shared: Option<Content>,
    pub(super) op: BookOp,
}

impl Staged {
    /// Octets of the frame held in the staging buffer.
    pub(super) fn own(&self) -> usize {
        self.len - self.shared.as_ref().map_or(0, Content::len)
    }
}

/// Appends a frame encoded whole into `buf`.
fn push_owned(
    buf: &mut Vec<u8>,
    frames: &mut Vec<Staged>,
    op: BookOp,
    encode: impl FnOnce(&mut Vec<u8>) -> usize,
) -> usize {
    let start = buf.len();
    let len = encode(buf);
    frames.push(Staged {
        start,
        len,
        shared: None,
        op,
    });
    len
}

/// Frames waiting for the next commit.
#[derive(Default)]
pub(super) struct Staging {
    pub(super) buf: Vec<u8>,
    pub(super) frames: Vec<Staged>,
    pub(super) copies: Vec<CopyReq>,
    pub(super) batch: Rc<Batch>,
    /// Octets staged, in the buffer and shared.
    pub(super) bytes: usize,
}

impl Staging {
    pub(super) fn is_empty(&self) -> bool {
        self.frames.is_empty() && self.copies.is_empty()
    }

    /// Stages a frame that `encode` appends to the buffer whole.
    pub(super) fn push(&mut self, op: BookOp, encode: impl FnOnce(&mut Vec<u8>) -> usize) {
        self.bytes += push_owned(&mut self.buf, &mut self.frames, op, encode);
    }

    /// Stages a MESSAGE frame whose content stays shared.
    pub(super) fn push_message(&mut self, id: &MessageId, env: &Envelope, content: &Content) {
        let start = self.buf.len();
        let own = encode_message_head(id, env, content.len(), &mut self.buf);
        let len = own + content.len();
        self.frames.push(Staged {
            start,
            len,
            shared: Some(content.clone()),
            op: BookOp::Message(*id),
        });
        self.bytes += len;
    }
}

/// Resolves with the batch's result once its commit finished.
pub(super) async fn wait_batch(batch: Rc<Batch>) -> Result<(), SpoolError> {
    poll_fn(|cx| {
        if let Some(r) = batch.result.borrow().as_ref() {
            return Poll::Ready(r.clone());
        }
        batch.wakers.borrow_mut().push(cx.waker().clone());
        Poll::Pending
    })
    .await
}

/// Puts the copy-forward frames of still-live messages in front of the
/// batch, each followed by records restating its outcomes and retry
/// state, so the copy stands alone once the old segment is gone. The
/// commit task calls it when every earlier batch is settled, so `book` is
/// exact.
pub(super) fn prepend_copies(
    book: &Book,
    copies: Vec<CopyReq>,
    buf: Vec<u8>,
    frames: Vec<Staged>,
) -> (Vec<u8>, Vec<Staged>) {
    if copies.is_empty() {
        return (buf, frames);
    }
    let mut out =
        Vec::with_capacity(buf.len() + copies.iter().map(|c| c.frame.len()).sum::<usize>());
    let mut ops = Vec::with_capacity(frames.len() + copies.len());
    for c in copies {
        if book.segment_of(&c.id) != Some(c.from) {
            continue; // DONE or moved since it was read
        }
        push_owned(&mut out, &mut ops, BookOp::Message(c.id), |out| {
            out.extend_from_slice(&c.frame);
            c.frame.len()
        });
        let Some(st) = book.state_of(&c.id) else {
            continue;
        };
        for (rcpt, outcome, reply) in st.finals {
            let rec = Record::Outcome {
                id: c.id,
                rcpt: *rcpt,
                outcome: *outcome,
                reply: reply.to_string(),
            };
            let op = BookOp::Outcome(c.id, *rcpt, *outcome, reply.clone());
            push_owned(&mut out, &mut ops, op, |out| encode_record(&rec, 0, out));
        }
        if let Some((next, attempts)) = st.retry {
            let rec = Record::Retry {
                id: c.id,
                next_attempt_ms: next,
                attempts,
            };
            let op = BookOp::Retry(c.id, next, attempts);
            push_owned(&mut out, &mut ops, op, |out| encode_record(&rec, 0, out));
        }
        if let Some(binding) = st.rebind {
            let rec = Record::Rebind {
                id: c.id,
                binding: binding.map(str::to_string),
            };
            let op = BookOp::Rebind(c.id, binding.map(Into::into));
            push_owned(&mut out, &mut ops, op, |out| encode_record(&rec, 0, out));
        }
    }
    let shift = out.len();
    out.extend_from_slice(&buf);
    ops.extend(frames.into_iter().map(|f| Staged {
        start: f.start + shift,
        ..f
    }));
    (out, ops)
}
