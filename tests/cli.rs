//! The offline commands of the real binary: how they end when their
//! output goes nowhere.

mod common;

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use impulse::message::Envelope;
use impulse::spool::{Spool, SpoolOptions};

/// The write end of a pipe whose read end is already closed: every write
/// to it fails with EPIPE, as for `impulse ... | head` once head is done.
fn closed_pipe() -> Stdio {
    let mut fds = [0i32; 2];
    // SAFETY: pipe(2) fills both slots with fresh descriptors on success,
    // and each is owned exactly once below.
    let (read, write) = unsafe {
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    };
    drop(read);
    Stdio::from(write)
}

/// A shard spool directory holding a few messages.
fn spool_with_messages(dir: &std::path::Path) {
    let dir = dir.to_path_buf();
    glommio::LocalExecutor::default().run(async move {
        let (s, _) = Spool::open(&dir, 0, SpoolOptions::default())
            .await
            .expect("open spool");
        for i in 0..20 {
            let rcpt = format!("u{i}@d{i}.example");
            let env = Envelope::new("s@example.org", &[rcpt.as_str()]);
            let id = s.allocate_id();
            s.append_message(id, &env, b"Subject: x\r\n\r\nbody\r\n")
                .await
                .expect("append");
        }
        s.close().await.expect("close");
    });
}

/// Every command ends quietly when stdout is a closed pipe: no panic, no
/// backtrace, no "Broken pipe" complaint (killed by SIGPIPE, like `cat`).
#[test]
fn commands_end_quietly_on_a_closed_pipe() {
    let tmp = tempfile::tempdir().unwrap();
    let shard = tmp.path().join("shard-0");
    spool_with_messages(&shard);
    let (base, dir) = (tmp.path().to_str().unwrap(), shard.to_str().unwrap());
    let commands: [&[&str]; 7] = [
        &["spool", "inspect", dir],
        &["spool", "inspect", base],
        &["spool", "verify", dir],
        &["spool", "verify", base],
        &["check-config"],
        &["check-config", "--options"],
        &["version"],
    ];
    for args in commands {
        let out = Command::new(common::bin())
            .args(args)
            .env("RUST_BACKTRACE", "1")
            .stdout(closed_pipe())
            .stderr(Stdio::piped())
            .output()
            .expect("run impulse");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(!err.contains("Broken pipe"), "{args:?}: {err}");
        assert_ne!(
            out.status.code(),
            Some(101),
            "{args:?}: a panic's exit code"
        );
        assert!(
            out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
            "{args:?}: {:?} {err}",
            out.status
        );
    }
}
