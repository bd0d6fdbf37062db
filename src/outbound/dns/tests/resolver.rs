//! The glommio resolver against the loopback test server: MX selection,
//! failures, failover, TCP fallback, caching with an injected clock, and
//! coalescing.

use std::cell::Cell;
use std::future::Future;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future;
use hickory_proto::rr::RecordType;

use super::server::{Mode, TestDns};
use crate::outbound::dns::{DnsError, MxHost, MxResult, Resolver, ResolverConfig};

const TRY_TIMEOUT: Duration = Duration::from_millis(200);

fn run<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .spawn(f)
        .expect("executor")
        .join()
        .expect("test body");
}

/// A resolver on a hand-driven clock, one try per server.
fn resolver(servers: &[&TestDns], seed: u64) -> (Resolver, Rc<Cell<Instant>>) {
    let mut cfg = ResolverConfig::with_nameservers(servers.iter().map(|s| s.addr).collect());
    cfg.timeout = TRY_TIMEOUT;
    cfg.attempts = 1;
    cfg.shuffle_seed = Some(seed);
    let now = Rc::new(Cell::new(Instant::now()));
    let clock = now.clone();
    (Resolver::with_clock(cfg, Rc::new(move || clock.get())), now)
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn names(r: &MxResult) -> Vec<String> {
    match r {
        MxResult::Hosts(h) => h.iter().map(|h| h.name.clone()).collect(),
        other => panic!("expected hosts, got {other:?}"),
    }
}

fn advance(now: &Cell<Instant>, secs: u64) {
    now.set(now.get() + Duration::from_secs(secs));
}

#[test]
fn mx_hosts_in_preference_order_with_both_families() {
    let dns = TestDns::start();
    dns.mx("example.test", 300, 20, "backup.example.test")
        .mx("example.test", 300, 10, "mx1.example.test")
        .a("mx1.example.test", 300, [192, 0, 2, 1])
        .aaaa("mx1.example.test", 300, "2001:db8::1")
        .a("backup.example.test", 300, [192, 0, 2, 2]);
    run(move || async move {
        let (r, _) = resolver(&[&dns], 1);
        let got = r.resolve_mx("Example.Test.").await.expect("resolves");
        assert_eq!(
            *got,
            MxResult::Hosts(vec![
                MxHost {
                    preference: 10,
                    name: "mx1.example.test".into(),
                    addrs: vec![ip("192.0.2.1"), ip("2001:db8::1")],
                },
                MxHost {
                    preference: 20,
                    name: "backup.example.test".into(),
                    addrs: vec![ip("192.0.2.2")],
                },
            ])
        );
        assert_eq!(got.addresses().count(), 3);
    });
}

#[test]
fn equal_preferences_shuffle_deterministically_per_seed() {
    let dns = TestDns::start();
    for h in ["a", "b", "c", "d"] {
        dns.mx("spread.test", 300, 10, &format!("{h}.spread.test"))
            .a(&format!("{h}.spread.test"), 300, [192, 0, 2, 9]);
    }
    run(move || async move {
        let order = |seed| {
            let (r, _) = resolver(&[&dns], seed);
            async move { names(&r.resolve_mx("spread.test").await.expect("ok")) }
        };
        assert_eq!(order(42).await, order(42).await);
        let mut seen = std::collections::HashSet::new();
        for seed in 0..12 {
            seen.insert(order(seed).await);
        }
        assert!(seen.len() > 3, "equal preferences must be spread: {seen:?}");
    });
}

#[test]
fn no_mx_means_implicit_mx_and_no_addresses_is_reported() {
    let dns = TestDns::start();
    dns.a("plain.test", 300, [192, 0, 2, 7]);
    dns.aaaa("only-txt.test", 300, "2001:db8::7");
    dns.clear("only-txt.test");
    dns.a("other.only-txt.test", 300, [192, 0, 2, 8]);
    run(move || async move {
        let (r, _) = resolver(&[&dns], 0);
        let got = r.resolve_mx("plain.test").await.expect("ok");
        assert_eq!(
            *got,
            MxResult::Hosts(vec![MxHost {
                preference: 0,
                name: "plain.test".into(),
                addrs: vec![ip("192.0.2.7")],
            }])
        );
        // The name exists (it has a child) but holds nothing: hosts without
        // addresses, which delivery reports as "no MX or A for domain".
        let got = r.resolve_mx("only-txt.test").await.expect("ok");
        assert!(!got.has_addresses());
        assert_eq!(names(&got), vec!["only-txt.test"]);
    });
}

#[test]
fn nxdomain_and_null_mx_are_permanent_answers() {
    let dns = TestDns::start();
    dns.mx("null.test", 300, 0, ".");
    run(move || async move {
        let (r, _) = resolver(&[&dns], 0);
        assert_eq!(
            *r.resolve_mx("nowhere.test").await.expect("ok"),
            MxResult::NoSuchDomain
        );
        assert_eq!(
            *r.resolve_mx("null.test").await.expect("ok"),
            MxResult::NullMx
        );
        assert_eq!(
            dns.count("null.test", RecordType::A),
            0,
            "a null MX is never chased"
        );
        assert_eq!(
            *r.resolve_mx("bad..name").await.expect("ok"),
            MxResult::NoSuchDomain
        );
        assert_eq!(dns.asked().len(), 2, "an invalid name sends no query");
    });
}

#[test]
fn servfail_and_refused_are_transient_and_not_cached() {
    let dns = TestDns::start();
    dns.mx("broken.test", 300, 10, "mx.broken.test");
    dns.mode_for("broken.test", Mode::ServFail);
    dns.mode_for("refused.test", Mode::Refused);
    run(move || async move {
        let (r, _) = resolver(&[&dns], 0);
        let e = r.resolve_mx("broken.test").await.expect_err("servfail");
        assert!(
            matches!(&e, DnsError::ServerFailure { reason, .. } if reason.contains("SERVFAIL")),
            "{e}"
        );
        let e = r.resolve_mx("refused.test").await.expect_err("refused");
        assert!(
            matches!(&e, DnsError::ServerFailure { reason, .. } if reason.contains("REFUSED")),
            "{e}"
        );
        let _ = r.resolve_mx("broken.test").await.expect_err("again");
        assert_eq!(
            dns.count("broken.test", RecordType::MX),
            2,
            "failures are not cached"
        );
    });
}

#[test]
fn a_silent_or_spoofed_server_times_out_and_the_next_one_answers() {
    let silent = TestDns::start();
    silent.mode_all(Mode::Drop);
    let spoofed = TestDns::start();
    spoofed.mode_all(Mode::WrongId);
    let good = TestDns::start();
    good.a("fallback.test", 300, [192, 0, 2, 3]);
    run(move || async move {
        let (r, _) = resolver(&[&silent, &spoofed, &good], 0);
        let started = Instant::now();
        let got = r
            .resolve_mx("fallback.test")
            .await
            .expect("third server answers");
        assert_eq!(names(&got), vec!["fallback.test"]);
        assert!(
            started.elapsed() >= TRY_TIMEOUT * 2,
            "two timeouts before the answer"
        );
        assert_eq!(silent.count("fallback.test", RecordType::MX), 1);
        assert_eq!(spoofed.count("fallback.test", RecordType::MX), 1);
        let (r, _) = resolver(&[&silent], 0);
        let e = r
            .resolve_mx("fallback.test")
            .await
            .expect_err("only silence");
        assert!(matches!(e, DnsError::Timeout { .. }), "{e}");
    });
}

#[test]
fn attempts_go_round_the_servers_again() {
    let dns = TestDns::start();
    dns.mx("flaky.test", 300, 10, "mx.flaky.test")
        .mx("flaky2.test", 300, 10, "mx.flaky.test")
        .a("mx.flaky.test", 300, [192, 0, 2, 40]);
    dns.mode_for("flaky.test", Mode::DropFirst);
    dns.mode_for("flaky2.test", Mode::DropFirst);
    run(move || async move {
        let (r, _) = resolver(&[&dns], 0);
        let e = r.resolve_mx("flaky.test").await.expect_err("one attempt");
        assert!(matches!(e, DnsError::Timeout { .. }), "{e}");
        let mut cfg = r.config().clone();
        cfg.attempts = 2;
        let r = Resolver::new(cfg);
        let got = r.resolve_mx("flaky2.test").await.expect("second round");
        assert!(got.has_addresses());
        assert_eq!(dns.count("flaky2.test", RecordType::MX), 2);
    });
}

#[test]
fn a_reply_with_the_wrong_id_is_skipped_for_the_right_one() {
    let dns = TestDns::start();
    dns.a("late.test", 300, [192, 0, 2, 4]);
    dns.mode_all(Mode::WrongIdThenRight);
    run(move || async move {
        let (r, _) = resolver(&[&dns], 0);
        assert_eq!(
            r.lookup_ip("late.test").await.expect("ok"),
            vec![ip("192.0.2.4")]
        );
        assert_eq!(r.stats().queries_sent, 2, "one A and one AAAA, no retry");
    });
}

#[test]
fn truncated_udp_replies_are_asked_again_over_tcp() {
    let dns = TestDns::start();
    dns.mx("big.test", 300, 10, "mx.big.test")
        .a("mx.big.test", 300, [192, 0, 2, 5]);
    dns.mode_for("big.test", Mode::Truncate);
    run(move || async move {
        let (r, _) = resolver(&[&dns], 0);
        let got = r.resolve_mx("big.test").await.expect("ok");
        assert_eq!(
            got.addresses().map(|(_, a)| a).collect::<Vec<_>>(),
            vec![ip("192.0.2.5")]
        );
        let mx: Vec<bool> = dns
            .asked()
            .iter()
            .filter(|a| a.name == "big.test")
            .map(|a| a.tcp)
            .collect();
        assert_eq!(mx, vec![false, true]);
    });
}

#[test]
fn cname_chains_are_followed() {
    let dns = TestDns::start();
    dns.mx("alias.test", 300, 10, "mx.alias.test")
        .cname("mx.alias.test", 300, "real.host.test")
        .a("real.host.test", 300, [192, 0, 2, 6])
        .cname("lazy.test", 300, "target.test")
        .mx("target.test", 300, 5, "mx.target.test")
        .a("mx.target.test", 300, [192, 0, 2, 10]);
    // This server leaves the chain to us: the resolver asks the target.
    dns.mode_for("lazy.test", Mode::CnameOnly);
    run(move || async move {
        let (r, _) = resolver(&[&dns], 0);
        let got = r.resolve_mx("alias.test").await.expect("ok");
        assert_eq!(
            got.addresses().map(|(_, a)| a).collect::<Vec<_>>(),
            vec![ip("192.0.2.6")]
        );
        let got = r.resolve_mx("lazy.test").await.expect("ok");
        assert_eq!(names(&got), vec!["mx.target.test"]);
        assert_eq!(dns.count("target.test", RecordType::MX), 1);
    });
}

#[test]
fn answers_are_cached_for_their_ttl_on_the_injected_clock() {
    let dns = TestDns::start();
    dns.mx("cached.test", 3000, 10, "mx.cached.test")
        .a("mx.cached.test", 60, [192, 0, 2, 11]);
    run(move || async move {
        let (r, now) = resolver(&[&dns], 0);
        r.resolve_mx("cached.test").await.expect("ok");
        assert_eq!(dns.asked().len(), 3, "MX, A, AAAA");
        advance(&now, 59);
        r.resolve_mx("cached.test").await.expect("ok");
        assert_eq!(dns.asked().len(), 3, "within the TTL nothing is asked");
        // The A record (60 s) expired; the MX record (3000 s) did not. The
        // AAAA NODATA lives for the SOA minimum (300 s).
        advance(&now, 2);
        let got = r.resolve_mx("cached.test").await.expect("ok");
        assert_eq!(got.addresses().count(), 1);
        assert_eq!(dns.count("mx.cached.test", RecordType::A), 2);
        assert_eq!(dns.count("cached.test", RecordType::MX), 1);
        assert_eq!(dns.count("mx.cached.test", RecordType::AAAA), 1);
        assert!(r.stats().cache_hits >= 2);
    });
}

#[test]
fn ttls_are_clamped_by_min_and_max_dns_ttl() {
    let dns = TestDns::start();
    dns.a("short.test", 1, [192, 0, 2, 12])
        .a("long.test", 86_400, [192, 0, 2, 13]);
    run(move || async move {
        let (mut r, now) = resolver(&[&dns], 0);
        let mut cfg = r.config().clone();
        cfg.ttl.min_ttl_secs = 30;
        cfg.ttl.max_ttl_secs = 600;
        let clock = now.clone();
        r = Resolver::with_clock(cfg, Rc::new(move || clock.get()));
        r.lookup_ip("short.test").await.expect("ok");
        r.lookup_ip("long.test").await.expect("ok");
        advance(&now, 29);
        r.lookup_ip("short.test").await.expect("ok");
        assert_eq!(
            dns.count("short.test", RecordType::A),
            1,
            "raised to min_dns_ttl"
        );
        advance(&now, 600);
        r.lookup_ip("long.test").await.expect("ok");
        assert_eq!(
            dns.count("long.test", RecordType::A),
            2,
            "cut to max_dns_ttl"
        );
    });
}

#[test]
fn negative_answers_are_cached_for_the_soa_minimum() {
    let dns = TestDns::start();
    dns.soa(3600, 120);
    run(move || async move {
        let (r, now) = resolver(&[&dns], 0);
        assert_eq!(
            *r.resolve_mx("gone.test").await.expect("ok"),
            MxResult::NoSuchDomain
        );
        advance(&now, 119);
        assert_eq!(
            *r.resolve_mx("gone.test").await.expect("ok"),
            MxResult::NoSuchDomain
        );
        assert_eq!(dns.count("gone.test", RecordType::MX), 1);
        advance(&now, 1);
        r.resolve_mx("gone.test").await.expect("ok");
        assert_eq!(dns.count("gone.test", RecordType::MX), 2);
        // The domain appears: seen once the negative entry has expired.
        dns.a("gone.test", 300, [192, 0, 2, 14]);
        advance(&now, 120);
        assert!(r.resolve_mx("gone.test").await.expect("ok").has_addresses());
    });
}

#[test]
fn concurrent_lookups_of_one_name_share_one_query() {
    let dns = TestDns::start();
    dns.mx("popular.test", 300, 10, "mx.popular.test")
        .a("mx.popular.test", 300, [192, 0, 2, 15]);
    run(move || async move {
        let (r, _) = resolver(&[&dns], 0);
        let (a, b) = future::zip(r.resolve_mx("popular.test"), r.resolve_mx("POPULAR.test")).await;
        assert_eq!(a.expect("a"), b.expect("b"));
        assert_eq!(dns.count("popular.test", RecordType::MX), 1);
        assert_eq!(dns.count("mx.popular.test", RecordType::A), 1);
        assert_eq!(dns.asked().len(), 3);
        assert_eq!(r.stats().coalesced, 3);
    });
}

#[test]
fn waiters_are_released_when_the_leading_lookup_is_dropped() {
    let dns = TestDns::start();
    dns.mode_all(Mode::Drop);
    run(move || async move {
        let (r, _) = resolver(&[&dns], 0);
        let leader = future::or(async { Some(r.lookup_ip("slow.test").await) }, async {
            glommio::timer::sleep(Duration::from_millis(20)).await;
            None
        });
        let (lead, waiter) = future::zip(leader, async {
            glommio::timer::sleep(Duration::from_millis(5)).await;
            r.lookup_ip("slow.test").await
        })
        .await;
        assert!(lead.is_none(), "the leader was cancelled");
        assert!(
            matches!(waiter, Err(DnsError::Abandoned { .. })),
            "{waiter:?}"
        );
    });
}

#[test]
fn address_literals_and_ip_names_need_no_query() {
    let dns = TestDns::start();
    run(move || async move {
        let (r, _) = resolver(&[&dns], 0);
        let got = r.resolve_mx("[192.0.2.20]").await.expect("ok");
        assert_eq!(
            got.addresses().map(|(_, a)| a).collect::<Vec<_>>(),
            vec![ip("192.0.2.20")]
        );
        let got = r.resolve_mx("[IPv6:2001:db8::20]").await.expect("ok");
        assert_eq!(
            got.addresses().map(|(_, a)| a).collect::<Vec<_>>(),
            vec![ip("2001:db8::20")]
        );
        assert_eq!(
            r.lookup_ip("192.0.2.21").await.expect("ok"),
            vec![ip("192.0.2.21")]
        );
        let host = r.resolve_host("10.0.0.1").await.expect("ok");
        assert_eq!(names(&host), vec!["10.0.0.1"]);
        assert!(dns.asked().is_empty());
    });
}

#[test]
fn resolve_host_for_gateways() {
    let dns = TestDns::start();
    dns.a("smart.test", 300, [192, 0, 2, 30])
        .aaaa("smart.test", 300, "2001:db8::30");
    run(move || async move {
        let (r, _) = resolver(&[&dns], 0);
        let got = r.resolve_host("smart.test").await.expect("ok");
        assert_eq!(got.addresses().count(), 2);
        assert_eq!(
            *r.resolve_host("nohost.test").await.expect("ok"),
            MxResult::NoSuchDomain
        );
        assert_eq!(dns.count("smart.test", RecordType::MX), 0);
    });
}
