//! Outbound delivery through the real binary: impulse relays to a second
//! impulse (the receiving side) or to scripted fake servers on loopback.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::Duration;

use common::*;

/// Live messages and pending recipients in a spool, via `impulse spool inspect`.
fn live(dir: &str) -> (u64, u64) {
    let i = inspect(dir);
    (i.live, i.pending)
}

/// A client that has been greeted and has said EHLO.
fn client(s: &Server) -> Client {
    let mut c = Client::connect(s.addr());
    assert!(c.reply().starts_with("220"));
    assert!(c.cmd("EHLO t").starts_with("250"));
    c
}

/// `impulse spool show` of the oldest message in a spool.
fn show_oldest(dir: &str) -> String {
    let (_, out, _) = run_impulse(&["spool", "inspect", dir]);
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("oldest: "))
        .and_then(|r| r.split_whitespace().next())
        .expect("an oldest message")
        .to_string();
    run_impulse(&["spool", "show", "--dir", dir, &id]).1
}

fn relay_config(target_port: u16, extra: &str) -> String {
    basic_config(
        &format!("routes = [\"127.0.0.1:{target_port}\"]\n{extra}"),
        "",
    )
    .replace("suspend_delivery = true\n", "")
}

fn send(c: &mut Client, from: &str, to: &[&str], body: &str) -> String {
    assert!(c.cmd(&format!("MAIL FROM:<{from}>")).starts_with("250"));
    for t in to {
        let r = c.cmd(&format!("RCPT TO:<{t}>"));
        assert!(r.starts_with("250"), "{r}");
    }
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(body);
    c.reply()
}

#[test]
fn relays_to_the_next_hop_and_finishes_every_message() {
    let receiver = start(&basic_config(
        "relay_domains = [\"example.net\", \"example.org\"]",
        "",
    ));
    let sender = start(&relay_config(receiver.port, ""));
    let mut c = client(&sender);
    for n in 0..20 {
        let r = send(
            &mut c,
            "a@example.com",
            &["x@example.net", "y@example.org"],
            &format!("Subject: {n}\r\n\r\n.dot\r\n.\r\n"),
        );
        assert!(r.starts_with("250 2.0.0"), "{r}");
    }
    c.cmd("QUIT");
    let rdir = receiver.spool_dir(0);
    // One delivery per destination domain: each message arrives twice, once per domain.
    assert!(
        wait_until(Duration::from_secs(20), || live(&rdir) == (40, 40)),
        "receiver has {:?}\n{}",
        live(&rdir),
        sender.log_text()
    );
    let sdir = sender.spool_dir(0);
    assert!(
        wait_until(Duration::from_secs(20), || live(&sdir) == (0, 0)),
        "sender still has {:?}",
        live(&sdir)
    );
}

/// A fake next hop that answers RCPT per a script and records what it got:
/// `PEER <source address>` for each connection, then every command line.
fn fake_server(
    rcpt_reply: &'static str,
    drop_in_data: bool,
) -> (u16, std::sync::mpsc::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in l.incoming().flatten() {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let peer = stream.peer_addr().map(|a| a.ip().to_string());
                let _ = tx.send(format!("PEER {}", peer.unwrap_or_default()));
                let mut w = stream.try_clone().unwrap();
                let mut r = BufReader::new(stream);
                let _ = w.write_all(b"220 fake ESMTP\r\n");
                let mut line = String::new();
                while r.read_line(&mut line).unwrap_or(0) > 0 {
                    let cmd = line.trim_end().to_string();
                    line.clear();
                    let _ = tx.send(cmd.clone());
                    let up = cmd.to_ascii_uppercase();
                    let reply = if up.starts_with("EHLO") {
                        "250-fake\r\n250 PIPELINING\r\n"
                    } else if up.starts_with("RCPT") {
                        rcpt_reply
                    } else if up == "DATA" {
                        if drop_in_data {
                            let _ = w.write_all(b"354 go\r\n");
                            let mut junk = String::new();
                            let _ = r.read_line(&mut junk);
                            return;
                        }
                        "354 go\r\n"
                    } else if up == "QUIT" {
                        let _ = w.write_all(b"221 bye\r\n");
                        return;
                    } else if up == "."
                        || up.starts_with("MAIL")
                        || up.starts_with("RSET")
                        || up.starts_with("NOOP")
                    {
                        "250 2.0.0 ok\r\n"
                    } else {
                        continue;
                    };
                    if w.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, rx)
}

#[test]
fn permanent_failure_is_recorded_and_bounced_to_the_sender() {
    let (port, rx) = fake_server("550 5.1.1 no such user\r\n", false);
    // The DSN for a@example.com goes to a second impulse, which keeps it.
    let bounces = start(&basic_config("relay_domains = [\"example.com\"]", ""));
    let cfg = relay_config(port, "")
        + &format!(
            "[domain.\"example.com\"]\nroutes = [\"127.0.0.1:{}\"]\n",
            bounces.port
        );
    let sender = start(&cfg);
    let mut c = client(&sender);
    assert!(send(
        &mut c,
        "a@example.com",
        &["gone@example.net"],
        "Subject: x\r\n\r\nx\r\n.\r\n"
    )
    .starts_with("250"));
    let dir = sender.spool_dir(0);
    assert!(wait_until(Duration::from_secs(20), || rx
        .try_iter()
        .any(|l| l.starts_with("RCPT TO:<gone@example.net>"))));
    assert!(
        wait_until(Duration::from_secs(20), || live(&dir).1 == 0),
        "{:?}",
        live(&dir)
    );
    let bdir = bounces.spool_dir(0);
    assert!(
        wait_until(Duration::from_secs(20), || live(&bdir).0 == 1),
        "one DSN arrives: {:?}\n{}",
        live(&bdir),
        sender.log_text()
    );
    let show = show_oldest(&bdir);
    for needle in [
        "from=\"\"",
        "rcpt[0]=\"a@example.com\"",
        "multipart/report",
        "report-type=delivery-status",
        "Auto-Submitted: auto-replied",
        "Subject: Undelivered Mail Returned to Sender",
    ] {
        assert!(show.contains(needle), "{needle} missing in\n{show}");
    }
}

#[test]
fn transient_failures_defer_with_a_retry_time() {
    for drop_in_data in [false, true] {
        let reply = if drop_in_data {
            "250 2.1.5 ok\r\n"
        } else {
            "451 4.3.0 try later\r\n"
        };
        let (port, rx) = fake_server(reply, drop_in_data);
        let mut sender = start(&relay_config(port, "retry_interval = 3600"));
        let mut c = client(&sender);
        let r = send(
            &mut c,
            "a@example.com",
            &["later@example.net"],
            "Subject: x\r\n\r\nx\r\n.\r\n",
        );
        let id = r.trim_end().rsplit(' ').next().unwrap().to_string();
        assert!(wait_until(Duration::from_secs(20), || rx
            .try_iter()
            .any(|l| l.starts_with("RCPT"))));
        drop(c);
        // The deferral reaches the spool (the tools read it beside the
        // running server), and is still there after a stop.
        let dir = sender.spool_dir(0);
        let show = || run_impulse(&["spool", "show", "--dir", &dir, &id]).1;
        let deferred = |out: &str| out.contains("RETRY") && out.contains("attempts=1");
        assert!(
            wait_until(Duration::from_secs(20), || deferred(&show())),
            "drop_in_data={drop_in_data}\n{}",
            show()
        );
        sender.stop(Duration::from_secs(10));
        let out = show();
        assert!(deferred(&out), "drop_in_data={drop_in_data}\n{out}");
        assert_eq!(live(&dir), (1, 1), "still queued");
    }
}

#[test]
fn a_dead_domain_does_not_hold_up_another() {
    // dead.test routes to a port nobody listens on; live.test to a receiver.
    let receiver = start(&basic_config("relay_domains = [\"live.test\"]", ""));
    let dead = free_port();
    let cfg = relay_config(receiver.port, "")
        + &format!(
            "[domain.\"dead.test\"]\nroutes = [\"127.0.0.1:{dead}\"]\nconnect_timeout = 2\n"
        );
    let sender = start(&cfg);
    let mut c = client(&sender);
    for _ in 0..50 {
        assert!(send(
            &mut c,
            "a@example.com",
            &["x@dead.test"],
            "Subject: d\r\n\r\nx\r\n.\r\n"
        )
        .starts_with("250"));
    }
    assert!(send(
        &mut c,
        "a@example.com",
        &["y@live.test"],
        "Subject: l\r\n\r\nx\r\n.\r\n"
    )
    .starts_with("250"));
    let rdir = receiver.spool_dir(0);
    assert!(
        wait_until(Duration::from_secs(10), || live(&rdir).0 == 1),
        "the live domain's message arrives promptly"
    );
}

#[path = "../src/outbound/dns/tests/server.rs"]
#[allow(dead_code)]
mod dns_server;

/// MX resolution end to end: a DNS server on loopback says mail for
/// mx-path.test goes to mx1.mx-path.test = 127.0.0.1; the receiving
/// impulse listens there on `remote_smtp_port`. A null-MX domain bounces.
#[test]
fn delivers_by_mx_records_and_bounces_null_mx() {
    let dns = dns_server::TestDns::start();
    dns.mx("mx-path.test", 300, 10, "mx1.mx-path.test")
        .a("mx1.mx-path.test", 300, [127, 0, 0, 1]);
    dns.mx("nomail.test", 300, 0, ".");
    let receiver = start(&basic_config(
        "relay_domains = [\"mx-path.test\", \"example.com\"]",
        "",
    ));
    let cfg = basic_config(
        &format!(
            "nameservers = [\"{}\"]\nremote_smtp_port = {}\n",
            dns.addr, receiver.port
        ),
        "",
    )
    .replace("suspend_delivery = true\n", "")
        + &format!(
            "[domain.\"example.com\"]\nroutes = [\"127.0.0.1:{}\"]\n",
            receiver.port
        );
    let sender = start(&cfg);
    let mut c = client(&sender);
    assert!(send(
        &mut c,
        "a@example.com",
        &["x@mx-path.test"],
        "Subject: mx\r\n\r\nx\r\n.\r\n"
    )
    .starts_with("250"));
    assert!(send(
        &mut c,
        "a@example.com",
        &["x@nomail.test"],
        "Subject: null\r\n\r\nx\r\n.\r\n"
    )
    .starts_with("250"));
    let rdir = receiver.spool_dir(0);
    // The MX delivery and the null-MX DSN both land at the receiver.
    assert!(
        wait_until(Duration::from_secs(20), || live(&rdir).0 == 2),
        "{:?}\n{}",
        live(&rdir),
        sender.log_text()
    );
    assert!(wait_until(Duration::from_secs(20), || live(
        &sender.spool_dir(0)
    )
    .1 == 0));
}

/// A server that says something and then behaves badly.
fn hostile_server(behaviour: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut w = stream.try_clone().unwrap();
                let mut r = BufReader::new(stream);
                match behaviour {
                    // Accepts the connection, never says a word.
                    "silent" => std::thread::sleep(Duration::from_secs(30)),
                    // Greets, then answers EHLO with endless continuation lines.
                    "endless" => {
                        let _ = w.write_all(b"220 hi\r\n");
                        let mut l = String::new();
                        let _ = r.read_line(&mut l);
                        for _ in 0..100_000 {
                            if w.write_all(b"250-more and more and more\r\n").is_err() {
                                return;
                            }
                        }
                    }
                    // Greets, then answers with garbage.
                    _ => {
                        let _ = w.write_all(b"220 hi\r\n");
                        let mut l = String::new();
                        let _ = r.read_line(&mut l);
                        let _ = w.write_all(b"\x00\xffgarbage without a code\r\n");
                        std::thread::sleep(Duration::from_secs(5));
                    }
                }
            });
        }
    });
    port
}

#[test]
fn misbehaving_remotes_cost_a_deferral_and_nothing_else() {
    for behaviour in ["silent", "endless", "garbage"] {
        let port = hostile_server(behaviour);
        let mut sender = start(&relay_config(
            port,
            "connect_timeout = 1\nehlo_timeout = 1\nretry_interval = 3600",
        ));
        let mut c = client(&sender);
        let r = send(
            &mut c,
            "a@example.com",
            &["x@example.net"],
            "Subject: h\r\n\r\nx\r\n.\r\n",
        );
        let id = r.trim_end().rsplit(' ').next().unwrap().to_string();
        let dir = sender.spool_dir(0);
        let deferred = wait_until(Duration::from_secs(15), || {
            let (_, out, _) = run_impulse(&["spool", "show", "--dir", &dir, &id]);
            out.contains("RETRY")
        });
        assert!(
            deferred,
            "{behaviour}: no deferral recorded\n{}",
            sender.log_text()
        );
        // Still serving, nothing lost.
        let mut d = Client::connect(sender.addr());
        assert!(d.reply().starts_with("220"), "{behaviour}");
        assert_eq!(
            sender.stop(Duration::from_secs(10)).code(),
            Some(0),
            "{behaviour}"
        );
        assert_eq!(live(&dir), (1, 1), "{behaviour}");
    }
}

#[test]
fn delay_dsn_after_the_configured_time() {
    let (port, _rx) = fake_server("451 4.2.0 mailbox busy\r\n", false);
    let notices = start(&basic_config("relay_domains = [\"example.com\"]", ""));
    let cfg = relay_config(
        port,
        "retry_interval = 1\ngenerate_delay_dsn = true\ndelay_dsn_retry_interval = 1\n",
    ) + &format!(
        "[domain.\"example.com\"]\nroutes = [\"127.0.0.1:{}\"]\n",
        notices.port
    );
    let sender = start(&cfg);
    let mut c = client(&sender);
    assert!(send(
        &mut c,
        "a@example.com",
        &["slow@example.net"],
        "Subject: wait\r\n\r\nx\r\n.\r\n"
    )
    .starts_with("250"));
    let ndir = notices.spool_dir(0);
    assert!(
        wait_until(Duration::from_secs(20), || live(&ndir).0 >= 1),
        "no delay DSN\n{}",
        sender.log_text()
    );
    let show = show_oldest(&ndir);
    assert!(
        show.contains("Subject: Delayed Mail (still being retried)"),
        "{show}"
    );
    // The original is still queued at the sender.
    assert_eq!(live(&sender.spool_dir(0)).0, 1);
}

#[test]
fn outbound_starttls_required_and_opportunistic_and_never_in_the_clear() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(dir.path().join("cert.pem"), ck.cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
    let tls_receiver = start_in(
        dir,
        free_port(),
        &basic_config(
            "relay_domains = [\"tls.test\", \"opp.test\"]",
            "tls_certificate = \"cert.pem\"\ntls_key = \"key.pem\"\n",
        ),
    );
    let plain_receiver = start(&basic_config("relay_domains = [\"plain.test\"]", ""));
    let cfg = basic_config("", "").replace("suspend_delivery = true\n", "")
        + &format!(
            "[domain.\"tls.test\"]\nroutes = [\"127.0.0.1:{0}\"]\ntls = \"required\"\n\
             [domain.\"opp.test\"]\nroutes = [\"127.0.0.1:{0}\"]\n\
             [domain.\"plain.test\"]\nroutes = [\"127.0.0.1:{1}\"]\ntls = \"required\"\nretry_interval = 3600\n",
            tls_receiver.port, plain_receiver.port
        );
    let sender = start(&cfg);
    let mut c = client(&sender);
    assert!(send(
        &mut c,
        "a@example.com",
        &["x@tls.test"],
        "Subject: tls\r\n\r\nx\r\n.\r\n"
    )
    .starts_with("250"));
    assert!(send(
        &mut c,
        "a@example.com",
        &["x@plain.test"],
        "Subject: plain\r\n\r\nx\r\n.\r\n"
    )
    .starts_with("250"));
    // The default (opportunistic) uses STARTTLS when offered, too.
    assert!(send(
        &mut c,
        "a@example.com",
        &["x@opp.test"],
        "Subject: opp\r\n\r\nx\r\n.\r\n"
    )
    .starts_with("250"));
    let tdir = tls_receiver.spool_dir(0);
    assert!(
        wait_until(Duration::from_secs(20), || live(&tdir).0 == 2),
        "TLS deliveries\n{}",
        sender.log_text()
    );
    let received =
        impulse::spool::recovery::recover_read_only(std::path::Path::new(&tdir), None).unwrap();
    assert_eq!(received.messages.len(), 2);
    for m in &received.messages {
        let (_, show, _) = run_impulse(&["spool", "show", "--dir", &tdir, &m.id.to_string()]);
        assert!(show.contains("with ESMTPS"), "received over TLS:\n{show}");
    }
    // The plain receiver offers no STARTTLS: required TLS defers (the
    // deferral is in the spool), never sends in the clear.
    let sdir = sender.spool_dir(0);
    assert!(
        wait_until(Duration::from_secs(20), || inspect(&sdir).retrying == 1),
        "plain.test deferred\n{}",
        sender.log_text()
    );
    assert_eq!(live(&plain_receiver.spool_dir(0)).0, 0);
    assert_eq!(live(&sender.spool_dir(0)), (1, 1));
}

#[test]
fn one_connection_carries_many_messages_even_after_refusals() {
    let (port, rx) = fake_server("550 5.1.1 no such user\r\n", false);
    let sender = start(&relay_config(
        port,
        "generate_bounces = false\nmax_outbound_connections = 1",
    ));
    let mut c = client(&sender);
    for n in 0..5 {
        assert!(send(
            &mut c,
            "a@example.com",
            &[&format!("u{n}@example.net")],
            "Subject: r\r\n\r\nx\r\n.\r\n"
        )
        .starts_with("250"));
    }
    let dir = sender.spool_dir(0);
    assert!(
        wait_until(Duration::from_secs(20), || live(&dir).0 == 0),
        "{:?}",
        live(&dir)
    );
    let lines: Vec<String> = rx.try_iter().collect();
    let ehlos = lines.iter().filter(|l| l.starts_with("EHLO")).count();
    let rcpts = lines.iter().filter(|l| l.starts_with("RCPT")).count();
    assert_eq!((ehlos, rcpts), (1, 5), "{lines:?}");
}

/// A host that greets with 421 and hangs up.
fn busy_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in l.incoming().flatten() {
            let _ = stream.write_all(b"421 4.3.2 busy, try another\r\n");
        }
    });
    port
}

#[test]
fn next_host_after_a_refused_connection_or_a_4xx_greeting() {
    let receiver = start(&basic_config("relay_domains = [\"example.net\"]", ""));
    let dead = free_port();
    let busy = busy_server();
    let cfg = basic_config(
        &format!(
            "routes = [\"127.0.0.1:{dead}\", \"127.0.0.1:{busy}\", \"127.0.0.1:{}\"]\n",
            receiver.port
        ),
        "",
    )
    .replace("suspend_delivery = true\n", "");
    let sender = start(&cfg);
    let mut c = client(&sender);
    assert!(send(
        &mut c,
        "a@example.com",
        &["x@example.net"],
        "Subject: next\r\n\r\nx\r\n.\r\n"
    )
    .starts_with("250"));
    let rdir = receiver.spool_dir(0);
    assert!(
        wait_until(Duration::from_secs(20), || live(&rdir).0 == 1),
        "third host gets it\n{}",
        sender.log_text()
    );
    assert!(wait_until(Duration::from_secs(20), || live(
        &sender.spool_dir(0)
    )
    .0 == 0));
}

/// `bind_address` and `ehlo_hostname`: every outbound connection leaves
/// from that address (the next hop sees it as the peer) and says that name.
#[test]
fn outbound_connections_leave_from_bind_address() {
    let (port, rx) = fake_server("250 2.1.5 ok\r\n", false);
    let sender = start(&relay_config(
        port,
        "bind_address = \"127.0.0.2\"\nehlo_hostname = \"vip2.example\"",
    ));
    let mut c = client(&sender);
    for n in 0..5 {
        let r = send(
            &mut c,
            "a@example.com",
            &["x@example.net"],
            &format!("Subject: {n}\r\n\r\nx\r\n.\r\n"),
        );
        assert!(r.starts_with("250"), "{r}");
    }
    c.cmd("QUIT");
    let dir = sender.spool_dir(0);
    assert!(
        wait_until(Duration::from_secs(20), || live(&dir).0 == 0),
        "{:?}\n{}",
        live(&dir),
        sender.log_text()
    );
    let lines: Vec<String> = rx.try_iter().collect();
    let peers: Vec<&String> = lines.iter().filter(|l| l.starts_with("PEER")).collect();
    assert!(!peers.is_empty(), "{lines:?}");
    assert!(peers.iter().all(|p| *p == "PEER 127.0.0.2"), "{lines:?}");
    let ehlos: Vec<&String> = lines.iter().filter(|l| l.starts_with("EHLO")).collect();
    assert!(ehlos.iter().all(|l| *l == "EHLO vip2.example"), "{lines:?}");
}
