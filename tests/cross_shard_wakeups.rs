//! The sleep handshake between shards (vendored glommio: a SeqCst fence on
//! each side instead of a process-wide membarrier): two executors on their
//! own threads play ping-pong over shared channels, so each one goes to
//! sleep before nearly every message and must be woken by the other. A lost
//! wake-up would stall the game forever; the main thread gives it a
//! generous deadline instead of hanging.

use glommio::channels::shared_channel;
use glommio::{LocalExecutorBuilder, Placement};
use std::sync::mpsc;
use std::time::Duration;

const ROUNDS: u64 = 20_000;

#[test]
fn a_shard_asleep_is_always_woken_by_the_other() {
    let (ping_tx, ping_rx) = shared_channel::new_bounded::<u64>(1);
    let (pong_tx, pong_rx) = shared_channel::new_bounded::<u64>(1);
    let (done_tx, done_rx) = mpsc::channel();

    let server = LocalExecutorBuilder::new(Placement::Unbound)
        .name("pong")
        .spawn(move || async move {
            let rx = ping_rx.connect().await;
            let tx = pong_tx.connect().await;
            while let Some(n) = rx.recv().await {
                tx.send(n + 1).await.expect("pong");
            }
        })
        .unwrap();
    let client = LocalExecutorBuilder::new(Placement::Unbound)
        .name("ping")
        .spawn(move || async move {
            let tx = ping_tx.connect().await;
            let rx = pong_rx.connect().await;
            let mut n = 0;
            for _ in 0..ROUNDS {
                tx.send(n).await.expect("ping");
                n = rx.recv().await.expect("an answer");
            }
            done_tx.send(n).unwrap();
        })
        .unwrap();

    match done_rx.recv_timeout(Duration::from_secs(300)) {
        Ok(n) => assert_eq!(n, ROUNDS, "every ping answered once"),
        Err(_) => panic!("a wake-up between the shards was lost: the ping-pong stalled"),
    }
    client.join().unwrap();
    server.join().unwrap();
}
