//! Resource limits: over-long command lines and BDAT sizes answered at
//! once.

use super::*;

const MAIL_RCPT: &str = "MAIL FROM:<a@b.example>\r\nRCPT TO:<x@example.com>\r\n";
const MAIL_RCPT_OK: &str = "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n";

#[test]
fn a_megabyte_line_without_newline_is_answered_at_once() {
    let mut s = greeted();
    let line = vec![b'X'; 1 << 20];
    let (out, step) = exchange_bytes(&mut s, &line);
    assert_eq!(out, "500 5.5.2 line too long\r\n");
    assert_eq!(step, Step::NeedInput);
    assert_eq!(s.buffered_input(), 0, "the line is not kept");
    // More of the same line: silently dropped, up to its CRLF.
    expect(&mut s, "XXXX", "");
    expect(&mut s, "XX\r\nNOOP\r\n", "250 2.0.0 Ok\r\n");
}

#[test]
fn bdat_size_beyond_64_bits_is_a_syntax_error_not_a_chunk() {
    let mut s = greeted();
    expect(&mut s, MAIL_RCPT, MAIL_RCPT_OK);
    for bad in [
        "BDAT 18446744073709551616",
        "BDAT 99999999999999999999999 LAST",
        "BDAT +5",
    ] {
        let (out, step) = exchange(&mut s, &format!("{bad}\r\nNOOP\r\n"));
        assert_eq!(
            out, "501 5.5.4 syntax: BDAT size [LAST]\r\n250 2.0.0 Ok\r\n",
            "{bad}"
        );
        assert_eq!(step, Step::NeedInput);
        assert!(!s.in_data(), "{bad}");
    }
    // The largest 64-bit size still parses as a chunk.
    expect(&mut s, "BDAT 18446744073709551615\r\n", "");
    assert!(s.in_data());
}
