//! Spool upkeep off the append path: compaction (deleting dead segments,
//! copying the live messages of sparse ones forward) and re-reading
//! messages.
//!
//! Runs on the shard's executor through the spool's `Disk` only. Compaction
//! deletes whole segments in the order the spec's rule allows and syncs the
//! directory after each; it must never delete a segment whose records still
//! matter (a live MESSAGE, or a DONE/outcome whose MESSAGE survives), and a
//! copy-forward never touches the old segment: it only appends.
//! May call: `spool::record`, `spool::disk`, `spool::space`, `spool::staging`, `spool`
//! (`Spool`, `SpoolError`, segment names), `message`.

use super::disk::{DiskFile, Mode};
use super::record::{check_frame, decode_message_parts, put_id, RecordType, FRAME_HEADER_LEN};
use super::staging::CopyReq;
use super::{segment_file_name, Spool, SpoolError};
use crate::message::{Envelope, MessageId};

/// An old segment is copied forward when its live MESSAGE bytes are at
/// most this share of its size: copying costs about that share of a
/// segment's write, and frees the whole segment.
pub const COPY_FORWARD_MAX_LIVE_PERCENT: u64 = 25;
/// Most MESSAGE bytes one maintenance pass copies (whole segments only;
/// the first segment is always taken).
pub const COPY_FORWARD_MAX_BYTES_PER_PASS: u64 = 16 << 20;

/// On a full disk, the active segment is closed (so that it can be
/// deleted or emptied) once it is at least this big...
pub const LOW_SPACE_ROLL_MIN_BYTES: u64 = 256 << 10;

/// What one maintenance pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MaintainReport {
    /// Segments deleted.
    pub deleted: Vec<u32>,
    /// Live messages copied into the active segment.
    pub copied: u64,
    /// Their bytes.
    pub copied_bytes: u64,
}

impl Spool {
    /// One maintenance pass: delete dead segments, copy the live messages
    /// of sparse old segments forward, then delete what that freed.
    ///
    /// While the spool is low on space it also closes a mostly dead active
    /// segment (the next pass can then delete it), copies forward only what
    /// the free space allows, and ends by trying to take the reserve back,
    /// which lets new mail in again.
    pub async fn maintain(&self) -> Result<MaintainReport, SpoolError> {
        let low = self.shared.space.is_low();
        if low {
            self.roll_if_mostly_dead();
        }
        let mut report = MaintainReport {
            deleted: self.compact().await?,
            ..MaintainReport::default()
        };
        let budget = if low {
            self.disk.free_bytes(&self.dir).unwrap_or(0) / 2
        } else {
            COPY_FORWARD_MAX_BYTES_PER_PASS
        };
        let (copied, copied_bytes) = self.copy_forward_within(budget).await?;
        report.copied = copied;
        report.copied_bytes = copied_bytes;
        if copied > 0 {
            report.deleted.extend(self.compact().await?);
        }
        if low {
            self.shared.space.try_recover(&self.dir).await;
        }
        Ok(report)
    }

    /// Asks the committer for a new segment when the active one is big
    /// and its live messages are a small share of it.
    fn roll_if_mostly_dead(&self) {
        let active = self.shared.active_segment.get();
        let usage = self.shared.book.borrow().usage(active);
        if let Some((live, end)) = usage {
            if end >= LOW_SPACE_ROLL_MIN_BYTES && live * 100 <= end * COPY_FORWARD_MAX_LIVE_PERCENT
            {
                self.shared.roll_wanted.set(true);
                self.shared.kick();
            }
        }
    }

    /// Copies the live messages of sparse old segments (see
    /// [`COPY_FORWARD_MAX_LIVE_PERCENT`]) into the active segment, each
    /// followed by its outcome and retry state, and waits until the copies
    /// are durable. The old segments are left for [`Spool::compact`].
    /// Returns (messages, bytes) copied.
    pub async fn copy_forward(&self) -> Result<(u64, u64), SpoolError> {
        self.copy_forward_within(COPY_FORWARD_MAX_BYTES_PER_PASS)
            .await
    }

    /// [`Spool::copy_forward`] of at most `max_bytes` (whole segments only;
    /// without a full disk the first segment is always taken).
    pub async fn copy_forward_within(&self, max_bytes: u64) -> Result<(u64, u64), SpoolError> {
        let plan = self.shared.book.borrow().copy_plan(
            self.shared.active_segment.get(),
            COPY_FORWARD_MAX_LIVE_PERCENT,
            max_bytes,
        );
        let planned: u64 = plan.iter().map(|c| u64::from(c.len)).sum();
        if plan.is_empty() || (self.shared.space.is_low() && planned > max_bytes) {
            return Ok((0, 0));
        }
        let mut copies = Vec::with_capacity(plan.len());
        let mut i = 0;
        while i < plan.len() {
            let seg = plan[i].seg;
            let path = self.dir.join(segment_file_name(seg));
            let file = self
                .disk
                .open(&path, Mode::Read)
                .await
                .map_err(|e| SpoolError::from_io("opening segment", &e))?;
            let mut result = Ok(());
            while i < plan.len() && plan[i].seg == seg {
                let c = plan[i];
                i += 1;
                match read_frame(&*file, seg, c.offset, c.len, Some(c.id)).await {
                    Ok(frame) => copies.push(CopyReq {
                        id: c.id,
                        from: seg,
                        frame,
                    }),
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            let _ = file.close().await;
            if let Err(e) = result {
                crate::events::paniclog(
                    crate::events::Level::Error,
                    crate::events::Subsystem::Spool,
                    &format!("spool copy-forward stopped: {e}"),
                );
                return Err(e);
            }
        }
        let n = copies.len() as u64;
        let bytes = copies.iter().map(|c| c.frame.len() as u64).sum();
        self.stage_copies(copies).await?;
        Ok((n, bytes))
    }

    /// Deletes every old segment none of whose records still matters
    /// (oldest first, syncing the directory after each removal). Returns
    /// the segments deleted. The active segment is never deleted.
    pub async fn compact(&self) -> Result<Vec<u32>, SpoolError> {
        let candidates = self
            .shared
            .book
            .borrow()
            .deletable(self.shared.active_segment.get());
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let mut deleted = Vec::new();
        let mut result = Ok(());
        for seg in candidates {
            let path = self.dir.join(segment_file_name(seg));
            if let Err(e) = self.disk.remove(&path).await {
                result = Err(SpoolError::from_io("removing segment", &e));
                break;
            }
            // Sync before the next removal: a later segment must never
            // disappear while an older one it cancels survives.
            if let Err(e) = self.disk.sync_dir(&self.dir).await {
                result = Err(SpoolError::from_io("syncing spool dir", &e));
                break;
            }
            self.shared.book.borrow_mut().remove_segment(seg);
            deleted.push(seg);
        }
        if let Err(e) = &result {
            crate::events::paniclog(
                crate::events::Level::Error,
                crate::events::Subsystem::Spool,
                &format!("spool compaction stopped: {e}"),
            );
        }
        result.map(|()| deleted)
    }

    /// Reads a live message by id, wherever compaction has put it.
    pub async fn read_live(&self, id: MessageId) -> Result<(Envelope, Vec<u8>), SpoolError> {
        let mut last = None;
        // Compaction may move the message (and delete the old segment)
        // while a read is on its way: a second look finds the new place.
        for _ in 0..2 {
            let location = self.shared.book.borrow().location_of(&id);
            let Some((segment, offset, len)) = location else {
                return Err(SpoolError::Io(format!(
                    "message {id} is not live in the spool"
                )));
            };
            if last
                .as_ref()
                .is_some_and(|(at, _)| *at == (segment, offset, len))
            {
                break;
            }
            match self.read_message(segment, offset, len).await {
                Ok(x) => return Ok(x),
                Err(e) => last = Some(((segment, offset, len), e)),
            }
        }
        Err(last.map_or(SpoolError::Closed, |(_, e)| e))
    }

    /// Re-reads a MESSAGE record (e.g. located by a `QueuedMessage`) and
    /// returns its envelope and body, checking the frame's CRC again.
    pub async fn read_message(
        &self,
        segment: u32,
        offset: u32,
        len: u32,
    ) -> Result<(Envelope, Vec<u8>), SpoolError> {
        let path = self.dir.join(segment_file_name(segment));
        let file = self
            .disk
            .open(&path, Mode::Read)
            .await
            .map_err(|e| SpoolError::from_io("opening segment", &e))?;
        let read = read_frame(&*file, segment, offset, len, None).await;
        let _ = file.close().await;
        let buf = read?;
        let (_, env, body) = decode_message_parts(&buf[FRAME_HEADER_LEN..], buf[5])
            .map_err(|e| corrupt(segment, offset, &e.to_string()))?;
        Ok((env, body.to_vec()))
    }
}

fn corrupt(segment: u32, offset: u32, what: &str) -> SpoolError {
    SpoolError::Io(format!("{}@{offset}: {what}", segment_file_name(segment)))
}

/// Reads the MESSAGE frame at `segment:offset` and checks it (CRC, type,
/// length, and the id when given).
async fn read_frame(
    file: &dyn DiskFile,
    segment: u32,
    offset: u32,
    len: u32,
    id: Option<MessageId>,
) -> Result<Vec<u8>, SpoolError> {
    let buf = file
        .read_at(u64::from(offset), len as usize)
        .await
        .map_err(|e| SpoolError::from_io("reading segment", &e))?;
    let frame = check_frame(&buf, u64::from(offset))
        .map_err(|e| corrupt(segment, offset, &e.to_string()))?;
    if frame.record_type != RecordType::Message || frame.len != len as usize {
        return Err(corrupt(segment, offset, "not the MESSAGE record expected"));
    }
    if let Some(id) = id {
        let mut want = Vec::with_capacity(14);
        put_id(&mut want, &id);
        if buf.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + want.len()) != Some(&want[..]) {
            return Err(corrupt(segment, offset, "MESSAGE of another id"));
        }
    }
    Ok(buf)
}
