//! Group-commit writer tests on real glommio executors in temp dirs.

use impulse::message::{Envelope, MessageId};
use impulse::spool::{Fault, Outcome, Spool, SpoolError, SpoolOptions};
use std::path::Path;
use std::rc::Rc;

fn env(rcpts: &[&str]) -> Envelope {
    Envelope {
        envid: Some("ENV1".into()),
        peer: Some("192.0.2.1".parse().unwrap()),
        helo: "client.example.org".into(),
        received_at_ms: 1_700_000_000_000,
        ..Envelope::new("sender@example.org", rcpts)
    }
}

fn run<T: 'static>(f: impl std::future::Future<Output = T> + 'static) -> T {
    glommio::LocalExecutor::default().run(f)
}

async fn open(dir: &Path, opts: SpoolOptions) -> (Rc<Spool>, impulse::spool::Recovered) {
    Spool::open(dir, 3, opts).await.expect("open")
}

#[test]
fn appended_messages_survive_reopen_with_state() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let (ids, recovered) = run(async move {
        let (spool, rec) = open(&dir, SpoolOptions::default()).await;
        assert!(rec.messages.is_empty());
        let mut ids = Vec::new();
        for i in 0..5 {
            let id = spool.allocate_id();
            let e = env(&["a@x.example", "b@y.example"]);
            spool
                .append_message(id, &e, format!("body {i}").as_bytes())
                .await
                .unwrap();
            ids.push(id);
        }
        spool
            .append_outcome(ids[0], 0, Outcome::Delivered, "250 ok")
            .await
            .unwrap();
        spool
            .append_outcome(ids[0], 1, Outcome::Deferred, "451 later")
            .await
            .unwrap();
        spool.append_retry(ids[0], 42_000, 2).await.unwrap();
        spool.append_done(ids[1]).await.unwrap();
        spool.close().await.unwrap();
        drop(spool);
        let (spool, rec) = open(&dir, SpoolOptions::default()).await;
        let fresh = spool.allocate_id();
        assert!(
            ids.iter().all(|old| fresh > *old),
            "new ids sort after old ones"
        );
        spool.close().await.unwrap();
        (ids, rec)
    });
    let live: Vec<MessageId> = recovered.messages.iter().map(|m| m.id).collect();
    assert_eq!(live, vec![ids[0], ids[2], ids[3], ids[4]]);
    let m0 = &recovered.messages[0];
    assert_eq!(m0.pending.len(), 1);
    assert_eq!(&*m0.pending[0].address, "b@y.example");
    assert_eq!((m0.next_attempt_ms, m0.attempts), (42_000, 2));
    assert_eq!(recovered.messages[1].pending.len(), 2);
    assert_eq!(recovered.stats.corrupt_records, 0);
    assert_eq!(recovered.stats.torn_bytes, 0);
}

#[test]
fn concurrent_appends_share_syncs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let stats = run(async move {
        let (spool, _) = open(&dir, SpoolOptions::default()).await;
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let s = spool.clone();
            tasks.push(glommio::spawn_local(async move {
                for _ in 0..5 {
                    let id = s.allocate_id();
                    s.append_message(id, &env(&["r@d.example"]), &[b'x'; 4096])
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await;
        }
        let stats = spool.stats();
        spool.close().await.unwrap();
        let (_s2, rec) = open(&dir, SpoolOptions::default()).await;
        assert_eq!(rec.messages.len(), 1000);
        stats
    });
    assert_eq!(stats.records, 1000);
    assert!(stats.batches < 200, "group commit batched: {stats:?}");
}

#[test]
fn failed_sync_fails_batch_and_later_appends_succeed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let (good, bad, rec) = run(async move {
        let (spool, _) = open(&dir, SpoolOptions::default()).await;
        let good1 = spool.allocate_id();
        spool
            .append_message(good1, &env(&["a@x"]), b"one")
            .await
            .unwrap();
        spool.inject_fault(Fault::Sync(libc::EIO));
        let bad = spool.allocate_id();
        let err = spool
            .append_message(bad, &env(&["a@x"]), b"two")
            .await
            .unwrap_err();
        assert!(matches!(err, SpoolError::Io(_)), "{err:?}");
        assert_eq!(err.smtp_reply_code(), (451, "4.3.0"));
        assert!(!spool.is_live(&bad));
        spool.inject_fault(Fault::Write(libc::ENOSPC));
        let bad2 = spool.allocate_id();
        let err = spool
            .append_message(bad2, &env(&["a@x"]), b"three")
            .await
            .unwrap_err();
        assert!(matches!(err, SpoolError::DiskFull(_)), "{err:?}");
        assert_eq!(err.smtp_reply_code(), (452, "4.3.1"));
        let good2 = spool.allocate_id();
        spool
            .append_message(good2, &env(&["a@x"]), b"four")
            .await
            .unwrap();
        assert_eq!(spool.stats().failed_batches, 2);
        spool.close().await.unwrap();
        let (_s, rec) = open(&dir, SpoolOptions::default()).await;
        (vec![good1, good2], vec![bad, bad2], rec)
    });
    let live: Vec<MessageId> = rec.messages.iter().map(|m| m.id).collect();
    assert_eq!(live, good);
    assert!(bad.iter().all(|b| !live.contains(b)));
    assert_eq!(rec.stats.corrupt_records, 0, "failed bytes were cut back");
}

#[test]
fn segments_roll_and_compaction_deletes_done_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let opts = || SpoolOptions {
        segment_size: 8192,
        ..SpoolOptions::default()
    };
    let count_segs = |d: &Path| std::fs::read_dir(d).unwrap().count();
    run(async move {
        let (spool, _) = open(&dir, opts()).await;
        let mut ids = Vec::new();
        for _ in 0..40 {
            let id = spool.allocate_id();
            spool
                .append_message(id, &env(&["a@x"]), &[b'y'; 1000])
                .await
                .unwrap();
            ids.push(id);
        }
        assert!(
            spool.active_segment() >= 5,
            "rolled: {}",
            spool.active_segment()
        );
        let before = count_segs(&dir);
        // Finish all but the last message: every full old segment can go.
        for id in &ids[..39] {
            spool.append_done(*id).await.unwrap();
        }
        let deleted = spool.compact().await.unwrap();
        assert!(!deleted.is_empty());
        assert_eq!(count_segs(&dir), before - deleted.len());
        spool.close().await.unwrap();
        let (_s, rec) = open(&dir, opts()).await;
        let live: Vec<MessageId> = rec.messages.iter().map(|m| m.id).collect();
        assert_eq!(
            live,
            vec![ids[39]],
            "compaction resurrected nothing, lost nothing"
        );
    });
}

#[test]
fn recovered_messages_can_be_read_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    run(async move {
        let opts = || SpoolOptions {
            segment_size: 4096,
            ..SpoolOptions::default()
        };
        let (spool, _) = open(&dir, opts()).await;
        let mut sent = Vec::new();
        for i in 0..10usize {
            let id = spool.allocate_id();
            let e = env(&[&format!("r{i}@d.example")]);
            let body = vec![b'a' + i as u8; 700 + i];
            spool.append_message(id, &e, &body).await.unwrap();
            sent.push((id, e, body));
        }
        spool.close().await.unwrap();
        drop(spool);
        let (spool, rec) = open(&dir, opts()).await;
        assert_eq!(rec.messages.len(), sent.len());
        for (m, (id, e, body)) in rec.messages.iter().zip(&sent) {
            assert_eq!(m.id, *id);
            let (e2, b2) = spool
                .read_message(m.segment, m.offset, m.len)
                .await
                .unwrap();
            assert_eq!((&e2, &b2), (e, body));
        }
        let m = &rec.messages[0];
        assert!(spool
            .read_message(m.segment, m.offset + 1, m.len)
            .await
            .is_err());
        spool.close().await.unwrap();
    });
}

#[test]
fn queued_message_memory_stays_small() {
    use impulse::message::QueuedRcpt;
    use impulse::spool::recovery::QueuedMessage;
    // Per live message: the struct itself (80 bytes, and the binding's
    // index, which rounds it up to 88); per pending recipient: 24 bytes
    // plus the address. The budget is 300 bytes per message.
    assert!(std::mem::size_of::<QueuedMessage>() <= 88);
    assert!(std::mem::size_of::<QueuedRcpt>() <= 24);
}

#[test]
fn ids_are_unique_and_increasing_across_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    run(async move {
        let mut last: Option<MessageId> = None;
        for _ in 0..3 {
            let (spool, _) = open(&dir, SpoolOptions::default()).await;
            for _ in 0..3 {
                let id = spool.allocate_id();
                assert_eq!(id.shard, 3);
                assert!(last.is_none_or(|l| id > l), "{id} after {last:?}");
                spool
                    .append_message(id, &env(&["a@b"]), b"x")
                    .await
                    .unwrap();
                last = Some(id);
            }
            spool.close().await.unwrap();
        }
    });
}

#[test]
fn a_settlement_is_durable_whole_or_not_at_all() {
    use impulse::spool::Record;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let rec = run(async move {
        let (spool, _) = open(&dir, SpoolOptions::default()).await;
        let id = spool.allocate_id();
        spool
            .append_message(id, &env(&["a@x", "b@x", "c@x"]), b"m")
            .await
            .unwrap();
        // A failed settlement leaves no trace of any of its records.
        spool.inject_fault(Fault::Write(libc::ENOSPC));
        let finals = [
            (0, Outcome::Delivered, "250 ok"),
            (1, Outcome::Failed, "550 no"),
        ];
        let retry = Record::Retry {
            id,
            next_attempt_ms: 99,
            attempts: 1,
        };
        assert!(spool
            .append_settlement(id, &finals, Some(retry.clone()))
            .await
            .is_err());
        spool.close().await.unwrap();
        let (spool, rec) = open(&dir, SpoolOptions::default()).await;
        assert_eq!(rec.messages[0].pending.len(), 3, "nothing of it recorded");
        assert_eq!(rec.messages[0].attempts, 0);
        // Written again, all of it lands together.
        spool
            .append_settlement(id, &finals, Some(retry))
            .await
            .unwrap();
        spool.close().await.unwrap();
        open(&dir, SpoolOptions::default()).await.1
    });
    let m = &rec.messages[0];
    assert_eq!(m.pending.len(), 1);
    assert_eq!(m.pending[0].index, 2);
    assert_eq!((m.attempts, m.next_attempt_ms), (1, 99));
}

/// The group commit lingers up to `batch_max_delay` for more appends, but an
/// append that fills the batch ends the wait: with a ten-minute delay, a
/// small message and then one larger than `batch_max_bytes` are both
/// durable long before the delay (the deadline below is far shorter).
#[test]
fn a_batch_that_fills_while_lingering_is_committed_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    run(async move {
        let opts = SpoolOptions {
            batch_max_delay: std::time::Duration::from_secs(600),
            batch_max_bytes: 64 * 1024,
            ..SpoolOptions::default()
        };
        let (spool, _) = open(&dir, opts).await;
        let first = {
            let spool = spool.clone();
            let id = spool.allocate_id();
            glommio::spawn_local(async move {
                spool
                    .append_message(id, &env(&["a@x.example"]), b"small")
                    .await
            })
        };
        // Let the small append stage and the committer start lingering.
        for _ in 0..8 {
            futures_lite::future::yield_now().await;
        }
        let id = spool.allocate_id();
        let big = vec![b'x'; 128 * 1024];
        let both = async {
            let second = spool.append_message(id, &env(&["b@y.example"]), &big).await;
            (first.await, second)
        };
        let deadline = async {
            glommio::timer::sleep(std::time::Duration::from_secs(30)).await;
            None
        };
        match futures_lite::future::or(async { Some(both.await) }, deadline).await {
            Some((first, second)) => {
                first.expect("small append");
                second.expect("big append");
            }
            None => panic!("a full batch waited out the linger delay"),
        }
    });
}
