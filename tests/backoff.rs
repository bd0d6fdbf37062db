//! Adaptive back-off through the real binary: a next hop that answers
//! some messages with Gmail's "421 4.7.0 ... Try again later" makes the
//! owner of that binding × domain lower its connections, step back up and
//! end the back-off as the rule says; each change is an event (and a log
//! line), and every message still arrives.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::recorder::Recorder;
use common::*;

const DOMAIN: &str = "example.net";

#[test]
fn a_rate_limit_reply_slows_the_domain_then_it_recovers_step_by_step() {
    // The first ten messages are refused as Gmail does when it wants less.
    let hop = Recorder::scripted(Arc::new(|n| {
        let reply = if n < 10 {
            "421 4.7.0 Try again later, closing connection.\r\n"
        } else {
            "250 2.0.0 ok\r\n"
        };
        (Duration::from_millis(5), reply.to_string())
    }));
    // The built-in rule of that name, with timings short enough for a test.
    let rule = "[backoff.gmail-try-again-later]\nmatch_code = \"421\"\nmatch_status = \"4.7.0\"\n\
                match_text = \"try again later\"\naction = \"connections\"\nbackoff_connections = 1\n\
                duration = 2\nrecover_after = 1\nrecovery_steps = 2\n";
    let cfg = basic_config(
        &format!("relay_domains = [\"{DOMAIN}\"]\nretry_interval = 1\nmax_retry_interval = 1"),
        "",
    )
    .replace("shards = 1", "shards = 2")
    .replace("suspend_delivery = true\n", "")
        + &format!(
            "[domain.\"{DOMAIN}\"]\nroutes = [\"{}\"]\nmax_outbound_connections = 4\n{rule}",
            hop.addr
        );
    let mut s = start(&cfg);
    let n = 60;
    inject(s.addr(), n, 6, "a@example.com", DOMAIN);
    s.wait_log("rule gmail-try-again-later ended", Duration::from_secs(60));
    assert!(
        wait_until(Duration::from_secs(60), || hop.accepted().len() >= n),
        "{} of {n} arrived\n{}",
        hop.accepted().len(),
        s.log_text()
    );
    let log = s.log_text();
    for l in log.lines().filter(|l| l.contains("backoff")) {
        eprintln!("{l}");
    }
    let at = |needle: &str| {
        log.find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in\n{log}"))
    };
    let started = at("backoff: example.net from binding default: rule gmail-try-again-later started after \"421 4.7.0 Try again later, closing connection.\": allows 1 connection(s)");
    let step = at("rule gmail-try-again-later step 1/2: allows 2 connection(s)");
    let ended = at("rule gmail-try-again-later ended: allows the configured limits");
    assert!(started < step && step < ended, "{log}");
    s.stop(Duration::from_secs(30));
    // Reported once over the server, by the key's owner shard.
    let changes: u64 = s
        .log_text()
        .lines()
        .filter_map(|l| l.split("backoff_changes=").nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    assert!(changes >= 3, "{}", s.log_text());
}
