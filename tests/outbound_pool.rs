//! Outbound connection pools against a real next hop: a released
//! connection is reused by the next job to the same host, closed with QUIT
//! after `idle_timeout`, at shutdown, or once used up, and never lent
//! under another domain's settings; a slot returns a typed result per
//! recipient.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use impulse::config::Config;
use impulse::conn::ShardTls;
use impulse::events::Events;
use impulse::message::{Content, Envelope, QueuedRcpt, RcptResult};
use impulse::outbound::dns::{Resolver, ResolverConfig};
use impulse::outbound::{Binding, Pools, Unroutable};
use impulse::runtime::Current;
use impulse::smtp::reply::Reply;

/// A next hop that refuses `gone@…` and accepts anything else, reporting
/// each connection ("CONNECT") and each command it reads.
fn next_hop() -> (u16, mpsc::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in l.incoming().flatten() {
            let tx = tx.clone();
            let _ = tx.send("CONNECT".to_string());
            std::thread::spawn(move || {
                let mut w = stream.try_clone().unwrap();
                let mut r = BufReader::new(stream);
                let _ = w.write_all(b"220 hop ESMTP\r\n");
                let (mut line, mut in_data) = (String::new(), false);
                while r.read_line(&mut line).unwrap_or(0) > 0 {
                    let cmd = line.trim_end().to_string();
                    line.clear();
                    if in_data {
                        if cmd == "." {
                            in_data = false;
                            let _ = w.write_all(b"250 2.0.0 ok\r\n");
                        }
                        continue;
                    }
                    let up = cmd.to_ascii_uppercase();
                    let _ = tx.send(up.split(' ').next().unwrap_or("").to_string());
                    let reply: &[u8] = if up.starts_with("EHLO") {
                        b"250 hop\r\n"
                    } else if up.starts_with("RCPT") && up.contains("GONE@") {
                        b"550 5.1.1 no such user\r\n"
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

fn config(port: u16, extra: &str) -> Arc<Config> {
    let tmp = tempfile::tempdir().unwrap();
    let text = format!(
        "[global]\nshards = 1\nhostname = \"mx.test\"\nroutes = [\"127.0.0.1:{port}\"]\n{extra}\n\
         [domain.\"other.test\"]\nehlo_hostname = \"other.mx.test\"\n\
         [listener.esmtp]\nlisten = [\"127.0.0.1:0\"]\n"
    );
    Arc::new(Config::from_str("test.toml", &text, tmp.path()).expect("config"))
}

fn pools(config: &Config) -> Rc<Pools> {
    let resolver = Rc::new(Resolver::new(ResolverConfig::load(&config.dns)));
    Pools::new(
        0,
        Rc::new(ShardTls::default()),
        Rc::new(Events::new(0)),
        resolver,
    )
}

/// Waits (on the shard, without blocking it) until `f` holds.
async fn until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !f() {
        if Instant::now() > deadline {
            return false;
        }
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    true
}

fn count(seen: &[String], what: &str) -> usize {
    seen.iter().filter(|s| *s == what).count()
}

#[test]
fn a_released_connection_carries_the_next_job_and_is_quit_when_idle() {
    let (port, rx) = next_hop();
    let config = config(port, "idle_timeout = 1");
    let current = Current::new(config.clone());
    glommio::LocalExecutor::default().run(async move {
        let pools = pools(&config);
        let d = current.get().delivery.get("example.net").clone();
        let env = Envelope::new("a@example.com", &["x@example.net", "gone@example.net"]);
        let body = Content::from(b"Subject: x\r\n\r\nx\r\n".to_vec());
        let rcpts = [
            QueuedRcpt {
                index: 0,
                address: "x@example.net".into(),
            },
            QueuedRcpt {
                index: 1,
                address: "gone@example.net".into(),
            },
        ];
        let mut slot = pools
            .acquire(Binding::default(), "example.net", &d)
            .await
            .expect("a slot");
        assert_eq!(slot.host(), "127.0.0.1");
        let (results, stages) = slot.send(&env, &body, &rcpts).await;
        // Where each ended (mainlog's stage): after the content, and at RCPT.
        assert_eq!(
            stages,
            [
                impulse::smtp::client::Stage::DataDone,
                impulse::smtp::client::Stage::Rcpt
            ]
        );
        assert_eq!(
            results,
            vec![
                (
                    0,
                    RcptResult::Delivered(Rc::new(Reply::new(250, "2.0.0", "ok")))
                ),
                (
                    1,
                    RcptResult::Failed(Rc::new(Reply::new(550, "5.1.1", "no such user")))
                ),
            ]
        );
        assert!(!slot.is_broken() && !slot.used_up());
        let key = slot.key().clone();
        pools.release(slot).await;
        assert_eq!(pools.open(), 1, "kept open while idle");
        // The next job for the domain finds it, with or without its key.
        let mut slot = pools.reclaim(&key, &d).expect("the idle connection");
        slot.send(&env, &body, &rcpts[..1]).await;
        pools.release(slot).await;
        let slot = pools
            .acquire(Binding::default(), "example.net", &d)
            .await
            .unwrap();
        pools.release(slot).await;
        let seen: Vec<String> = rx.try_iter().collect();
        assert_eq!(count(&seen, "CONNECT"), 1, "{seen:?}");
        assert_eq!(count(&seen, "EHLO"), 1, "{seen:?}");
        // Idle for idle_timeout: QUIT, and the count drops.
        assert!(until(Duration::from_secs(5), || pools.open() == 0).await);
        let seen: Vec<String> = rx.try_iter().collect();
        assert_eq!(count(&seen, "QUIT"), 1, "{seen:?}");
        assert!(pools.reclaim(&key, &d).is_none(), "gone from the pool");
    });
}

#[test]
fn no_reuse_under_other_settings_and_quit_when_used_up_or_shut_down() {
    let (port, rx) = next_hop();
    let config = config(port, "max_deliveries_per_connection = 1");
    glommio::LocalExecutor::default().run(async move {
        let pools = pools(&config);
        let d = config.delivery.get("example.net").clone();
        let other = config.delivery.get("other.test").clone();
        let env = Envelope::new("a@example.com", &["x@example.net"]);
        let body = Content::from(b"Subject: x\r\n\r\nx\r\n".to_vec());
        let rcpts = [QueuedRcpt {
            index: 0,
            address: "x@example.net".into(),
        }];
        let slot = pools
            .acquire(Binding::default(), "example.net", &d)
            .await
            .unwrap();
        pools.release(slot).await;
        // Same host, another domain's table (another EHLO name): a new one.
        let slot = pools
            .acquire(Binding::default(), "other.test", &other)
            .await
            .unwrap();
        assert_eq!(pools.open(), 2);
        pools.release(slot).await;
        // One delivery per connection: used up after a job, QUIT at release.
        let mut slot = pools
            .acquire(Binding::default(), "example.net", &d)
            .await
            .unwrap();
        slot.send(&env, &body, &rcpts).await;
        assert!(slot.used_up());
        pools.release(slot).await;
        assert_eq!(pools.open(), 1, "the used-up one is closed");
        // Shutdown QUITs the idle one, and any released later.
        let slot = pools
            .acquire(Binding::default(), "example.net", &d)
            .await
            .unwrap();
        pools.shutdown();
        assert!(until(Duration::from_secs(5), || pools.open() == 1).await);
        pools.release(slot).await;
        assert_eq!(pools.open(), 0);
        let seen: Vec<String> = rx.try_iter().collect();
        assert_eq!(count(&seen, "CONNECT"), 3, "{seen:?}");
        assert_eq!(count(&seen, "QUIT"), 3, "{seen:?}");
    });
}

#[test]
fn an_unreachable_route_is_a_transient_reason() {
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let config = config(port, "");
    glommio::LocalExecutor::default().run(async move {
        let pools = pools(&config);
        let d = config.delivery.get("example.net").clone();
        match pools.acquire(Binding::default(), "example.net", &d).await {
            Err(Unroutable::Transient(r)) => assert!(
                r.to_string()
                    .starts_with("421 4.4.0 [internal] no MXs for this domain could be reached"),
                "{r}"
            ),
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("connected to a closed port"),
        }
        assert_eq!(pools.open(), 0);
    });
}
