//! Recovery: rebuilds a shard's queue state from its segment files.
//!
//! Runs once at `Spool::open` (before the shard serves traffic) and in the
//! offline tools, so it may block: it reads and repairs through the
//! blocking calls of the spool's `Disk` (`std::fs` and memmap2 on the real
//! one). It truncates torn tails (only when asked to repair), skips corrupt
//! records with a paniclog entry, and never fails because of one bad record
//! or segment. May call: `spool::{book, disk, quarantine, record, scan}`,
//! `spool` (`SpoolError`, segment names), `message`.

use super::book::Book;
use super::disk::{Contents, Disk, LocalDisk};
use super::quarantine::is_half_created;
use super::record::{decode_message_parts, decode_payload, RecordType, FRAME_HEADER_LEN};
use super::scan::{scan_segment, SegmentScan};
use super::{parse_segment_file_name, SpoolError};
use crate::message::{MessageId, PendingRcpts, QueuedRcpt};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

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
    pub pending: PendingRcpts,
    /// The binding assigned at reception: 0 for `default`, else `n` for
    /// [`Recovered::bindings`]`[n - 1]` (a u16, not a name per message: a
    /// million queued messages name a handful of bindings).
    pub binding: u16,
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
    /// Segments whose header names another shard: skipped, file kept.
    pub foreign_segments: u32,
    /// Files named like segments with no valid header or record that are
    /// not half-created segments (moved to `quarantine/` when repairing).
    pub unrecognized: u32,
    /// Of those, files moved to `quarantine/` by this run.
    pub quarantined: u32,
}

/// What recovery hands to the queue.
#[derive(Clone, Debug, Default)]
pub struct Recovered {
    /// Live messages, sorted by id.
    pub messages: Vec<QueuedMessage>,
    /// The bindings their `binding` fields name.
    pub bindings: Vec<Box<str>>,
    /// Counts.
    pub stats: RecoveryStats,
}

/// Internal results the writer needs besides [`Recovered`].
#[derive(Debug, Default)]
pub(crate) struct RecoveryState {
    pub(crate) book: Book,
    pub(crate) next_segment: u32,
    pub(crate) max_epoch_ms: u64,
    /// Binding names met so far (`QueuedMessage::binding` - 1).
    pub(crate) bindings: Vec<Box<str>>,
}

impl RecoveryState {
    /// The index of a binding name (from 1), made on first sight; a
    /// spool naming more bindings than a u16 holds is past any config.
    fn binding_index(&mut self, name: &str) -> u16 {
        if let Some(i) = self.bindings.iter().position(|b| &**b == name) {
            return (i + 1) as u16;
        }
        if self.bindings.len() >= usize::from(u16::MAX) {
            crate::events::paniclog(
                crate::events::Level::Error,
                crate::events::Subsystem::Spool,
                &format!(
                    "spool names more than {} bindings: {name} is read as default",
                    u16::MAX
                ),
            );
            return 0;
        }
        self.bindings.push(name.into());
        self.bindings.len() as u16
    }
}

/// Lists `seg-*.log` files in `dir`, sorted by segment number.
pub fn list_segments(dir: &Path) -> std::io::Result<Vec<(u32, PathBuf)>> {
    list_segments_on(&LocalDisk, dir)
}

/// [`list_segments`] on `disk`.
pub fn list_segments_on(disk: &dyn Disk, dir: &Path) -> std::io::Result<Vec<(u32, PathBuf)>> {
    let mut segs = Vec::new();
    for path in disk.list(dir)? {
        let n = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_segment_file_name);
        if let Some(n) = n {
            segs.push((n, path));
        }
    }
    segs.sort();
    Ok(segs)
}

/// Reads a whole segment file through a read-only map.
pub fn map_segment(path: &Path) -> std::io::Result<Option<memmap2::Mmap>> {
    Ok(match LocalDisk.read_whole(path)? {
        Contents::Mapped(map) => Some(map),
        Contents::Owned(_) | Contents::Empty => None,
    })
}

/// Rebuilds shard `shard`'s live queue from `dir` without changing any
/// file (offline tools and tests). `None` accepts segments of any shard.
pub fn recover_read_only(dir: &Path, shard: Option<u16>) -> Result<Recovered, SpoolError> {
    recover_dir(&LocalDisk, dir, shard, false).map(|(rec, _)| rec)
}

/// Scans every segment of `dir` and rebuilds the live queue. With `repair`,
/// torn tails are truncated, half-created segments removed and other
/// unrecognisable segment files moved to `quarantine/`.
/// Segments whose header names a shard other than `shard` are skipped and
/// reported, never changed.
pub(crate) fn recover_dir(
    disk: &dyn Disk,
    dir: &Path,
    shard: Option<u16>,
    repair: bool,
) -> Result<(Recovered, RecoveryState), SpoolError> {
    let mut rec = Recovered::default();
    let mut st = RecoveryState::default();
    let mut msgs: HashMap<MessageId, QueuedMessage> = HashMap::new();
    let segs = list_segments_on(disk, dir).map_err(|e| SpoolError::from_io("listing spool", &e))?;
    for (n, path) in &segs {
        st.next_segment = st.next_segment.max(n.saturating_add(1));
        let map = disk
            .read_whole(path)
            .map_err(|e| SpoolError::from_io("mapping segment", &e))?;
        let buf: &[u8] = map.bytes();
        let scan = scan_segment(buf);
        rec.stats.segments += 1;
        if scan.header.is_none() && scan.frames.is_empty() {
            let half_created = is_half_created(buf);
            drop(map);
            set_aside(disk, dir, path, half_created, repair, &mut rec.stats)?;
            continue;
        }
        if let Some(h) = scan.header.filter(|h| shard.is_some_and(|s| s != h.shard)) {
            // Someone copied or mounted another shard's spool here: its
            // messages belong to that shard. Keep the file for a human.
            rec.stats.foreign_segments += 1;
            crate::events::paniclog(
                crate::events::Level::Error,
                crate::events::Subsystem::Spool,
                &format!(
                    "spool segment {} belongs to shard {}, not {}: skipped, file kept",
                    path.display(),
                    h.shard,
                    shard.unwrap_or_default()
                ),
            );
            continue;
        }
        st.book.add_segment(*n, scan.valid_end);
        if let Some(h) = scan.header {
            st.max_epoch_ms = st.max_epoch_ms.max(h.created_ms);
        } else {
            rec.stats.bad_headers += 1;
            crate::events::paniclog(
                crate::events::Level::Error,
                crate::events::Subsystem::Spool,
                &format!("spool segment {} has a bad header", path.display()),
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
                disk.truncate_now(path, scan.valid_end)
                    .map_err(|e| SpoolError::from_io("truncating torn tail", &e))?;
            }
        }
    }
    rec.messages = msgs.into_values().collect();
    rec.bindings = std::mem::take(&mut st.bindings);
    rec.messages.sort_by_key(|m| m.id);
    rec.stats.messages = rec.messages.len() as u64;
    rec.stats.recipients_pending = rec.messages.iter().map(|m| m.pending.len() as u64).sum();
    Ok((rec, st))
}

/// A segment file with no valid header and no valid frame. One whose
/// creation was interrupted (nothing in it was ever acknowledged) is
/// deleted; anything else is not provably ours to delete and is moved to
/// `quarantine/`. Without `repair` it is only counted.
fn set_aside(
    disk: &dyn Disk,
    dir: &Path,
    path: &Path,
    half_created: bool,
    repair: bool,
    stats: &mut RecoveryStats,
) -> Result<(), SpoolError> {
    if half_created {
        if repair {
            log::warn!("spool: removing half-created segment {}", path.display());
            disk.remove_now(path)
                .map_err(|e| SpoolError::from_io("removing segment", &e))?;
        }
        return Ok(());
    }
    stats.unrecognized += 1;
    if !repair {
        return Ok(());
    }
    let moved = disk
        .quarantine_now(dir, path)
        .map_err(|e| SpoolError::from_io("quarantining segment", &e))?;
    stats.quarantined += 1;
    crate::events::paniclog(
        crate::events::Level::Error,
        crate::events::Subsystem::Spool,
        &format!(
            "spool file {} has no valid segment header and no valid record, \
         and is not a half-created segment: moved to {}",
            path.display(),
            moved.display()
        ),
    );
    Ok(())
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
        crate::events::paniclog(
            crate::events::Level::Error,
            crate::events::Subsystem::Spool,
            &format!(
                "spool corrupt record skipped at {}:{} ({} bytes)",
                path.display(),
                start,
                end - start
            ),
        );
    }
    for f in &scan.frames {
        let start = f.offset as usize + FRAME_HEADER_LEN;
        let payload = &buf[start..f.offset as usize + f.frame.len];
        if f.frame.record_type == RecordType::Message {
            match decode_message_parts(payload, f.frame.version) {
                Ok((id, env, _body)) => {
                    stats.records += 1;
                    let received_at_ms = env.received_at_ms;
                    let binding = env.binding.map_or(0, |b| st.binding_index(&b));
                    st.max_epoch_ms = st.max_epoch_ms.max(id.epoch_ms);
                    st.book
                        .on_message(seg, id, f.offset as u32, f.frame.len as u32);
                    if let Some(m) = msgs.get_mut(&id) {
                        // A copy-forward: the message moves, its state stays.
                        m.segment = seg;
                        m.offset = f.offset as u32;
                        m.len = f.frame.len as u32;
                        continue;
                    }
                    let pending = env
                        .recipients
                        .into_iter()
                        .enumerate()
                        .map(|(i, r)| QueuedRcpt {
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
                            binding,
                        },
                    );
                }
                Err(e) => undecodable(stats, path, f.offset, &e),
            }
            continue;
        }
        match decode_payload(f.frame.record_type, f.frame.version, payload) {
            Ok(r) => {
                stats.records += 1;
                let end = f.offset + f.frame.len as u64;
                apply_record(seg, end, r, st, msgs);
            }
            Err(e) => undecodable(stats, path, f.offset, &e),
        }
    }
}

fn undecodable(stats: &mut RecoveryStats, path: &Path, off: u64, e: &dyn std::fmt::Display) {
    stats.corrupt_records += 1;
    crate::events::paniclog(
        crate::events::Level::Error,
        crate::events::Subsystem::Spool,
        &format!(
            "spool record at {}:{} checks out but does not decode: {e}",
            path.display(),
            off
        ),
    );
}

fn apply_record(
    seg: u32,
    end: u64,
    r: super::record::Record,
    st: &mut RecoveryState,
    msgs: &mut HashMap<MessageId, QueuedMessage>,
) {
    use super::record::Record;
    match r {
        Record::Message { .. } => {}
        Record::Outcome {
            id,
            rcpt,
            outcome,
            reply,
        } => {
            st.book.on_outcome(seg, end, id, rcpt, outcome, &reply);
            if let (Some(m), true) = (msgs.get_mut(&id), outcome.is_final()) {
                m.pending.retain(|p| p.index != rcpt);
            }
        }
        Record::Retry {
            id,
            next_attempt_ms,
            attempts,
        } => {
            st.book.on_retry(seg, end, id, next_attempt_ms, attempts);
            if let Some(m) = msgs.get_mut(&id) {
                m.next_attempt_ms = next_attempt_ms;
                m.attempts = attempts;
            }
        }
        Record::Done { id } => {
            st.book.on_done(seg, end, id);
            msgs.remove(&id);
        }
        Record::Rebind { id, binding } => {
            st.book.on_rebind(seg, end, id, binding.as_deref());
            if let Some(m) = msgs.get_mut(&id) {
                m.binding = binding.map_or(0, |b| st.binding_index(&b));
            }
        }
    }
}
