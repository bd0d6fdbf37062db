//! Disk full at the server level: the real binary with its spool on a
//! 2 MiB tmpfs answers 452 4.3.1 once the spool cannot take a message,
//! keeps serving other commands, accepts mail again once space returns,
//! and keeps every message it acknowledged.

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
    let Some(fs) = Tmpfs::mount("2m") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root and mount(8))");
        return;
    };
    let spoolbase: PathBuf = fs.path().to_path_buf();
    let config = basic_config("spool_segment_size = \"1M\"", "")
        .replace("{dir}/spool", &spoolbase.display().to_string());
    let mut server = start(&config);
    let spool = spoolbase.join("shard-0");
    let body = format!(
        "Subject: fill\r\n\r\n{}.\r\n",
        format!("{}\r\n", "f".repeat(70)).repeat(BODY_LINES)
    );
    let mut c = Client::connect(server.addr());
    assert!(c.reply().starts_with("220"));
    assert!(c.cmd("EHLO full.test").starts_with("250"));
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
