//! Bindings through the real binary: two shards send from several
//! 127.0.0.x source addresses to a recording next hop, which reports the
//! source address of every message it accepts.

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use common::recorder::{Recorder, Seen};
use common::*;

const DOMAIN: &str = "example.net";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Two shards relaying `DOMAIN` to `hop`, with `global` options and the
/// binding sections `bindings`.
fn config(hop: &Recorder, global: &str, bindings: &str) -> String {
    basic_config(&format!("relay_domains = [\"{DOMAIN}\"]\n{global}"), "")
        .replace("shards = 1", "shards = 2")
        .replace("suspend_delivery = true\n", "")
        + &format!(
            "[domain.\"{DOMAIN}\"]\nroutes = [\"{}\"]\n{bindings}\n",
            hop.addr
        )
}

/// Three bindings in one group, weighted 5:3:2, for mail to `DOMAIN`.
const POOL: &str = "[binding.v1]\nbind_address = \"127.0.0.11\"\n\
                    [binding.v2]\nbind_address = \"127.0.0.12\"\n\
                    [binding.v3]\nbind_address = \"127.0.0.13\"\n\
                    [binding_group.pool]\nmembers = { v1 = 5, v2 = 3, v3 = 2 }\n";
const TO_POOL: &str = "regex_binding2 = [\"group:pool = rcptto =~ '@example[.]net$'\"]";

/// Waits until `hop` accepted `n` messages; the counts per source address.
fn sources_after(s: &Server, hop: &Recorder, n: usize) -> BTreeMap<IpAddr, usize> {
    assert!(
        wait_until(Duration::from_secs(120), || hop.accepted().len() >= n),
        "{} of {n} arrived\n{}",
        hop.accepted().len(),
        s.log_text()
    );
    hop.sources()
}

/// `count` is within `slack` (a share of `total`) of `share` × `total`.
fn near(count: usize, share: f64, total: usize, slack: f64) -> bool {
    (count as f64 - share * total as f64).abs() <= slack * total as f64
}

#[test]
fn group_weights_hold_over_ten_thousand_messages_from_all_shards() {
    let hop = Recorder::start(Duration::ZERO);
    let mut s = start(&config(&hop, TO_POOL, POOL));
    let n = 10_000;
    inject(s.addr(), n, 16, "a@example.com", DOMAIN);
    let got = sources_after(&s, &hop, n);
    let (a, b, c) = (
        got.get(&ip("127.0.0.11")).copied().unwrap_or(0),
        got.get(&ip("127.0.0.12")).copied().unwrap_or(0),
        got.get(&ip("127.0.0.13")).copied().unwrap_or(0),
    );
    eprintln!("sources: {got:?}");
    assert_eq!(a + b + c, n, "every message from a member: {got:?}");
    for (count, share) in [(a, 0.5), (b, 0.3), (c, 0.2)] {
        assert!(near(count, share, n, 0.02), "{got:?}");
    }
    s.stop(Duration::from_secs(30));
    // Both shards took mail, and asked the group's owner in batches.
    let log = s.log_text();
    let stops: Vec<u64> = log
        .lines()
        .filter_map(|l| l.split("binding_requests_to_other_shards=").nth(1))
        .map(|v| v.trim().parse().unwrap())
        .collect();
    eprintln!("binding asks to other shards: {stops:?}");
    assert_eq!(stops.len(), 2, "{log}");
    assert!(
        stops.iter().sum::<u64>() <= (n as u64).div_ceil(32),
        "asks are batched: {stops:?}"
    );
}

#[test]
fn a_suspended_member_gets_nothing_and_its_share_goes_to_the_others() {
    let hop = Recorder::start(Duration::ZERO);
    let pool = POOL.replace(
        "bind_address = \"127.0.0.12\"\n",
        "bind_address = \"127.0.0.12\"\nsuspend_delivery = true\n",
    );
    let mut s = start(&config(&hop, TO_POOL, &pool));
    let n = 2_000;
    inject(s.addr(), n, 8, "a@example.com", DOMAIN);
    let got = sources_after(&s, &hop, n);
    assert_eq!(got.get(&ip("127.0.0.12")), None, "{got:?}");
    let a = got.get(&ip("127.0.0.11")).copied().unwrap_or(0);
    let c = got.get(&ip("127.0.0.13")).copied().unwrap_or(0);
    assert_eq!(a + c, n, "{got:?}");
    assert!(near(a, 5.0 / 7.0, n, 0.03), "5:2 of the rest: {got:?}");
    s.stop(Duration::from_secs(30));
}

#[test]
fn sender_domain_and_rules_assign_in_order_and_the_rest_uses_default() {
    let hop = Recorder::start(Duration::ZERO);
    let bindings =
        "[binding.news]\nbind_address = \"127.0.0.21\"\nmatch_domain = [\"news.example\"]\n\
                    [binding.vip]\nbind_address = \"127.0.0.22\"\n";
    // The rule would match the newsletter too: match_domain comes first.
    let global = "bind_address = \"127.0.0.20\"\n\
                  regex_binding2 = [\"vip = mailfrom =~ '^(ceo|news)@'\"]";
    let mut s = start(&config(&hop, global, bindings));
    inject(s.addr(), 30, 3, "news@news.example", DOMAIN);
    inject(s.addr(), 20, 2, "ceo@corp.example", DOMAIN);
    inject(s.addr(), 10, 1, "someone@corp.example", DOMAIN);
    let got = sources_after(&s, &hop, 60);
    let want: BTreeMap<IpAddr, usize> = [
        (ip("127.0.0.20"), 10),
        (ip("127.0.0.21"), 30),
        (ip("127.0.0.22"), 20),
    ]
    .into();
    assert_eq!(got, want);
    s.stop(Duration::from_secs(30));
}

#[test]
fn default_binding_none_refuses_what_nothing_assigns() {
    let hop = Recorder::start(Duration::ZERO);
    let bindings = "[binding.news]\nmatch_domain = [\"news.example\"]\n";
    let mut s = start(&config(&hop, "default_binding = \"none\"", bindings));
    let mut c = Client::connect(s.addr());
    assert!(c.reply().starts_with("220"));
    c.cmd("EHLO t");
    for (from, want) in [("a@other.example", "451 4.4.4"), ("a@news.example", "250")] {
        assert!(c.cmd(&format!("MAIL FROM:<{from}>")).starts_with("250"));
        assert!(c.cmd(&format!("RCPT TO:<x@{DOMAIN}>")).starts_with("250"));
        assert!(c.cmd("DATA").starts_with("354"));
        c.send("Subject: x\r\n\r\nx\r\n.\r\n");
        let r = c.reply();
        assert!(r.starts_with(want), "{from}: {r}");
    }
    c.cmd("QUIT");
    assert!(wait_until(Duration::from_secs(30), || hop.accepted().len() == 1));
    s.stop(Duration::from_secs(30));
}

#[test]
fn the_assignment_is_kept_in_the_spool_across_a_restart() {
    let hop = Recorder::start(Duration::ZERO);
    // First run: assigned by the group, held by suspend_delivery.
    let held = config(&hop, TO_POOL, POOL).replace(
        &format!("routes = [\"{}\"]\n", hop.addr),
        &format!("routes = [\"{}\"]\nsuspend_delivery = true\n", hop.addr),
    );
    let mut s = start(&held);
    let n = 200;
    inject(s.addr(), n, 4, "a@example.com", DOMAIN);
    s.stop(Duration::from_secs(30));
    // Second run: no rule any more, so new mail would use default
    // (127.0.0.1); the held mail keeps the members it was given.
    let dir = std::mem::replace(&mut s.dir, tempfile::tempdir().expect("tmp"));
    let port = s.port;
    let mut s = start_in(dir, port, &config(&hop, "", POOL));
    let got = sources_after(&s, &hop, n);
    assert_eq!(got.get(&ip("127.0.0.1")), None, "{got:?}");
    assert_eq!(got.values().sum::<usize>(), n, "{got:?}");
    assert_eq!(got.len(), 3, "all three members kept theirs: {got:?}");
    s.stop(Duration::from_secs(30));
}

#[test]
fn scope_max_outbound_connections_caps_a_domain_over_its_bindings() {
    // Slow replies keep connections busy while the backlog lasts.
    let hop = Recorder::start(Duration::from_millis(30));
    let bindings = "max_outbound_connections = 3\nscope_max_outbound_connections = 4\n\
                    [binding.v1]\nbind_address = \"127.0.0.11\"\n\
                    [binding.v2]\nbind_address = \"127.0.0.12\"\n";
    let global = "regex_binding2 = [\"v1, v2 = rcptto =~ '@example[.]net$'\"]";
    let mut s = start(&config(&hop, global, bindings));
    let n = 300;
    inject(s.addr(), n, 8, "a@example.com", DOMAIN);
    let got = sources_after(&s, &hop, n);
    assert_eq!(got.len(), 2, "both bindings took turns: {got:?}");
    assert!(hop.peak() <= 4, "peak {} over both bindings", hop.peak());
    s.stop(Duration::from_secs(30));
}

#[test]
fn a_suspended_members_queued_mail_moves_to_the_others_and_stays_moved() {
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    use std::sync::Arc;
    // The next hop defers everything until told otherwise.
    let refuse = Arc::new(AtomicBool::new(true));
    let r = refuse.clone();
    let hop = Recorder::scripted(Arc::new(move |_| {
        let line = if r.load(SeqCst) {
            "451 4.3.0 try again later\r\n"
        } else {
            "250 2.0.0 ok\r\n"
        };
        (Duration::ZERO, line.into())
    }));
    // v1 sends news.example's mail; its group moves a held member's mail.
    let pool = "[binding.v1]\nbind_address = \"127.0.0.11\"\nmatch_domain = [\"news.example\"]\n\
                suspend_delivery = true\n\
                [binding.v2]\nbind_address = \"127.0.0.12\"\n\
                [binding.v3]\nbind_address = \"127.0.0.13\"\n\
                [binding_group.pool]\nmembers = { v1 = 1, v2 = 3, v3 = 1 }\n\
                rebind_suspended = true\n";
    let mut s = start(&config(&hop, "retry_interval = 1", pool));
    let n = 200;
    inject(s.addr(), n, 4, "list@news.example", DOMAIN);
    let refused = || {
        hop.seen()
            .iter()
            .filter(|(_, x)| matches!(x, Seen::Refused(_)))
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(120), || refused() >= n),
        "{} of {n} tried\n{}",
        refused(),
        s.log_text()
    );
    let opened_from = |hop: &Recorder| -> BTreeMap<IpAddr, usize> {
        let mut m = BTreeMap::new();
        for (_, x) in hop.seen() {
            if let Seen::Open(ip) = x {
                *m.entry(ip).or_insert(0) += 1;
            }
        }
        m
    };
    let first = opened_from(&hop);
    assert_eq!(
        first.get(&ip("127.0.0.11")),
        None,
        "the held member sent: {first:?}"
    );
    s.stop(Duration::from_secs(30));
    assert!(
        s.log_text().contains("moved") && s.log_text().contains("from held binding v1"),
        "{}",
        s.log_text()
    );
    // Second run: v1 is back and the hop accepts. Had the moves not been
    // recorded, the mail would go back to v1, which match_domain gave it.
    refuse.store(false, SeqCst);
    let open = pool.replace("suspend_delivery = true\n", "");
    let dir = std::mem::replace(&mut s.dir, tempfile::tempdir().expect("tmp"));
    let port = s.port;
    let mut s = start_in(dir, port, &config(&hop, "retry_interval = 1", &open));
    let got = sources_after(&s, &hop, n);
    assert_eq!(got.get(&ip("127.0.0.11")), None, "{got:?}");
    let (b, c) = (
        got.get(&ip("127.0.0.12")).copied().unwrap_or(0),
        got.get(&ip("127.0.0.13")).copied().unwrap_or(0),
    );
    assert_eq!(b + c, n, "{got:?}");
    assert!(near(b, 0.75, n, 0.03), "3:1 of the moves: {got:?}");
    // New mail for v1 goes from v1 again.
    inject(s.addr(), 10, 1, "list@news.example", DOMAIN);
    let got = sources_after(&s, &hop, n + 10);
    assert_eq!(got.get(&ip("127.0.0.11")), Some(&10), "{got:?}");
    s.stop(Duration::from_secs(30));
}
