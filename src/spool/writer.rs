//! The group-commit writer: one per shard, on the shard's glommio executor.
//!
//! Owns the active segment file. Appends from every session of the shard
//! are framed into one staging buffer (new mail's content stays shared
//! beside it, see `staging`); a single commit task assembles each batch
//! into one DMA buffer, copying each content once, and writes it with one
//! block-aligned O_DIRECT `write_at` (glommio `DmaFile`;
//! measured 4x faster than `BufferedFile` for 800 KiB batches here, see
//! `examples/spool_io_compare.rs`) and makes it durable with one
//! `fdatasync`, then wakes every waiter of that batch. Must never: wake a waiter before the
//! sync covering its record completed, acknowledge anything from a batch
//! whose write or sync failed, or touch files other than through its
//! `Disk`. May call: `spool::{book, disk, record, recovery, space,
//! staging}`, `spool` (options, `SpoolError`, segment names, ids),
//! `message`, runtime (the clock and tasks).

use super::book::Book;
use super::disk::{Disk, DiskFile, LocalDisk, Mode};
use super::record::{
    encode_message_frame, encode_record, reframe_header, Outcome, Record, SegmentHeader,
    FORMAT_VERSION, FRAME_HEADER_LEN, MAX_PAYLOAD_BYTES, SEGMENT_HEADER_LEN,
};
use super::recovery::{recover_dir, Recovered};
use super::space::Space;
use super::staging::{prepend_copies, wait_batch, Batch, BookOp, CopyReq, Staged, Staging};
use super::{segment_file_name, SpoolError, SpoolOptions, MAX_SEGMENT_SIZE_BYTES};
use crate::message::{Content, Envelope, MessageId};
use crate::runtime::sched;
use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::task::{Poll, Waker};

/// Block size every O_DIRECT write is aligned to (covers 512 B and 4 KiB
/// logical blocks).
pub(crate) const DIRECT_IO_ALIGN_BYTES: usize = 4096;

/// A failure to inject into the next commit (tests of the error paths).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The next `write_at` fails with this errno.
    Write(i32),
    /// The next `fdatasync` fails with this errno.
    Sync(i32),
}

/// Counters of one spool since open.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Records made durable.
    pub records: u64,
    /// Batches committed (one write + one fdatasync each, more on a roll).
    pub batches: u64,
    /// Batches that failed (none of their records acknowledged).
    pub failed_batches: u64,
    /// Bytes made durable.
    pub bytes: u64,
    /// Segments created.
    pub segments_created: u64,
}

/// State shared by the `Spool` handle and its commit task.
pub(super) struct Shared {
    opts: SpoolOptions,
    pub(super) staging: RefCell<Staging>,
    committer: RefCell<Option<Waker>>,
    pub(super) closed: Cell<bool>,
    fault: Cell<Option<Fault>>,
    pub(super) book: RefCell<Book>,
    pub(super) active_segment: Cell<u32>,
    stats: Cell<SpoolStats>,
    /// The reserve for records that must be written on a full disk.
    pub(super) space: Space,
    /// Compaction asks the committer to start a new segment, so that a
    /// mostly dead active one can be deleted (needed on a full disk).
    pub(super) roll_wanted: Cell<bool>,
}

impl Shared {
    pub(super) fn kick(&self) {
        if let Some(w) = self.committer.borrow_mut().take() {
            w.wake();
        }
    }
}

/// One shard's spool. Used through `Rc<Spool>`; not `Send`.
pub struct Spool {
    pub(super) dir: PathBuf,
    pub(super) disk: Rc<dyn Disk>,
    shard: u16,
    next_id: Cell<MessageId>,
    pub(super) shared: Rc<Shared>,
    task: RefCell<Option<sched::Task<()>>>,
}

impl Spool {
    /// Opens (creates) the shard's spool dir, runs recovery, and starts the
    /// group-commit task on the current glommio executor.
    pub async fn open(
        dir: &Path,
        shard: u16,
        opts: SpoolOptions,
    ) -> Result<(Rc<Spool>, Recovered), SpoolError> {
        Spool::open_on(Rc::new(LocalDisk), dir, shard, opts).await
    }

    /// [`Spool::open`] on another disk (the simulation's).
    pub async fn open_on(
        disk: Rc<dyn Disk>,
        dir: &Path,
        shard: u16,
        opts: SpoolOptions,
    ) -> Result<(Rc<Spool>, Recovered), SpoolError> {
        if opts.segment_size > MAX_SEGMENT_SIZE_BYTES
            || opts.segment_size <= SEGMENT_HEADER_LEN as u64
        {
            return Err(SpoolError::Unusable(format!(
                "segment_size {} outside {}..={MAX_SEGMENT_SIZE_BYTES}",
                opts.segment_size, SEGMENT_HEADER_LEN
            )));
        }
        // Recovery runs before the shard serves anything: blocking std::fs
        // and memmap2 are fine here.
        disk.create_dir_all(dir)
            .map_err(|e| SpoolError::from_io("creating spool", &e))?;
        let (recovered, state) = recover_dir(&*disk, dir, Some(shard), true)?;
        let epoch_ms = sched::wall_ms().max(state.max_epoch_ms.saturating_add(1));
        let space = Space::open(disk.clone(), dir, opts.reserve_bytes).await?;
        let seg_no = state.next_segment.max(1);
        let shared = Rc::new(Shared {
            opts,
            staging: RefCell::default(),
            committer: RefCell::new(None),
            closed: Cell::new(false),
            fault: Cell::new(None),
            book: RefCell::new(state.book),
            active_segment: Cell::new(seg_no),
            stats: Cell::new(SpoolStats::default()),
            space,
            roll_wanted: Cell::new(false),
        });
        let mut committer = Committer {
            shared: shared.clone(),
            dir: dir.to_path_buf(),
            disk: disk.clone(),
            shard,
            file: None,
            tail_block: Vec::new(),
            next_tail: Vec::new(),
            seg_no,
            tail: 0,
            durable: 0,
        };
        if let Err(e) = committer.roll(seg_no).await {
            // A full disk must not keep the shard from delivering what it
            // holds: start the segment from the reserve, or later.
            if !matches!(e, SpoolError::DiskFull(_)) {
                return Err(e);
            }
            if !committer.shared.space.give_up().await || committer.roll(seg_no).await.is_err() {
                crate::events::paniclog(
                    crate::events::Level::Error,
                    crate::events::Subsystem::Spool,
                    &format!(
                        "spool {}: disk full at start-up: serving without an active \
                     segment until space is available",
                        dir.display()
                    ),
                );
            }
        }
        let task = sched::spawn(committer.run());
        let spool = Spool {
            dir: dir.to_path_buf(),
            disk,
            shard,
            next_id: Cell::new(MessageId {
                epoch_ms,
                shard,
                seq: 0,
            }),
            shared,
            task: RefCell::new(Some(task)),
        };
        Ok((Rc::new(spool), recovered))
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The owning shard.
    pub fn shard(&self) -> u16 {
        self.shard
    }

    /// Next unique message id for this shard (no I/O).
    pub fn allocate_id(&self) -> MessageId {
        let id = self.next_id.get();
        let next = super::next_message_id(id);
        self.next_id.set(next);
        id
    }

    /// Appends a MESSAGE record of new mail; resolves only after the
    /// fdatasync covering it completed. Refused at once while the spool is
    /// low on space ([`Spool::low_on_space`]).
    pub async fn append_message(
        &self,
        id: MessageId,
        env: &Envelope,
        body: &[u8],
    ) -> Result<(), SpoolError> {
        self.check_room().await?;
        self.append_generated_message(id, env, body).await
    }

    /// [`Spool::append_message`] with the content shared, not copied: it
    /// is read in place until the commit copies it into the write buffer.
    pub async fn append_content(
        &self,
        id: MessageId,
        env: &Envelope,
        content: &Content,
    ) -> Result<(), SpoolError> {
        self.check_room().await?;
        self.append_generated_content(id, env, content).await
    }

    async fn check_room(&self) -> Result<(), SpoolError> {
        if !self.shared.space.try_recover(&self.dir).await {
            return Err(SpoolError::DiskFull(
                "spool low on space: new mail refused until space is back".into(),
            ));
        }
        Ok(())
    }

    /// Appends a MESSAGE record the server made itself (a DSN). Unlike
    /// [`Spool::append_message`] it may use the reserve: the failure it
    /// reports cannot be recorded before it is durable.
    pub async fn append_generated_message(
        &self,
        id: MessageId,
        env: &Envelope,
        body: &[u8],
    ) -> Result<(), SpoolError> {
        if body.len() > MAX_PAYLOAD_BYTES / 2 {
            return Err(SpoolError::TooLarge(body.len()));
        }
        self.stage(|st| {
            st.push(BookOp::Message(id), |buf| {
                encode_message_frame(&id, env, body, 0, buf)
            })
        })
        .await
    }

    /// [`Spool::append_generated_message`] with the content shared.
    pub async fn append_generated_content(
        &self,
        id: MessageId,
        env: &Envelope,
        content: &Content,
    ) -> Result<(), SpoolError> {
        if content.len() > MAX_PAYLOAD_BYTES / 2 {
            return Err(SpoolError::TooLarge(content.len()));
        }
        self.stage(|st| st.push_message(&id, env, content)).await
    }

    /// Appends a RECIPIENT_OUTCOME record (same durability).
    pub async fn append_outcome(
        &self,
        id: MessageId,
        rcpt: u32,
        outcome: Outcome,
        reply: &str,
    ) -> Result<(), SpoolError> {
        let rec = Record::Outcome {
            id,
            rcpt,
            outcome,
            reply: reply.to_string(),
        };
        let op = BookOp::Outcome(id, rcpt, outcome, reply.into());
        self.stage(|st| st.push(op, |buf| encode_record(&rec, 0, buf)))
            .await
    }

    /// Appends a RETRY record (same durability).
    pub async fn append_retry(
        &self,
        id: MessageId,
        next_attempt_ms: u64,
        attempts: u32,
    ) -> Result<(), SpoolError> {
        let rec = Record::Retry {
            id,
            next_attempt_ms,
            attempts,
        };
        let op = BookOp::Retry(id, next_attempt_ms, attempts);
        self.stage(|st| st.push(op, |buf| encode_record(&rec, 0, buf)))
            .await
    }

    /// Appends a settlement in one batch: OUTCOME records for `finals`
    /// (recipient index, outcome, reply), then DONE or RETRY when `then`
    /// says so. All of it is durable, or none of it is acknowledged.
    ///
    /// While the spool is low on space, a settlement that is only a RETRY
    /// is not written (and succeeds): it frees nothing, and a destination
    /// that stays down would spend the reserve on retry records until not
    /// even a delivery could be recorded. After a crash in that state the
    /// message keeps its last durable attempt count and retry time: it is
    /// tried again early, never lost.
    pub async fn append_settlement(
        &self,
        id: MessageId,
        finals: &[(u32, Outcome, &str)],
        then: Option<Record>,
    ) -> Result<(), SpoolError> {
        if self.shared.closed.get() {
            return Err(SpoolError::Closed);
        }
        let retry_only = finals.is_empty() && matches!(then, Some(Record::Retry { .. }));
        if retry_only && self.shared.space.is_low() {
            return Ok(());
        }
        let mut records: Vec<(Record, BookOp)> = finals
            .iter()
            .map(|&(rcpt, outcome, reply)| {
                let rec = Record::Outcome {
                    id,
                    rcpt,
                    outcome,
                    reply: reply.to_string(),
                };
                (rec, BookOp::Outcome(id, rcpt, outcome, reply.into()))
            })
            .collect();
        match then {
            Some(rec @ Record::Done { .. }) => records.push((rec, BookOp::Done(id))),
            Some(
                rec @ Record::Retry {
                    next_attempt_ms,
                    attempts,
                    ..
                },
            ) => records.push((rec, BookOp::Retry(id, next_attempt_ms, attempts))),
            _ => {}
        }
        if records.is_empty() {
            return Ok(());
        }
        self.stage(|st| {
            for (rec, op) in records {
                st.push(op, |buf| encode_record(&rec, 0, buf));
            }
        })
        .await
    }

    /// True while new mail is refused because the disk is full; outcome
    /// and DSN records are still written, from the reserve.
    pub fn low_on_space(&self) -> bool {
        self.shared.space.is_low()
    }

    /// Would a new message be taken now? False while the disk is full and
    /// has not got room back; what MAIL asks before a client sends a body.
    pub fn takes_mail(&self) -> bool {
        self.shared.space.room_for_mail(&self.dir)
    }

    /// Stages REBIND records at once, before anything the caller appends
    /// later (from now on each message is sent from its binding; `None`:
    /// `default`); the future resolves when they are durable.
    pub fn append_rebinds<'a>(
        &self,
        moves: impl IntoIterator<Item = (MessageId, Option<&'a str>)>,
    ) -> impl std::future::Future<Output = Result<(), SpoolError>> + 'static {
        let batch = self.stage_now(|st| {
            for (id, binding) in moves {
                let rec = Record::Rebind {
                    id,
                    binding: binding.map(str::to_string),
                };
                let op = BookOp::Rebind(id, binding.map(Into::into));
                st.push(op, |buf| encode_record(&rec, 0, buf));
            }
        });
        async move { wait_batch(batch?).await }
    }

    /// Appends a DONE record (same durability).
    pub async fn append_done(&self, id: MessageId) -> Result<(), SpoolError> {
        let rec = Record::Done { id };
        self.stage(|st| st.push(BookOp::Done(id), |buf| encode_record(&rec, 0, buf)))
            .await
    }

    /// Makes the next commit fail with `fault` (error-path tests).
    #[doc(hidden)]
    pub fn inject_fault(&self, fault: Fault) {
        self.shared.fault.set(Some(fault));
    }

    /// Is `id` live (MESSAGE durable, no DONE yet)?
    pub fn is_live(&self, id: &MessageId) -> bool {
        self.shared.book.borrow().is_live(id)
    }

    /// Counters since open.
    pub fn stats(&self) -> SpoolStats {
        self.shared.stats.get()
    }

    /// The segment currently appended to.
    pub fn active_segment(&self) -> u32 {
        self.shared.active_segment.get()
    }

    /// Flushes what is staged and stops the commit task.
    pub async fn close(&self) -> Result<(), SpoolError> {
        self.shared.closed.set(true);
        self.shared.kick();
        let task = self.task.borrow_mut().take();
        if let Some(task) = task {
            task.await;
        }
        Ok(())
    }

    async fn stage(&self, push: impl FnOnce(&mut Staging)) -> Result<(), SpoolError> {
        wait_batch(self.stage_now(push)?).await
    }

    /// Stages what `push` appends now, and kicks the committer; returns
    /// the batch it lands in.
    fn stage_now(&self, push: impl FnOnce(&mut Staging)) -> Result<Rc<Batch>, SpoolError> {
        if self.shared.closed.get() {
            return Err(SpoolError::Closed);
        }
        let batch = {
            let mut st = self.shared.staging.borrow_mut();
            push(&mut st);
            st.batch.clone()
        };
        self.shared.kick();
        Ok(batch)
    }

    /// Queues copy-forward frames for the front of the next batch and
    /// waits until that batch is durable.
    pub(super) async fn stage_copies(&self, copies: Vec<CopyReq>) -> Result<(), SpoolError> {
        self.stage(|st| st.copies.extend(copies)).await
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.shared.closed.set(true);
        self.shared.kick();
    }
}

/// The commit task's own state: the active file and its offsets.
struct Committer {
    shared: Rc<Shared>,
    dir: PathBuf,
    disk: Rc<dyn Disk>,
    shard: u16,
    file: Option<Rc<dyn DiskFile>>,
    /// Bytes of the last, partly filled block: O_DIRECT writes whole
    /// blocks, so the next batch rewrites this block with them prepended.
    tail_block: Vec<u8>,
    /// The tail block a write in flight will leave (swapped in once durable).
    next_tail: Vec<u8>,
    seg_no: u32,
    /// Where the next frame goes.
    tail: u64,
    /// Everything before this offset is synced.
    durable: u64,
}

impl Committer {
    async fn run(mut self) {
        loop {
            let shared = self.shared.clone();
            poll_fn(|cx| {
                if !shared.staging.borrow().is_empty()
                    || shared.closed.get()
                    || shared.roll_wanted.get()
                {
                    return Poll::Ready(());
                }
                *shared.committer.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            })
            .await;
            if self.shared.roll_wanted.replace(false)
                && self.tail > SEGMENT_HEADER_LEN as u64
                && !self.shared.closed.get()
            {
                if let Err(e) = self.roll(self.seg_no + 1).await {
                    crate::events::paniclog(
                        crate::events::Level::Error,
                        crate::events::Subsystem::Spool,
                        &format!("spool cannot start a new segment: {e}"),
                    );
                }
            }
            self.linger().await;
            let staged = std::mem::take(&mut *self.shared.staging.borrow_mut());
            if staged.is_empty() {
                if self.shared.closed.get() {
                    break; // closed and drained
                }
                continue; // woken only to roll
            }
            // Every earlier batch is settled here, so the book is exact.
            let (buf, frames) = prepend_copies(
                &self.shared.book.borrow(),
                staged.copies,
                staged.buf,
                staged.frames,
            );
            let n = frames.len() as u64;
            let bytes = frames.iter().map(|f| f.len as u64).sum::<u64>();
            let result = self.commit(buf, frames).await;
            let mut stats = self.shared.stats.get();
            if result.is_ok() {
                stats.records += n;
                stats.batches += 1;
                stats.bytes += bytes;
            } else {
                stats.failed_batches += 1;
            }
            self.shared.stats.set(stats);
            if let Err(SpoolError::DiskFull(_)) = &result {
                // The waiters retry what must be written; the reserve is
                // theirs now, and new mail is refused.
                self.shared.space.give_up().await;
            }
            staged.batch.complete(result);
        }
        if let Some(f) = self.file.take() {
            let _ = f.close().await;
        }
        self.shared.space.close().await;
    }

    /// Waits up to `batch_max_delay` for more appends, unless the batch is
    /// (or grows) big enough or the spool closes: one timer, and every
    /// append's kick re-checks the size (no polling sleeps, each of which
    /// would be a wake-up of the shard).
    async fn linger(&self) {
        let delay = self.shared.opts.batch_max_delay;
        if delay.is_zero() || self.shared.closed.get() {
            return;
        }
        let shared = &self.shared;
        let full = poll_fn(|cx| {
            if shared.closed.get() || shared.staging.borrow().bytes >= shared.opts.batch_max_bytes {
                return Poll::Ready(());
            }
            *shared.committer.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        });
        futures_lite::future::or(full, sched::sleep(delay)).await;
    }

    async fn commit(&mut self, mut buf: Vec<u8>, frames: Vec<Staged>) -> Result<(), SpoolError> {
        if self.file.is_none() {
            // A previous failure left no usable segment.
            self.roll(self.seg_no + 1).await?;
        }
        let seg_size = self.shared.opts.segment_size;
        let mut run_start = 0;
        let mut landed: Vec<(u32, u64)> = Vec::with_capacity(frames.len());
        for (i, f) in frames.iter().enumerate() {
            let len = f.len;
            if self.tail + len as u64 > seg_size && self.tail > SEGMENT_HEADER_LEN as u64 {
                self.write_sync(&pieces(&buf, &frames[run_start..i]))
                    .await?;
                run_start = i;
                if let Err(e) = self.roll(self.seg_no + 1).await {
                    // No room for a new segment: the old one takes the
                    // frame if the format allows (a full disk fails it
                    // below anyway if there is truly no space).
                    let fits = self.tail + len as u64 <= MAX_SEGMENT_SIZE_BYTES;
                    if self.file.is_none() || !fits {
                        return Err(e);
                    }
                }
            }
            let (header, owned) = buf[f.start..f.start + f.own()].split_at_mut(FRAME_HEADER_LEN);
            match &f.shared {
                Some(c) => {
                    let [head, body] = c.parts();
                    reframe_header(header, self.tail, &[owned, head, body]);
                }
                None => reframe_header(header, self.tail, &[owned]),
            }
            landed.push((self.seg_no, self.tail));
            self.tail += len as u64;
        }
        self.write_sync(&pieces(&buf, &frames[run_start..])).await?;
        let mut book = self.shared.book.borrow_mut();
        for (f, (seg, off)) in frames.into_iter().zip(landed) {
            let (len, end) = (f.len, off + f.len as u64);
            match f.op {
                BookOp::Message(id) => book.on_message(seg, id, off as u32, len as u32),
                BookOp::Outcome(id, rcpt, outcome, reply) => {
                    book.on_outcome(seg, end, id, rcpt, outcome, &reply)
                }
                BookOp::Retry(id, next, n) => book.on_retry(seg, end, id, next, n),
                BookOp::Done(id) => book.on_done(seg, end, id),
                BookOp::Rebind(id, binding) => book.on_rebind(seg, end, id, binding.as_deref()),
            }
        }
        Ok(())
    }

    /// Writes `parts` (in order) at the durable offset and syncs them. On
    /// failure, undoes the partial write (or gives up the segment) before
    /// returning.
    async fn write_sync(&mut self, parts: &[&[u8]]) -> Result<(), SpoolError> {
        let result = self.try_write_sync(parts).await;
        if let Err(e) = &result {
            crate::events::paniclog(
                crate::events::Level::Error,
                crate::events::Subsystem::Spool,
                &format!(
                    "spool commit failed in {} at offset {}: {e}; batch not acknowledged",
                    segment_file_name(self.seg_no),
                    self.durable
                ),
            );
            self.undo().await;
        }
        result
    }

    async fn try_write_sync(&mut self, parts: &[&[u8]]) -> Result<(), SpoolError> {
        let file = self.file.as_ref().ok_or(SpoolError::Closed)?;
        let new_len: usize = parts.iter().map(|p| p.len()).sum();
        let end = self.durable + new_len as u64;
        if let Some(Fault::Write(errno)) = self.shared.fault.get() {
            self.shared.fault.set(None);
            let e = std::io::Error::from_raw_os_error(errno);
            return Err(SpoolError::from_io("writing segment (injected)", &e));
        }
        // O_DIRECT: write whole aligned blocks starting at the block that
        // holds the durable end. Its durable bytes are rewritten unchanged;
        // the rest of the last block is zero padding (SPEC.md 1.4). This is
        // the one copy of each part into the buffer the kernel reads.
        let base = self.durable - self.tail_block.len() as u64;
        let data_len = self.tail_block.len() + new_len;
        let total = data_len.next_multiple_of(DIRECT_IO_ALIGN_BYTES);
        let mut dma = file.alloc_dma_buffer(total);
        let bytes = dma.as_bytes_mut();
        let mut at = self.tail_block.len();
        bytes[..at].copy_from_slice(&self.tail_block);
        for p in parts {
            bytes[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        bytes[data_len..].fill(0);
        let keep = data_len % DIRECT_IO_ALIGN_BYTES;
        self.next_tail.clear();
        self.next_tail
            .extend_from_slice(&bytes[data_len - keep..data_len]);
        // A short count on a regular file means the file system ran out of
        // space (write(2)): reported as disk full.
        let n = file
            .write_at(dma, base)
            .await
            .map_err(|e| SpoolError::from_io("writing segment", &e))?;
        if n < total {
            return Err(SpoolError::DiskFull(format!(
                "writing segment: short write ({n} of {total} bytes)"
            )));
        }
        if let Some(Fault::Sync(errno)) = self.shared.fault.get() {
            self.shared.fault.set(None);
            let e = std::io::Error::from_raw_os_error(errno);
            return Err(SpoolError::from_io("syncing segment (injected)", &e));
        }
        file.fdatasync()
            .await
            .map_err(|e| SpoolError::from_io("syncing segment", &e))?;
        std::mem::swap(&mut self.tail_block, &mut self.next_tail);
        self.durable = end;
        self.tail = end;
        Ok(())
    }

    /// After a failed write or sync: cut the file back to the last durable
    /// offset so no unacknowledged bytes stay behind. If even that fails,
    /// abandon the segment; the next commit starts a new one.
    async fn undo(&mut self) {
        self.tail = self.durable;
        let Some(file) = self.file.as_ref() else {
            return;
        };
        let cut = file.truncate(self.durable).await;
        let synced = match cut {
            Ok(()) => file.fdatasync().await,
            Err(e) => Err(e),
        };
        if let Err(e) = synced {
            crate::events::paniclog(
                crate::events::Level::Error,
                crate::events::Subsystem::Spool,
                &format!(
                    "spool cannot truncate {} back to {}: {e}; abandoning segment",
                    segment_file_name(self.seg_no),
                    self.durable
                ),
            );
            if let Some(f) = self.file.take() {
                let _ = f.close().await;
            }
        }
    }

    /// Creates segment `n`, writes and syncs its header, syncs the dir.
    ///
    /// The old segment stays the active one until the new header is
    /// durable: on a full disk, records keep going into the old segment
    /// (past `segment_size` if need be) rather than into none.
    async fn roll(&mut self, n: u32) -> Result<(), SpoolError> {
        let path = self.dir.join(segment_file_name(n));
        let file = self
            .disk
            .open(&path, Mode::Create)
            .await
            .map_err(|e| SpoolError::from_io("creating segment", &e))?;
        let header = SegmentHeader {
            version: FORMAT_VERSION,
            shard: self.shard,
            segment: n,
            created_ms: sched::wall_ms(),
        };
        let old = (
            self.file.replace(file),
            self.seg_no,
            self.durable,
            self.tail,
            std::mem::take(&mut self.tail_block),
        );
        self.seg_no = n;
        self.durable = 0;
        self.tail = 0;
        let r = self.try_write_sync(&[&header.encode()]).await;
        if let Err(e) = r {
            crate::events::paniclog(
                crate::events::Level::Error,
                crate::events::Subsystem::Spool,
                &format!("spool cannot start segment {n}: {e}"),
            );
            if let Some(f) = self.file.take() {
                let _ = f.close().await;
            }
            (
                self.file,
                self.seg_no,
                self.durable,
                self.tail,
                self.tail_block,
            ) = old;
            return Err(e);
        }
        if let Some(f) = old.0 {
            let _ = f.close().await;
        }
        self.shared.active_segment.set(n);
        self.shared
            .book
            .borrow_mut()
            .add_segment(n, SEGMENT_HEADER_LEN as u64);
        let mut stats = self.shared.stats.get();
        stats.segments_created += 1;
        self.shared.stats.set(stats);
        self.disk
            .sync_dir(&self.dir)
            .await
            .map_err(|e| SpoolError::from_io("syncing spool dir", &e))
    }
}

/// The octets of `frames` in order: each one's part in the staging
/// buffer, then its shared content's parts (read in place).
fn pieces<'a>(buf: &'a [u8], frames: &'a [Staged]) -> Vec<&'a [u8]> {
    let mut out = Vec::with_capacity(frames.len() * 3);
    for f in frames {
        out.push(&buf[f.start..f.start + f.own()]);
        if let Some(c) = &f.shared {
            out.extend(c.parts());
        }
    }
    out
}
