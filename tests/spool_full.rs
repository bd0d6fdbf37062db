//! Disk full at the server level: the real binary with its spool on a
//! 2 MiB tmpfs answers 452 4.3.1 once the spool cannot take a message,
//! keeps serving other commands, accepts mail again once space returns,
//! and keeps every message it acknowledged. With a next hop, a full disk
//! clears by itself once the queue drains (outcomes are written from the
//! shard's reserve), a restart on a full disk comes up and delivers what
//! it holds, and nothing delivered is ever sent twice.

mod common;

use common::*;
use impulse::spool::recovery::recover_read_only;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Largest number of messages sent while waiting for the disk to fill.
const MAX_MESSAGES_TO_FILL: usize = 400;
/// Body lines per message (about 36 KiB).
const BODY_LINES: usize = 500;
/// Body lines of the small messages (about 4 KiB).
const SMALL_BODY_LINES: usize = 56;
/// Seconds of retry rounds (one per second) against a dead destination.
const RETRY_ROUNDS_SECS: u64 = 15;

/// A tmpfs mounted on a temporary directory, unmounted on drop (also when
/// the test panics).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("tmp");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs { dir })
    }

    /// [`Tmpfs::mount`], saying why the test is skipped when it cannot be.
    fn mount_or_skip(size: &str) -> Option<Tmpfs> {
        let fs = Tmpfs::mount(size);
        if fs.is_none() {
            eprintln!("SKIPPED: cannot mount a tmpfs here (needs root and mount(8))");
        }
        fs
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn resize(&self, size: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.path())
            .status()
            .expect("remount");
        assert!(st.success(), "remount to {size}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(self.path()).status();
        }
    }
}

fn send(c: &mut Client, body: &str) -> String {
    assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<b@example.net>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(body);
    c.reply()
}

fn queued(reply: &str) -> Option<String> {
    reply
        .trim_end()
        .strip_prefix("250 2.0.0 Ok: queued as ")
        .map(str::to_string)
}

#[test]
fn disk_full_gives_452_then_recovers_when_space_returns() {
    let Some(fs) = Tmpfs::mount_or_skip("2m") else {
        return;
    };
    let spoolbase: PathBuf = fs.path().to_path_buf();
    let config = basic_config(
        "spool_segment_size = \"1M\"\nspool_reserve_size = \"256K\"",
        "",
    )
    .replace("{dir}/spool", &spoolbase.display().to_string());
    let mut server = start(&config);
    let spool = spoolbase.join("shard-0");
    let body = format!(
        "Subject: fill\r\n\r\n{}.\r\n",
        format!("{}\r\n", "f".repeat(70)).repeat(BODY_LINES)
    );
    let mut c = greeted(&server);
    let mut acked: Vec<String> = Vec::new();
    let mut full_reply = None;
    for _ in 0..MAX_MESSAGES_TO_FILL {
        let r = send(&mut c, &body);
        match queued(&r) {
            Some(id) => acked.push(id),
            None => {
                full_reply = Some(r);
                break;
            }
        }
    }
    let full_reply = full_reply.expect("the 2 MiB spool filled up");
    assert!(full_reply.starts_with("452 4.3.1"), "{full_reply}");
    assert!(
        !acked.is_empty(),
        "some messages fit before the disk filled"
    );

    // Still serving: same session and a new one.
    assert!(c.cmd("NOOP").starts_with("250"));
    assert!(c.cmd("RSET").starts_with("250"));
    assert!(c.cmd("EHLO again.test").starts_with("250"));
    let mut c2 = Client::connect(server.addr());
    assert!(c2.reply().starts_with("220"));
    assert!(c2.cmd("QUIT").starts_with("221"));
    assert!(c.cmd("NOOP").starts_with("250"));

    // Space returns: new messages are accepted again.
    fs.resize("64m");
    for _ in 0..5 {
        let r = send(&mut c, &body);
        let id = queued(&r).unwrap_or_else(|| panic!("after remount: {r}"));
        acked.push(id);
    }
    assert!(c.cmd("QUIT").starts_with("221"));
    assert_eq!(server.stop(Duration::from_secs(10)).code(), Some(0));

    let live: HashSet<String> = recover_read_only(&spool, Some(0))
        .expect("recover")
        .messages
        .iter()
        .map(|m| m.id.to_string())
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|id| !live.contains(*id)).collect();
    assert!(lost.is_empty(), "acknowledged but missing: {lost:?}");
    let (code, out, err) = run_impulse(&["spool", "verify", &spool.display().to_string()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        server.log_text().contains("paniclog:"),
        "the failure was logged:\n{}",
        server.log_text()
    );
    drop(server);
    drop(fs);
}

/// The relay config for a spool on `spoolbase` delivering to `sink_port`.
/// Compaction's own timer is off: only the full-disk upkeep frees space.
fn relay_on(spoolbase: &Path, sink_port: u16) -> String {
    basic_config(
        &format!(
            "spool_segment_size = \"1M\"\nspool_reserve_size = \"256K\"\n\
             spool_compact_interval_secs = 0\nroutes = [\"127.0.0.1:{sink_port}\"]\n\
             retry_interval = 1\nmax_retry_interval = 1"
        ),
        "",
    )
    .replace("suspend_delivery = true\n", "")
    .replace("{dir}/spool", &spoolbase.display().to_string())
}

/// Sends messages tagged `X-Token: N` until one is refused; returns the
/// acknowledged tokens and the refusal.
fn fill(c: &mut Client, first: usize) -> (Vec<String>, String) {
    fill_with(c, first, BODY_LINES)
}

/// [`fill`] with bodies of `lines` 72-octet lines.
fn fill_with(c: &mut Client, first: usize, lines: usize) -> (Vec<String>, String) {
    let filler = format!("{}\r\n", "f".repeat(70)).repeat(lines);
    let mut acked = Vec::new();
    for n in first..first + MAX_MESSAGES_TO_FILL * BODY_LINES / lines {
        let r = send(c, &format!("X-Token: {n}\r\n\r\n{filler}.\r\n"));
        match queued(&r) {
            Some(_) => acked.push(n.to_string()),
            None => return (acked, r),
        }
    }
    panic!("the spool never filled up");
}

/// Retries a one-message transaction (the MAIL may be refused) until one is
/// acknowledged or `limit` passes; returns its token.
fn accepted_again(server: &Server, token: usize, limit: Duration) -> Option<String> {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        // A new session each time: refusals count as session errors.
        let mut c = Client::connect(server.addr());
        assert!(c.reply().starts_with("220"));
        assert!(c.cmd("EHLO again.test").starts_with("250"));
        let mail = c.cmd("MAIL FROM:<a@example.org>");
        if mail.starts_with("250") {
            assert!(c.cmd("RCPT TO:<b@example.net>").starts_with("250"));
            assert!(c.cmd("DATA").starts_with("354"));
            let r = c.cmd(&format!("X-Token: {token}\r\n\r\nagain\r\n."));
            if queued(&r).is_some() {
                return Some(token.to_string());
            }
            eprintln!("not yet accepted: {r}");
        } else {
            assert!(mail.starts_with("452 4.3.1"), "{mail}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// Waits until the sink holds every token in `acked`.
fn wait_delivered(sink: &common::sink::TokenSink, acked: &[String], server: &Server) {
    let start = std::time::Instant::now();
    loop {
        let got: HashSet<String> = sink.tokens().into_iter().collect();
        if acked.iter().all(|t| got.contains(t)) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{} of {} acknowledged messages delivered:\n{}",
            acked.iter().filter(|t| got.contains(*t)).count(),
            acked.len(),
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A session that has been greeted and has said EHLO.
fn greeted(server: &Server) -> Client {
    let mut c = Client::connect(server.addr());
    assert!(c.reply().starts_with("220"));
    assert!(c.cmd("EHLO full.test").starts_with("250"));
    c
}

/// New mail is taken again by itself, and it and all of `acked` are delivered.
fn resumes_and_delivers(server: &Server, sink: &common::sink::TokenSink, acked: &mut Vec<String>) {
    let again = accepted_again(server, 100_000, Duration::from_secs(60))
        .unwrap_or_else(|| panic!("reception never resumed:\n{}", server.log_text()));
    acked.push(again);
    wait_delivered(sink, acked, server);
}

/// Each acknowledged token reached the sink exactly once, and nothing else did.
fn exactly_once(sink: &common::sink::TokenSink, acked: &[String]) {
    let got = sink.tokens();
    let mut seen = HashSet::new();
    let dups: Vec<&String> = got.iter().filter(|t| !seen.insert(*t)).collect();
    assert!(dups.is_empty(), "delivered twice: {dups:?}");
    let want: HashSet<&String> = acked.iter().collect();
    assert_eq!(
        seen, want,
        "delivered set differs from the acknowledged set"
    );
}

#[test]
fn a_full_disk_clears_by_itself_once_the_queue_drains() {
    let Some(fs) = Tmpfs::mount_or_skip("2m") else {
        return;
    };
    let sink = common::sink::TokenSink::start(true);
    let mut server = start(&relay_on(fs.path(), sink.port));
    let mut c = greeted(&server);
    let (mut acked, refusal) = fill(&mut c, 0);
    assert!(refusal.starts_with("452 4.3.1"), "{refusal}");
    assert!(!acked.is_empty());
    // While the disk is full, MAIL already says so (no body is sent for it),
    // or the spool has room again; both are fine, nothing else is.
    let mail = c.cmd("MAIL FROM:<a@example.org>");
    assert!(
        mail.starts_with("452 4.3.1") || mail.starts_with("250"),
        "{mail}"
    );
    assert!(c.cmd("RSET").starts_with("250"));
    wait_delivered(&sink, &acked, &server);
    // The file system was never resized: the records of those deliveries
    // let compaction free the space, and reception resumes by itself.
    resumes_and_delivers(&server, &sink, &mut acked);
    assert!(c.cmd("QUIT").starts_with("221"));
    assert_eq!(server.stop(Duration::from_secs(20)).code(), Some(0));
    // Every delivery was recorded: nothing is left to send again.
    let spool = fs.path().join("shard-0");
    let rec = recover_read_only(&spool, Some(0)).expect("recover");
    assert_eq!(rec.messages.len(), 0, "delivered messages still live");
    exactly_once(&sink, &acked);
    drop(server);
    drop(fs);
}

#[test]
fn a_restart_on_a_full_disk_serves_and_delivers_what_it_holds() {
    let Some(fs) = Tmpfs::mount_or_skip("2m") else {
        return;
    };
    let sink = common::sink::TokenSink::start(false);
    let config = relay_on(fs.path(), sink.port);
    let mut server = start(&config);
    let mut c = greeted(&server);
    let (mut acked, refusal) = fill(&mut c, 0);
    assert!(refusal.starts_with("452 4.3.1"), "{refusal}");
    drop(c);
    assert_eq!(server.stop(Duration::from_secs(20)).code(), Some(0));
    // Same full disk, receiver still down: the server comes up.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = start_in(dir, port, &config);
    let mut c = greeted(&server);
    let mail = c.cmd("MAIL FROM:<a@example.org>");
    assert!(mail.starts_with("452 4.3.1"), "new mail refused: {mail}");
    drop(c);
    // The receiver returns: what was held is delivered and recorded, the
    // space comes back, and new mail is taken again.
    sink.set_up(true);
    wait_delivered(&sink, &acked, &server);
    resumes_and_delivers(&server, &sink, &mut acked);
    let mut server = server;
    assert_eq!(server.stop(Duration::from_secs(20)).code(), Some(0));
    let spool = fs.path().join("shard-0");
    let rec = recover_read_only(&spool, Some(0)).expect("recover");
    assert_eq!(rec.messages.len(), 0, "delivered messages still live");
    exactly_once(&sink, &acked);
    drop(server);
    drop(fs);
}

#[test]
fn a_destination_down_on_a_full_disk_does_not_spend_the_reserve_on_retries() {
    let Some(fs) = Tmpfs::mount_or_skip("2m") else {
        return;
    };
    // Retry records of ~470 queued messages, one round a second, would use
    // up the 256 KiB reserve within the rounds below.
    let sink = common::sink::TokenSink::start(false);
    let server = start(&relay_on(fs.path(), sink.port));
    let mut c = greeted(&server);
    // Small messages: many of them, so each retry round would write many
    // retry records.
    let (mut acked, refusal) = fill_with(&mut c, 0, SMALL_BODY_LINES);
    assert!(refusal.starts_with("452 4.3.1"), "{refusal}");
    drop(c);
    // Retry rounds against the dead destination for several seconds (each
    // round is refused connections), then it comes back.
    let start = std::time::Instant::now();
    while sink.refusing_for() < Duration::from_secs(RETRY_ROUNDS_SECS) {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "only {} retry connections:\n{}",
            sink.refused(),
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    sink.set_up(true);
    wait_delivered(&sink, &acked, &server);
    resumes_and_delivers(&server, &sink, &mut acked);
    exactly_once(&sink, &acked);
    drop(server);
    drop(fs);
}
