//! Fills one shard's spool with queued messages, for recovery and memory
//! measurements (`perf/spool_bench.sh`).
//!
//! usage: spool_fill DIR SHARD COUNT [body_bytes=4096] [appenders=256]
//! Appends COUNT MESSAGE records (one recipient each) with group commit,
//! then prints the time taken and, after reopening, the recovery time.

use impulse::message::Envelope;
use impulse::spool::{Spool, SpoolOptions};
use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

fn arg(args: &[String], i: usize, default: u64) -> u64 {
    args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(shard), Some(count)) = (
        args.get(1).cloned(),
        args.get(2).and_then(|s| s.parse::<u16>().ok()),
        args.get(3).and_then(|s| s.parse::<u64>().ok()),
    ) else {
        eprintln!("usage: spool_fill DIR SHARD COUNT [body_bytes] [appenders]");
        std::process::exit(2);
    };
    let body_len = arg(&args, 4, 4096) as usize;
    let appenders = arg(&args, 5, 256);
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .spawn(move || async move {
            let (spool, _) = Spool::open(dir.as_ref(), shard, SpoolOptions::default())
                .await
                .expect("open");
            // Messages "arrive" now, so expiry and retries behave as for real mail.
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let env = Rc::new(Envelope {
                helo: "fill".into(),
                received_at_ms: now_ms,
                ..Envelope::new("fill@example.org", &["queued@example.net"])
            });
            let body = Rc::new(vec![b'q'; body_len]);
            let left = Rc::new(Cell::new(count));
            let t = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..appenders {
                let (s, env, body, left) = (spool.clone(), env.clone(), body.clone(), left.clone());
                tasks.push(glommio::spawn_local(async move {
                    while left.get() > 0 {
                        left.set(left.get() - 1);
                        let id = s.allocate_id();
                        s.append_message(id, &env, &body).await.expect("append");
                    }
                }));
            }
            for task in tasks {
                task.await;
            }
            println!(
                "FILL shard={shard} messages={count} secs={:.2}",
                t.elapsed().as_secs_f64()
            );
            spool.close().await.expect("close");
        })
        .expect("executor")
        .join()
        .expect("join");
}
