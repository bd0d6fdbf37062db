//! The spool directory lock: one process, one shard per directory.
//!
//! Owns the `impulse.lock` file of a shard directory. The main thread takes
//! every shard's lock before any shard starts or binds a socket, and holds
//! them for the life of the process; the kernel drops them when the process
//! dies (kill -9 included), so a stale file never blocks a restart. May use
//! `std::fs` (it runs before the executors start). Must never: let two
//! processes, or two shards, append to one directory, or accept a directory
//! whose segments another shard number wrote. May call: `spool::record`,
//! `spool::recovery` (`list_segments`), `spool` (`SpoolError`).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::record::{SegmentHeader, SEGMENT_HEADER_LEN};
use super::recovery::list_segments;
use super::SpoolError;

/// Name of the lock file inside a shard's spool directory.
pub const LOCK_FILE_NAME: &str = "impulse.lock";

/// A held lock on one shard's spool directory; released on drop (or exit).
#[derive(Debug)]
pub struct SpoolLock {
    dir: PathBuf,
    _file: File,
}

impl SpoolLock {
    /// Creates `dir` if needed, locks it for `shard`, and checks that no
    /// segment in it belongs to another shard. Fails with a message that
    /// names the directory and, when another process holds it, its pid.
    pub fn acquire(dir: &Path, shard: u16) -> Result<SpoolLock, SpoolError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| SpoolError::from_io(&format!("creating {}", dir.display()), &e))?;
        let path = dir.join(LOCK_FILE_NAME);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| SpoolError::from_io(&format!("opening {}", path.display()), &e))?;
        let mut before = String::new();
        // A lock file that is not text is simply rewritten below.
        let _ = file.read_to_string(&mut before);
        // SAFETY: flock on a descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            let holder = field(&before, "pid").map_or(String::new(), |p| format!(" (pid {p})"));
            return Err(SpoolError::Unusable(match err.raw_os_error() {
                Some(libc::EWOULDBLOCK) => format!(
                    "{} is locked by another impulse process{holder} or another shard of this one: \
                     two writers would destroy each other's mail; stop the other one or give each \
                     shard its own spool_dir",
                    dir.display()
                ),
                _ => format!("cannot lock {}: {err}", path.display()),
            }));
        }
        if let Some(owner) = field(&before, "shard").and_then(|s| s.parse::<u16>().ok()) {
            if owner != shard {
                return Err(foreign(dir, shard, owner));
            }
        }
        check_segments(dir, shard)?;
        let text = format!("shard {shard}\npid {}\n", std::process::id());
        file.set_len(0)
            .and_then(|_| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(text.as_bytes()))
            .and_then(|_| file.sync_all())
            .map_err(|e| SpoolError::from_io(&format!("writing {}", path.display()), &e))?;
        Ok(SpoolLock {
            dir: dir.to_path_buf(),
            _file: file,
        })
    }

    /// The locked directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The value after `key ` on its own line of the lock file.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .map(str::trim)
}

fn foreign(dir: &Path, shard: u16, owner: u16) -> SpoolError {
    SpoolError::Unusable(format!(
        "{} belongs to shard {owner}, not shard {shard}: its messages would be stranded or \
         delivered by the wrong shard; point [shard.{shard}] spool_dir at its own directory",
        dir.display()
    ))
}

/// Refuses the directory when a segment's valid header names another shard.
fn check_segments(dir: &Path, shard: u16) -> Result<(), SpoolError> {
    let segs = list_segments(dir).map_err(|e| SpoolError::from_io("listing spool", &e))?;
    for (_, path) in segs {
        let mut head = [0u8; SEGMENT_HEADER_LEN];
        let Ok(mut f) = File::open(&path) else {
            continue;
        };
        if f.read_exact(&mut head).is_err() {
            continue; // half-created: recovery decides
        }
        if let Ok(h) = SegmentHeader::decode(&head) {
            if h.shard != shard {
                return Err(foreign(dir, shard, h.shard));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_on_a_directory_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = SpoolLock::acquire(dir.path(), 0).unwrap();
        let err = SpoolLock::acquire(dir.path(), 0).unwrap_err().to_string();
        assert!(err.contains("locked by another impulse process"), "{err}");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        SpoolLock::acquire(dir.path(), 0).unwrap();
    }

    #[test]
    fn a_directory_of_another_shard_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(SpoolLock::acquire(dir.path(), 1).unwrap());
        let err = SpoolLock::acquire(dir.path(), 0).unwrap_err().to_string();
        assert!(err.contains("belongs to shard 1, not shard 0"), "{err}");
    }

    #[test]
    fn segments_of_another_shard_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let h = SegmentHeader {
            version: super::super::record::FORMAT_VERSION,
            shard: 3,
            segment: 1,
            created_ms: 1,
        };
        std::fs::write(
            dir.path().join(super::super::segment_file_name(1)),
            h.encode(),
        )
        .unwrap();
        let err = SpoolLock::acquire(dir.path(), 0).unwrap_err().to_string();
        assert!(err.contains("belongs to shard 3"), "{err}");
        SpoolLock::acquire(dir.path(), 3).unwrap();
    }
}
