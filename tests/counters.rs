//! The event stream end to end: two shards, mail delivered, deferred and
//! refused, and SIGUSR1 gathering every shard's counters through the mesh.

mod common;

use std::time::{Duration, Instant};

use common::sink::TokenSink;
use common::*;

fn send(c: &mut Client, to: &str, token: &str) {
    assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
    assert!(c.cmd(&format!("RCPT TO:<{to}>")).starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(&format!(
        "X-Token: {token}\r\nSubject: t\r\n\r\nhello\r\n.\r\n"
    ));
    assert!(c.reply().starts_with("250 2.0.0"));
}

#[test]
fn sigusr1_logs_the_sum_of_every_shards_counters() {
    let up = TokenSink::start(true);
    let down = TokenSink::start(false);
    let config = format!(
        "[global]\nshards = 2\nspoolbase = \"{{dir}}/spool\"\nlog_dir = \"{{dir}}/log\"\nhostname = \"mx.test\"\nshutdown_timeout = 2\n\
         retry_interval = 3600\n\
         [domain.\"up.test\"]\nroutes = [\"127.0.0.1:{}\"]\n\
         [domain.\"down.test\"]\nroutes = [\"127.0.0.1:{}\"]\n\
         [listener.esmtp]\nlisten = [\"127.0.0.1:{{port}}\"]\n",
        up.port, down.port
    );
    let mut s = start(&config);
    // Separate connections, so both shards are likely to take some.
    for i in 0..3 {
        let mut c = Client::connect(s.addr());
        assert!(c.reply().starts_with("220"));
        assert!(c.cmd("EHLO client.test").starts_with("250-"));
        send(&mut c, "b@up.test", &format!("t{i}"));
        if i == 0 {
            assert!(c.cmd("RCPT TO:<no closing bracket").starts_with("501"));
            send(&mut c, "b@down.test", "d");
        }
        assert!(c.cmd("QUIT").starts_with("221"));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while up.tokens().len() < 3 || down.refused() < 1 {
        assert!(Instant::now() < deadline, "deliveries did not happen");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The sums settle once the deferral is recorded and the sessions are closed.
    let want = "received=4 received_recipients=4";
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        s.signal(libc::SIGUSR1);
        std::thread::sleep(Duration::from_millis(100));
        let log = s.log_text();
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains("counters (2 of 2 shards)"))
            .unwrap_or("")
            .to_string();
        if line.contains(want)
            && line.contains("delivered=3")
            && line.contains("transient_failures=1")
            && line.contains("inbound_open=0")
        {
            assert!(line.contains("permanent_failures=0"), "{line}");
            assert!(line.contains("rejected=1 rejected_rcptto=1"), "{line}");
            assert!(line.contains("inbound_connections=3"), "{line}");
            assert!(
                line.contains("panics=0 backoff_changes=0 events_lost=0"),
                "{line}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no matching counters line:\n{log}"
        );
    }
    assert_eq!(s.stop(Duration::from_secs(10)).code(), Some(0));
    let log = s.log_text();
    assert!(log.contains("shard 0 stopped: received="), "{log}");
    assert!(log.contains("shard 1 stopped: received="), "{log}");
}
