//! What recovery does with a segment file that has neither a valid header
//! nor a valid frame: delete it only when it is provably one of ours whose
//! creation was interrupted, otherwise move it aside for a human.
//!
//! Runs only at recovery (before the shard serves), so `std::fs` is fine.
//! Never overwrites a file and never deletes anything but a half-created
//! segment. May call: `spool::record` (the segment magic), `spool::scan`
//! (the padding alignment).

use super::record::{SEGMENT_HEADER_LEN, SEGMENT_MAGIC};
use super::scan::PADDING_ALIGN_BYTES;
use std::path::{Path, PathBuf};

/// Subdirectory of a shard's spool directory holding quarantined files.
pub const QUARANTINE_DIR: &str = "quarantine";
/// A new segment is one block: the header, zero-padded to the O_DIRECT
/// alignment (SPEC.md 1.3). Nothing longer can be a half-created segment.
pub const HALF_CREATED_MAX_BYTES: usize = PADDING_ALIGN_BYTES;
/// Attempts at a free name `NAME.N` in the quarantine directory.
const QUARANTINE_NAME_ATTEMPTS: u32 = 10_000;

/// True when `buf` (a whole file without a valid header or frame) is what
/// an interrupted segment creation leaves: at most one block, holding a
/// prefix of our magic (or nothing) followed by zeros only, or all zeros
/// (size extended, data not written). A torn header with our magic but a
/// bad checksum counts; anything else does not.
pub fn is_half_created(buf: &[u8]) -> bool {
    if buf.len() > HALF_CREATED_MAX_BYTES {
        return false;
    }
    let magic_len = buf.len().min(SEGMENT_MAGIC.len());
    let ours = buf[..magic_len] == SEGMENT_MAGIC[..magic_len];
    let header_end = buf.len().min(SEGMENT_HEADER_LEN);
    let zeros_after = |from: usize| buf[from..].iter().all(|&b| b == 0);
    (ours && zeros_after(header_end)) || zeros_after(0)
}

/// Moves `path` into `dir/quarantine/` under its own name, or `NAME.N` if
/// that is taken (never replacing a file), and syncs both directories.
/// Returns the new path.
pub fn quarantine(dir: &Path, path: &Path) -> std::io::Result<PathBuf> {
    let qdir = dir.join(QUARANTINE_DIR);
    std::fs::create_dir_all(&qdir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "unnamed".to_string());
    for n in 0..QUARANTINE_NAME_ATTEMPTS {
        let target = if n == 0 {
            qdir.join(&name)
        } else {
            qdir.join(format!("{name}.{n}"))
        };
        // A hard link fails if the target exists: no overwrite, no race.
        match std::fs::hard_link(path, &target) {
            Ok(()) => {
                sync_dir(&qdir)?;
                std::fs::remove_file(path)?;
                sync_dir(dir)?;
                return Ok(target);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        format!("no free name for {name} in {}", qdir.display()),
    ))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_interrupted_creations_are_half_created() {
        let mut block = vec![0u8; HALF_CREATED_MAX_BYTES];
        assert!(is_half_created(b""));
        assert!(is_half_created(b"IMPSPO"));
        assert!(is_half_created(&block), "size extended, data not written");
        block[..8].copy_from_slice(&SEGMENT_MAGIC);
        block[20] = 7; // torn header: magic, bad checksum
        assert!(is_half_created(&block));
        block[SEGMENT_HEADER_LEN + 1] = 1; // something after the header
        assert!(!is_half_created(&block));
        assert!(!is_half_created(b"IMPX"));
        assert!(!is_half_created(&vec![0u8; HALF_CREATED_MAX_BYTES + 1]));
        assert!(!is_half_created(&vec![0xAB; 100 * 1024]));
    }
}
