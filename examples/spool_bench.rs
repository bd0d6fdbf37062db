//! Measures durable appends: N concurrent appenders on one glommio executor.
//!
//! usage: spool_bench DIR [appenders=200] [seconds=5] [rate_per_s=0 (max)]
//!        [batch_delay_us=0] [body_bytes=4096]
//! Prints throughput, batches, and append latency percentiles.

use impulse::message::Envelope;
use impulse::spool::{Spool, SpoolOptions};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

fn arg(args: &[String], i: usize, default: u64) -> u64 {
    args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(dir) = args.get(1).cloned() else {
        eprintln!("usage: spool_bench DIR [appenders] [seconds] [rate] [delay_us] [body]");
        std::process::exit(2);
    };
    let appenders = arg(&args, 2, 200);
    let secs = arg(&args, 3, 5);
    let rate = arg(&args, 4, 0);
    let delay_us = arg(&args, 5, 0);
    let body_len = arg(&args, 6, 4096) as usize;
    let _ = std::fs::remove_dir_all(&dir);
    glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(0))
        .spawn(move || async move {
            let opts = SpoolOptions {
                batch_max_delay: Duration::from_micros(delay_us),
                ..SpoolOptions::default()
            };
            let (spool, _) = Spool::open(dir.as_ref(), 0, opts).await.expect("open");
            let env = Rc::new(Envelope {
                helo: "bench".into(),
                ..Envelope::new("bench@example.org", &["sink@example.net"])
            });
            let body = Rc::new(vec![b'x'; body_len]);
            let lat: Rc<RefCell<Vec<u32>>> = Rc::default();
            let start = Instant::now();
            let end = start + Duration::from_secs(secs);
            let interval = (rate > 0).then(|| Duration::from_secs_f64(appenders as f64 / rate as f64));
            let mut tasks = Vec::new();
            for i in 0..appenders {
                let (s, env, body, lat) = (spool.clone(), env.clone(), body.clone(), lat.clone());
                tasks.push(glommio::spawn_local(async move {
                    // Stagger open-loop senders across one interval.
                    let mut next = start + interval.map_or(Duration::ZERO, |iv| iv * i as u32 / appenders as u32);
                    while Instant::now() < end {
                        if let Some(iv) = interval {
                            let now = Instant::now();
                            if next > now {
                                glommio::timer::sleep(next - now).await;
                            }
                            next += iv;
                        }
                        let t0 = Instant::now();
                        let id = s.allocate_id();
                        s.append_message(id, &env, &body).await.expect("append");
                        lat.borrow_mut().push(t0.elapsed().as_micros() as u32);
                    }
                }));
            }
            for t in tasks {
                t.await;
            }
            let elapsed = start.elapsed().as_secs_f64();
            let stats = spool.stats();
            spool.close().await.expect("close");
            drop(spool);
            let t = Instant::now();
            let (spool, rec) = Spool::open(dir.as_ref(), 0, SpoolOptions::default())
                .await
                .expect("reopen");
            println!(
                "recovery: {} live messages, {} segments in {:?}",
                rec.stats.messages,
                rec.stats.segments,
                t.elapsed()
            );
            spool.close().await.expect("close");
            let mut l = lat.borrow_mut();
            l.sort_unstable();
            let pct = |p: f64| l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1))).copied().unwrap_or(0);
            println!(
                "appenders={appenders} rate={rate} delay_us={delay_us} body={body_len}: {} msgs in {elapsed:.2}s = {:.0} msgs/s, {:.1} MB/s; batches={} ({:.1} rec/batch); latency us p50={} p90={} p99={} p999={} max={}",
                l.len(),
                l.len() as f64 / elapsed,
                stats.bytes as f64 / elapsed / 1e6,
                stats.batches,
                stats.records as f64 / stats.batches.max(1) as f64,
                pct(0.5), pct(0.9), pct(0.99), pct(0.999), l.last().copied().unwrap_or(0)
            );
        })
        .expect("executor")
        .join()
        .expect("join");
}
