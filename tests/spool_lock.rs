//! One writer per spool directory: a second `impulse serve` on the same
//! spool refuses to start before it binds anything (and the first keeps
//! every message it acknowledged), two shards of one config cannot share
//! a directory, and a directory another shard number owns is refused.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Runs `impulse serve --config PATH` to completion (it must refuse to start).
fn refused(config_path: &std::path::Path) -> (i32, String) {
    let mut child = Command::new(bin())
        .args(["serve", "--config"])
        .arg(config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let status = wait_exit(&mut child, Duration::from_secs(30));
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read");
    (status.code().unwrap_or(-1), err)
}

#[test]
fn second_instance_on_the_same_spool_refuses_to_start() {
    let server = start(&basic_config("", ""));
    let mut c = Client::connect(server.addr());
    assert!(c.reply().starts_with("220"));
    assert!(c.cmd("EHLO t").starts_with("250"));
    let (code, err) = refused(&server.config_path);
    assert_ne!(code, 0, "second instance must fail:\n{err}");
    assert!(
        err.contains("is locked by another impulse process"),
        "clear reason expected:\n{err}"
    );
    assert!(
        err.contains(&format!("pid {}", server.child.id())),
        "names the holder:\n{err}"
    );
    assert!(
        !err.contains("listening on") && !err.contains("ready"),
        "must not get as far as binding:\n{err}"
    );
    // The first instance is untouched and still serving.
    assert!(c.cmd("NOOP").starts_with("250"));
}

#[test]
fn two_shards_cannot_share_a_spool_directory() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = format!(
        "[global]\nshards = 2\nspoolbase = \"{0}/spool\"\nlog_dir = \"{0}/log\"\nhostname = \"mx.test\"\n\
         [shard.1]\nspool_dir = \"{0}/spool/shard-0\"\n\
         [listener.esmtp]\nlisten = [\"127.0.0.1:{port}\"]\n",
        dir.path().display()
    );
    let path = dir.path().join("impulse.toml");
    std::fs::write(&path, config).unwrap();
    let (code, err) = refused(&path);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("shard 1"), "{err}");
    assert!(err.contains("locked by"), "{err}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn a_directory_owned_by_another_shard_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let write = |shards: usize, extra: &str| {
        let config = format!(
            "[global]\nshards = {shards}\nspoolbase = \"{0}/spool\"\nlog_dir = \"{0}/log\"\nhostname = \"mx.test\"\nsuspend_delivery = true\n{extra}\n\
             [listener.esmtp]\nlisten = [\"127.0.0.1:{port}\"]\n",
            dir.path().display()
        );
        let path = dir.path().join("impulse.toml");
        std::fs::write(&path, config).unwrap();
        path
    };
    // Two shards run once, so shard-1 holds shard 1's segments.
    let path = write(2, "");
    let mut first = Command::new(bin())
        .args(["serve", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(first.id() as i32, libc::SIGTERM) };
    wait_exit(&mut first, Duration::from_secs(30));
    // Now shard 0 is pointed at shard 1's directory.
    let path = write(
        1,
        &format!(
            "[shard.0]\nspool_dir = \"{}/spool/shard-1\"\n",
            dir.path().display()
        ),
    );
    let (code, err) = refused(&path);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("belongs to shard 1, not shard 0"), "{err}");
}
