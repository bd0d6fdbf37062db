//! Offline spool tools: `impulse spool verify|inspect|show`.
//!
//! Read-only over a spool directory through std::fs and memmap2: never
//! repairs, truncates or deletes, never starts glommio, so it is safe to
//! run beside a live shard. `verify` and `inspect` take a shard's
//! directory or the spool base (then every `shard-N` under it). Exit
//! codes: 0 clean, 1 problems found, 2 the spool could not be read or
//! the directory holds no spool at all. May call: `spool::quarantine`,
//! `spool::record`, `spool::recovery`, `spool::scan`, `message`, `config`
//! (`Config::load`, to find the shard directory of a message).

use super::quarantine::{is_half_created, QUARANTINE_DIR};
use super::record::{decode_payload, Outcome, Record, SegmentHeader, FRAME_HEADER_LEN};
use super::recovery::{list_segments, map_segment, recover_dir};
use super::scan::scan_segment;
use crate::message::{BodyType, DsnRet, MessageId, Notify};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `impulse spool ...` subcommands.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum SpoolCommand {
    /// Check every record of every segment (exit 0 clean, 1 problems, 2 unreadable).
    Verify {
        /// Spool directory of one shard, or the spool base (every
        /// `shard-N` under it is checked).
        dir: PathBuf,
        /// The shard owning the directory (default: from a `shard-N`
        /// directory name, else the shard most segment headers name).
        #[arg(long)]
        shard: Option<u16>,
    },
    /// Print counts by state and recipient domain, and the oldest message.
    Inspect {
        /// Spool directory of one shard, or the spool base (each
        /// `shard-N` under it in turn).
        dir: PathBuf,
        /// The shard owning the directory (default as for verify).
        #[arg(long)]
        shard: Option<u16>,
    },
    /// Print one message's envelope, headers and state records.
    Show {
        /// Spool directory of the message's shard (default: the shard
        /// named in the id, under the configuration's spool settings).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Configuration to take the spool directory from (default: embedded).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Message id (EEEEEEEEEEEE-SS-QQQQQQQQ).
        id: String,
    },
}

const EXIT_PROBLEMS: u8 = 1;
const EXIT_UNREADABLE: u8 = 2;
/// `show` prints at most this much of the header section.
const SHOW_MAX_HEADER_BYTES: usize = 64 * 1024;

/// Runs a spool subcommand, printing to stdout/stderr.
pub fn run(cmd: SpoolCommand) -> ExitCode {
    let r = match cmd {
        SpoolCommand::Verify { dir, shard } => verify(&dir, shard),
        SpoolCommand::Inspect { dir, shard } => inspect(&dir, shard),
        SpoolCommand::Show { dir, config, id } => match dir {
            Some(dir) => show(&dir, &id),
            None => shard_dir(config.as_deref(), &id).and_then(|dir| show(&dir, &id)),
        },
    };
    match r {
        Ok(0) => ExitCode::SUCCESS,
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("spool: {e}");
            ExitCode::from(EXIT_UNREADABLE)
        }
    }
}

/// The spool directory of the shard that received `id`, per the configuration.
fn shard_dir(config: Option<&Path>, id: &str) -> Result<PathBuf, String> {
    let id: crate::message::MessageId = id.parse().map_err(|e| format!("{e}"))?;
    let config = crate::config::Config::load(config).map_err(|e| format!("configuration: {e}"))?;
    Ok(config.spool_dir(usize::from(id.shard)))
}

/// The shard that owns `dir`: from a `shard-N` directory name, else the
/// shard named by most valid segment headers (None if there is none).
pub fn infer_shard(dir: &Path) -> Option<u16> {
    let named = dir
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("shard-"))
        .and_then(|n| n.parse().ok());
    if named.is_some() {
        return named;
    }
    let mut votes: BTreeMap<u16, u32> = BTreeMap::new();
    for (_, path) in list_segments(dir).ok()? {
        let Ok(Some(map)) = map_segment(&path) else {
            continue;
        };
        if let Ok(h) = SegmentHeader::decode(&map) {
            *votes.entry(h.shard).or_default() += 1;
        }
    }
    votes.into_iter().max_by_key(|(_, n)| *n).map(|(s, _)| s)
}

/// Counts from verifying one shard directory or a whole spool base.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    segments: u64,
    records: u64,
    problems: u64,
}

impl Tally {
    fn add(&mut self, o: Tally) {
        self.segments += o.segments;
        self.records += o.records;
        self.problems += o.problems;
    }
}

/// What a directory given to `verify`/`inspect` turned out to be.
enum SpoolDir {
    /// A shard directory: it holds segment files.
    Shard,
    /// A spool base: no segments, but `shard-N` subdirectories.
    Base(Vec<(u16, PathBuf)>),
}

/// Tells a shard directory from a spool base; an error when it is neither
/// (no segment and no `shard-N` subdirectory: nothing to check).
fn classify(dir: &Path) -> Result<SpoolDir, String> {
    let io = |e: std::io::Error| format!("{}: {e}", dir.display());
    if !list_segments(dir).map_err(io)?.is_empty() {
        return Ok(SpoolDir::Shard);
    }
    let mut shards = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let n = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix("shard-"))
            .and_then(|n| n.parse::<u16>().ok());
        if let (Some(n), true) = (n, entry.path().is_dir()) {
            shards.push((n, entry.path()));
        }
    }
    shards.sort();
    if shards.is_empty() {
        return Err(format!(
            "{}: no spool segments here (seg-NNNNNNNN.log) and no shard-N directories: \
             not a shard's spool directory nor a spool base",
            dir.display()
        ));
    }
    Ok(SpoolDir::Base(shards))
}

/// The shard directories to work on: `dir` itself, or every `shard-N`
/// under a spool base (only shard `shard` when given); true for a base.
type ShardDirs = (bool, Vec<(Option<u16>, PathBuf)>);

fn shard_dirs(dir: &Path, shard: Option<u16>) -> Result<ShardDirs, String> {
    Ok(match classify(dir)? {
        SpoolDir::Shard => (false, vec![(shard, dir.to_path_buf())]),
        SpoolDir::Base(shards) => (
            true,
            shards
                .into_iter()
                .filter(|(n, _)| shard.is_none_or(|s| s == *n))
                .map(|(n, p)| (Some(n), p))
                .collect(),
        ),
    })
}

/// Checks every segment of a shard directory, or of every shard under a
/// spool base; returns the exit code (0 clean, 1 problems).
pub fn verify(dir: &Path, shard: Option<u16>) -> Result<u8, String> {
    let (base, dirs) = shard_dirs(dir, shard)?;
    let mut total = Tally::default();
    for (shard, sdir) in &dirs {
        let t = verify_shard(sdir, *shard)?;
        if base && t.segments == 0 {
            println!("{}: no segments", sdir.display());
            total.problems += 1;
        }
        total.add(t);
    }
    if base {
        println!(
            "{}: {} shards, {} segments, {} valid records, {} problems",
            dir.display(),
            dirs.len(),
            total.segments,
            total.records,
            total.problems
        );
        if dirs.is_empty() {
            return Ok(EXIT_PROBLEMS);
        }
    }
    Ok(if total.problems == 0 {
        0
    } else {
        EXIT_PROBLEMS
    })
}

/// Checks one shard directory and prints its summary line.
fn verify_shard(dir: &Path, shard: Option<u16>) -> Result<Tally, String> {
    let segs = list_segments(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let shard = shard.or_else(|| infer_shard(dir));
    let mut t = Tally::default();
    for (n, path) in &segs {
        t.add(verify_segment(*n, path, shard)?);
    }
    println!(
        "{}: {} segments, {} valid records, {} problems",
        dir.display(),
        t.segments,
        t.records,
        t.problems
    );
    Ok(t)
}

/// Checks one segment file, printing each problem.
fn verify_segment(n: u32, path: &Path, shard: Option<u16>) -> Result<Tally, String> {
    let map = map_segment(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let buf: &[u8] = map.as_deref().unwrap_or(&[]);
    let scan = scan_segment(buf);
    let name = path.display();
    let mut t = Tally {
        segments: 1,
        ..Tally::default()
    };
    let mut problem = |text: String| {
        t.problems += 1;
        println!("{name}: {text}");
    };
    match scan.header {
        Some(h) if shard.is_some_and(|s| s != h.shard) => problem(format!(
            "header names shard {}, not {}: recovery skips this segment",
            h.shard,
            shard.unwrap_or_default()
        )),
        Some(h) if h.segment == n => {}
        Some(h) => problem(format!("header names segment {}", h.segment)),
        None if scan.frames.is_empty() && is_half_created(buf) => {
            problem("half-created segment (no header, no record): recovery removes it".to_string())
        }
        None if scan.frames.is_empty() => problem(format!(
            "no valid header and no valid record, not a half-created segment: \
             recovery moves it to {QUARANTINE_DIR}/"
        )),
        None => problem("bad or missing segment header".to_string()),
    }
    for (s, e) in &scan.corrupt {
        problem(format!("corrupt bytes {s}..{e}"));
    }
    for f in &scan.frames {
        let o = f.offset as usize;
        let payload = &buf[o + FRAME_HEADER_LEN..o + f.frame.len];
        match decode_payload(f.frame.record_type, f.frame.version, payload) {
            Ok(_) => t.records += 1,
            Err(e) => problem(format!("record at {o} does not decode: {e}")),
        }
    }
    if scan.torn_bytes > 0 {
        problem(format!(
            "torn tail of {} bytes at {}",
            scan.torn_bytes, scan.valid_end
        ));
    }
    Ok(t)
}

/// `inspect` of a shard directory, or of each shard under a spool base.
pub fn inspect(dir: &Path, shard: Option<u16>) -> Result<u8, String> {
    let (base, dirs) = shard_dirs(dir, shard)?;
    for (shard, sdir) in &dirs {
        if base {
            println!("== {} ==", sdir.display());
        }
        inspect_shard(sdir, *shard)?;
    }
    Ok(if dirs.is_empty() { EXIT_PROBLEMS } else { 0 })
}

/// Prints queue counts by state and domain and the oldest live message.
fn inspect_shard(dir: &Path, shard: Option<u16>) -> Result<u8, String> {
    let shard = shard.or_else(|| infer_shard(dir));
    let (rec, _) =
        recover_dir(&super::disk::LocalDisk, dir, shard, false).map_err(|e| e.to_string())?;
    let s = &rec.stats;
    let awaiting_retry = rec.messages.iter().filter(|m| m.attempts > 0).count();
    let all_final = rec.messages.iter().filter(|m| m.pending.is_empty()).count();
    println!("segments: {}  records: {}", s.segments, s.records);
    println!(
        "live messages: {}  (never attempted: {}, retrying: {awaiting_retry}, all recipients final: {all_final})",
        s.messages,
        rec.messages.len() - awaiting_retry,
    );
    println!("pending recipients: {}", s.recipients_pending);
    println!(
        "problems: corrupt records {}, torn bytes {}, bad headers {}, other shards' segments {}, \
         unrecognised segment files {}",
        s.corrupt_records, s.torn_bytes, s.bad_headers, s.foreign_segments, s.unrecognized
    );
    let mut domains: BTreeMap<&str, u64> = BTreeMap::new();
    for m in &rec.messages {
        for p in &m.pending {
            let d = p.address.rsplit_once('@').map_or("", |(_, d)| d);
            *domains.entry(d).or_default() += 1;
        }
    }
    let mut by_count: Vec<_> = domains.into_iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    println!("pending recipients by domain:");
    for (d, n) in by_count {
        println!("  {n:>10}  {d}");
    }
    if let Some(m) = rec.messages.first() {
        println!(
            "oldest: {} (segment {} offset {}, attempts {}, next attempt {} ms)",
            m.id, m.segment, m.offset, m.attempts, m.next_attempt_ms
        );
    }
    Ok(0)
}

/// Prints one message: envelope, header section, and its state records.
pub fn show(dir: &Path, id: &str) -> Result<u8, String> {
    let id: MessageId = id.parse().map_err(|e| format!("{e}"))?;
    let segs = list_segments(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut found = false;
    for (_, path) in &segs {
        let map = map_segment(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let buf: &[u8] = map.as_deref().unwrap_or(&[]);
        for f in scan_segment(buf).frames {
            let o = f.offset as usize;
            let payload = &buf[o + FRAME_HEADER_LEN..o + f.frame.len];
            let Ok(rec) = decode_payload(f.frame.record_type, f.frame.version, payload) else {
                continue;
            };
            if rec.id() != id {
                continue;
            }
            found = true;
            println!("{}@{o}: {}", path.display(), describe_record(&rec));
            if let Record::Message { body, .. } = &rec {
                let end = header_end(body).min(SHOW_MAX_HEADER_BYTES);
                println!("--- headers ---\n{}", String::from_utf8_lossy(&body[..end]));
            }
        }
    }
    if found {
        Ok(0)
    } else {
        println!("{id}: not found");
        Ok(EXIT_PROBLEMS)
    }
}

fn header_end(body: &[u8]) -> usize {
    body.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(body.len(), |p| p + 2)
}

fn esc(b: &[u8]) -> String {
    format!("\"{}\"", b.escape_ascii())
}

fn opt(s: &Option<String>) -> String {
    s.as_ref().map_or("-".into(), |s| esc(s.as_bytes()))
}

fn notify_text(n: &Option<Notify>) -> String {
    let Some(n) = n else { return "-".into() };
    let flags: Vec<&str> = [
        (n.never, "NEVER"),
        (n.success, "SUCCESS"),
        (n.failure, "FAILURE"),
        (n.delay, "DELAY"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, name)| *name)
    .collect();
    if flags.is_empty() {
        "none".into()
    } else {
        flags.join(",")
    }
}

/// Canonical one-line rendering of a segment header (test vectors use it).
pub fn describe_header(h: &SegmentHeader) -> String {
    format!(
        "header version={} shard={} segment={} created_ms={}",
        h.version, h.shard, h.segment, h.created_ms
    )
}

/// Canonical one-line rendering of a record (test vectors use it).
pub fn describe_record(rec: &Record) -> String {
    match rec {
        Record::Message {
            id,
            envelope: e,
            body,
        } => {
            let mut s = format!(
                "MESSAGE id={id} from={} ret={} envid={} body={} smtputf8={} auth={} peer={} helo={} received_at_ms={}",
                esc(e.mail_from.as_bytes()),
                match e.ret {
                    None => "-",
                    Some(DsnRet::Full) => "FULL",
                    Some(DsnRet::Hdrs) => "HDRS",
                },
                opt(&e.envid),
                match e.body_type {
                    BodyType::SevenBit => "7BIT",
                    BodyType::EightBitMime => "8BITMIME",
                    BodyType::BinaryMime => "BINARYMIME",
                },
                u8::from(e.smtputf8),
                opt(&e.auth_user),
                e.peer.map_or("-".into(), |p| p.to_string()),
                esc(e.helo.as_bytes()),
                e.received_at_ms,
            );
            for (i, r) in e.recipients.iter().enumerate() {
                let _ = write!(
                    s,
                    " rcpt[{i}]={} notify={} orcpt={}",
                    esc(r.address.as_bytes()),
                    notify_text(&r.notify),
                    opt(&r.orcpt)
                );
            }
            let _ = write!(
                s,
                " binding={} body_len={} body={}",
                opt(&e.binding),
                body.len(),
                esc(body)
            );
            s
        }
        Record::Outcome {
            id,
            rcpt,
            outcome,
            reply,
        } => format!(
            "OUTCOME id={id} rcpt={rcpt} outcome={} reply={}",
            match outcome {
                Outcome::Delivered => "delivered",
                Outcome::Failed => "failed",
                Outcome::Deferred => "deferred",
            },
            esc(reply.as_bytes())
        ),
        Record::Retry {
            id,
            next_attempt_ms,
            attempts,
        } => format!("RETRY id={id} next_attempt_ms={next_attempt_ms} attempts={attempts}"),
        Record::Done { id } => format!("DONE id={id}"),
        Record::Rebind { id, binding } => format!("REBIND id={id} binding={}", opt(binding)),
    }
}
