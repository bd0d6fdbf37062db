//! Adaptive back-off through the real binary: a next hop that answers
//! some messages with Gmail's "421 4.7.0 ... Try again later" makes the
//! owner of that binding × domain lower its connections, step back up and
//! end the back-off as the rule says; each change is an event (and a log
//! line), the next hop sees no more connections than the rule allows
//! while it holds and the full limit again after it, and every message
//! still arrives.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::recorder::{Recorder, Seen};
use common::*;

const DOMAIN: &str = "example.net";

#[test]
fn a_rate_limit_reply_slows_the_domain_then_it_recovers_step_by_step() {
    // The first ten messages are refused as Gmail does when it wants less;
    // the others take a while each, so that connections stay busy.
    let hop = Recorder::scripted(Arc::new(|n| {
        if n < 10 {
            let reply = "421 4.7.0 Try again later, closing connection.\r\n";
            (Duration::from_millis(5), reply.to_string())
        } else {
            (Duration::from_millis(40), "250 2.0.0 ok\r\n".to_string())
        }
    }));
    // The built-in rule of that name, with timings short enough for a test.
    let rule = "[backoff.gmail-try-again-later]\nmatch_code = \"421\"\nmatch_status = \"4.7.0\"\n\
                match_text = \"try again later\"\naction = \"connections\"\nbackoff_connections = 1\n\
                duration = 4\nrecover_after = 1\nrecovery_steps = 2\n";
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
    // Enough that mail is waiting through the hold and the steps: 25 a
    // second on one connection.
    let n = 300;
    inject(s.addr(), n, 6, "a@example.com", DOMAIN);
    s.wait_log("rule gmail-try-again-later ended", Duration::from_secs(60));
    assert!(
        wait_until(Duration::from_secs(60), || hop.accepted().len() >= n),
        "{} of {n} arrived\n{}",
        hop.accepted().len(),
        s.log_text()
    );
    // What the next hop saw. The hold began at the first 421 and lasts
    // four seconds from it at least; a second after the last 421, the
    // tasks over the lowered limit have finished their message and gone.
    let seen = hop.seen();
    let refused: Vec<_> = seen
        .iter()
        .filter(|(_, e)| matches!(e, Seen::Refused(_)))
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(refused.len(), 10);
    let (from, to) = (
        refused[9] + Duration::from_secs(1),
        refused[0] + Duration::from_millis(3500),
    );
    assert!(
        from < to,
        "the 421s were spread over {:?}",
        refused[9] - refused[0]
    );
    let levels = hop.levels();
    let open_at = |t: std::time::Instant| {
        levels
            .iter()
            .take_while(|(at, _)| *at <= t)
            .last()
            .map_or(0, |l| l.1)
    };
    let held: Vec<u32> = std::iter::once(open_at(from))
        .chain(
            levels
                .iter()
                .filter(|(t, _)| (from..to).contains(t))
                .map(|l| l.1),
        )
        .collect();
    assert!(
        held.iter().all(|&c| c <= 1),
        "connections during the hold: {held:?}"
    );
    let sent_in_hold = seen
        .iter()
        .filter(|(t, e)| (from..to).contains(t) && matches!(e, Seen::Accepted(_)))
        .count();
    assert!(
        sent_in_hold >= 10,
        "the hold slows, it does not stop: {sent_in_hold} sent"
    );
    // After the steps, the full limit again (and never more).
    let after = levels.iter().filter(|(t, _)| *t > to).map(|l| l.1).max();
    assert_eq!(after, Some(4), "connections after the hold: {levels:?}");
    assert!(hop.peak() <= 4);
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
