//! impulse-mesh: round trips between two shards (executors pinned to CPUs 0
//! and 1), through impulse's mesh (`runtime::mesh`: bounded flume channels,
//! one reply channel per request) and through glommio's shared channels (a
//! request channel and a reply channel, connected once). Measures what one
//! cross-shard ask costs, one at a time (latency) and with `--window`
//! requests in flight (throughput).
//!
//! Usage: impulse-mesh [--requests N] [--window W]

use std::time::{Duration, Instant};

use glommio::channels::shared_channel;
use glommio::{LocalExecutorBuilder, Placement};
use impulse::runtime::mesh;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn placement(cpu: usize) -> Placement {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus > cpu {
        Placement::Fixed(cpu)
    } else {
        Placement::Unbound
    }
}

fn report(name: &str, window: usize, n: usize, took: Duration) {
    let per = took.as_nanos() as f64 / n as f64;
    println!(
        "RESULT transport={name} window={window} requests={n} ns_per_request={per:.0} requests_per_s={:.0}",
        1e9 / per
    );
}

fn flume_mesh(n: usize, window: usize) -> Duration {
    let (addrs, mut inboxes) = mesh::inboxes::<u64, u64>(2, window.max(64));
    let inbox = inboxes.pop().expect("inbox 1");
    let server = LocalExecutorBuilder::new(placement(1))
        .spawn(move || async move {
            while let Some(r) = inbox.recv().await {
                let v = r.body;
                r.answer(v + 1);
            }
        })
        .expect("executor");
    let m = mesh::Mesh::new(0, addrs);
    let client = LocalExecutorBuilder::new(placement(0))
        .spawn(move || async move {
            let peer = m.peer(1).clone();
            let start = Instant::now();
            let per_task = n / window;
            let tasks: Vec<_> = (0..window)
                .map(|_| {
                    let p = peer.clone();
                    glommio::spawn_local(async move {
                        for i in 0..per_task as u64 {
                            assert_eq!(p.ask(i).await.expect("answer"), i + 1);
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await;
            }
            start.elapsed()
        })
        .expect("executor");
    let took = client.join().expect("client");
    server.join().expect("server");
    took
}

fn glommio_channels(n: usize, window: usize) -> Duration {
    let (req_tx, req_rx) = shared_channel::new_bounded::<u64>(window.max(64));
    let (rep_tx, rep_rx) = shared_channel::new_bounded::<u64>(window.max(64));
    let server = LocalExecutorBuilder::new(placement(1))
        .spawn(move || async move {
            let (rx, tx) = (req_rx.connect().await, rep_tx.connect().await);
            while let Some(v) = rx.recv().await {
                if tx.send(v + 1).await.is_err() {
                    break;
                }
            }
        })
        .expect("executor");
    let client = LocalExecutorBuilder::new(placement(0))
        .spawn(move || async move {
            let (tx, rx) = (req_tx.connect().await, rep_rx.connect().await);
            let start = Instant::now();
            // Keeps `window` requests in flight; replies come back in order.
            let mut sent = 0;
            for _ in 0..window.min(n) {
                tx.send(sent as u64).await.expect("send");
                sent += 1;
            }
            for i in 0..n {
                assert_eq!(rx.recv().await, Some(i as u64 + 1));
                if sent < n {
                    tx.send(sent as u64).await.expect("send");
                    sent += 1;
                }
            }
            start.elapsed()
        })
        .expect("executor");
    let took = client.join().expect("client");
    server.join().expect("server");
    took
}

fn main() {
    let n = arg("--requests", 200_000);
    let window = arg("--window", 32).max(1);
    for w in [1, window] {
        let n = n / w * w;
        report("impulse-mesh(flume)", w, n, flume_mesh(n, w));
        report("glommio-shared-channel", w, n, glommio_channels(n, w));
    }
}
