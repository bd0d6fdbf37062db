//! Spool upkeep off the append path: compaction and re-reading messages.
//!
//! Runs on the shard's executor through glommio file APIs only. Compaction
//! deletes whole segments in the order the spec's rule allows and syncs the
//! directory after each; it must never delete a segment whose records still
//! matter (a live MESSAGE, or a DONE/outcome whose MESSAGE survives).

use super::record::{check_frame, decode_message_parts, RecordType, FRAME_HEADER_LEN};
use super::{segment_file_name, Spool, SpoolError};
use crate::message::Envelope;
use glommio::io::{BufferedFile, Directory};

impl Spool {
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
        let dir = Directory::open(&self.dir)
            .await
            .map_err(|e| SpoolError::from_glommio("opening spool dir", e))?;
        let mut deleted = Vec::new();
        let mut result = Ok(());
        for seg in candidates {
            let path = self.dir.join(segment_file_name(seg));
            if let Err(e) = glommio::io::remove(&path).await {
                result = Err(SpoolError::from_glommio("removing segment", e));
                break;
            }
            // Sync before the next removal: a later segment must never
            // disappear while an older one it cancels survives.
            if let Err(e) = dir.sync().await {
                result = Err(SpoolError::from_glommio("syncing spool dir", e));
                break;
            }
            self.shared.book.borrow_mut().remove_segment(seg);
            deleted.push(seg);
        }
        let _ = dir.close().await;
        if let Err(e) = &result {
            log::error!("paniclog: spool compaction stopped: {e}");
        }
        result.map(|()| deleted)
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
        let file = BufferedFile::open(&path)
            .await
            .map_err(|e| SpoolError::from_glommio("opening segment", e))?;
        let read = file.read_at(u64::from(offset), len as usize).await;
        let _ = file.close().await;
        let buf = read.map_err(|e| SpoolError::from_glommio("reading segment", e))?;
        let corrupt =
            |what: &str| SpoolError::Io(format!("{}@{offset}: {what}", segment_file_name(segment)));
        let frame = check_frame(&buf, u64::from(offset)).map_err(|e| corrupt(&e.to_string()))?;
        if frame.record_type != RecordType::Message || frame.len != len as usize {
            return Err(corrupt("not the MESSAGE record expected"));
        }
        let (_, env, body) = decode_message_parts(&buf[FRAME_HEADER_LEN..frame.len])
            .map_err(|e| corrupt(&e.to_string()))?;
        Ok((env, body.to_vec()))
    }
}
