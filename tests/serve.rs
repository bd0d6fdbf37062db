//! The real binary on loopback: accepting mail durably, limits, timeouts,
//! relay control, shutdown, reload, config errors and bad input.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;

fn send_one(c: &mut Client, from: &str, to: &str) -> String {
    assert!(c.cmd("EHLO client.test").starts_with("250-"));
    assert!(c.cmd(&format!("MAIL FROM:<{from}>")).starts_with("250"));
    let r = c.cmd(&format!("RCPT TO:<{to}>"));
    if !r.starts_with("250") {
        return r;
    }
    assert!(c.cmd("DATA").starts_with("354"));
    c.send("Subject: hi\r\n\r\nhello\r\n.\r\n");
    c.reply()
}

fn queued_id(reply: &str) -> String {
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    reply.trim_end().rsplit(' ').next().unwrap().to_string()
}

#[test]
fn accepts_and_spools_then_the_spool_tools_see_it() {
    let mut s = start(&basic_config("", ""));
    let mut c = Client::connect(s.addr());
    assert!(c.reply().starts_with("220 mx.test"));
    let id = queued_id(&send_one(&mut c, "a@example.org", "b@example.net"));
    let id2 = queued_id(&send_one_again(&mut c));
    assert_ne!(id, id2, "ids are unique");
    assert!(c.cmd("QUIT").starts_with("221"));
    assert_eq!(s.stop(Duration::from_secs(10)).code(), Some(0));
    let dir = s.spool_dir(0);
    let (code, out, err) = run_impulse(&["spool", "verify", &dir]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run_impulse(&["spool", "show", "--dir", &dir, &id]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("a@example.org") && out.contains("b@example.net"),
        "{out}"
    );
    assert!(out.contains("Subject: hi"), "{out}");
    assert!(out.contains("Received: from client.test"), "{out}");
}

fn send_one_again(c: &mut Client) -> String {
    assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<c@example.net>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send("Subject: two\r\n\r\n..dot\r\n.\r\n");
    c.reply()
}

#[test]
fn ids_stay_unique_across_restarts() {
    let mut s = start(&basic_config("", ""));
    let mut c = Client::connect(s.addr());
    c.reply();
    let first = queued_id(&send_one(&mut c, "a@example.org", "b@example.net"));
    drop(c);
    s.stop(Duration::from_secs(10));
    let (dir, port) = (
        std::mem::replace(&mut s.dir, tempfile::tempdir().unwrap()),
        s.port,
    );
    let s2 = start_in(dir, port, &basic_config("", ""));
    let mut c = Client::connect(s2.addr());
    c.reply();
    let second = queued_id(&send_one(&mut c, "a@example.org", "b@example.net"));
    assert_ne!(first, second);
    assert!(
        s2.log_text().contains("recovered 1 message(s)"),
        "{}",
        s2.log_text()
    );
}

#[test]
fn relay_is_denied_to_networks_not_allowed() {
    let cfg = basic_config(
        "relay_domains = [\"inbound.test\"]",
        "[listener.esmtp.peer.\"127.0.0.2/32\"]\ncan_relay = false\n",
    );
    let s = start(&cfg);
    let mut c = Client::connect_from([127, 0, 0, 2], s.addr());
    c.reply();
    let r = send_one(&mut c, "a@example.org", "b@example.net");
    assert!(r.starts_with("550 5.7.1"), "{r}");
    // Domains we accept mail for are fine from anyone.
    assert!(
        c.cmd("RCPT TO:<x@inbound.test>").starts_with("250"),
        "accepted domain"
    );
    // Loopback 127.0.0.1 matches the default relay_hosts.
    let mut c = Client::connect(s.addr());
    c.reply();
    assert!(send_one(&mut c, "a@example.org", "b@example.net").starts_with("250"));
}

#[test]
fn per_ip_connection_limit() {
    let s = start(&basic_config("", "max_connections_per_ip = 1"));
    let mut a = Client::connect(s.addr());
    assert!(a.reply().starts_with("220"));
    let mut b = Client::connect(s.addr());
    let r = b.reply();
    assert!(r.starts_with("421 4.7.0"), "{r}");
    assert!(b.closed());
    // Another address is unaffected, and the slot frees when `a` leaves.
    let mut c = Client::connect_from([127, 0, 0, 3], s.addr());
    assert!(c.reply().starts_with("220"));
    assert!(a.cmd("QUIT").starts_with("221"));
    assert!(
        wait_until(Duration::from_secs(10), || Client::connect(s.addr())
            .reply()
            .starts_with("220")),
        "the slot frees once a has left"
    );
}

#[test]
fn idle_timeout_gets_421() {
    let s = start(&basic_config("", "idle_time = 1"));
    let mut c = Client::connect(s.addr());
    c.reply();
    let r = c.reply();
    assert!(r.starts_with("421 4.4.2"), "{r}");
    assert!(c.closed());
}

#[test]
fn garbage_never_hurts_the_server() {
    let s = start(&basic_config("", ""));
    let mut junk = Client::connect(s.addr());
    junk.reply();
    let mut rng = 0x2545F4914F6CDD1Du64;
    let mut bytes = Vec::new();
    for _ in 0..200_000 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        bytes.push(rng as u8);
    }
    let _ = junk.stream.write_all(&bytes);
    drop(junk);
    let mut c = Client::connect(s.addr());
    assert!(c.reply().starts_with("220"));
    assert!(send_one(&mut c, "a@example.org", "b@example.net").starts_with("250"));
}

#[test]
fn sigterm_closes_idle_sessions_with_421_and_exits_cleanly() {
    let mut s = start(&basic_config("", ""));
    let mut idle = Client::connect(s.addr());
    idle.reply();
    assert!(idle.cmd("EHLO x").starts_with("250"));
    s.signal(libc::SIGTERM);
    let r = idle.reply();
    assert!(r.starts_with("421 4.3.2"), "{r}");
    assert_eq!(
        common::wait_exit(&mut s.child, Duration::from_secs(10)).code(),
        Some(0)
    );
}

#[test]
fn sigterm_lets_a_transaction_finish() {
    let mut s = start(&basic_config("", ""));
    let mut c = Client::connect(s.addr());
    c.reply();
    assert!(c.cmd("EHLO x").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
    s.signal(libc::SIGTERM);
    s.wait_log("shutting down gracefully", Duration::from_secs(10));
    assert!(c.cmd("RCPT TO:<b@example.net>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send("Subject: late\r\n\r\nstill accepted\r\n.\r\n");
    assert!(c.reply().starts_with("250 2.0.0"));
    // The next command finds the server closing.
    assert!(c.cmd("NOOP").starts_with("421") || c.closed());
    assert_eq!(
        common::wait_exit(&mut s.child, Duration::from_secs(10)).code(),
        Some(0)
    );
}

#[test]
fn shutdown_deadline_ends_stuck_transactions() {
    let mut s = start(&basic_config("", ""));
    let mut c = Client::connect(s.addr());
    c.reply();
    c.cmd("EHLO x");
    c.cmd("MAIL FROM:<a@example.org>");
    s.signal(libc::SIGTERM);
    // shutdown_timeout = 2 in basic_config: the session gets 421 then.
    let r = c.reply();
    assert!(r.starts_with("421 4.3.2"), "{r}");
    assert_eq!(
        common::wait_exit(&mut s.child, Duration::from_secs(15)).code(),
        Some(0)
    );
}

#[test]
fn sighup_applies_a_valid_config_and_keeps_the_old_on_errors() {
    let s = start(&basic_config("message_size = 100000", ""));
    // Invalid: rejected, logged, old config kept.
    std::fs::write(&s.config_path, "[global]\nbogus = 1\n").unwrap();
    s.signal(libc::SIGHUP);
    s.wait_log("configuration rejected", Duration::from_secs(10));
    assert!(
        s.log_text().contains("global.bogus: unknown option"),
        "{}",
        s.log_text()
    );
    let mut c = Client::connect(s.addr());
    c.reply();
    assert!(c.cmd("EHLO x").contains("SIZE 100000"));
    // Valid: new sessions see it; the old one keeps its settings.
    let new = basic_config("message_size = 2000", "")
        .replace("{port}", &s.port.to_string())
        .replace("{dir}", &s.dir.path().display().to_string());
    std::fs::write(&s.config_path, new).unwrap();
    s.signal(libc::SIGHUP);
    s.wait_log("applied to new sessions", Duration::from_secs(10));
    let mut d = Client::connect(s.addr());
    d.reply();
    assert!(d.cmd("EHLO x").contains("SIZE 2000"));
    assert!(c.cmd("EHLO x").contains("SIZE 100000"));
}

#[test]
fn invalid_config_refuses_to_start_and_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(
        &p,
        "[global]\nshards = 1\n[listener.esmtp]\nlisten = [\"127.0.0.1:99999\"]\n",
    )
    .unwrap();
    let (code, _, err) = run_impulse(&["serve", "--config", p.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("bad.toml:4:11: listener.esmtp.listen"),
        "{err}"
    );
    let (code, _, err) = run_impulse(&["check-config", p.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    let (code, out, _) = run_impulse(&["check-config"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("[listener.esmtp]") && out.contains("idle_time = 300"),
        "{out}"
    );
}

#[test]
fn low_memlock_limit_gives_a_clear_error() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    let cfg = basic_config("", "")
        .replace("{port}", &free_port().to_string())
        .replace("{dir}", &dir.path().display().to_string());
    std::fs::write(&p, cfg).unwrap();
    let mut cmd = std::process::Command::new(bin());
    cmd.args(["serve", "--config", p.to_str().unwrap()]);
    // SAFETY: setrlimit is async-signal-safe and only touches the child.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 64 * 1024,
                rlim_max: 64 * 1024,
            };
            libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim);
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("LimitMEMLOCK") && err.contains("ulimit -l"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn per_shard_listen_overrides() {
    let other = free_port();
    let cfg = format!(
        "{}\n[shard.1.listener.esmtp]\nlisten = [\"127.0.0.1:{other}\"]\n",
        basic_config("", "").replace("shards = 1", "shards = 2")
    );
    let s = start(&cfg);
    for port in [s.port, other] {
        let mut c = Client::connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
        assert!(c.reply().starts_with("220"), "port {port}");
        assert!(send_one(&mut c, "a@example.org", "b@example.net").starts_with("250"));
    }
    let log = s.log_text();
    assert!(
        log.contains(&format!("shard 1 ready: listening on 127.0.0.1:{other}")),
        "{log}"
    );
}

#[test]
fn embedded_default_runs_with_a_relative_spool() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(bin())
        .arg("serve")
        .current_dir(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let mut log = String::new();
    for line in lines.map_while(Result::ok) {
        log.push_str(&line);
        log.push('\n');
        if line.contains("serving with") || line.contains("impulse:") {
            break;
        }
    }
    assert!(log.contains("serving with"), "{log}");
    let mut c = Client::connect("127.0.0.1:2525".parse().unwrap());
    assert!(c.reply().starts_with("220"));
    // An address literal: delivery needs no DNS and stays on loopback.
    assert!(send_one(&mut c, "a@example.org", "b@[127.0.0.1]").starts_with("250 2.0.0"));
    assert!(dir.path().join("spool/shard-0").is_dir());
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(
        common::wait_exit(&mut child, Duration::from_secs(10)).code(),
        Some(0)
    );
}
