use std::time::Duration;

use super::*;
use crate::config::{BackoffAction, BackoffRule};

fn rule() -> BackoffRule {
    BackoffRule {
        name: "slow".into(),
        code: Some("421".into()),
        status: None,
        text: None,
        domains: Vec::new(),
        action: BackoffAction::Connections(1),
        duration: Duration::from_millis(200),
        recover_after: Duration::from_millis(100),
        steps: 2,
    }
}

#[test]
fn a_reported_reply_is_in_force_listed_and_then_recovers() {
    crate::runtime::on_executor(|| async {
        let t = Throttles::standalone();
        let key: Arc<str> = "example.net@vip1".into();
        assert_eq!(t.effect(&key), None);
        t.report_backoff(key.clone(), &rule(), "421 slow down".into(), 4);
        // A second report within the interval is not sent again.
        t.report_backoff(key.clone(), &rule(), "421 slow down".into(), 4);
        let mut seen = Vec::new();
        let deadline = sched::now() + Duration::from_secs(10);
        while sched::now() < deadline {
            let now = t.backoffs();
            if seen.last() != Some(&now) {
                seen.push(now.clone());
            }
            if seen.len() > 1 && now.is_empty() {
                break;
            }
            sched::sleep(Duration::from_millis(5)).await;
        }
        let row = |change: &str, allows: &str| {
            vec![(
                "vip1".to_string(),
                "example.net".to_string(),
                "slow".to_string(),
                change.to_string(),
                allows.to_string(),
            )]
        };
        assert_eq!(
            seen,
            vec![
                vec![],
                row("started", "1 connection(s)"),
                row("step 1/2", "2 connection(s)"),
                vec![],
            ]
        );
    });
}

/// Two shards' sides of the throttles on one executor, each serving its
/// inbox.
fn two_shards() -> (Rc<Throttles>, Rc<Throttles>) {
    let (a0, i0) = mesh::inbox(1024);
    let (a1, i1) = mesh::inbox(1024);
    let peers = vec![a0, a1];
    let t0 = Throttles::new(Mesh::new(0, peers.clone()), Rc::new(Events::new(0)));
    let t1 = Throttles::new(Mesh::new(1, peers), Rc::new(Events::new(1)));
    sched::spawn(serve(i0, t0.clone())).detach();
    sched::spawn(serve(i1, t1.clone())).detach();
    (t0, t1)
}

/// Permits for `want` tasks on `keys`, waiting for the owners' grants
/// (a generous deadline: the test fails there instead of hanging).
async fn permits(t: &Rc<Throttles>, keys: &SlotKeys, want: u32) -> Vec<Permit> {
    let granted = Rc::new(Notify::default());
    let deadline = sched::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    while (got.len() as u32) < want {
        assert!(
            sched::now() < deadline,
            "only {} of {want} slots",
            got.len()
        );
        got.extend(t.start(keys, want - got.len() as u32, &granted));
        if (got.len() as u32) < want {
            futures_lite::future::or(granted.notified(), sched::sleep(SYNC_INTERVAL)).await;
        }
    }
    got
}

#[test]
fn a_shard_keeps_a_cushion_of_slots_while_alone_and_gives_it_up_when_another_waits() {
    crate::runtime::on_executor(|| async {
        let (t0, t1) = two_shards();
        let keys: SlotKeys = vec![(Arc::from("example.net@vip1"), 4)].into();
        // One task: shard 0 asks ahead and is lent all four.
        let first = permits(&t0, &keys, 1).await;
        drop(first);
        sched::sleep(SYNC_INTERVAL * 3).await;
        // Syncs have gone by: the cushion is still here, so tasks start
        // at once, without a grant to wait for.
        let never = Rc::new(Notify::default());
        let here = t0.start(&keys, 4, &never);
        assert_eq!(here.len(), 4, "the cushion is kept while no one waits");
        drop(here);
        let one = t0.start(&keys, 1, &never);
        assert_eq!(one.len(), 1);
        // Shard 1 wants two: shard 0 gives back what it does not use,
        // and shard 1 gets its share.
        let theirs = permits(&t1, &keys, 2).await;
        assert_eq!(theirs.len(), 2);
        // Never more than the limit: shard 0 runs one, shard 1 two, and
        // what shard 0 holds beyond its task has gone back.
        assert!(t0.start(&keys, 4, &never).len() <= 1);
    });
}
