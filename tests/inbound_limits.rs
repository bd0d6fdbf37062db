//! The real binary on loopback against hostile or greedy clients:
//! over-long lines and BDAT sizes, byte-drips, the session cap, and the
//! shard's budget for message content in memory.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

/// Generous bound for anything the server must do "soon".
const PATIENCE: Duration = Duration::from_secs(30);

/// Sends `piece` every `gap` until the server closes the connection;
/// returns all it said meanwhile, or `None` if it was still open after `limit`.
fn drip(stream: &TcpStream, piece: &[u8], gap: Duration, limit: Duration) -> Option<String> {
    let mut s = stream.try_clone().expect("clone");
    s.set_read_timeout(Some(gap)).expect("timeout");
    let start = Instant::now();
    let mut said = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        // Once the server closed, writes may fail; the read then sees the end.
        let _ = s.write_all(piece);
        match s.read(&mut buf) {
            Ok(0) => return Some(String::from_utf8_lossy(&said).into_owned()),
            Ok(n) => said.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(String::from_utf8_lossy(&said).into_owned()),
        }
    }
    None
}

fn lines(octets: usize) -> String {
    let line = format!("{}\r\n", "a".repeat(998));
    line.repeat(octets / line.len())
}

/// A session on `s` that has said EHLO, MAIL, RCPT and got its 354.
fn in_data(s: &Server) -> Client {
    let mut c = Client::connect(s.addr());
    c.reply();
    c.cmd("EHLO x");
    c.cmd("MAIL FROM:<a@example.org>");
    c.cmd("RCPT TO:<b@example.net>");
    assert!(c.cmd("DATA").starts_with("354"));
    c
}

#[test]
fn a_megabyte_line_without_newline_gets_an_immediate_reply() {
    let s = start(&basic_config("", ""));
    let mut c = Client::connect(s.addr());
    c.reply();
    assert!(c.cmd("EHLO x").starts_with("250"));
    c.send(&"X".repeat(1 << 20));
    let r = c.reply();
    assert!(r.starts_with("500 5.5.2"), "{r:?}");
    // The rest of the line is dropped up to its newline; the session goes on.
    c.send("XXXX\r\n");
    let r = c.cmd("NOOP");
    assert!(r.starts_with("250 2.0.0"), "{r:?}");
}

#[test]
fn bdat_with_a_size_beyond_64_bits_gets_501_and_no_chunk() {
    let s = start(&basic_config("", ""));
    let mut c = Client::connect(s.addr());
    c.reply();
    assert!(c.cmd("EHLO x").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<b@example.net>").starts_with("250"));
    let r = c.cmd("BDAT 18446744073709551616");
    assert!(r.starts_with("501 5.5.4"), "{r:?}");
    // Not swallowing input as chunk data: the next command is a command.
    let r = c.cmd("NOOP");
    assert!(r.starts_with("250 2.0.0"), "{r:?}");
}

#[test]
fn a_command_dripped_byte_by_byte_is_cut_off() {
    let s = start(&basic_config("", "idle_time = 3"));
    let mut c = Client::connect(s.addr());
    c.reply();
    let said = drip(&c.stream, b"X", Duration::from_secs(1), PATIENCE);
    let said = said.expect("cut off while dripping");
    assert!(said.starts_with("421 4.4.2"), "{said:?}");
}

#[test]
fn a_data_drip_below_the_minimum_rate_is_cut_off() {
    let cfg = basic_config("", "data_timeout = 3\nmin_data_rate = 1000");
    let s = start(&cfg);
    let c = in_data(&s);
    let said = drip(&c.stream, b"d", Duration::from_millis(500), PATIENCE);
    let said = said.expect("cut off while dripping content");
    assert!(said.starts_with("421 4.4.2"), "{said:?}");
}

#[test]
fn content_that_starts_fast_and_stalls_is_cut_after_data_timeout() {
    let cfg = basic_config("", "data_timeout = 3\nmin_data_rate = 10");
    let s = start(&cfg);
    let mut c = in_data(&s);
    // 100 kB at 10 bytes/s would earn hours; the silence after them does not.
    c.send(&lines(100_000));
    let r = c.reply();
    assert!(r.starts_with("421 4.4.2"), "{r:?}");
}

#[test]
fn content_above_the_minimum_rate_may_take_longer_than_data_timeout() {
    let cfg = basic_config("", "data_timeout = 5\nmin_data_rate = 1000");
    let s = start(&cfg);
    let mut c = in_data(&s);
    // 1000 octets every 250 ms (4000/s) for 7.5 s: past data_timeout, but
    // each octet earned 1 ms more.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(7500) {
        c.send(&lines(1000));
        std::thread::sleep(Duration::from_millis(250));
    }
    c.send(".\r\n");
    let r = c.reply();
    assert!(r.starts_with("250 2.0.0"), "{r:?}");
}

#[test]
fn the_session_cap_ends_a_busy_session() {
    let s = start(&basic_config("", "idle_time = 60\nmax_session_time = 3"));
    let mut c = Client::connect(s.addr());
    c.reply();
    // A command every 200 ms: never idle, yet the session ends.
    let said = drip(&c.stream, b"NOOP\r\n", Duration::from_millis(200), PATIENCE);
    let said = said.expect("the session was capped");
    assert!(said.starts_with("250 2.0.0 Ok\r\n"), "{said:?}");
    assert!(
        said.contains("421 4.4.2 mx.test session time limit reached"),
        "{said:?}"
    );
}

fn begin(c: &mut Client) {
    c.reply();
    assert!(c.cmd("EHLO x").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<b@example.net>").starts_with("250"));
}

/// Sends a DATA message of about `octets` and returns the reply.
fn data_message(c: &mut Client, octets: usize) -> String {
    let r = c.cmd("DATA");
    assert!(r.starts_with("354"), "{r:?}");
    c.send(&lines(octets));
    c.send(".\r\n");
    c.reply()
}

/// A BDAT chunk the server confirms: it is then held in memory.
fn hold_chunk(c: &mut Client, octets: usize) {
    c.send(&format!("BDAT {octets}\r\n"));
    c.stream.write_all(&vec![b'h'; octets]).unwrap();
    let r = c.reply();
    assert!(r.starts_with("250 2.0.0"), "{r:?}");
}

#[test]
fn the_shard_budget_refuses_what_does_not_fit_and_recovers() {
    let cfg = basic_config("inbound_data_budget = \"1M\"\nmessage_size = \"10M\"", "");
    let s = start(&cfg);
    let (mut a, mut b) = (Client::connect(s.addr()), Client::connect(s.addr()));
    begin(&mut a);
    begin(&mut b);
    // a holds most of the budget in a chunk it never finishes.
    hold_chunk(&mut a, 900_000);
    // b's message does not fit: read to its end, then 452.
    let r = data_message(&mut b, 200_000);
    assert!(r.starts_with("452 4.3.1"), "{r:?}");
    // While memory is short, new transactions are refused.
    let mut c = Client::connect(s.addr());
    c.reply();
    assert!(c.cmd("EHLO x").starts_with("250"));
    let r = c.cmd("MAIL FROM:<a@example.org>");
    assert!(r.starts_with("452 4.3.1"), "{r:?}");
    // a gives up its transaction: the memory is back.
    assert!(a.cmd("RSET").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<b@example.net>").starts_with("250"));
    let r = data_message(&mut c, 200_000);
    assert!(r.starts_with("250 2.0.0"), "{r:?}");
    // A session that leaves mid-transaction gives its memory back too.
    let mut d = Client::connect(s.addr());
    begin(&mut d);
    hold_chunk(&mut d, 900_000);
    drop(d);
    let start = Instant::now();
    loop {
        let r = c.cmd("MAIL FROM:<a@example.org>");
        if r.starts_with("250") {
            c.cmd("RCPT TO:<b@example.net>");
            let r = data_message(&mut c, 200_000);
            if r.starts_with("250 2.0.0") {
                break;
            }
        } else {
            assert!(r.starts_with("452 4.3.1"), "{r:?}");
        }
        assert!(start.elapsed() < PATIENCE, "memory never came back");
        std::thread::sleep(Duration::from_millis(50));
    }
}
