//! Copy-forward compaction: the live messages of sparse old segments are
//! copied into the active segment (with their outcome, retry and binding state),
//! then the old segments are deleted. Each crash point of that sequence is
//! simulated by cutting, holing or deleting files, and recovery must give
//! back exactly the live queue it had before: nothing lost, nothing DONE
//! revived, no settled recipient pending again.

use impulse::message::{Envelope, MessageId};
use impulse::spool::recovery::{list_segments, recover_read_only};
use impulse::spool::scan::scan_segment;
use impulse::spool::{segment_file_name, Fault, Outcome, Recovered, Spool, SpoolOptions};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const SHARD: u16 = 3;
const SEGMENT_BYTES: u64 = 64 * 1024;
const MESSAGES: u32 = 80;
const BODY_BYTES: usize = 2000;

fn env() -> Envelope {
    Envelope {
        helo: "h".into(),
        received_at_ms: 1,
        ..Envelope::new(
            "s@example.org",
            &["a@x.example", "b@y.example", "c@z.example"],
        )
    }
}

fn opts() -> SpoolOptions {
    SpoolOptions {
        segment_size: SEGMENT_BYTES,
        ..SpoolOptions::default()
    }
}

fn run<T: 'static>(f: impl std::future::Future<Output = T> + 'static) -> T {
    glommio::LocalExecutor::default().run(f)
}

/// Per live message: pending recipient indices, attempts, next attempt,
/// binding.
type State = BTreeMap<MessageId, (Vec<u32>, u32, u64, Option<String>)>;

fn state(rec: &Recovered) -> State {
    rec.messages
        .iter()
        .map(|m| {
            let pending = m.pending.iter().map(|p| p.index).collect();
            let binding = usize::from(m.binding)
                .checked_sub(1)
                .map(|i| rec.bindings[i].to_string());
            (m.id, (pending, m.attempts, m.next_attempt_ms, binding))
        })
        .collect()
}

fn recover(dir: &Path) -> State {
    state(&recover_read_only(dir, Some(SHARD)).expect("recover"))
}

/// Every 10th message stays live; some of those got outcomes and retries.
/// Everything else is DONE, so the early segments are sparse.
fn build(path: &Path) -> State {
    let dir = path.to_path_buf();
    run(async move {
        let (s, _) = Spool::open(&dir, SHARD, opts()).await.expect("open");
        let mut ids = Vec::new();
        for _ in 0..MESSAGES {
            let id = s.allocate_id();
            s.append_message(id, &env(), &[b'm'; BODY_BYTES])
                .await
                .expect("append");
            ids.push(id);
        }
        for (i, id) in ids.iter().enumerate() {
            if i % 10 != 0 {
                s.append_done(*id).await.expect("done");
                continue;
            }
            if i % 20 == 0 {
                s.append_outcome(*id, 0, Outcome::Delivered, "250 ok")
                    .await
                    .expect("outcome");
                s.append_outcome(*id, 1, Outcome::Deferred, "451 later")
                    .await
                    .expect("outcome");
                s.append_retry(*id, 1_000 + i as u64, 1)
                    .await
                    .expect("retry");
            }
            if i == 30 {
                s.append_outcome(*id, 2, Outcome::Failed, "550 no")
                    .await
                    .expect("outcome");
            }
            if i % 30 == 10 {
                s.append_rebinds([(*id, Some("vip-2"))])
                    .await
                    .expect("rebind");
            }
        }
        s.close().await.expect("close");
    });
    let truth = recover(path);
    assert_eq!(truth.len(), (MESSAGES / 10) as usize);
    let rebound = truth.values().filter(|v| v.3.as_deref() == Some("vip-2"));
    assert_eq!(rebound.count(), 3, "{truth:?}");
    truth
}

fn segments(dir: &Path) -> Vec<u32> {
    list_segments(dir)
        .expect("list")
        .into_iter()
        .map(|(n, _)| n)
        .collect()
}

fn seg_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(segment_file_name(n))
}

/// Opens the spool, runs one copy-forward, closes. Returns (copied, active).
fn copy_forward(dir: &Path, fault: Option<Fault>) -> (Result<u64, String>, u32) {
    let dir = dir.to_path_buf();
    run(async move {
        let (s, _) = Spool::open(&dir, SHARD, opts()).await.expect("open");
        if let Some(f) = fault {
            s.inject_fault(f);
        }
        let r = s
            .copy_forward()
            .await
            .map(|(n, _)| n)
            .map_err(|e| e.to_string());
        let active = s.active_segment();
        s.close().await.expect("close");
        (r, active)
    })
}

fn compact(dir: &Path) -> Vec<u32> {
    let dir = dir.to_path_buf();
    run(async move {
        let (s, _) = Spool::open(&dir, SHARD, opts()).await.expect("open");
        let deleted = s.compact().await.expect("compact");
        s.close().await.expect("close");
        deleted
    })
}

#[test]
fn copy_forward_then_delete_keeps_the_queue_at_every_crash_point() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let truth = build(dir);
    let before = segments(dir);
    assert!(before.len() >= 3, "several segments: {before:?}");

    // Step 1: copies appended to the active segment and synced.
    let (copied, active) = copy_forward(dir, None);
    let copied = copied.expect("copy");
    assert!(
        copied > 0 && copied <= truth.len() as u64,
        "copied {copied}"
    );
    assert_eq!(recover(dir), truth, "after the copy");
    let rec = recover_read_only(dir, Some(SHARD)).expect("recover");
    let moved = rec.messages.iter().filter(|m| m.segment == active).count();
    assert_eq!(moved as u64, copied, "recovery locates the copies");

    // Crash while the copy batch was being written: any prefix of it, with
    // or without O_DIRECT zero padding, and any single copied frame missing
    // while the rest made it (blocks reach the disk in any order).
    let path = seg_path(dir, active);
    let full = std::fs::read(&path).expect("read active");
    let frames = scan_segment(&full).frames;
    assert!(!frames.is_empty());
    let first = frames[0].offset as usize;
    let end = frames
        .last()
        .map(|f| f.offset as usize + f.frame.len)
        .unwrap_or(first);
    let mut cuts: Vec<usize> = (first..=end).step_by(61).collect();
    for f in &frames {
        let o = f.offset as usize;
        cuts.extend([o, o + 1, o + 15, o + 16, o + f.frame.len - 1]);
    }
    cuts.push(end);
    for cut in cuts {
        for pad in [false, true] {
            let mut img = full[..cut].to_vec();
            if pad {
                img.resize(cut.next_multiple_of(4096), 0);
            }
            std::fs::write(&path, &img).expect("write cut");
            assert_eq!(recover(dir), truth, "copy cut at {cut} (padded {pad})");
        }
    }
    for f in &frames {
        let mut img = full.clone();
        let o = f.offset as usize;
        img[o..o + f.frame.len].fill(0);
        std::fs::write(&path, &img).expect("write hole");
        assert_eq!(recover(dir), truth, "copied frame at {o} missing");
    }
    std::fs::write(&path, &full).expect("restore");

    // Step 2: the emptied segments are unlinked oldest first, one
    // directory sync each. A crash may leave any prefix of them deleted.
    let saved: Vec<(u32, Vec<u8>)> = before
        .iter()
        .map(|n| (*n, std::fs::read(seg_path(dir, *n)).expect("save")))
        .collect();
    let deleted = compact(dir);
    assert!(!deleted.is_empty(), "copy-forward freed segments");
    assert!(deleted.contains(&before[0]), "the oldest went: {deleted:?}");
    assert_eq!(recover(dir), truth, "after deletion");
    for k in 0..deleted.len() {
        for (n, bytes) in &saved {
            if deleted[k..].contains(n) {
                std::fs::write(seg_path(dir, *n), bytes).expect("restore seg");
            }
        }
        assert_eq!(
            recover(dir),
            truth,
            "crash after deleting {:?}",
            &deleted[..k]
        );
        for n in &deleted[k..] {
            std::fs::remove_file(seg_path(dir, *n)).expect("re-delete");
        }
    }

    // The compacted spool keeps working: settle everything, and it all goes.
    let dir2 = dir.to_path_buf();
    let ids: Vec<MessageId> = truth.keys().copied().collect();
    run(async move {
        let (s, _) = Spool::open(&dir2, SHARD, opts()).await.expect("open");
        for id in ids {
            s.append_done(id).await.expect("done");
        }
        s.maintain().await.expect("maintain");
        s.close().await.expect("close");
    });
    assert!(recover(dir).is_empty());
    assert!(
        segments(dir).len() <= 2,
        "only recent segments remain: {:?}",
        segments(dir)
    );
}

#[test]
fn a_failed_copy_changes_nothing_and_a_retry_succeeds() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let truth = build(dir);
    let before = segments(dir);
    for fault in [Fault::Write(libc::EIO), Fault::Sync(libc::ENOSPC)] {
        let (r, _) = copy_forward(dir, Some(fault));
        assert!(r.is_err(), "{fault:?} fails the copy");
        assert_eq!(recover(dir), truth, "after {fault:?}");
        let now = segments(dir);
        assert!(before.iter().all(|n| now.contains(n)), "nothing deleted");
    }
    let (r, _) = copy_forward(dir, None);
    assert!(r.expect("retry") > 0);
    assert!(!compact(dir).is_empty());
    assert_eq!(recover(dir), truth);
}

#[test]
fn dense_segments_stay_put() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().to_path_buf();
    run(async move {
        let (s, _) = Spool::open(&dir, SHARD, opts()).await.expect("open");
        for _ in 0..60 {
            let id = s.allocate_id();
            s.append_message(id, &env(), &[b'd'; BODY_BYTES])
                .await
                .expect("append");
        }
        let r = s.maintain().await.expect("maintain");
        assert_eq!(r.copied, 0, "nothing sparse");
        assert!(r.deleted.is_empty());
        s.close().await.expect("close");
    });
}
