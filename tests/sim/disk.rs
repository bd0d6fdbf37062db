//! An in-memory disk for the spool that behaves like a real one at a crash:
//! what was synced survives; each write since its file's last sync
//! survives whole, torn at a sector boundary, or not at all; files created
//! or removed since their directory's last sync may or may not be there.
//! Writes and syncs take virtual time and fail now and then (EIO, ENOSPC)
//! as the seed's fault plan says.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use impulse::runtime::sched::{self, LocalFuture};
use impulse::spool::disk::{Contents, Disk, DiskFile, Mode, WriteBuf};

use super::exec::Sim;

/// Sector size: the unit a torn write keeps.
const SECTOR: usize = 512;

/// How often things go wrong, per call.
#[derive(Clone, Copy, Debug)]
pub struct Faults {
    /// A `write_at` fails with EIO.
    pub write_eio: f64,
    /// A `write_at` fails with ENOSPC.
    pub write_enospc: f64,
    /// An `fdatasync` fails with EIO (the data stays unsynced).
    pub sync_eio: f64,
}

#[derive(Default)]
struct FileState {
    /// What reads see.
    data: Vec<u8>,
    /// What survives a crash for sure.
    synced: Vec<u8>,
    /// Changes since the last sync, in order: a write or a new length.
    pending: Vec<Change>,
}

enum Change {
    Write(u64, Vec<u8>),
    Len(u64),
}

fn apply(buf: &mut Vec<u8>, c: &Change) {
    match c {
        Change::Write(pos, bytes) => {
            let end = *pos as usize + bytes.len();
            if buf.len() < end {
                buf.resize(end, 0);
            }
            buf[*pos as usize..end].copy_from_slice(bytes);
        }
        Change::Len(n) => buf.resize(*n as usize, 0),
    }
}

type File = Rc<RefCell<FileState>>;

/// The disk: a namespace now and the one as of each directory's last sync.
pub struct SimDisk {
    sim: Rc<Sim>,
    io: SimHandle,
    now: RefCell<BTreeMap<PathBuf, File>>,
    durable: RefCell<BTreeMap<PathBuf, File>>,
}

impl SimDisk {
    /// An empty disk.
    pub fn new(sim: Rc<Sim>, faults: Faults) -> Rc<SimDisk> {
        Rc::new(SimDisk {
            io: SimHandle {
                faults,
                sim: sim.clone(),
                injected: Rc::new(RefCell::new(0)),
                ops: Rc::default(),
                crash_points: Rc::default(),
                crash_due: Rc::default(),
            },
            sim,
            now: RefCell::new(BTreeMap::new()),
            durable: RefCell::new(BTreeMap::new()),
        })
    }

    /// Makes the power fail right after these writes or syncs (counted
    /// from the start of the run).
    pub fn crash_after_ops(&self, mut points: Vec<u64>) {
        points.sort_unstable();
        points.dedup();
        *self.io.crash_points.borrow_mut() = points;
    }

    /// True once a crash point was passed (and clears it).
    pub fn crash_due(&self) -> bool {
        self.io.crash_due.replace(false)
    }

    /// Writes and syncs issued so far.
    pub fn ops(&self) -> u64 {
        self.io.ops.get()
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        *self.io.injected.borrow()
    }

    /// The machine loses power: unsynced state is kept, torn or lost.
    pub fn crash(&self) {
        let mut rng = self.sim.rng();
        let now = std::mem::take(&mut *self.now.borrow_mut());
        let durable = self.durable.borrow().clone();
        let mut names: Vec<&PathBuf> = now.keys().chain(durable.keys()).collect();
        names.sort();
        names.dedup();
        let mut after = BTreeMap::new();
        for name in names {
            let file = match (now.get(name), durable.get(name)) {
                (Some(n), Some(d)) if Rc::ptr_eq(n, d) => Some(n.clone()),
                (Some(n), Some(d)) => Some(if rng.bool() { n } else { d }.clone()),
                (Some(n), None) => rng.bool().then(|| n.clone()),
                (None, Some(d)) => rng.bool().then(|| d.clone()),
                (None, None) => None,
            };
            if let Some(f) = file {
                after.insert(name.clone(), f);
            }
        }
        let mut seen: Vec<File> = Vec::new();
        for f in after.values() {
            if seen.iter().any(|s| Rc::ptr_eq(s, f)) {
                continue;
            }
            seen.push(f.clone());
            let mut st = f.borrow_mut();
            let mut data = st.synced.clone();
            for c in std::mem::take(&mut st.pending) {
                match (c, rng.u8(0..3)) {
                    (c, 0) => apply(&mut data, &c),
                    (Change::Write(pos, bytes), 1) => {
                        let keep = rng.usize(0..=bytes.len() / SECTOR) * SECTOR;
                        apply(&mut data, &Change::Write(pos, bytes[..keep].to_vec()));
                    }
                    _ => {}
                }
            }
            st.synced = data.clone();
            st.data = data;
        }
        *self.durable.borrow_mut() = after.clone();
        *self.now.borrow_mut() = after;
    }

    fn get(&self, path: &Path) -> io::Result<File> {
        self.now
            .borrow()
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
}

fn durable_now(f: &File) {
    let mut st = f.borrow_mut();
    for c in std::mem::take(&mut st.pending) {
        apply(&mut st.synced, &c);
    }
}

impl Disk for SimDisk {
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut v: Vec<PathBuf> = self
            .now
            .borrow()
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .cloned()
            .collect();
        v.sort();
        Ok(v)
    }

    fn read_whole(&self, path: &Path) -> io::Result<Contents> {
        let f = self.get(path)?;
        let data = f.borrow().data.clone();
        Ok(if data.is_empty() {
            Contents::Empty
        } else {
            Contents::Owned(data)
        })
    }

    fn truncate_now(&self, path: &Path, len: u64) -> io::Result<()> {
        let f = self.get(path)?;
        let mut st = f.borrow_mut();
        st.data.resize(len as usize, 0);
        st.pending.push(Change::Len(len));
        drop(st);
        durable_now(&f);
        Ok(())
    }

    fn remove_now(&self, path: &Path) -> io::Result<()> {
        self.get(path)?;
        self.now.borrow_mut().remove(path);
        self.durable.borrow_mut().remove(path);
        Ok(())
    }

    fn quarantine_now(&self, dir: &Path, path: &Path) -> io::Result<PathBuf> {
        let f = self.get(path)?;
        let to = dir
            .join("quarantine")
            .join(path.file_name().unwrap_or_default());
        for ns in [&self.now, &self.durable] {
            let mut ns = ns.borrow_mut();
            ns.remove(path);
            ns.insert(to.clone(), f.clone());
        }
        Ok(to)
    }

    fn open(&self, path: &Path, mode: Mode) -> LocalFuture<io::Result<Rc<dyn DiskFile>>> {
        let file = match mode {
            Mode::Create => {
                let f: File = Rc::default();
                self.now.borrow_mut().insert(path.to_path_buf(), f.clone());
                Ok(f)
            }
            Mode::Reserve => {
                let f = self.now.borrow().get(path).cloned().unwrap_or_default();
                self.now.borrow_mut().insert(path.to_path_buf(), f.clone());
                Ok(f)
            }
            Mode::Read => self.get(path),
        };
        let me = self.io.clone();
        Box::pin(async move {
            let f = file?;
            let h: Rc<dyn DiskFile> = Rc::new(SimFile { f, me });
            Ok(h)
        })
    }

    fn remove(&self, path: &Path) -> LocalFuture<io::Result<()>> {
        let r = self
            .now
            .borrow_mut()
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound));
        Box::pin(async move { r })
    }

    fn sync_dir(&self, dir: &Path) -> LocalFuture<io::Result<()>> {
        let now = self.now.borrow();
        let mut durable = self.durable.borrow_mut();
        durable.retain(|p, _| p.parent() != Some(dir));
        for (p, f) in now.iter().filter(|(p, _)| p.parent() == Some(dir)) {
            durable.insert(p.clone(), f.clone());
        }
        let wait = self.io.latency(500);
        Box::pin(async move {
            sched::sleep(wait).await;
            Ok(())
        })
    }

    fn free_bytes(&self, _dir: &Path) -> Option<u64> {
        Some(1 << 40)
    }
}

/// What a file handle needs of its disk.
#[derive(Clone)]
struct SimHandle {
    faults: Faults,
    sim: Rc<Sim>,
    injected: Rc<RefCell<u64>>,
    /// Writes and syncs issued so far.
    ops: Rc<Cell<u64>>,
    /// Power fails once `ops` reaches the first of these (ascending).
    crash_points: Rc<RefCell<Vec<u64>>>,
    crash_due: Rc<Cell<bool>>,
}

impl SimHandle {
    /// Counts a write or sync; the power fails right after the one a crash
    /// point names (the operation has been issued, not synced).
    fn op(&self) {
        let n = self.ops.get() + 1;
        self.ops.set(n);
        let mut points = self.crash_points.borrow_mut();
        if points.first() == Some(&n) {
            points.remove(0);
            self.crash_due.set(true);
        }
    }

    fn fault(&self, p: f64) -> bool {
        let hit = p > 0.0 && self.sim.rng().f64() < p;
        if hit {
            *self.injected.borrow_mut() += 1;
        }
        hit
    }

    fn latency(&self, max_us: u64) -> Duration {
        Duration::from_micros(self.sim.rng().u64(0..=max_us))
    }
}

struct SimFile {
    f: File,
    me: SimHandle,
}

impl DiskFile for SimFile {
    fn alloc_dma_buffer(&self, len: usize) -> WriteBuf {
        WriteBuf::Mem(vec![0; len])
    }

    fn write_at(&self, buf: WriteBuf, pos: u64) -> LocalFuture<io::Result<usize>> {
        let faults = self.me.faults;
        self.me.op();
        let result = if self.me.fault(faults.write_eio) {
            Err(io::Error::from_raw_os_error(libc::EIO))
        } else if self.me.fault(faults.write_enospc) {
            Err(io::Error::from_raw_os_error(libc::ENOSPC))
        } else {
            let bytes = buf.as_bytes().to_vec();
            let n = bytes.len();
            let mut st = self.f.borrow_mut();
            apply(&mut st.data, &Change::Write(pos, bytes.clone()));
            st.pending.push(Change::Write(pos, bytes));
            Ok(n)
        };
        let wait = self.me.latency(100);
        Box::pin(async move {
            sched::sleep(wait).await;
            result
        })
    }

    fn read_at(&self, pos: u64, len: usize) -> LocalFuture<io::Result<Vec<u8>>> {
        let st = self.f.borrow();
        let start = (pos as usize).min(st.data.len());
        let end = (start + len).min(st.data.len());
        let v = st.data[start..end].to_vec();
        Box::pin(async move { Ok(v) })
    }

    fn fdatasync(&self) -> LocalFuture<io::Result<()>> {
        self.me.op();
        let wait = self.me.latency(3000);
        let fail = self.me.fault(self.me.faults.sync_eio);
        let f = self.f.clone();
        Box::pin(async move {
            sched::sleep(wait).await;
            if fail {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            durable_now(&f);
            Ok(())
        })
    }

    fn truncate(&self, len: u64) -> LocalFuture<io::Result<()>> {
        let mut st = self.f.borrow_mut();
        st.data.resize(len as usize, 0);
        st.pending.push(Change::Len(len));
        Box::pin(async { Ok(()) })
    }

    fn pre_allocate(&self, len: u64) -> LocalFuture<io::Result<()>> {
        self.truncate(len)
    }

    fn size(&self) -> LocalFuture<io::Result<u64>> {
        let n = self.f.borrow().data.len() as u64;
        Box::pin(async move { Ok(n) })
    }

    fn close(&self) -> LocalFuture<io::Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

impl SimDisk {
    /// Every record about `id` on the disk now, file by file (to explain a
    /// failed seed).
    pub fn records_of(&self, id: impulse::message::MessageId) -> Vec<String> {
        use impulse::spool::record::{decode_record, Record};
        let mut out = Vec::new();
        for (path, f) in self.now.borrow().iter() {
            let data = f.borrow().data.clone();
            let scan = impulse::spool::scan::scan_segment(&data);
            for fr in &scan.frames {
                let Ok((r, _)) = decode_record(&data[fr.offset as usize..], fr.offset) else {
                    continue;
                };
                if r.id() != id {
                    continue;
                }
                let what = match r {
                    Record::Message { .. } => "MESSAGE".to_string(),
                    Record::Outcome { rcpt, outcome, .. } => format!("OUTCOME {rcpt} {outcome:?}"),
                    Record::Retry { attempts, .. } => format!("RETRY {attempts}"),
                    Record::Done { .. } => "DONE".to_string(),
                    Record::Rebind { binding, .. } => format!("REBIND {binding:?}"),
                };
                out.push(format!("{}@{}: {what}", path.display(), fr.offset));
            }
        }
        out
    }
}
