//! The file system under a spool, as a small trait: the calls recovery
//! makes before the shard serves (blocking), and the calls the committer,
//! the reserve and compaction make at runtime (futures). [`LocalDisk`] is
//! the real one (glommio O_DIRECT and buffered files, `std::fs` and
//! memmap2 at recovery); the deterministic simulation puts a disk that
//! loses unsynced writes and tears the last one at a crash in its place.
//!
//! Owns the mapping from those calls to glommio and `std::fs`. May call:
//! glommio, memmap2, libc (statvfs), and the spool's `quarantine` helper.
//! Must never: report a write or sync as done before the operating system
//! did, or be used for blocking calls after the shard serves.

use std::cell::RefCell;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{BufferedFile, DmaBuffer, DmaFile, OpenOptions};

use crate::runtime::sched::LocalFuture;

/// How a runtime file is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A new segment: created (emptied if it exists), written with
    /// block-aligned direct I/O.
    Create,
    /// The reserve: read and written, created if missing, kept if present.
    Reserve,
    /// An existing segment, read through the page cache.
    Read,
}

/// A whole file read at recovery.
pub enum Contents {
    /// Mapped read-only.
    Mapped(memmap2::Mmap),
    /// Copied into memory.
    Owned(Vec<u8>),
    /// Empty file.
    Empty,
}

impl Contents {
    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Contents::Mapped(m) => m,
            Contents::Owned(v) => v,
            Contents::Empty => &[],
        }
    }
}

/// A buffer for [`DiskFile::write_at`]: aligned memory for direct I/O, or
/// plain memory for a disk that needs no alignment.
pub enum WriteBuf {
    /// glommio's aligned buffer.
    Dma(DmaBuffer),
    /// Plain memory.
    Mem(Vec<u8>),
}

impl WriteBuf {
    /// The buffer's bytes, to fill before the write.
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        match self {
            WriteBuf::Dma(b) => b.as_bytes_mut(),
            WriteBuf::Mem(v) => v,
        }
    }

    /// The buffer's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            WriteBuf::Dma(b) => b.as_bytes(),
            WriteBuf::Mem(v) => v,
        }
    }
}

/// The file system a spool lives on.
pub trait Disk {
    /// Creates `dir` and its parents (blocking; recovery).
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// The files in `dir` (blocking; recovery).
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
    /// A whole file (blocking; recovery).
    fn read_whole(&self, path: &Path) -> io::Result<Contents>;
    /// Cuts `path` to `len` bytes and syncs it (blocking; recovery).
    fn truncate_now(&self, path: &Path, len: u64) -> io::Result<()>;
    /// Deletes `path` (blocking; recovery).
    fn remove_now(&self, path: &Path) -> io::Result<()>;
    /// Moves `path` into `dir/quarantine/` and returns where it went
    /// (blocking; recovery).
    fn quarantine_now(&self, dir: &Path, path: &Path) -> io::Result<PathBuf>;
    /// Opens a runtime file.
    fn open(&self, path: &Path, mode: Mode) -> LocalFuture<io::Result<Rc<dyn DiskFile>>>;
    /// Deletes `path`.
    fn remove(&self, path: &Path) -> LocalFuture<io::Result<()>>;
    /// Makes the entries of `dir` (files created and deleted) durable.
    fn sync_dir(&self, dir: &Path) -> LocalFuture<io::Result<()>>;
    /// Bytes an unprivileged writer may still use on `dir`'s file system.
    fn free_bytes(&self, dir: &Path) -> Option<u64>;
}

/// A file opened by [`Disk::open`].
pub trait DiskFile {
    /// A write buffer of `len` bytes suited to this file.
    fn alloc_dma_buffer(&self, len: usize) -> WriteBuf;
    /// Writes `buf` at `pos`; the count written.
    fn write_at(&self, buf: WriteBuf, pos: u64) -> LocalFuture<io::Result<usize>>;
    /// Reads up to `len` bytes at `pos`.
    fn read_at(&self, pos: u64, len: usize) -> LocalFuture<io::Result<Vec<u8>>>;
    /// Makes what was written durable.
    fn fdatasync(&self) -> LocalFuture<io::Result<()>>;
    /// Cuts or extends the file to `len` bytes.
    fn truncate(&self, len: u64) -> LocalFuture<io::Result<()>>;
    /// Allocates `len` bytes on disk (the file's size becomes `len`).
    fn pre_allocate(&self, len: u64) -> LocalFuture<io::Result<()>>;
    /// The file's size.
    fn size(&self) -> LocalFuture<io::Result<u64>>;
    /// Closes the file.
    fn close(&self) -> LocalFuture<io::Result<()>>;
}

/// The host's file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalDisk;

fn io_err<T>(e: glommio::GlommioError<T>) -> io::Error {
    match e {
        glommio::GlommioError::IoError(source)
        | glommio::GlommioError::EnhancedIoError { source, .. } => source,
        other => io::Error::other(other.to_string()),
    }
}

impl Disk for LocalDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.path()))
            .collect()
    }

    fn read_whole(&self, path: &Path) -> io::Result<Contents> {
        let file = std::fs::File::open(path)?;
        if file.metadata()?.len() == 0 {
            return Ok(Contents::Empty);
        }
        // SAFETY: the map is read-only and the spool directory is owned by
        // this shard; nothing truncates the file while recovery holds it.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Ok(Contents::Mapped(map))
    }

    fn truncate_now(&self, path: &Path, len: u64) -> io::Result<()> {
        let f = std::fs::OpenOptions::new().write(true).open(path)?;
        f.set_len(len)?;
        f.sync_all()
    }

    fn remove_now(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn quarantine_now(&self, dir: &Path, path: &Path) -> io::Result<PathBuf> {
        super::quarantine::quarantine(dir, path)
    }

    fn open(&self, path: &Path, mode: Mode) -> LocalFuture<io::Result<Rc<dyn DiskFile>>> {
        let path = path.to_path_buf();
        Box::pin(async move {
            let file: Rc<dyn DiskFile> = match mode {
                Mode::Create => LocalFile::shared(Handle::Direct(Rc::new(
                    OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .dma_open(&path)
                        .await
                        .map_err(io_err)?,
                ))),
                Mode::Reserve => LocalFile::shared(Handle::Direct(Rc::new(
                    OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create(true)
                        .dma_open(&path)
                        .await
                        .map_err(io_err)?,
                ))),
                Mode::Read => LocalFile::shared(Handle::Buffered(Rc::new(
                    BufferedFile::open(&path).await.map_err(io_err)?,
                ))),
            };
            Ok(file)
        })
    }

    fn remove(&self, path: &Path) -> LocalFuture<io::Result<()>> {
        let path = path.to_path_buf();
        Box::pin(async move { glommio::io::remove(&path).await.map_err(io_err) })
    }

    fn sync_dir(&self, dir: &Path) -> LocalFuture<io::Result<()>> {
        let dir = dir.to_path_buf();
        Box::pin(async move {
            let d = glommio::io::Directory::open(&dir).await.map_err(io_err)?;
            let synced = d.sync().await.map_err(io_err);
            // Close explicitly: a dropped glommio handle closes its fd
            // lazily, which can keep the file system busy after shutdown.
            let _ = d.close().await;
            synced
        })
    }

    fn free_bytes(&self, dir: &Path) -> Option<u64> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
        // SAFETY: statvfs fills a plain struct from a NUL-terminated path;
        // a metadata call that does not touch file data.
        unsafe {
            let mut st: libc::statvfs = std::mem::zeroed();
            if libc::statvfs(path.as_ptr(), &mut st) != 0 {
                return None;
            }
            Some(st.f_bavail as u64 * st.f_frsize as u64)
        }
    }
}

/// A file of [`LocalDisk`]; `None` once closed.
struct LocalFile(RefCell<Option<Handle>>);

#[derive(Clone)]
enum Handle {
    /// O_DIRECT (segments being written, the reserve).
    Direct(Rc<DmaFile>),
    /// Through the page cache (segments being read).
    Buffered(Rc<BufferedFile>),
}

fn closed() -> io::Error {
    io::Error::other("file already closed")
}

impl LocalFile {
    fn shared(h: Handle) -> Rc<dyn DiskFile> {
        Rc::new(LocalFile(RefCell::new(Some(h))))
    }

    fn handle(&self) -> io::Result<Handle> {
        self.0.borrow().clone().ok_or_else(closed)
    }
}

/// Runs the same call on either kind of glommio file.
macro_rules! on_handle {
    ($self:ident, $f:ident => $body:expr) => {{
        let h = $self.handle();
        Box::pin(async move {
            match h? {
                Handle::Direct($f) => $body.map_err(io_err),
                Handle::Buffered($f) => $body.map_err(io_err),
            }
        })
    }};
}

impl DiskFile for LocalFile {
    fn alloc_dma_buffer(&self, len: usize) -> WriteBuf {
        match self.handle() {
            Ok(Handle::Direct(f)) => WriteBuf::Dma(f.alloc_dma_buffer(len)),
            _ => WriteBuf::Mem(vec![0; len]),
        }
    }

    fn write_at(&self, buf: WriteBuf, pos: u64) -> LocalFuture<io::Result<usize>> {
        let h = self.handle();
        Box::pin(async move {
            match h? {
                Handle::Direct(f) => {
                    let buf = match buf {
                        WriteBuf::Dma(b) => b,
                        WriteBuf::Mem(v) => {
                            let mut b = f.alloc_dma_buffer(v.len());
                            b.as_bytes_mut().copy_from_slice(&v);
                            b
                        }
                    };
                    f.write_at(buf, pos).await.map_err(io_err)
                }
                Handle::Buffered(f) => {
                    let v = match buf {
                        WriteBuf::Dma(b) => b.as_bytes().to_vec(),
                        WriteBuf::Mem(v) => v,
                    };
                    f.write_at(v, pos).await.map_err(io_err)
                }
            }
        })
    }

    fn read_at(&self, pos: u64, len: usize) -> LocalFuture<io::Result<Vec<u8>>> {
        on_handle!(self, f => f.read_at(pos, len).await.map(|r| r.to_vec()))
    }

    fn fdatasync(&self) -> LocalFuture<io::Result<()>> {
        on_handle!(self, f => f.fdatasync().await)
    }

    fn truncate(&self, len: u64) -> LocalFuture<io::Result<()>> {
        on_handle!(self, f => f.truncate(len).await)
    }

    fn pre_allocate(&self, len: u64) -> LocalFuture<io::Result<()>> {
        on_handle!(self, f => f.pre_allocate(len, false).await)
    }

    fn size(&self) -> LocalFuture<io::Result<u64>> {
        on_handle!(self, f => f.file_size().await)
    }

    fn close(&self) -> LocalFuture<io::Result<()>> {
        let h = self.0.borrow_mut().take();
        Box::pin(async move {
            match h {
                None => Ok(()),
                Some(Handle::Direct(f)) => f.close_rc().await.map(|_| ()).map_err(io_err),
                Some(Handle::Buffered(f)) => match Rc::try_unwrap(f) {
                    Ok(f) => f.close().await.map_err(io_err),
                    // A read still holds it: the descriptor closes with it.
                    Err(_) => Ok(()),
                },
            }
        })
    }
}
