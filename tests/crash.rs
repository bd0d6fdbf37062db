//! Crash test against the real binary: several client threads send mail
//! and record every id the server acknowledged with 250; the server is
//! killed with SIGKILL mid-load, restarted on the same spool, and every
//! acknowledged message must be there. Three rounds on one spool, kill
//! moments from a fixed seed.

mod common;

use common::*;
use impulse::message::MessageId;
use impulse::spool::recovery::recover_read_only;
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CLIENTS: usize = 6;
const ROUNDS: u32 = 3;
const SEED: u64 = 0x5eed_1a2b_3c4d_5e6f;

/// xorshift64*: deterministic kill moments and body sizes.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Reads one reply (all lines); Err when the connection broke.
fn reply(r: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    let mut out = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        out.push_str(&line);
        if line.len() < 4 || line.as_bytes()[3] != b'-' {
            return Ok(out);
        }
    }
}

fn cmd(w: &mut TcpStream, r: &mut BufReader<TcpStream>, line: &str) -> std::io::Result<String> {
    w.write_all(format!("{line}\r\n").as_bytes())?;
    reply(r)
}

/// Sends messages until the connection breaks or `stop`; pushes each
/// acknowledged id to `acked` as soon as the 250 arrived.
fn sender(addr: SocketAddr, body_len: usize, stop: &AtomicBool, acked: &Mutex<Vec<String>>) {
    let Ok(mut w) = TcpStream::connect(addr) else {
        return;
    };
    let _ = w.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = w.set_nodelay(true);
    let Ok(rd) = w.try_clone() else { return };
    let mut r = BufReader::new(rd);
    let line = "x".repeat(70) + "\r\n";
    let body = format!(
        "Subject: crash\r\n\r\n{}.\r\n",
        line.repeat(body_len / line.len() + 1)
    );
    let mut session = || -> std::io::Result<()> {
        reply(&mut r)?;
        cmd(&mut w, &mut r, "EHLO crash.test")?;
        while !stop.load(Ordering::Relaxed) {
            cmd(&mut w, &mut r, "MAIL FROM:<a@example.org>")?;
            cmd(&mut w, &mut r, "RCPT TO:<b@example.net>")?;
            if !cmd(&mut w, &mut r, "DATA")?.starts_with("354") {
                return Ok(());
            }
            w.write_all(body.as_bytes())?;
            let rep = reply(&mut r)?;
            if let Some(id) = rep.trim_end().strip_prefix("250 2.0.0 Ok: queued as ") {
                acked.lock().expect("lock").push(id.to_string());
            }
        }
        Ok(())
    };
    let _ = session();
}

fn live_ids(spool: &Path) -> HashSet<MessageId> {
    recover_read_only(spool, Some(0))
        .expect("recover")
        .messages
        .iter()
        .map(|m| m.id)
        .collect()
}

#[test]
fn kill_9_under_smtp_load_loses_no_acknowledged_message() {
    let config = basic_config("spool_segment_size = \"1M\"", "");
    let mut rng = Rng(SEED);
    let mut server = start(&config);
    let spool = server.spool_dir(0);
    let mut acked: HashSet<MessageId> = HashSet::new();
    for round in 0..ROUNDS {
        let stop = Arc::new(AtomicBool::new(false));
        let got: Arc<Mutex<Vec<String>>> = Arc::default();
        let threads: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let (addr, stop, got) = (server.addr(), stop.clone(), got.clone());
                let body_len = 200 + (i * 1500) % 6000;
                std::thread::spawn(move || sender(addr, body_len, &stop, &got))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(400 + rng.next() % 800));
        server.signal(libc::SIGKILL);
        let status = wait_exit(&mut server.child, Duration::from_secs(10));
        assert!(!status.success(), "killed: {status:?}");
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().expect("client thread");
        }
        let this_round: Vec<MessageId> = got
            .lock()
            .expect("lock")
            .iter()
            .map(|s| s.parse().expect("id in the 250 reply"))
            .collect();
        assert!(
            !this_round.is_empty(),
            "round {round}: no message acknowledged"
        );
        acked.extend(this_round.iter().copied());

        // Restart on the same spool: recovery truncates the torn tail.
        let (dir, port) = (
            std::mem::replace(&mut server.dir, tempfile::tempdir().expect("tmp")),
            server.port,
        );
        server = start_in(dir, port, &config);
        let log = server.log_text();
        let recovered: u64 = log
            .split("recovered ")
            .nth(1)
            .and_then(|t| t.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no recovery count in:\n{log}"));
        assert!(
            recovered >= acked.len() as u64,
            "round {round}: recovered {recovered} < acknowledged {}",
            acked.len()
        );
        let live = live_ids(Path::new(&spool));
        let lost: Vec<_> = acked.iter().filter(|id| !live.contains(id)).collect();
        assert!(lost.is_empty(), "round {round}: lost {lost:?}");
        let (code, out, err) = run_impulse(&["spool", "verify", &spool]);
        assert_eq!(code, 0, "round {round}: verify after restart:\n{out}{err}");
        eprintln!(
            "round {round}: {} acknowledged this round, {} in all, {recovered} recovered",
            this_round.len(),
            acked.len()
        );
    }
    assert_eq!(server.stop(Duration::from_secs(10)).code(), Some(0));
    let one = acked.iter().next().expect("some id").to_string();
    let (code, out, err) = run_impulse(&["spool", "show", "--dir", &spool, &one]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Subject: crash"), "{out}");
}
