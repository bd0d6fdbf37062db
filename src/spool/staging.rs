//! What waits for the next group commit: the staged frames, the
//! bookkeeping each must apply once durable, the batch its waiters share,
//! and the copy-forward frames put in front of a batch.
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
use super::record::{encode_record, Outcome, Record};
use super::SpoolError;
use crate::message::MessageId;

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

/// Frames waiting for the next commit.
#[derive(Default)]
pub(super) struct Staging {
    pub(super) buf: Vec<u8>,
    pub(super) frames: Vec<(usize, usize, BookOp)>,
    pub(super) copies: Vec<CopyReq>,
    pub(super) batch: Rc<Batch>,
}

impl Staging {
    pub(super) fn is_empty(&self) -> bool {
        self.frames.is_empty() && self.copies.is_empty()
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
    frames: Vec<(usize, usize, BookOp)>,
) -> (Vec<u8>, Vec<(usize, usize, BookOp)>) {
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
        ops.push((out.len(), c.frame.len(), BookOp::Message(c.id)));
        out.extend_from_slice(&c.frame);
        let Some(st) = book.state_of(&c.id) else {
            continue;
        };
        for (rcpt, outcome, reply) in &st.finals {
            let rec = Record::Outcome {
                id: c.id,
                rcpt: *rcpt,
                outcome: *outcome,
                reply: reply.to_string(),
            };
            let start = out.len();
            let len = encode_record(&rec, 0, &mut out);
            ops.push((
                start,
                len,
                BookOp::Outcome(c.id, *rcpt, *outcome, reply.clone()),
            ));
        }
        if let Some((next, attempts)) = st.retry {
            let rec = Record::Retry {
                id: c.id,
                next_attempt_ms: next,
                attempts,
            };
            let start = out.len();
            let len = encode_record(&rec, 0, &mut out);
            ops.push((start, len, BookOp::Retry(c.id, next, attempts)));
        }
    }
    let shift = out.len();
    out.extend_from_slice(&buf);
    ops.extend(frames.into_iter().map(|(s, l, op)| (s + shift, l, op)));
    (out, ops)
}
