use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use super::*;

fn load(src: &str) -> Result<Config, ConfigErrors> {
    Config::from_str("t.toml", src, Path::new("."))
}

#[test]
fn embedded_default_is_valid_and_safe() {
    let c = Config::load(None).expect("embedded default");
    let l = &c.listeners[0];
    assert_eq!(l.listen, vec!["127.0.0.1:2525".parse().unwrap()]);
    let (_, relay) = l.for_peer("127.0.0.1".parse().unwrap());
    assert!(relay, "loopback may relay");
    let (_, relay) = l.for_peer("192.0.2.7".parse().unwrap());
    assert!(!relay, "the default must never be an open relay");
    assert!(c.relay_domains.is_empty());
}

#[test]
fn peer_listener_global_fallback() {
    let c = load(
        "[global]\nidle_time = 100\nmessage_size = 5000\n\
         [listener.a]\nlisten = [\"127.0.0.1:2525\"]\nidle_time = 50\n\
         [listener.a.peer.\"10.0.0.0/8\"]\nmessage_size = 7000\ncan_relay = true\n\
         [listener.a.peer.\"10.1.0.0/16\"]\nidle_time = 9\ncan_relay = false\n",
    )
    .expect("valid");
    let l = &c.listeners[0];
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let (i, relay) = l.for_peer(ip("192.0.2.1"));
    assert_eq!(
        (i.idle_time, i.message_size, relay),
        (Duration::from_secs(50), 5000, false)
    );
    let (i, relay) = l.for_peer(ip("10.9.9.9"));
    assert_eq!(
        (i.idle_time, i.message_size, relay),
        (Duration::from_secs(50), 7000, true)
    );
    // Most specific block wins; it does not inherit from the wider peer block.
    let (i, relay) = l.for_peer(ip("10.1.2.3"));
    assert_eq!(
        (i.idle_time, i.message_size, relay),
        (Duration::from_secs(9), 5000, false)
    );
    // Untouched options come from the registry defaults.
    assert_eq!(i.max_recipients_per_message, 1000);
}

#[test]
fn relay_hosts_merge_global_and_listener() {
    let c = load("[global]\nrelay_hosts = [\"192.0.2.0/24\"]\n[listener.a]\nlisten = [\"127.0.0.1:1\"]\nrelay_hosts = [\"198.51.100.1\"]\n").unwrap();
    let l = &c.listeners[0];
    assert!(l.for_peer("192.0.2.9".parse().unwrap()).1);
    assert!(l.for_peer("198.51.100.1".parse().unwrap()).1);
    assert!(
        !l.for_peer("127.0.0.1".parse().unwrap()).1,
        "setting relay_hosts replaces the loopback default"
    );
}

#[test]
fn shard_overrides() {
    let c = load(
        "[global]\nspoolbase = \"/s\"\n[listener.a]\nlisten = [\"127.0.0.1:1\"]\n\
         [shard.1]\nspool_dir = \"/disk1/s\"\nlistener_sessions = 7\n\
         [shard.1.listener.a]\nlisten = [\"127.0.0.2:1\"]\n",
    )
    .unwrap();
    let l = &c.listeners[0];
    assert_eq!(c.spool_dir(0), Path::new("/s/shard-0"));
    assert_eq!(c.spool_dir(1), Path::new("/disk1/s"));
    assert_eq!(c.listen_addrs(0, l), vec!["127.0.0.1:1".parse().unwrap()]);
    assert_eq!(c.listen_addrs(1, l), vec!["127.0.0.2:1".parse().unwrap()]);
    assert_eq!(c.listener_sessions(1, l), 7);
    assert_eq!(c.listener_sessions(0, l), 10000);
}

#[test]
fn semantic_errors() {
    let e = load("[listener.a]\n").unwrap_err();
    assert!(e.0[0].message.contains("no `listen`"), "{e}");
    let e = load("[global]\nshards = 4\ncpus = [0]\n[listener.a]\nlisten = [\"127.0.0.1:1\"]\n")
        .unwrap_err();
    assert_eq!((e.0[0].line, e.0[0].key_path.as_str()), (3, "global.cpus"));
    let e = load("[listener.a]\nlisten = [\"127.0.0.1:1\"]\n[shard.0.listener.b]\nlisten = [\"127.0.0.1:2\"]\n").unwrap_err();
    assert!(e.0[0].message.contains("no [listener.b]"), "{e}");
    let e =
        load("[listener.a]\nlisten = [\"127.0.0.1:1\"]\ntls_certificate = \"/nonexistent.pem\"\n")
            .unwrap_err();
    assert!(e.0[0].message.contains("go together"), "{e}");
    let e = load("[listener.a]\nlisten = [\"127.0.0.1:1\"]\ntls_certificate = \"/nonexistent.pem\"\ntls_key = \"/nonexistent.key\"\n").unwrap_err();
    assert!(e.0[0].message.contains("cannot read certificate"), "{e}");
    assert!(load("").is_err(), "no listener");
}

#[test]
fn errors_are_all_reported_with_positions() {
    let e = load("[global]\nbogus = 1\nidle_time = -1\n[listener.a]\nlisten = \"127.0.0.1:25\"\n")
        .unwrap_err();
    let text = e.to_string();
    assert_eq!(e.0.len(), 3, "{text}");
    assert!(
        text.contains("t.toml:2:1: global.bogus: unknown option"),
        "{text}"
    );
    assert!(text.contains("t.toml:3:13: global.idle_time"), "{text}");
    assert!(
        text.contains("t.toml:5:10: listener.a.listen: wrong type"),
        "{text}"
    );
}

#[test]
fn report_shows_sources() {
    let c = load("[global]\nshards = 2\n[listener.a]\nlisten = [\"127.0.0.1:1\"]\nidle_time = 5\n")
        .unwrap();
    let r = c.effective_report(2);
    assert!(r.contains("idle_time = 5  # listener"), "{r}");
    assert!(r.contains("data_timeout = 600  # default"), "{r}");
    assert!(r.contains("[shard.1]"), "{r}");
}

#[test]
fn delivery_falls_back_domain_then_global() {
    let c = load(
        "[global]\nretry_interval = 60\nroutes = [\"127.0.0.1:2626\"]\n[listener.a]\nlisten = [\"127.0.0.1:1\"]\n\
         [domain.\"Slow.Test\"]\nretry_interval = 600\nmax_outbound_connections = 2\ntls = \"required\"\nroutes = [\"[::1]:27\", \"mx.slow.test\"]\n",
    )
    .unwrap();
    let d = c.delivery.get("slow.test");
    assert_eq!(d.retry.retry_interval_ms, 600_000);
    assert_eq!(d.max_outbound_connections, 2);
    assert_eq!(d.tls, TlsMode::Required);
    assert_eq!(
        d.routes,
        vec![
            Route {
                host: "::1".into(),
                port: 27
            },
            Route {
                host: "mx.slow.test".into(),
                port: 25
            }
        ]
    );
    let other = c.delivery.get("other.test");
    assert_eq!(other.retry.retry_interval_ms, 60_000);
    assert_eq!(other.max_outbound_connections, 32);
    assert_eq!(other.tls, TlsMode::IfAvailable);
    assert_eq!(
        other.routes,
        vec![Route {
            host: "127.0.0.1".into(),
            port: 2626
        }]
    );
    assert_eq!(other.mailerdaemon, format!("mailer-daemon@{}", c.hostname));
    let e = load("[global]\nroutes = [\"bad host\"]\ntls = \"sometimes\"\n[listener.a]\nlisten = [\"127.0.0.1:1\"]\n").unwrap_err();
    assert!(
        e.to_string()
            .contains("global.tls: `sometimes` is not a valid choice"),
        "{e}"
    );
}

#[test]
fn dns_settings_default_to_resolv_conf_and_full_ttl_range() {
    let c = Config::load(None).expect("embedded default");
    assert_eq!(
        c.dns,
        DnsSettings {
            nameservers: None,
            timeout: None,
            attempts: None,
            min_ttl_secs: 0,
            max_ttl_secs: u32::MAX,
        }
    );
    let c = load(
        "[global]\nnameservers = [\"127.0.0.1:5353\"]\ndns_timeout_ms = 250\n\
         dns_attempts = 3\nmin_dns_ttl = 60\nmax_dns_ttl = 3600\n\
         [listener.a]\nlisten = [\"127.0.0.1:1\"]\n",
    )
    .expect("valid");
    assert_eq!(
        c.dns.nameservers,
        Some(vec!["127.0.0.1:5353".parse().unwrap()])
    );
    assert_eq!(c.dns.timeout, Some(Duration::from_millis(250)));
    assert_eq!(
        (c.dns.attempts, c.dns.min_ttl_secs, c.dns.max_ttl_secs),
        (Some(3), 60, 3600)
    );
}

#[test]
fn dns_ttl_floor_above_ceiling_is_an_error() {
    let e = load(
        "[global]\nmin_dns_ttl = 600\nmax_dns_ttl = 60\n[listener.a]\nlisten = [\"127.0.0.1:1\"]\n",
    )
    .unwrap_err();
    assert_eq!(e.0.len(), 1);
    assert_eq!(
        (e.0[0].key_path.as_str(), e.0[0].line),
        ("global.min_dns_ttl", 2)
    );
}

#[test]
fn bind_address_is_star_or_an_address_of_this_host() {
    let listener = "[listener.a]\nlisten = [\"127.0.0.1:1\"]\n";
    let c = load(listener).expect("valid");
    assert_eq!(c.bindings.get(0).bind_address, None, "default *");
    let c = load(&format!(
        "[global]\nbind_address = \"127.0.0.2\"\n{listener}"
    ))
    .expect("valid");
    let ip: IpAddr = "127.0.0.2".parse().unwrap();
    assert_eq!(c.bindings.get(0).bind_address, Some(ip));
    let e = load(&format!(
        "[global]\nbind_address = \"mx.example\"\n{listener}"
    ))
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("global.bind_address: `mx.example` is not an IP address"),
        "{e}"
    );
    // TEST-NET-1: no host has it, and every connection from it would fail.
    let e = load(&format!(
        "[global]\nbind_address = \"192.0.2.1\"\n{listener}"
    ))
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("192.0.2.1 is not an address of this host"),
        "{e}"
    );
}

#[test]
fn throttles_parse_as_rates_and_are_shared_by_the_scope_that_sets_them() {
    use crate::config::{Rate, Throttle, ThrottleScope};
    let listener = "[listener.a]\nlisten = [\"127.0.0.1:1\"]\n";
    let c = load(&format!(
        "[global]\noutbound_throttle_messages = \"600/60\"\n{listener}\
         [domain.\"own.test\"]\noutbound_throttle_messages = 5\noutbound_throttle_connections = \"10/3600\"\n\
         [domain.\"off.test\"]\noutbound_throttle_messages = 0\n\
         [domain.\"other.test\"]\nmax_outbound_connections = 4\n"
    ))
    .expect("valid");
    let rate = |count, secs| Rate {
        count,
        per: Duration::from_secs(secs),
    };
    let shared = Some(Throttle {
        rate: rate(600, 60),
        scope: ThrottleScope::Global,
    });
    // Unconfigured and configured domains without their own share the global one.
    assert_eq!(c.delivery.get("anything.test").throttle_messages, shared);
    assert_eq!(c.delivery.get("other.test").throttle_messages, shared);
    let own = c.delivery.get("own.test");
    assert_eq!(
        own.throttle_messages,
        Some(Throttle {
            rate: rate(5, 1),
            scope: ThrottleScope::Domain("own.test".into()),
        }),
        "a bare number is per second"
    );
    assert_eq!(
        own.throttle_connections.as_ref().map(|t| t.rate),
        Some(rate(10, 3600))
    );
    assert_eq!(
        c.delivery.get("off.test").throttle_messages,
        None,
        "0 = none"
    );
    assert_eq!(c.delivery.get("anything.test").throttle_connections, None);
    for (bad, why) in [
        ("\"ten/60\"", "is not a rate"),
        ("\"10/0\"", "a period of 0 seconds is out of range"),
        ("\"10/90000\"", "out of range"),
        ("\"10/\"", "is not a rate"),
        ("-1", "out of range"),
        ("true", "wrong type"),
    ] {
        let e = load(&format!(
            "[global]\noutbound_throttle_messages = {bad}\n{listener}"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("outbound_throttle_messages") && e.contains(why),
            "{bad}: {e}"
        );
        assert!(e.contains("\"N/S\""), "the hint says how to write one: {e}");
    }
}

const LISTENER: &str = "[listener.a]\nlisten = [\"127.0.0.1:1\"]\n";

#[test]
fn bindings_take_slots_in_file_order_and_groups_their_weights() {
    let c = load(&format!(
        "{LISTENER}[binding.zz]\nbind_address = \"127.0.0.3\"\n\
         [binding.aa]\nmatch_domain = [\"News.Example\"]\n\
         [binding_group.pool]\nmembers = {{ zz = 3, aa = 1 }}\nbind_address = \"127.0.0.4\"\n\
         [global]\nregex_binding2 = [\"group:pool = rcptto =~ '@gmail'\", \"zz, aa = recv_port == '2525'\"]\n"
    ))
    .expect("valid");
    let b = &c.bindings;
    let names: Vec<&str> = b.bindings.iter().map(|x| &*x.name).collect();
    assert_eq!(names, ["default", "zz", "aa"]);
    assert_eq!(b.groups[0].members, vec![(1, 3), (2, 1)]);
    assert_eq!(&*b.get(1).group, "pool");
    assert_eq!(&*b.get(0).group, "default");
    let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
    assert_eq!(b.get(1).bind_address, ip("127.0.0.3"), "its own");
    assert_eq!(b.get(2).bind_address, ip("127.0.0.4"), "its group's");
    assert_eq!(b.by_sender_domain.get("news.example"), Some(&2));
    assert_eq!(b.rules[0].1, Assign::Group(0));
    assert_eq!(b.rules[1].1, Assign::Each(vec![1, 2]));
    assert_eq!(b.default_binding, DefaultBinding::Normal);
}

#[test]
fn binding_settings_fall_back_in_momentums_order() {
    let c = load(&format!(
        "{LISTENER}[global]\nmax_outbound_connections = 1\noutbound_throttle_messages = \"60/60\"\n\
         [domain.\"d.test\"]\nmax_outbound_connections = 2\n\
         [binding.b]\nmax_outbound_connections = 4\n\
         [binding.b.domain.\"bd.test\"]\nmax_outbound_connections = 5\n\
         [binding.plain]\nbind_address = \"127.0.0.2\"\n\
         [binding_group.g]\nmembers = [\"b\"]\nmax_outbound_connections = 3\n\
         [binding_group.g.domain.\"gd.test\"]\nmax_outbound_connections = 6\nscope_max_outbound_connections = 9\n\
         [binding_group.g.domain.\"bd.test\"]\nmax_outbound_connections = 7\n"
    ))
    .expect("valid");
    let t = &c.delivery;
    let max = |slot: usize, d: &str| t.for_binding(slot, d).max_outbound_connections;
    assert_eq!(max(0, "d.test"), 2, "default binding: domain");
    assert_eq!(max(0, "x.test"), 1, "default binding: global");
    assert_eq!(max(1, "bd.test"), 5, "binding::domain first");
    assert_eq!(max(1, "gd.test"), 6, "then group::domain");
    assert_eq!(max(1, "d.test"), 4, "then binding, before the domain");
    assert_eq!(max(1, "x.test"), 4, "binding");
    assert_eq!(
        t.for_binding(1, "gd.test").scope_max_outbound_connections,
        Some(ScopeCap {
            limit: 9,
            group: Some("g".into())
        })
    );
    // A binding with only a source address shares the global settings.
    assert!(Arc::ptr_eq(t.for_binding(2, "d.test"), t.get("d.test")));
    // The global throttle stays one counter for every binding.
    assert_eq!(
        t.for_binding(1, "x.test").throttle_messages,
        t.get("x.test").throttle_messages
    );
}

#[test]
fn binding_mistakes_are_errors_with_their_place() {
    let bad = [
        ("[binding.default]\n", "binding.default", "built-in"),
        ("[binding.a]\nbind_address = \"192.0.2.1\"\n", "binding.a.bind_address", "not an address of this host"),
        ("[binding_group.g]\nmembers = [\"nope\"]\n", "binding_group.g.members", "no [binding.nope]"),
        ("[binding.a]\n[binding_group.g]\nmembers = [\"a\"]\n[binding_group.h]\nmembers = [\"a\"]\n", "binding_group.h.members", "already a member"),
        ("[binding_group.g]\n", "binding_group.g", "needs `members`"),
        ("[binding.a]\nmatch_domain = [\"x.test\"]\n[binding.b]\nmatch_domain = [\"X.test\"]\n", "binding.b.match_domain", "matched by [binding.a]"),
        ("[global]\nregex_binding2 = [\"a = mailfrom ~ 'x'\"]\n[binding.a]\n", "global.regex_binding2", "rule 1:"),
        ("[global]\nregex_binding2 = [\"ghost = mailfrom == 'x'\"]\n", "global.regex_binding2", "no binding"),
        ("[global]\nregex_binding2 = [\"group:ghost = mailfrom == 'x'\"]\n", "global.regex_binding2", "no [binding_group.ghost]"),
        ("[binding.a]\n[binding.a.domain.\"x.test\"]\nmatch_domain = [\"y\"]\n", "binding.a.domain.\"x.test\".match_domain", "cannot be set in [domain]"),
        ("[binding.\"a b\"]\n", "binding.a b", "not a valid binding name"),
        ("[binding_group.g]\nmembers = { }\n", "binding_group.g.members", "at least one member"),
        ("[binding.a]\n[binding_group.g]\nmembers = { a = 0 }\n", "binding_group.g.members", "out of range"),
    ];
    for (text, path, message) in bad {
        let e = load(&format!("{LISTENER}{text}")).expect_err(text);
        let hit = e.0.iter().find(|e| e.key_path == path);
        let hit = hit.unwrap_or_else(|| panic!("{text}: no error at {path}: {e}"));
        assert!(hit.message.contains(message), "{text}: {}", hit.message);
        assert!(hit.line > 0, "{text}: the error has a line");
    }
}

#[test]
fn backoff_rules_ship_built_in_and_a_table_of_the_same_name_replaces_one() {
    let c = load(LISTENER).expect("valid");
    let names: Vec<&str> = c.backoff.iter().map(|r| &*r.name).collect();
    assert_eq!(
        names,
        [
            "gmail-try-again-later",
            "gmail-4-7-28",
            "yahoo-ts01",
            "yahoo-tss04"
        ]
    );
    let gmail = &c.backoff[0];
    assert!(gmail.matches(
        421,
        "4.7.0",
        "Try again later, closing connection.",
        "gmail.com"
    ));
    assert!(!gmail.matches(451, "4.7.0", "Try again later", "gmail.com"));
    assert!(c.backoff[1].matches(421, "4.7.28", "unusual rate", "x.test"));
    assert!(c.backoff[2].matches(
        421,
        "4.7.0",
        "[TS01] Messages from 1.2.3.4 temporarily deferred",
        "yahoo.com"
    ));
    let c = load(&format!(
        "{LISTENER}[backoff.yahoo-ts01]\nenabled = false\n\
         [backoff.gmail-4-7-28]\nmatch_status = \"4.7.28\"\naction = \"pause\"\n\
         [backoff.mine]\nmatch_code = \"45\"\nmatch_text = \"busy\"\ndomains = [\".example.org\"]\naction = \"fail\"\n"
    ))
    .expect("valid");
    let names: Vec<&str> = c.backoff.iter().map(|r| &*r.name).collect();
    assert_eq!(
        names,
        [
            "gmail-try-again-later",
            "yahoo-tss04",
            "gmail-4-7-28",
            "mine"
        ]
    );
    assert_eq!(c.backoff[2].action, BackoffAction::Pause);
    let mine = &c.backoff[3];
    assert!(mine.matches(451, "", "server busy", "mx.example.org"));
    assert!(!mine.matches(451, "", "server busy", "example.org.evil"));
}

#[test]
fn backoff_mistakes_are_errors_with_their_place() {
    let bad = [
        (
            "[backoff.r]\naction = \"pause\"\n",
            "backoff.r",
            "needs match_code",
        ),
        (
            "[backoff.r]\nmatch_code = \"42x\"\n",
            "backoff.r.match_code",
            "not a reply code",
        ),
        (
            "[backoff.r]\nmatch_status = \"4..7\"\n",
            "backoff.r.match_status",
            "not an enhanced status",
        ),
        (
            "[backoff.r]\nmatch_text = \"(\"\n",
            "backoff.r.match_text",
            "bad regex",
        ),
        (
            "[backoff.r]\nmatch_code = \"421\"\naction = \"rate\"\n",
            "backoff.r.backoff_rate",
            "needs backoff_rate",
        ),
        (
            "[backoff.r]\nmatch_code = \"421\"\nrecovery_steps = 0\n",
            "backoff.r.recovery_steps",
            "out of range",
        ),
        (
            "[backoff.r]\nmatch_code = \"421\"\nmax_retries = 1\n",
            "backoff.r.max_retries",
            "cannot be set in [backoff]",
        ),
    ];
    for (text, path, message) in bad {
        let e = load(&format!("{LISTENER}{text}")).expect_err(text);
        let hit = e.0.iter().find(|e| e.key_path == path);
        let hit = hit.unwrap_or_else(|| panic!("{text}: no error at {path}: {e}"));
        assert!(hit.message.contains(message), "{text}: {}", hit.message);
    }
}
