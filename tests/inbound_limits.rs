//! The real binary on loopback against hostile clients: over-long lines
//! and BDAT sizes.

mod common;

use common::*;

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
