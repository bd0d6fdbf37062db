//! SIGHUP with options that only a restart can change: the reload applies
//! the rest, names each changed option by when it takes effect (live, new
//! sessions, restart), and keeps each restart-only option at its running
//! value (the spool and the bound sockets stay as they are).

mod common;

use common::*;
use std::time::Duration;

#[test]
fn a_reload_names_the_options_that_need_a_restart_and_applies_the_rest() {
    let s = start(&basic_config("", ""));
    let other_port = free_port();
    let new = basic_config("", "")
        .replace("hostname = \"mx.test\"", "hostname = \"mx2.test\"")
        .replace("shutdown_timeout = 2", "shutdown_timeout = 3")
        .replace("{dir}/spool", "{dir}/elsewhere")
        .replace("{port}", &other_port.to_string())
        .replace("{dir}", &s.dir.path().display().to_string());
    std::fs::write(&s.config_path, new).unwrap();
    s.signal(libc::SIGHUP);
    s.wait_log("needs a restart", Duration::from_secs(10));
    let log = s.log_text();
    assert!(log.contains("applied live: shutdown_timeout;"), "{log}");
    assert!(log.contains("applied to new sessions: hostname;"), "{log}");
    assert!(
        log.contains(
            "needs a restart (running values kept until then): spoolbase, listener.esmtp.listen\n"
        ),
        "{log}"
    );
    // The new-sessions option is applied to new sessions...
    let mut c = Client::connect(s.addr());
    assert!(c.reply().contains("mx2.test"), "hostname applied");
    assert!(c.cmd("EHLO t").starts_with("250"));
    // ...the old socket still serves, the new address is not bound, and
    // mail still goes to the spool that was opened at start.
    assert!(std::net::TcpStream::connect(("127.0.0.1", other_port)).is_err());
    assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<b@example.net>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    assert!(c.cmd("Subject: x\r\n\r\nx\r\n.").starts_with("250"));
    assert!(has(&s.dir.path().join("spool/shard-0")));
    assert!(
        !has(&s.dir.path().join("elsewhere")),
        "no half-applied spoolbase"
    );
    // The snapshot kept the running values, so the same file reloaded
    // again still names what waits for a restart, and only that.
    s.signal(libc::SIGHUP);
    let again =
        ": needs a restart (running values kept until then): spoolbase, listener.esmtp.listen\n";
    s.wait_log(again, Duration::from_secs(10));
}
