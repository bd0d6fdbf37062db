//! Domain throttles over all shards, through the real binary: two shards
//! take mail from several clients and deliver to a recording next hop;
//! the connection limit and the rates hold for the domain as a whole.

mod common;

use std::time::{Duration, Instant};

use common::recorder::{most_in_window, Recorder};
use common::*;

const DOMAIN: &str = "example.net";

/// Two shards relaying `DOMAIN` to `next_hop`, with `domain` options.
fn sender(next_hop: &Recorder, global: &str, domain: &str) -> Server {
    let cfg = basic_config(&format!("relay_domains = [\"{DOMAIN}\"]\n{global}"), "")
        .replace("shards = 1", "shards = 2")
        .replace("suspend_delivery = true\n", "")
        + &format!(
            "[domain.\"{DOMAIN}\"]\nroutes = [\"{}\"]\n{domain}\n",
            next_hop.addr
        );
    start(&cfg)
}

/// Sends `n` messages to `DOMAIN` over `clients` connections at once.
fn inject_n(s: &Server, n: usize, clients: usize) {
    inject(s.addr(), n, clients, "a@example.com", DOMAIN);
}

/// Injects `n` messages (as `inject`) and waits until `hop` has them all;
/// returns the time from the first injection.
fn relay_all(s: &Server, hop: &Recorder, n: usize) -> Duration {
    let begun = Instant::now();
    inject_n(s, n, 8);
    assert!(
        wait_until(Duration::from_secs(60), || hop.accepted().len() >= n),
        "{} of {n} arrived\n{}",
        hop.accepted().len(),
        s.log_text()
    );
    begun.elapsed()
}

/// Stops the server and returns what each shard delivered (its last line).
fn delivered_per_shard(mut s: Server) -> Vec<u64> {
    s.stop(Duration::from_secs(30));
    let log = s.log_text();
    (0..2)
        .map(|n| {
            log.lines()
                .find_map(|l| {
                    let rest = l.split(&format!("shard {n} stopped: ")).nth(1)?;
                    rest.split_whitespace()
                        .find_map(|kv| kv.strip_prefix("delivered="))?
                        .parse()
                        .ok()
                })
                .unwrap_or_else(|| panic!("no stop line for shard {n}:\n{log}"))
        })
        .collect()
}

#[test]
fn max_outbound_connections_holds_over_all_shards() {
    // Each message keeps its connection busy a while, so both shards
    // want every connection they may have.
    let hop = Recorder::start(Duration::from_millis(25));
    let s = sender(&hop, "", "max_outbound_connections = 3");
    let n = 160;
    relay_all(&s, &hop, n);
    assert!(hop.peak() <= 3, "{} connections at once", hop.peak());
    assert!(hop.peak() >= 2, "the limit was used: peak {}", hop.peak());
    let per_shard = delivered_per_shard(s);
    assert_eq!(per_shard.iter().sum::<u64>(), n as u64, "{per_shard:?}");
    assert!(
        per_shard.iter().all(|d| *d > 0),
        "both shards delivered: {per_shard:?}"
    );
}

#[test]
fn outbound_throttle_messages_holds_over_all_shards() {
    let hop = Recorder::start(Duration::ZERO);
    let s = sender(&hop, "", "outbound_throttle_messages = \"20/2\"");
    let n = 70;
    let took = relay_all(&s, &hop, n);
    // 20 per 2 s: the bucket holds 1, so 70 messages need 69 more tokens
    // at 10 per second. Slowness can only make this longer.
    assert!(took >= Duration::from_millis(6_800), "{n} in {took:?}");
    // The bound is 20 + 1 + 0.1 per window; a message's arrival may lag
    // its token by a little, so two more are allowed for that.
    let most = most_in_window(&hop.accepted(), Duration::from_secs(2));
    assert!(most <= 23, "{most} messages in one 2 s window");
    let per_shard = delivered_per_shard(s);
    assert!(
        per_shard.iter().all(|d| *d > 0),
        "both shards delivered: {per_shard:?}"
    );
}

#[test]
fn outbound_throttle_connections_holds_over_all_shards() {
    let hop = Recorder::start(Duration::ZERO);
    // One message per connection: every message needs a new connection.
    let s = sender(
        &hop,
        "",
        "outbound_throttle_connections = \"3/1\"\nmax_deliveries_per_connection = 1",
    );
    let n = 24;
    let took = relay_all(&s, &hop, n);
    assert!(
        took >= Duration::from_millis(7_300),
        "{n} connections in {took:?}"
    );
    let opened = hop.opened();
    assert_eq!(opened.len(), n, "one connection per message");
    let most = most_in_window(&opened, Duration::from_secs(1));
    assert!(most <= 6, "{most} connections opened in one second");
    delivered_per_shard(s);
}

#[test]
fn a_lower_limit_after_a_reload_closes_the_connections_over_it() {
    // Slow enough that the backlog outlasts the injection.
    let hop = Recorder::start(Duration::from_millis(100));
    let s = sender(&hop, "", "max_outbound_connections = 4");
    let n = 150;
    inject_n(&s, n, 8);
    assert!(
        wait_until(Duration::from_secs(30), || hop.open_now() == 4),
        "4 connections open: {}",
        hop.open_now()
    );
    let text = std::fs::read_to_string(&s.config_path).expect("config");
    let lower = text.replace(
        "max_outbound_connections = 4",
        "max_outbound_connections = 1",
    );
    std::fs::write(&s.config_path, lower).expect("write config");
    s.signal(libc::SIGHUP);
    // Connections over the new limit end after their current message.
    assert!(
        wait_until(Duration::from_secs(30), || hop.open_now() <= 1),
        "{} connections still open\n{}",
        hop.open_now(),
        s.log_text()
    );
    hop.reset_peak();
    let left = n - hop.accepted().len();
    assert!(
        left > 20,
        "the test needs mail left to send: {left}\n{}",
        s.log_text()
    );
    assert!(
        wait_until(Duration::from_secs(60), || hop.accepted().len() >= n),
        "{} of {n} arrived",
        hop.accepted().len()
    );
    assert!(
        hop.peak() <= 1,
        "{} connections at once after the reload",
        hop.peak()
    );
    delivered_per_shard(s);
}

#[test]
fn server_max_outbound_connections_holds_over_all_shards_and_domains() {
    let hop = Recorder::start(Duration::from_millis(25));
    let other = "example.org";
    let mut cfg = basic_config(
        &format!(
            "relay_domains = [\"{DOMAIN}\", \"{other}\"]\nserver_max_outbound_connections = 2"
        ),
        "",
    )
    .replace("shards = 1", "shards = 2")
    .replace("suspend_delivery = true\n", "");
    for d in [DOMAIN, other] {
        cfg += &format!(
            "[domain.\"{d}\"]\nroutes = [\"{}\"]\nmax_outbound_connections = 3\n",
            hop.addr
        );
    }
    let s = start(&cfg);
    let n = 80;
    let (a, b) = (s.addr(), s.addr());
    let one = std::thread::spawn(move || inject(a, n / 2, 4, "a@example.com", DOMAIN));
    let two = std::thread::spawn(move || inject(b, n / 2, 4, "a@example.com", other));
    one.join().expect("inject");
    two.join().expect("inject");
    assert!(
        wait_until(Duration::from_secs(60), || hop.accepted().len() >= n),
        "{} of {n} arrived\n{}",
        hop.accepted().len(),
        s.log_text()
    );
    if hop.peak() > 2 {
        let seen = hop.seen();
        let t0 = seen[0].0;
        let trace: Vec<String> = seen
            .iter()
            .map(|(t, e)| format!("{:?} {e:?}", t.duration_since(t0)))
            .collect();
        panic!(
            "{} connections at once\n{}\n{}",
            hop.peak(),
            trace.join("\n"),
            s.log_text()
        );
    }
    assert_eq!(hop.peak(), 2, "the server's limit was used");
    delivered_per_shard(s);
}

#[test]
fn a_throttled_domain_holds_up_no_other_and_its_waiting_mail_is_no_attempt() {
    // slow.test may have one delivery in ten minutes; example.net has no
    // limit. Both shards take mail for both.
    let (slow_hop, hop) = (
        Recorder::start(Duration::ZERO),
        Recorder::start(Duration::ZERO),
    );
    let cfg = basic_config(
        &format!("relay_domains = [\"{DOMAIN}\", \"slow.test\"]"),
        "",
    )
    .replace("shards = 1", "shards = 2")
    .replace("suspend_delivery = true\n", "")
        + &format!(
            "[domain.\"{DOMAIN}\"]\nroutes = [\"{}\"]\n\
             [domain.\"slow.test\"]\nroutes = [\"{}\"]\noutbound_throttle_messages = \"1/600\"\n",
            hop.addr, slow_hop.addr
        );
    let mut s = start(&cfg);
    inject(s.addr(), 20, 4, "a@example.com", "slow.test");
    assert!(
        wait_until(Duration::from_secs(30), || slow_hop.accepted().len() == 1),
        "the bucket's one token is used\n{}",
        s.log_text()
    );
    inject(s.addr(), 40, 4, "a@example.com", DOMAIN);
    assert!(
        wait_until(Duration::from_secs(60), || hop.accepted().len() >= 40),
        "{} of 40 arrived beside the throttled domain\n{}",
        hop.accepted().len(),
        s.log_text()
    );
    assert_eq!(slow_hop.accepted().len(), 1, "the throttle held");
    s.stop(Duration::from_secs(30));
    // The 19 that wait for a token were never attempted: no deferral,
    // no retry time, in either shard's spool.
    let (live, never) = (0..2)
        .map(|n| inspect(&s.spool_dir(n)))
        .fold((0, 0), |a, b| (a.0 + b.live, a.1 + b.never_attempted));
    assert_eq!((live, never), (19, 19), "{}", s.log_text());
}
