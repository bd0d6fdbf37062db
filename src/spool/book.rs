//! Compaction bookkeeping: which segments still matter, and the little
//! per-message state a copy-forward must carry.
//!
//! Pure in-memory state, fed in file order by recovery and, after each
//! durable commit, by the writer. No I/O here. It must never call a segment
//! deletable while a live MESSAGE sits in it, or while a record in it
//! cancels (DONE) or settles (final OUTCOME) a message whose MESSAGE lies in
//! an older segment that still exists (SPEC.md section 5). May call:
//! `spool::record` (`Outcome`), `message`, runtime (hash maps).

use super::record::Outcome;
use crate::message::{IdTable, MessageId};
use crate::runtime::hash::Map;
use std::collections::{BTreeMap, BTreeSet};

/// What a live message's later records changed; carried along by a
/// copy-forward so that the copy alone tells the whole story. Absent for
/// the common case of a message nobody has tried to deliver yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MsgState<'a> {
    /// Final outcomes: (recipient index, outcome, reply).
    pub(crate) finals: &'a [(u32, Outcome, Box<str>)],
    /// Last RETRY: (next attempt ms, attempts).
    pub(crate) retry: Option<(u64, u32)>,
    /// Last REBIND: the binding (`None` inside: `default`).
    pub(crate) rebind: Option<Option<&'a str>>,
}

/// Where a live message's current MESSAGE record is, and its last RETRY:
/// 24 bytes at 4-byte alignment (a million deferred messages each have
/// one).
#[derive(Debug)]
struct Live {
    seg: u32,
    offset: u32,
    len: u32,
    /// Last RETRY's attempts + 1 (0: none).
    retry_attempts_1: u32,
    /// Last RETRY's next attempt ms, low and high halves.
    retry_at: [u32; 2],
}

impl Live {
    fn retry(&self) -> Option<(u64, u32)> {
        let at = u64::from(self.retry_at[0]) | u64::from(self.retry_at[1]) << 32;
        self.retry_attempts_1.checked_sub(1).map(|n| (at, n))
    }

    fn set_retry(&mut self, at: u64, attempts: u32) {
        self.retry_at = [at as u32, (at >> 32) as u32];
        self.retry_attempts_1 = attempts.saturating_add(1);
    }
}

#[derive(Debug, Default)]
struct SegInfo {
    /// Live messages whose current MESSAGE record is here.
    live: u32,
    /// Their MESSAGE frames' bytes.
    live_bytes: u64,
    /// End of the last frame known in the segment.
    end: u64,
    /// Origin segments of every message its records mention.
    origins: BTreeSet<u32>,
}

/// A live message to copy forward: its id and current location.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct CopySource {
    pub(crate) id: MessageId,
    pub(crate) seg: u32,
    pub(crate) offset: u32,
    pub(crate) len: u32,
}

/// Compaction bookkeeping for one shard.
#[derive(Debug, Default)]
pub(crate) struct Book {
    live: IdTable<Live>,
    /// Final outcomes of live messages that have some (rare: a message
    /// partly delivered).
    finals: Map<MessageId, Vec<(u32, Outcome, Box<str>)>>,
    /// Last REBIND of live messages that have one (rare: an operator or a
    /// group moved them).
    rebinds: Map<MessageId, Option<Box<str>>>,
    segs: BTreeMap<u32, SegInfo>,
}

impl Book {
    /// Notes that segment `seg` exists and holds frames up to `end`.
    pub(crate) fn add_segment(&mut self, seg: u32, end: u64) {
        let info = self.segs.entry(seg).or_default();
        info.end = info.end.max(end);
    }

    fn touch(&mut self, seg: u32, end: u64) -> &mut SegInfo {
        let info = self.segs.entry(seg).or_default();
        info.end = info.end.max(end);
        info
    }

    /// A MESSAGE record for `id` landed at `seg:offset`. A second MESSAGE
    /// for a live id is a copy-forward: the message moves, its state stays.
    pub(crate) fn on_message(&mut self, seg: u32, id: MessageId, offset: u32, len: u32) {
        let end = u64::from(offset) + u64::from(len);
        let (retry_attempts_1, retry_at) = match self.live.get(&id) {
            Some(old) => {
                let (old_seg, old_len) = (old.seg, old.len);
                let kept = (old.retry_attempts_1, old.retry_at);
                if let Some(info) = self.segs.get_mut(&old_seg) {
                    info.live = info.live.saturating_sub(1);
                    info.live_bytes = info.live_bytes.saturating_sub(u64::from(old_len));
                }
                // The copy's own segment now depends on the old one going
                // first only through the records that cancel it; none here.
                kept
            }
            None => (0, [0, 0]),
        };
        let info = self.touch(seg, end);
        info.live += 1;
        info.live_bytes += u64::from(len);
        self.live.insert(
            id,
            Live {
                seg,
                offset,
                len,
                retry_attempts_1,
                retry_at,
            },
        );
    }

    /// Any non-MESSAGE record for `id` landed in `seg`, ending at `end`.
    /// Returns the message's entry if it is live.
    fn on_ref(&mut self, seg: u32, id: MessageId, end: u64) -> Option<&mut Live> {
        let origin = self.live.get(&id).map_or(seg, |l| l.seg);
        self.touch(seg, end).origins.insert(origin);
        self.live.get_mut(&id)
    }

    /// A RECIPIENT_OUTCOME record landed.
    pub(crate) fn on_outcome(
        &mut self,
        seg: u32,
        end: u64,
        id: MessageId,
        rcpt: u32,
        outcome: Outcome,
        reply: &str,
    ) {
        if self.on_ref(seg, id, end).is_none() || !outcome.is_final() {
            return;
        }
        let finals = self.finals.entry(id).or_default();
        if !finals.iter().any(|(r, _, _)| *r == rcpt) {
            finals.push((rcpt, outcome, reply.into()));
        }
    }

    /// A RETRY record landed.
    pub(crate) fn on_retry(&mut self, seg: u32, end: u64, id: MessageId, next_ms: u64, n: u32) {
        if let Some(live) = self.on_ref(seg, id, end) {
            live.set_retry(next_ms, n);
        }
    }

    /// A REBIND record landed.
    pub(crate) fn on_rebind(&mut self, seg: u32, end: u64, id: MessageId, binding: Option<&str>) {
        if self.on_ref(seg, id, end).is_some() {
            self.rebinds.insert(id, binding.map(Into::into));
        }
    }

    /// A DONE record landed.
    pub(crate) fn on_done(&mut self, seg: u32, end: u64, id: MessageId) {
        self.on_ref(seg, id, end);
        self.finals.remove(&id);
        self.rebinds.remove(&id);
        if let Some(old) = self.live.remove(&id) {
            if let Some(info) = self.segs.get_mut(&old.seg) {
                info.live = info.live.saturating_sub(1);
                info.live_bytes = info.live_bytes.saturating_sub(u64::from(old.len));
            }
        }
    }

    /// Is `id` live?
    pub(crate) fn is_live(&self, id: &MessageId) -> bool {
        self.live.contains(id)
    }

    /// The segment holding `id`'s current MESSAGE record, if live.
    /// Where a live message's MESSAGE frame is: (segment, offset, length).
    pub(crate) fn location_of(&self, id: &MessageId) -> Option<(u32, u32, u32)> {
        self.live.get(id).map(|l| (l.seg, l.offset, l.len))
    }

    pub(crate) fn segment_of(&self, id: &MessageId) -> Option<u32> {
        self.live.get(id).map(|l| l.seg)
    }

    /// The state a copy of `id` must carry (None: nothing beyond the MESSAGE).
    pub(crate) fn state_of(&self, id: &MessageId) -> Option<MsgState<'_>> {
        let retry = self.live.get(id)?.retry();
        let finals = self.finals.get(id).map_or(&[][..], Vec::as_slice);
        let rebind = self.rebinds.get(id).map(Option::as_deref);
        (retry.is_some() || !finals.is_empty() || rebind.is_some()).then_some(MsgState {
            finals,
            retry,
            rebind,
        })
    }

    /// Segments that may be deleted now, oldest first. A segment goes when
    /// none of its messages is live and every older segment its records
    /// mention goes before it (else a DONE or outcome would be lost while
    /// the MESSAGE it cancels survives).
    pub(crate) fn deletable(&self, active: u32) -> Vec<u32> {
        self.going(active, |info| info.live == 0)
    }

    /// Old segments worth emptying by copying their live messages forward:
    /// sparse (live MESSAGE bytes at most `max_live_percent` of the segment)
    /// and deletable once empty. Oldest first, until `max_bytes` of copies.
    pub(crate) fn copy_plan(
        &self,
        active: u32,
        max_live_percent: u64,
        max_bytes: u64,
    ) -> Vec<CopySource> {
        let sparse = |info: &SegInfo| info.live_bytes * 100 <= info.end * max_live_percent;
        let segs: BTreeSet<u32> = self
            .going(active, sparse)
            .into_iter()
            .filter(|s| self.segs.get(s).is_some_and(|i| i.live > 0))
            .collect();
        let mut by_seg: BTreeMap<u32, Vec<CopySource>> = BTreeMap::new();
        for (id, l) in self.live.iter() {
            if segs.contains(&l.seg) {
                by_seg.entry(l.seg).or_default().push(CopySource {
                    id,
                    seg: l.seg,
                    offset: l.offset,
                    len: l.len,
                });
            }
        }
        let mut plan: Vec<CopySource> = Vec::new();
        let mut bytes = 0u64;
        for (_, mut these) in by_seg {
            let more: u64 = these.iter().map(|c| u64::from(c.len)).sum();
            // Whole segments only: a half-copied one cannot go anyway.
            if !plan.is_empty() && bytes + more > max_bytes {
                break;
            }
            these.sort_by_key(|c| c.offset);
            bytes += more;
            plan.extend(these);
        }
        plan
    }

    /// Old segments, oldest first, for which `empty` holds and whose
    /// records mention only themselves or segments already in the list or
    /// gone.
    fn going(&self, active: u32, empty: impl Fn(&SegInfo) -> bool) -> Vec<u32> {
        let mut out: Vec<u32> = Vec::new();
        for (&seg, info) in &self.segs {
            if seg >= active || !empty(info) {
                continue;
            }
            let ok = info
                .origins
                .iter()
                .all(|o| *o == seg || !self.segs.contains_key(o) || out.binary_search(o).is_ok());
            if ok {
                out.push(seg);
            }
        }
        out
    }

    /// A segment's live MESSAGE bytes and its end offset.
    pub(crate) fn usage(&self, seg: u32) -> Option<(u64, u64)> {
        self.segs.get(&seg).map(|i| (i.live_bytes, i.end))
    }

    /// Forgets a deleted segment.
    pub(crate) fn remove_segment(&mut self, seg: u32) {
        self.segs.remove(&seg);
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
    fn done_in_younger_segment_waits_for_the_older_one() {
        let mut b = Book::default();
        b.on_message(1, id(1), 32, 100);
        b.on_message(1, id(2), 132, 100);
        b.on_done(2, 64, id(1));
        assert_eq!(b.deletable(3), Vec::<u32>::new());
        b.on_done(2, 96, id(2));
        assert_eq!(b.deletable(3), vec![1, 2]);
    }

    #[test]
    fn a_copy_moves_the_message_and_keeps_its_state() {
        let mut b = Book::default();
        b.on_message(1, id(1), 32, 1000);
        b.on_message(1, id(2), 1032, 100);
        b.on_done(1, 1200, id(1));
        b.on_outcome(2, 100, id(2), 0, Outcome::Delivered, "250 ok");
        b.on_retry(2, 150, id(2), 99, 1);
        b.add_segment(3, 32);
        let plan = b.copy_plan(3, 25, 1 << 20);
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].id, id(2));
        b.on_message(3, id(2), 32, 100);
        assert_eq!(b.segment_of(&id(2)), Some(3));
        let st = b.state_of(&id(2)).expect("state kept");
        assert_eq!(st.retry, Some((99, 1)));
        assert_eq!(st.finals.len(), 1);
        assert_eq!(b.deletable(4), vec![1, 2]);
    }

    #[test]
    fn dense_segments_are_not_copied() {
        let mut b = Book::default();
        b.on_message(1, id(1), 32, 1000);
        b.add_segment(2, 32);
        assert!(b.copy_plan(2, 25, 1 << 20).is_empty());
    }

    /// Memory per deferred message in the book (see the queue's
    /// `queue_memory_per_deferred_message`; run alone).
    #[test]
    #[ignore = "measurement: run alone"]
    fn book_memory_per_deferred_message() {
        const N: u32 = 1_000_000;
        let before = crate::runtime::heap_in_use();
        let mut b = Book::default();
        let id = |seq| MessageId {
            epoch_ms: 1,
            shard: 0,
            seq,
        };
        for n in 0..N {
            b.on_message(n / 8000, id(n), (n % 8000) * 4400, 4400);
        }
        for n in 0..N {
            b.on_retry(200, u64::from(n) * 40, id(n), 60_000, 1);
        }
        let used = crate::runtime::heap_in_use() - before;
        println!("book: {} bytes per deferred message", used / N as usize);
    }
}
