//! Recovery: rebuilds a shard's queue state from its segment files.
//!
//! Runs once at `Spool::open` (before the shard serves traffic) and in the
//! offline tools, so it may use `std::fs` and memmap2. It truncates torn
//! tails (only when asked to repair), skips corrupt records with a paniclog
//! entry, and never fails because of one bad record or segment.

use super::record::{decode_message_parts, decode_payload, RecordType, FRAME_HEADER_LEN};
use super::scan::{scan_segment, SegmentScan};
use super::{parse_segment_file_name, SpoolError};
use crate::message::MessageId;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// One recipient still waiting for delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingRecipient {
    /// Index into the envelope's recipient list.
    pub index: u32,
    /// The recipient address.
    pub address: Box<str>,
}

/// A live message found at recovery: where to re-read it, and what is left.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedMessage {
    /// Message id.
    pub id: MessageId,
    /// Segment holding the MESSAGE record.
    pub segment: u32,
    /// Offset of the MESSAGE frame in that segment.
    pub offset: u32,
    /// Length of the MESSAGE frame.
    pub len: u32,
    /// Attempts made so far (from the last RETRY record, else 0).
    pub attempts: u32,
    /// Next attempt time in ms since the epoch (0: as soon as possible).
    pub next_attempt_ms: u64,
    /// Reception time from the envelope (for expiry).
    pub received_at_ms: u64,
    /// Recipients without a final outcome, in envelope order.
    pub pending: Vec<PendingRecipient>,
}

/// Counts from one recovery run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryStats {
    /// Segment files scanned.
    pub segments: u32,
    /// Valid records read.
    pub records: u64,
    /// Live messages (no DONE record yet).
    pub messages: u64,
    /// Pending recipients over all live messages.
    pub recipients_pending: u64,
    /// Bytes of torn tails found (truncated when repairing).
    pub torn_bytes: u64,
    /// Corrupt records (regions) skipped.
    pub corrupt_records: u64,
    /// Segments whose header was unreadable.
    pub bad_headers: u32,
}

/// What recovery hands to the queue.
#[derive(Clone, Debug, Default)]
pub struct Recovered {
    /// Live messages, sorted by id.
    pub messages: Vec<QueuedMessage>,
    /// Counts.
    pub stats: RecoveryStats,
}

/// Compaction bookkeeping: which segments still matter.
#[derive(Debug, Default)]
pub(crate) struct Book {
    /// Live message -> segment holding its MESSAGE record.
    live: HashMap<MessageId, u32>,
    /// Per existing segment: live messages originating there, and the
    /// origin segments of every message its records mention.
    segs: BTreeMap<u32, SegInfo>,
}

#[derive(Debug, Default)]
struct SegInfo {
    live: u32,
    origins: BTreeSet<u32>,
}

impl Book {
    /// Notes that segment `seg` exists.
    pub(crate) fn add_segment(&mut self, seg: u32) {
        self.segs.entry(seg).or_default();
    }
    /// A MESSAGE record for `id` landed in `seg`.
    pub(crate) fn on_message(&mut self, seg: u32, id: MessageId) {
        self.live.insert(id, seg);
        self.segs.entry(seg).or_default().live += 1;
    }
    /// An OUTCOME/RETRY/DONE record for `id` landed in `seg`.
    pub(crate) fn on_ref(&mut self, seg: u32, id: MessageId, done: bool) {
        let origin = self.live.get(&id).copied().unwrap_or(seg);
        self.segs.entry(seg).or_default().origins.insert(origin);
        if done && self.live.remove(&id).is_some() {
            if let Some(info) = self.segs.get_mut(&origin) {
                info.live = info.live.saturating_sub(1);
            }
        }
    }
    /// Is `id` live?
    pub(crate) fn is_live(&self, id: &MessageId) -> bool {
        self.live.contains_key(id)
    }
    /// Segments that may be deleted now, oldest first. A segment goes when
    /// none of its messages is live and every older segment its records
    /// mention goes before it (else a DONE or outcome would be lost while
    /// the MESSAGE it cancels survives).
    pub(crate) fn deletable(&self, active: u32) -> Vec<u32> {
        let mut out: Vec<u32> = Vec::new();
        for (&seg, info) in &self.segs {
            if seg >= active || info.live > 0 {
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
    /// Forgets a deleted segment.
    pub(crate) fn remove_segment(&mut self, seg: u32) {
        self.segs.remove(&seg);
    }
}

/// Internal results the writer needs besides [`Recovered`].
#[derive(Debug, Default)]
pub(crate) struct RecoveryState {
    pub(crate) book: Book,
    pub(crate) next_segment: u32,
    pub(crate) max_epoch_ms: u64,
}

/// Lists `seg-*.log` files in `dir`, sorted by segment number.
pub fn list_segments(dir: &Path) -> std::io::Result<Vec<(u32, PathBuf)>> {
    let mut segs = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if let Some(n) = name.to_str().and_then(parse_segment_file_name) {
            segs.push((n, entry.path()));
        }
    }
    segs.sort();
    Ok(segs)
}

/// Reads a whole segment file through a read-only map.
pub fn map_segment(path: &Path) -> std::io::Result<Option<memmap2::Mmap>> {
    let file = std::fs::File::open(path)?;
    if file.metadata()?.len() == 0 {
        return Ok(None);
    }
    // SAFETY: the map is read-only and the spool directory is owned by this
    // shard; nothing truncates the file while recovery holds the map.
    let map = unsafe { memmap2::Mmap::map(&file)? };
    Ok(Some(map))
}

/// Scans every segment of `dir` and rebuilds the live queue. With `repair`,
/// torn tails are truncated and empty half-created segments removed.
pub(crate) fn recover_dir(
    dir: &Path,
    repair: bool,
) -> Result<(Recovered, RecoveryState), SpoolError> {
    let mut rec = Recovered::default();
    let mut st = RecoveryState::default();
    let mut msgs: HashMap<MessageId, QueuedMessage> = HashMap::new();
    let segs = list_segments(dir).map_err(|e| SpoolError::from_io("listing spool", &e))?;
    for (n, path) in &segs {
        st.next_segment = st.next_segment.max(n.saturating_add(1));
        let map = map_segment(path).map_err(|e| SpoolError::from_io("mapping segment", &e))?;
        let buf: &[u8] = map.as_deref().unwrap_or(&[]);
        let scan = scan_segment(buf);
        rec.stats.segments += 1;
        if scan.header.is_none() && scan.frames.is_empty() {
            // Creation was interrupted before the header was synced: no
            // record in it was ever acknowledged.
            if repair {
                log::warn!("spool: removing half-created segment {}", path.display());
                drop(map);
                std::fs::remove_file(path)
                    .map_err(|e| SpoolError::from_io("removing segment", &e))?;
            }
            continue;
        }
        st.book.add_segment(*n);
        if let Some(h) = scan.header {
            st.max_epoch_ms = st.max_epoch_ms.max(h.created_ms);
        } else {
            rec.stats.bad_headers += 1;
            log::error!(
                "paniclog: spool segment {} has a bad header",
                path.display()
            );
        }
        apply_scan(*n, buf, &scan, &mut rec.stats, &mut st, &mut msgs, path);
        if scan.torn_bytes > 0 {
            rec.stats.torn_bytes += scan.torn_bytes;
            log::warn!(
                "spool: torn tail of {} bytes at {}:{}",
                scan.torn_bytes,
                path.display(),
                scan.valid_end
            );
            drop(map);
            if repair {
                truncate(path, scan.valid_end)?;
            }
        }
    }
    rec.messages = msgs.into_values().collect();
    rec.messages.sort_by_key(|m| m.id);
    rec.stats.messages = rec.messages.len() as u64;
    rec.stats.recipients_pending = rec.messages.iter().map(|m| m.pending.len() as u64).sum();
    Ok((rec, st))
}

fn truncate(path: &Path, len: u64) -> Result<(), SpoolError> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| SpoolError::from_io("opening segment to truncate", &e))?;
    f.set_len(len)
        .and_then(|_| f.sync_all())
        .map_err(|e| SpoolError::from_io("truncating torn tail", &e))
}

fn apply_scan(
    seg: u32,
    buf: &[u8],
    scan: &SegmentScan,
    stats: &mut RecoveryStats,
    st: &mut RecoveryState,
    msgs: &mut HashMap<MessageId, QueuedMessage>,
    path: &Path,
) {
    for (start, end) in &scan.corrupt {
        stats.corrupt_records += 1;
        log::error!(
            "paniclog: spool corrupt record skipped at {}:{} ({} bytes)",
            path.display(),
            start,
            end - start
        );
    }
    for f in &scan.frames {
        let start = f.offset as usize + FRAME_HEADER_LEN;
        let payload = &buf[start..f.offset as usize + f.frame.len];
        if f.frame.record_type == RecordType::Message {
            match decode_message_parts(payload) {
                Ok((id, env, _body)) => {
                    stats.records += 1;
                    let received_at_ms = env.received_at_ms;
                    st.max_epoch_ms = st.max_epoch_ms.max(id.epoch_ms);
                    st.book.on_message(seg, id);
                    let pending = env
                        .recipients
                        .into_iter()
                        .enumerate()
                        .map(|(i, r)| PendingRecipient {
                            index: i as u32,
                            address: r.address.into_boxed_str(),
                        })
                        .collect();
                    msgs.insert(
                        id,
                        QueuedMessage {
                            id,
                            segment: seg,
                            offset: f.offset as u32,
                            len: f.frame.len as u32,
                            attempts: 0,
                            next_attempt_ms: 0,
                            received_at_ms,
                            pending,
                        },
                    );
                }
                Err(e) => undecodable(stats, path, f.offset, &e),
            }
            continue;
        }
        match decode_payload(f.frame.record_type, payload) {
            Ok(r) => {
                stats.records += 1;
                apply_record(seg, r, st, msgs);
            }
            Err(e) => undecodable(stats, path, f.offset, &e),
        }
    }
}

fn undecodable(stats: &mut RecoveryStats, path: &Path, off: u64, e: &dyn std::fmt::Display) {
    stats.corrupt_records += 1;
    log::error!(
        "paniclog: spool record at {}:{} checks out but does not decode: {e}",
        path.display(),
        off
    );
}

fn apply_record(
    seg: u32,
    r: super::record::Record,
    st: &mut RecoveryState,
    msgs: &mut HashMap<MessageId, QueuedMessage>,
) {
    use super::record::Record;
    let id = r.id();
    st.book.on_ref(seg, id, matches!(r, Record::Done { .. }));
    match r {
        Record::Message { .. } => {}
        Record::Outcome { rcpt, outcome, .. } => {
            if let (Some(m), true) = (msgs.get_mut(&id), outcome.is_final()) {
                m.pending.retain(|p| p.index != rcpt);
            }
        }
        Record::Retry {
            next_attempt_ms,
            attempts,
            ..
        } => {
            if let Some(m) = msgs.get_mut(&id) {
                m.next_attempt_ms = next_attempt_ms;
                m.attempts = attempts;
            }
        }
        Record::Done { .. } => {
            msgs.remove(&id);
        }
    }
}
