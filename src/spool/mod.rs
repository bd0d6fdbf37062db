//! Per-shard durable spool: an append-only segment log with group commit.
//!
//! Owns the shard's spool directory and nothing else. `inbound` appends
//! MESSAGE records and sends 250 only after the append resolves (the record
//! is on stable storage); `queue` appends outcome/retry/done records and
//! reads back what recovery found. The byte format lives in `record` and is
//! specified in `spool-format/SPEC.md`.
//!
//! Must never: acknowledge a record whose write or sync failed, use `std::fs`
//! on a shard at runtime (only during `Spool::open` recovery and in offline
//! `tools`), or abort start-up because of one bad record. May call: its own
//! submodules, `message`, `runtime` (the clock and task spawner), and
//! `config` (from the offline `tools` only).

mod book;
pub mod disk;
pub mod lock;
mod maintain;
pub mod quarantine;
pub mod record;
pub mod recovery;
pub mod scan;
mod space;
mod staging;
pub mod tools;
mod writer;

pub use lock::SpoolLock;
pub use maintain::{
    MaintainReport, COPY_FORWARD_MAX_BYTES_PER_PASS, COPY_FORWARD_MAX_LIVE_PERCENT,
};
pub use record::{Outcome, Record};
pub use recovery::{QueuedMessage, Recovered};
pub use writer::{Fault, Spool, SpoolStats};

use std::time::Duration;

/// Tuning for one shard's spool.
#[derive(Clone, Debug)]
pub struct SpoolOptions {
    /// A segment is rolled when the next record would pass this size.
    pub segment_size: u64,
    /// A batch is flushed early once it holds this many bytes.
    pub batch_max_bytes: usize,
    /// How long the committer waits for more appends before a flush.
    /// Zero means "flush as soon as the previous sync finished", which
    /// already batches everything that arrived during that sync.
    pub batch_max_delay: Duration,
    /// Disk space held back for outcome, retry, DONE and DSN records and
    /// for starting a segment when the disk is full. 0 (the default of this
    /// struct, for tools and tests): no reserve, every append tries the
    /// disk. The server's config default is [`DEFAULT_RESERVE_BYTES`].
    pub reserve_bytes: u64,
}

/// Default segment size: 64 MiB.
pub const DEFAULT_SEGMENT_SIZE_BYTES: u64 = 64 << 20;
/// Default early-flush threshold: 1 MiB.
pub const DEFAULT_BATCH_MAX_BYTES: usize = 1 << 20;
/// Default batching delay (measured: see `examples/spool_bench.rs`).
pub const DEFAULT_BATCH_MAX_DELAY: Duration = Duration::from_micros(0);
/// The server's default space reserve per shard (`spool_reserve_size`):
/// 16 MiB, about 100,000 outcome records.
pub const DEFAULT_RESERVE_BYTES: u64 = 16 << 20;
/// Largest segment size accepted: frame offsets are checked modulo 2^32.
pub const MAX_SEGMENT_SIZE_BYTES: u64 = 1 << 31;

impl Default for SpoolOptions {
    fn default() -> Self {
        SpoolOptions {
            segment_size: DEFAULT_SEGMENT_SIZE_BYTES,
            batch_max_bytes: DEFAULT_BATCH_MAX_BYTES,
            batch_max_delay: DEFAULT_BATCH_MAX_DELAY,
            reserve_bytes: 0,
        }
    }
}

/// Spool failures. Cloneable because one failed sync fails every waiter of
/// its batch.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpoolError {
    /// The file system is full (ENOSPC or EDQUOT).
    #[error("spool disk full: {0}")]
    DiskFull(String),
    /// Any other I/O failure.
    #[error("spool I/O error: {0}")]
    Io(String),
    /// The record does not fit the format's limits.
    #[error("record too large: {0} bytes")]
    TooLarge(usize),
    /// The spool was closed.
    #[error("spool is closed")]
    Closed,
    /// The spool directory cannot be used (bad options, foreign files).
    #[error("spool unusable: {0}")]
    Unusable(String),
}

impl SpoolError {
    /// Builds an error from an `io::Error`, classifying disk-full.
    pub fn from_io(context: &str, e: &std::io::Error) -> Self {
        let msg = format!("{context}: {e}");
        match e.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => SpoolError::DiskFull(msg),
            _ => SpoolError::Io(msg),
        }
    }

    /// Builds an error from a glommio error, classifying disk-full.
    pub fn from_glommio<T>(context: &str, e: glommio::GlommioError<T>) -> Self {
        match e {
            glommio::GlommioError::IoError(source)
            | glommio::GlommioError::EnhancedIoError { source, .. } => {
                SpoolError::from_io(context, &source)
            }
            other => SpoolError::Io(format!("{context}: {other}")),
        }
    }

    /// The SMTP reply (code, enhanced status) to send when an append failed.
    pub fn smtp_reply_code(&self) -> (u16, &'static str) {
        match self {
            SpoolError::DiskFull(_) => (452, "4.3.1"),
            SpoolError::TooLarge(_) => (552, "5.3.4"),
            _ => (451, "4.3.0"),
        }
    }
}

/// File name of segment `n` (`seg-00000001.log`).
pub fn segment_file_name(n: u32) -> String {
    format!("seg-{n:08}.log")
}

/// Parses a segment file name back to its number.
pub fn parse_segment_file_name(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The id after `id`: `seq + 1`, or on wrap `epoch_ms + 1` with `seq` 0.
pub fn next_message_id(id: crate::message::MessageId) -> crate::message::MessageId {
    match id.seq.checked_add(1) {
        Some(seq) => crate::message::MessageId { seq, ..id },
        None => crate::message::MessageId {
            epoch_ms: id.epoch_ms + 1,
            seq: 0,
            ..id
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MessageId;

    #[test]
    fn seq_wrap_bumps_epoch_and_stays_increasing() {
        let id = MessageId {
            epoch_ms: 7,
            shard: 2,
            seq: u32::MAX,
        };
        let next = next_message_id(id);
        assert_eq!(
            next,
            MessageId {
                epoch_ms: 8,
                shard: 2,
                seq: 0
            }
        );
        assert!(next > id);
        assert_eq!(next_message_id(next).seq, 1);
    }

    #[test]
    fn segment_names_roundtrip() {
        assert_eq!(segment_file_name(1), "seg-00000001.log");
        assert_eq!(parse_segment_file_name("seg-00000042.log"), Some(42));
        assert_eq!(parse_segment_file_name("seg-42.log"), None);
        assert_eq!(parse_segment_file_name("seg-0000004x.log"), None);
    }

    #[test]
    fn reply_codes_distinguish_disk_full() {
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(
            SpoolError::from_io("w", &full).smtp_reply_code(),
            (452, "4.3.1")
        );
        let eio = std::io::Error::from_raw_os_error(libc::EIO);
        assert_eq!(
            SpoolError::from_io("w", &eio).smtp_reply_code(),
            (451, "4.3.0")
        );
    }
}
