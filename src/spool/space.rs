//! Disk space for the records that must always be writable.
//!
//! Owns the shard's reserve file (`reserve` in the spool directory): space
//! set aside with fallocate while the disk has room, given back the moment
//! an append meets a full disk, so that outcome, retry, DONE and DSN records
//! and the header of a new segment can still be written and compaction can
//! free space. While the reserve is given up the spool is *low on space*:
//! new mail is refused at once (452) and only those records are appended.
//! The reserve is taken again, and new mail accepted, once the file system
//! has the reserve plus as much again free.
//!
//! File I/O through the spool's `Disk` only (after `open`); must never: let a message append
//! use the space the reserve stands for, or leave the spool refusing mail
//! after space came back. May call: `spool` (`SpoolError`,
//! `disk`).

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::rc::Rc;

use super::disk::{Disk, DiskFile, Mode};

use super::SpoolError;

/// Free space wanted beyond the reserve before new mail is taken again,
/// when the reserve is smaller than this.
const MIN_ROOM_BYTES: u64 = 1 << 20;

/// Name of the reserve file inside a shard's spool directory.
pub const RESERVE_FILE_NAME: &str = "reserve";

/// The shard's reserve and the low-space flag.
pub(super) struct Space {
    /// The reserve file, when `want_bytes > 0`.
    file: RefCell<Option<Rc<dyn DiskFile>>>,
    disk: Rc<dyn Disk>,
    /// Size the reserve should have.
    want_bytes: u64,
    /// Bytes held now.
    held_bytes: Cell<u64>,
    /// New mail is refused until the reserve is back.
    low: Cell<bool>,
}

impl Space {
    /// Opens (creates) the reserve file and tries to fill it.
    pub(super) async fn open(
        disk: Rc<dyn Disk>,
        dir: &Path,
        want_bytes: u64,
    ) -> Result<Space, SpoolError> {
        if want_bytes == 0 {
            return Ok(Space {
                file: RefCell::new(None),
                disk,
                want_bytes,
                held_bytes: Cell::new(0),
                low: Cell::new(false),
            });
        }
        let file = disk
            .open(&dir.join(RESERVE_FILE_NAME), Mode::Reserve)
            .await
            .map_err(|e| SpoolError::from_io("opening spool reserve", &e))?;
        let held = file.size().await.unwrap_or(0);
        let space = Space {
            file: RefCell::new(Some(file)),
            disk,
            want_bytes,
            held_bytes: Cell::new(held),
            low: Cell::new(false),
        };
        // Taken, with room for mail beside it: else start refusing mail.
        let room = want_bytes.max(MIN_ROOM_BYTES);
        if !space.take().await || space.disk.free_bytes(dir).is_some_and(|free| free < room) {
            space.low.set(true);
            crate::events::paniclog(
                crate::events::Level::Error,
                crate::events::Subsystem::Spool,
                &format!(
                    "spool {}: the file system is full (wanted a {want_bytes}-byte \
                 reserve and {room} bytes free): refusing new mail until space is available",
                    dir.display()
                ),
            );
        }
        Ok(space)
    }

    /// True while new mail is refused for lack of space.
    pub(super) fn is_low(&self) -> bool {
        self.low.get()
    }

    /// An append met a full disk: refuse new mail and hand the reserve to
    /// the records that must be written. Returns true if space was freed.
    pub(super) async fn give_up(&self) -> bool {
        let Some(file) = self.file() else {
            // No reserve configured: every append simply tries the disk.
            return false;
        };
        self.low.set(true);
        if self.held_bytes.get() == 0 {
            return false;
        }
        match file.truncate(0).await {
            Ok(()) => {
                crate::events::paniclog(
                    crate::events::Level::Error,
                    crate::events::Subsystem::Spool,
                    &format!(
                        "spool disk full: released the {}-byte reserve for outcome records; \
                     refusing new mail until space is back",
                        self.held_bytes.get()
                    ),
                );
                self.held_bytes.set(0);
                true
            }
            Err(e) => {
                crate::events::paniclog(
                    crate::events::Level::Error,
                    crate::events::Subsystem::Spool,
                    &format!("spool cannot release its reserve: {e}"),
                );
                false
            }
        }
    }

    /// While low: takes the reserve again if the file system has room for it
    /// and as much again (so new mail does not fill it at once), and then
    /// accepts new mail. Returns true when the spool is no longer low.
    pub(super) async fn try_recover(&self, dir: &Path) -> bool {
        if !self.low.get() {
            return true;
        }
        if !self.room_for_mail(dir) {
            return false;
        }
        if !self.take().await {
            return false;
        }
        self.low.set(false);
        log::info!(
            "spool {}: space is back ({} bytes reserved): accepting new mail again",
            dir.display(),
            self.want_bytes
        );
        true
    }

    /// Would new mail be taken now? Not low, or the file system has room
    /// for the missing reserve and as much again (one statvfs call).
    pub(super) fn room_for_mail(&self, dir: &Path) -> bool {
        if !self.low.get() {
            return true;
        }
        let need = self.want_bytes - self.held_bytes.get().min(self.want_bytes);
        self.disk
            .free_bytes(dir)
            .is_some_and(|free| free >= need + self.want_bytes.max(MIN_ROOM_BYTES))
    }

    /// Fills the reserve file to `want_bytes`; false when the disk is full.
    async fn take(&self) -> bool {
        let Some(file) = self.file() else {
            return true;
        };
        if self.held_bytes.get() >= self.want_bytes {
            return true;
        }
        match file.pre_allocate(self.want_bytes).await {
            Ok(()) => match file.fdatasync().await {
                Ok(()) => {
                    self.held_bytes.set(self.want_bytes);
                    true
                }
                Err(_) => false,
            },
            Err(_) => {
                // Leave nothing half-reserved: the space is the spool's to use.
                let _ = file.truncate(0).await;
                self.held_bytes.set(0);
                false
            }
        }
    }

    /// Closes the reserve file (the space stays reserved on disk).
    pub(super) async fn close(&self) {
        let file = self.file.borrow_mut().take();
        if let Some(f) = file {
            let _ = f.close().await;
        }
    }

    fn file(&self) -> Option<Rc<dyn DiskFile>> {
        self.file.borrow().clone()
    }
}
