//! A failure is recorded only once its DSN is durable: the delivery engine
//! on a real spool, a next hop that refuses the recipient, and a write
//! fault on the commit that carries the DSN. The DSN must still be spooled
//! (and sent), and the failure recorded after it.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use impulse::config::Config;
use impulse::conn::ShardTls;
use impulse::events::Events;
use impulse::message::Envelope;
use impulse::outbound::dns::{Resolver, ResolverConfig};
use impulse::outbound::Pools;
use impulse::queue::driver::ShardQueue;
use impulse::runtime::Current;
use impulse::spool::{Fault, Spool, SpoolOptions};
use impulse::throttle::Throttles;

/// A next hop that refuses `gone@example.net` and accepts anything else,
/// reporting each transaction as "FROM -> TO".
fn next_hop() -> (u16, mpsc::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in l.incoming().flatten() {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut w = stream.try_clone().unwrap();
                let mut r = BufReader::new(stream);
                let _ = w.write_all(b"220 hop ESMTP\r\n");
                let (mut from, mut to, mut line) = (String::new(), String::new(), String::new());
                let mut in_data = false;
                while r.read_line(&mut line).unwrap_or(0) > 0 {
                    let cmd = line.trim_end().to_string();
                    line.clear();
                    if in_data {
                        if cmd == "." {
                            in_data = false;
                            let _ = tx.send(format!("{from} -> {to}"));
                            let _ = w.write_all(b"250 2.0.0 ok\r\n");
                        }
                        continue;
                    }
                    let up = cmd.to_ascii_uppercase();
                    let reply: &[u8] = if up.starts_with("EHLO") {
                        b"250 hop\r\n"
                    } else if up.starts_with("MAIL") {
                        from = cmd[10..].to_string();
                        b"250 ok\r\n"
                    } else if up.starts_with("RCPT") {
                        to = cmd[8..].to_string();
                        if to.contains("gone@") {
                            b"550 5.1.1 no such user\r\n"
                        } else {
                            b"250 ok\r\n"
                        }
                    } else if up == "DATA" {
                        in_data = true;
                        b"354 go\r\n"
                    } else if up == "QUIT" {
                        let _ = w.write_all(b"221 bye\r\n");
                        return;
                    } else {
                        b"250 ok\r\n"
                    };
                    if w.write_all(reply).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, rx)
}

#[test]
fn a_failure_is_recorded_only_after_its_dsn_is_durable() {
    let (port, rx) = next_hop();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let text = format!(
        "[global]\nshards = 1\nhostname = \"mx.test\"\nroutes = [\"127.0.0.1:{port}\"]\n\
         [listener.esmtp]\nlisten = [\"127.0.0.1:0\"]\n"
    );
    let config = Config::from_str("test.toml", &text, tmp.path()).expect("config");
    let config = Arc::new(config);
    let spool_dir = dir.clone();
    let sent = glommio::LocalExecutor::default().run(async move {
        let (spool, _) = Spool::open(&spool_dir, 0, SpoolOptions::default())
            .await
            .expect("open");
        let resolver = Rc::new(Resolver::new(ResolverConfig::load(&config.dns)));
        let current = Rc::new(Current::new(config));
        let tls = Rc::new(ShardTls::default());
        let events = Rc::new(Events::new(0));
        let pools = Pools::new(0, tls, events.clone(), resolver);
        let bindings = impulse::binding::Bindings::standalone(current.clone(), events.clone());
        let delivery = ShardQueue::new(
            0,
            current,
            events,
            impulse::logs::Logs::off(0),
            spool.clone(),
            pools,
            Throttles::standalone(),
            bindings,
            Vec::new(),
            &[],
        );
        let id = spool.allocate_id();
        let env = Envelope::new("a@example.com", &["gone@example.net"]);
        let body = b"Subject: x\r\n\r\nx\r\n".to_vec();
        spool.append_message(id, &env, &body).await.expect("append");
        // The next commit is the DSN's: it fails as on a full disk.
        spool.inject_fault(Fault::Write(libc::ENOSPC));
        delivery.accept(id, env, body.into());
        let scheduler = glommio::spawn_local(delivery.clone().run());
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        while Instant::now() < deadline && !(seen.iter().any(|s: &String| s.starts_with("<>"))) {
            seen.extend(rx.try_iter());
            glommio::timer::sleep(Duration::from_millis(20)).await;
        }
        // The original is finished (its failure recorded) once its DSN is.
        while Instant::now() < deadline && spool.is_live(&id) {
            glommio::timer::sleep(Duration::from_millis(20)).await;
        }
        assert!(!spool.is_live(&id), "the failure was recorded in the end");
        delivery.stop();
        scheduler.await;
        spool.close().await.unwrap();
        seen
    });
    assert!(
        sent.iter().any(|s| s == "<> -> <a@example.com>"),
        "the DSN reached the sender's next hop despite the failed write: {sent:?}"
    );
}
