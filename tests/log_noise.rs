//! Repetitive operational lines are limited: while a destination is down,
//! its "settled as Deferred" line appears once per interval, not once per
//! retry round (the accounting stays in the spool, per message).

mod common;

use common::*;
use std::time::{Duration, Instant};

/// Seconds between two lines of the same kind for one domain.
const REPEAT_LOG_INTERVAL_SECS: u64 = 10;
/// Retry rounds to wait for.
const ROUNDS: u32 = 4;

#[test]
fn a_dead_destination_logs_its_deferrals_once_per_interval() {
    let dead = free_port();
    let cfg = basic_config(
        &format!("routes = [\"127.0.0.1:{dead}\"]\nretry_interval = 1\nmax_retry_interval = 1"),
        "",
    )
    .replace("suspend_delivery = true\n", "");
    let s = start(&cfg);
    let mut c = Client::connect(s.addr());
    assert!(c.reply().starts_with("220"));
    assert!(c.cmd("EHLO t").starts_with("250"));
    let t0 = Instant::now();
    let mut last = String::new();
    for i in 0..20 {
        assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
        assert!(c.cmd("RCPT TO:<b@example.net>").starts_with("250"));
        assert!(c.cmd("DATA").starts_with("354"));
        last = c.cmd(&format!("Subject: {i}\r\n\r\nx\r\n."));
        assert!(last.starts_with("250"), "{last}");
    }
    let id = last.trim_end().rsplit(' ').next().unwrap().to_string();
    let start = Instant::now();
    let want = format!("attempts={ROUNDS}");
    loop {
        let (_, out, _) = run_impulse(&["spool", "show", "--dir", &s.spool_dir(0), &id]);
        if out.contains(&want) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "no {ROUNDS} retry rounds:\n{out}\n{}",
            s.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let lines = s.log_text().matches("settled as Deferred").count() as u64;
    let bound = 2 + t0.elapsed().as_secs() / REPEAT_LOG_INTERVAL_SECS;
    assert!(
        lines >= 1,
        "the first deferral is logged:\n{}",
        s.log_text()
    );
    assert!(
        lines <= bound,
        "{lines} lines for {ROUNDS} rounds (at most {bound} expected):\n{}",
        s.log_text()
    );
}
