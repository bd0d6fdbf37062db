//! Segment scanning: finds valid frames, corrupt regions and the torn tail.
//!
//! Pure over a byte slice (the caller maps or reads the file). Never panics
//! and never trusts a length that failed its checksum: after a bad frame it
//! resynchronises on the next offset where a frame checks out, which the
//! per-frame offset field makes both cheap and reliable. May call:
//! `spool::record` (the frame and header checks).

use super::record::{check_frame, Frame, SegmentHeader, SEGMENT_HEADER_LEN};

/// One valid frame found in a segment.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct FoundFrame {
    /// Offset of the frame in the file.
    pub offset: u64,
    /// Type and total length.
    pub frame: Frame,
}

/// Result of scanning one segment image.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SegmentScan {
    /// The decoded header, if it checked out.
    pub header: Option<SegmentHeader>,
    /// Valid frames in file order.
    pub frames: Vec<FoundFrame>,
    /// Corrupt regions `[start, end)` that were skipped (followed by a valid frame).
    pub corrupt: Vec<(u64, u64)>,
    /// End of the last valid frame: everything after it is a torn tail.
    pub valid_end: u64,
    /// Bytes after `valid_end` that are not padding.
    pub torn_bytes: u64,
    /// Zero bytes after `valid_end` up to the next block boundary, left by
    /// block-aligned (O_DIRECT) writes. Not an error.
    pub padding_bytes: u64,
}

/// Writers pad the last block of a write with zeros up to this alignment.
pub const PADDING_ALIGN_BYTES: usize = 4096;

/// Scans a whole segment image.
pub fn scan_segment(buf: &[u8]) -> SegmentScan {
    // A bad header does not hide the frames behind it: each frame carries
    // its own offset and checksum, so they are still trustworthy.
    let mut out = SegmentScan {
        header: SegmentHeader::decode(buf).ok(),
        ..SegmentScan::default()
    };
    let mut off = SEGMENT_HEADER_LEN;
    while off < buf.len() {
        if let Ok(frame) = check_frame(&buf[off..], off as u64) {
            out.frames.push(FoundFrame {
                offset: off as u64,
                frame,
            });
            off += frame.len;
            continue;
        }
        match resync(buf, off + 1) {
            Some(next) => {
                out.corrupt.push((off as u64, next as u64));
                off = next;
            }
            None => break,
        }
    }
    let off = off.min(buf.len());
    out.valid_end = off as u64;
    let rest = &buf[off..];
    let is_padding = buf.len() % PADDING_ALIGN_BYTES == 0
        && rest.len() < PADDING_ALIGN_BYTES
        && rest.iter().all(|&b| b == 0);
    if is_padding {
        out.padding_bytes = rest.len() as u64;
    } else {
        out.torn_bytes = rest.len() as u64;
    }
    out
}

/// Finds the first offset `>= from` holding a frame that checks out.
fn resync(buf: &[u8], from: usize) -> Option<usize> {
    (from..buf.len()).find(|&p| {
        // Cheap pre-check: the frame's offset field must name its position.
        buf.get(p + 8..p + 12)
            .is_some_and(|b| b == (p as u32).to_le_bytes())
            && check_frame(&buf[p..], p as u64).is_ok()
    })
}
