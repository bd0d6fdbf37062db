//! One log file of one shard: lines go into a buffer in memory at once
//! (no I/O where an event is taken), and the file's flusher task writes
//! the buffer out with glommio (io_uring) in whole lines.
//!
//! Every shard opens the same path with `O_APPEND` and writes whole
//! buffers of whole lines: the kernel appends each write at the end of
//! the file under the inode's lock, so shards' lines never interleave or
//! tear, and no shard waits for another (no writer shard, no mesh
//! traffic). A short write (the disk filled mid-buffer) is completed by
//! the next write; between the two another shard's lines may land: the
//! only case where a line can be split, and only on a full disk.
//!
//! A write that fails keeps its lines: they go back in front of the
//! buffer and are written again after a pause, with a paniclog line (rate
//! limited) and a counter. Nothing here drops a line; the bound on the
//! buffer is enforced where mail comes in (`Logs::room`).

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use glommio::io::{BufferedFile, OpenOptions};

use crate::events::{Events, Level, Subsystem};
use crate::runtime::logger::RepeatLimiter;
use crate::runtime::sched;
use crate::runtime::shutdown::{Notify, Signal};

/// First pause after a failed open or write.
const RETRY_FIRST: Duration = Duration::from_millis(50);
/// Longest pause between attempts.
const RETRY_MAX: Duration = Duration::from_secs(2);
/// At most one report of a failing file per interval.
const REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// A log file of this shard.
pub struct LogFile {
    /// The option that names it (`mainlog`, `bouncelog`, ...).
    pub name: &'static str,
    path: PathBuf,
    mode: u32,
    pending: RefCell<Vec<u8>>,
    /// Octets ever handed to `push`.
    appended: Cell<u64>,
    /// Octets the kernel took.
    written: Cell<u64>,
    wake: Notify,
    /// Fired (and replaced) after every write.
    progress: RefCell<Signal>,
    reopen: Cell<bool>,
    /// Failed opens and writes.
    pub errors: Cell<u64>,
}

impl LogFile {
    /// A file to write at `path`, created with `mode`.
    pub fn new(name: &'static str, path: PathBuf, mode: u32) -> Rc<LogFile> {
        Rc::new(LogFile {
            name,
            path,
            mode,
            pending: RefCell::new(Vec::new()),
            appended: Cell::new(0),
            written: Cell::new(0),
            wake: Notify::default(),
            progress: RefCell::new(Signal::default()),
            reopen: Cell::new(false),
            errors: Cell::new(0),
        })
    }

    /// Its path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Appends whole lines (each ending in a newline).
    pub fn push(&self, lines: &str) {
        if lines.is_empty() {
            return;
        }
        self.pending
            .borrow_mut()
            .extend_from_slice(lines.as_bytes());
        self.appended.set(self.appended.get() + lines.len() as u64);
        self.wake.notify();
    }

    /// Octets taken but not yet written.
    pub fn backlog(&self) -> u64 {
        self.appended.get() - self.written.get()
    }

    /// How far `push` has got: `written_to` this mark waits for it.
    pub fn mark(&self) -> u64 {
        self.appended.get()
    }

    /// Completes once every octet before `mark` is written.
    pub async fn written_to(&self, mark: u64) {
        while self.written.get() < mark {
            let progress = self.progress.borrow().clone();
            progress.wait().await;
        }
    }

    /// Completes at the next write (or failed attempt).
    pub async fn progressed(&self) {
        let progress = self.progress.borrow().clone();
        progress.wait().await;
    }

    /// Closes the file and opens the path again (after a rename).
    pub fn reopen(&self) {
        self.reopen.set(true);
        self.wake.notify();
    }

    fn advance(&self) {
        let old = std::mem::take(&mut *self.progress.borrow_mut());
        old.fire();
    }

    async fn open(&self) -> std::io::Result<BufferedFile> {
        OpenOptions::new()
            .write(true)
            .append(true)
            .create(true)
            .mode(self.mode)
            .buffered_open(&self.path)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
    }

    /// The flusher: writes what is pushed until `stopping` fires and
    /// everything pushed before is written (or, at shutdown, until a
    /// failing file has had its last try).
    pub async fn run(self: Rc<Self>, events: Rc<Events>, stopping: Signal) {
        let mut file: Option<BufferedFile> = None;
        let mut delay = RETRY_FIRST;
        let mut reports = RepeatLimiter::new(REPORT_INTERVAL);
        loop {
            if self.reopen.replace(false) {
                if let Some(f) = file.take() {
                    let _ = f.close().await;
                }
            }
            if self.pending.borrow().is_empty() {
                if stopping.is_fired() {
                    break;
                }
                if file.is_none() {
                    // Open at start and after a reopen, so the operator
                    // sees the new file before its first line.
                    file = self.open().await.ok();
                }
                futures_lite::future::or(self.wake.notified(), stopping.wait()).await;
                continue;
            }
            let f = match file.take() {
                Some(f) => f,
                None => match self.open().await {
                    Ok(f) => f,
                    Err(e) => {
                        self.failed(&events, &mut reports, "cannot open", &e);
                        if stopping.is_fired() {
                            break;
                        }
                        sched::sleep(delay).await;
                        delay = (delay * 2).min(RETRY_MAX);
                        continue;
                    }
                },
            };
            let chunk = std::mem::take(&mut *self.pending.borrow_mut());
            let len = chunk.len();
            // The write consumes its buffer: a copy goes, so that a short
            // or failed write still has the lines to write again.
            match f.write_at(chunk.clone(), 0).await {
                Ok(n) if n == len => {
                    self.written.set(self.written.get() + n as u64);
                    self.advance();
                    delay = RETRY_FIRST;
                    file = Some(f);
                }
                result => {
                    // Nothing is lost: the rest goes back in front.
                    let n = *result.as_ref().unwrap_or(&0);
                    self.written.set(self.written.get() + n as u64);
                    {
                        let mut p = self.pending.borrow_mut();
                        let newer = std::mem::replace(&mut *p, chunk[n..].to_vec());
                        p.extend_from_slice(&newer);
                    }
                    self.advance();
                    match result {
                        Err(e) => {
                            self.failed(&events, &mut reports, "cannot write", &e);
                            let _ = f.close().await;
                            if stopping.is_fired() {
                                break;
                            }
                            sched::sleep(delay).await;
                            delay = (delay * 2).min(RETRY_MAX);
                        }
                        Ok(_) => file = Some(f),
                    }
                }
            }
        }
        if let Some(f) = file.take() {
            let _ = f.close().await;
        }
    }

    fn failed(
        &self,
        events: &Events,
        reports: &mut RepeatLimiter<&'static str>,
        what: &str,
        e: &dyn std::fmt::Display,
    ) {
        self.errors.set(self.errors.get() + 1);
        if let Some(suppressed) = reports.admit(&self.name, sched::now()) {
            events.report(
                Level::Error,
                Subsystem::Log,
                &format!(
                    "{} {}: {what}: {e}; {} octet(s) held and retried{}",
                    self.name,
                    self.path.display(),
                    self.backlog(),
                    if suppressed > 0 {
                        format!(" ({suppressed} similar report(s) suppressed)")
                    } else {
                        String::new()
                    }
                ),
            );
        }
    }
}
