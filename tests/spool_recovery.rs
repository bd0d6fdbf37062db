//! Recovery, disk-full and offline-tool tests against real files.

use impulse::message::{Envelope, MessageId};
use impulse::spool::tools::{inspect, show, verify};
use impulse::spool::{Spool, SpoolError, SpoolOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

fn env(rcpt: &str) -> Envelope {
    Envelope {
        helo: "h".into(),
        received_at_ms: 1,
        ..Envelope::new("s@example.org", &[rcpt])
    }
}

fn run<T: 'static>(f: impl std::future::Future<Output = T> + 'static) -> T {
    glommio::LocalExecutor::default().run(f)
}

/// Appends `n` messages in one run and closes; returns their ids.
fn fill(dir: &Path, n: usize, body_len: usize) -> Vec<MessageId> {
    let dir = dir.to_path_buf();
    run(async move {
        let (s, _) = Spool::open(&dir, 1, SpoolOptions::default()).await.unwrap();
        let mut ids = Vec::new();
        for i in 0..n {
            let id = s.allocate_id();
            let rcpt = format!("u{i}@d{}.example", i % 2);
            s.append_message(id, &env(&rcpt), &vec![b'b'; body_len])
                .await
                .unwrap();
            ids.push(id);
        }
        s.close().await.unwrap();
        ids
    })
}

fn reopen(dir: &Path) -> impulse::spool::Recovered {
    let dir = dir.to_path_buf();
    run(async move {
        let (s, rec) = Spool::open(&dir, 1, SpoolOptions::default()).await.unwrap();
        s.close().await.unwrap();
        rec
    })
}

/// (start, end) of every frame in a segment file.
fn frame_spans(path: &Path) -> Vec<(u64, u64)> {
    let bytes = std::fs::read(path).unwrap();
    let scan = impulse::spool::scan::scan_segment(&bytes);
    assert_eq!(scan.torn_bytes, 0);
    scan.frames
        .iter()
        .map(|f| (f.offset, f.offset + f.frame.len as u64))
        .collect()
}

fn seg(dir: &Path, n: u32) -> PathBuf {
    dir.join(impulse::spool::segment_file_name(n))
}

#[test]
fn torn_tail_is_truncated_and_earlier_records_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let ids = fill(tmp.path(), 3, 100);
    let path = seg(tmp.path(), 1);
    let frames = frame_spans(&path);
    let full = frames[2].1;
    // Tear the last record: drop its final 10 bytes (and the block
    // padding), then add stale garbage.
    let f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.set_len(full - 10).unwrap();
    (&f).write_all(&[0xAB; 5]).unwrap();
    drop(f);
    assert_eq!(verify(tmp.path(), None), Ok(1));
    let rec = reopen(tmp.path());
    let live: Vec<MessageId> = rec.messages.iter().map(|m| m.id).collect();
    assert_eq!(live, ids[..2].to_vec());
    assert!(rec.stats.torn_bytes > 0);
    assert_eq!(rec.stats.corrupt_records, 0);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), frames[1].1);
    assert_eq!(
        verify(tmp.path(), None),
        Ok(0),
        "repaired spool verifies clean"
    );
}

#[test]
fn corrupt_middle_record_is_skipped_and_segment_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let ids = fill(tmp.path(), 3, 100);
    let path = seg(tmp.path(), 1);
    let mut bytes = std::fs::read(&path).unwrap();
    let second = frame_spans(&path)[1];
    bytes[second.0 as usize + 40] ^= 0x01; // inside the second record
    std::fs::write(&path, &bytes).unwrap();
    let rec = reopen(tmp.path());
    let live: Vec<MessageId> = rec.messages.iter().map(|m| m.id).collect();
    assert_eq!(live, vec![ids[0], ids[2]]);
    assert_eq!(rec.stats.corrupt_records, 1);
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "segment left as is");
}

#[test]
fn half_created_segment_is_removed_and_garbage_never_aborts() {
    let tmp = tempfile::tempdir().unwrap();
    let ids = fill(tmp.path(), 2, 10);
    // A crash right after creating segment 9: empty file. Also a torn header.
    std::fs::write(seg(tmp.path(), 9), b"").unwrap();
    std::fs::write(seg(tmp.path(), 10), b"IMPSPO").unwrap();
    let rec = reopen(tmp.path());
    assert_eq!(rec.messages.len(), ids.len());
    assert!(!seg(tmp.path(), 9).exists() && !seg(tmp.path(), 10).exists());
    assert!(
        seg(tmp.path(), 11).exists(),
        "writer continues after the highest number"
    );
}

/// A file named like a segment that has no valid header and no valid
/// record but is not what an interrupted creation leaves (here 100 KB of
/// garbage) is not ours to delete: recovery moves it to `quarantine/`,
/// never replacing a file already there, and carries on.
#[test]
fn unrecognised_segment_file_is_quarantined_not_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let ids = fill(tmp.path(), 2, 10);
    let garbage: Vec<u8> = (0..100 * 1024u32).map(|i| (i % 251) as u8 | 1).collect();
    let qdir = tmp.path().join("quarantine");
    std::fs::create_dir_all(&qdir).unwrap();
    std::fs::write(qdir.join("seg-00000009.log"), b"quarantined earlier").unwrap();
    std::fs::write(seg(tmp.path(), 9), &garbage).unwrap();
    // A whole zeroed block (size extended, header never written) is ours.
    std::fs::write(seg(tmp.path(), 10), vec![0u8; 4096]).unwrap();
    assert_eq!(verify(tmp.path(), None), Ok(1), "reported before recovery");
    let rec = reopen(tmp.path());
    assert_eq!(rec.messages.len(), ids.len());
    assert_eq!(rec.stats.quarantined, 1);
    assert!(
        !seg(tmp.path(), 9).exists(),
        "moved out of the shard directory"
    );
    assert!(
        !seg(tmp.path(), 10).exists(),
        "half-created segment removed"
    );
    assert_eq!(
        std::fs::read(qdir.join("seg-00000009.log")).unwrap(),
        b"quarantined earlier",
        "an existing quarantined file is never overwritten"
    );
    assert_eq!(
        std::fs::read(qdir.join("seg-00000009.log.1")).unwrap(),
        garbage,
        "the garbage file is kept, byte for byte"
    );
    assert!(seg(tmp.path(), 11).exists(), "numbers are not reused");
    assert_eq!(verify(tmp.path(), None), Ok(0));
}

/// Fills `base/shard-N` with `n` messages written by shard N.
fn fill_shard(base: &Path, shard: u16, n: usize) -> PathBuf {
    let dir = base.join(format!("shard-{shard}"));
    let d = dir.clone();
    run(async move {
        let (s, _) = Spool::open(&d, shard, SpoolOptions::default())
            .await
            .unwrap();
        for _ in 0..n {
            let id = s.allocate_id();
            s.append_message(id, &env("a@b.example"), b"body")
                .await
                .unwrap();
        }
        s.close().await.unwrap();
    });
    dir
}

/// `verify` and `inspect` on the spool base check every `shard-N` under
/// it (a problem in any shard is a problem of the whole), and a directory
/// with no segment and no shard directory is an error, not "0 problems".
#[test]
fn tools_on_the_spool_base_cover_every_shard() {
    let base = tempfile::tempdir().unwrap();
    fill_shard(base.path(), 0, 2);
    let shard1 = fill_shard(base.path(), 1, 3);
    std::fs::create_dir(base.path().join("not-a-shard")).unwrap();
    assert_eq!(verify(base.path(), None), Ok(0));
    assert_eq!(inspect(base.path(), None), Ok(0));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_impulse"))
        .args(["spool", "verify"])
        .arg(base.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("shard-0: 1 segments, 2 valid records, 0 problems"),
        "{text}"
    );
    assert!(
        text.contains("shard-1: 1 segments, 3 valid records, 0 problems"),
        "{text}"
    );
    assert!(
        text.contains(": 2 shards, 2 segments, 5 valid records, 0 problems"),
        "{text}"
    );
    // Damage one record of shard 1: the base no longer verifies clean.
    let path = seg(&shard1, 1);
    let mut bytes = std::fs::read(&path).unwrap();
    let second = frame_spans(&path)[1];
    bytes[second.0 as usize + 20] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(verify(base.path(), None), Ok(1));
    assert_eq!(
        verify(base.path(), Some(0)),
        Ok(0),
        "--shard picks one shard"
    );
    let empty = tempfile::tempdir().unwrap();
    let err = verify(empty.path(), None).expect_err("nothing to verify");
    assert!(err.contains("no spool segments"), "{err}");
    assert!(inspect(empty.path(), None).is_err());
}

#[test]
fn tools_report_state() {
    let tmp = tempfile::tempdir().unwrap();
    let ids = fill(tmp.path(), 4, 50);
    assert_eq!(verify(tmp.path(), None), Ok(0));
    assert_eq!(inspect(tmp.path(), None), Ok(0));
    assert_eq!(show(tmp.path(), &ids[1].to_string()), Ok(0));
    let missing = MessageId { seq: 999, ..ids[0] };
    assert_eq!(show(tmp.path(), &missing.to_string()), Ok(1));
    assert!(show(tmp.path(), "not-an-id").is_err());
    assert!(
        verify(&tmp.path().join("nope"), None).is_err(),
        "unreadable: exit 2"
    );
}

/// Mounts a 1 MiB tmpfs, fills it, and checks: the failing append gets
/// DiskFull (452), nothing of it is acknowledged, and appends succeed again
/// once space returns.
#[test]
fn disk_full_on_tiny_tmpfs() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().to_path_buf();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        eprintln!("SKIPPED: cannot mount tmpfs here (needs root)");
        return;
    }
    let spool_dir = mnt.join("spool");
    let result = std::panic::catch_unwind(|| disk_full_scenario(&mnt, &spool_dir));
    let umounted = std::process::Command::new("umount").arg(&mnt).status();
    if !matches!(umounted, Ok(s) if s.success()) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&mnt)
            .status();
        panic!("tmpfs still busy after close: a file handle leaked");
    }
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

fn disk_full_scenario(mnt: &Path, spool_dir: &Path) {
    // Leave about 200 KiB free for the spool.
    let filler = mnt.join("filler");
    std::fs::write(&filler, vec![0u8; 800 * 1024]).unwrap();
    let dir = spool_dir.to_path_buf();
    let (acked, failed_seen) = run(async move {
        let (s, _) = Spool::open(&dir, 1, SpoolOptions::default()).await.unwrap();
        let mut acked = Vec::new();
        let mut err = None;
        for _ in 0..100 {
            let id = s.allocate_id();
            match s.append_message(id, &env("a@b"), &[b'z'; 8192]).await {
                Ok(()) => acked.push(id),
                Err(e) => {
                    err = Some((id, e));
                    break;
                }
            }
        }
        let (bad, e) = err.expect("disk fills up");
        assert!(matches!(e, SpoolError::DiskFull(_)), "{e:?}");
        assert_eq!(e.smtp_reply_code(), (452, "4.3.1"));
        assert!(!s.is_live(&bad));
        // Still full: fails again, nothing acknowledged.
        let id = s.allocate_id();
        assert!(s
            .append_message(id, &env("a@b"), &[b'z'; 8192])
            .await
            .is_err());
        std::fs::remove_file(mnt_filler(&dir)).unwrap();
        let id = s.allocate_id();
        s.append_message(id, &env("a@b"), &[b'z'; 8192])
            .await
            .unwrap();
        acked.push(id);
        s.close().await.unwrap();
        (acked, bad)
    });
    let rec = reopen(spool_dir);
    let live: Vec<MessageId> = rec.messages.iter().map(|m| m.id).collect();
    assert_eq!(live, acked, "every acknowledged message, nothing else");
    assert!(!live.contains(&failed_seen));
    assert_eq!(rec.stats.corrupt_records, 0);
}

fn mnt_filler(spool_dir: &Path) -> PathBuf {
    spool_dir.parent().unwrap().join("filler")
}

/// A segment whose header names another shard (a spool directory copied or
/// mounted in the wrong place) is skipped with a report and kept on disk;
/// `verify` flags it.
#[test]
fn another_shards_segment_is_skipped_and_kept() {
    let ours = tempfile::tempdir().unwrap();
    let ids = fill(ours.path(), 2, 100);
    let theirs = tempfile::tempdir().unwrap();
    let dir = theirs.path().to_path_buf();
    run(async move {
        let (s, _) = Spool::open(&dir, 2, SpoolOptions::default()).await.unwrap();
        let id = s.allocate_id();
        s.append_message(id, &env("x@y.example"), b"other")
            .await
            .unwrap();
        s.close().await.unwrap();
    });
    let foreign = seg(ours.path(), 9);
    std::fs::copy(seg(theirs.path(), 1), &foreign).unwrap();
    let rec = reopen(ours.path());
    assert_eq!(rec.stats.foreign_segments, 1);
    let live: Vec<MessageId> = rec.messages.iter().map(|m| m.id).collect();
    assert_eq!(live, ids, "only shard 1's messages");
    assert!(foreign.exists(), "the foreign file is kept");
    assert_eq!(verify(ours.path(), Some(1)), Ok(1));
    assert_eq!(verify(theirs.path(), Some(2)), Ok(0));
}
