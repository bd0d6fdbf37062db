//! Byte-for-byte tests of the server session: commands, sequencing,
//! limits, content, AUTH and STARTTLS, each unpipelined and pipelined.

mod auth_tls;
mod content;
mod limits;
mod transaction;

use std::rc::Rc;

use super::server::{ServerSession, ServerSettings, Step};

pub(super) const GREETING: &str = "220 mx.example ESMTP impulse\r\n";

pub(super) const EHLO_PLAIN: &str = "250-mx.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n\
250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-STARTTLS\r\n250-CHUNKING\r\n250-SMTPUTF8\r\n\
250 DSN\r\n";

pub(super) fn settings() -> ServerSettings {
    ServerSettings {
        hostname: "mx.example".into(),
        max_command_line_octets: 512,
        max_data_line_octets: 100,
        message_size: 1000,
        max_recipients_per_message: 3,
        max_errors_per_session: 5,
        max_receptions_per_connection: 0,
        require_ehlo: true,
        allow_null_envelope_sender: true,
        starttls_available: true,
        auth_available: true,
        auth_requires_tls: true,
        can_relay: false,
        relay_domains: vec!["example.com".into(), "*.sub.example".into()],
        reject_8bit_without_8bitmime: false,
    }
}

/// A session with the greeting already taken.
pub(super) fn session_with(s: ServerSettings) -> ServerSession {
    let mut sess = ServerSession::new(Rc::new(s), "192.0.2.7".parse().ok(), false);
    assert_eq!(text(sess.take_output()), GREETING);
    sess
}

pub(super) fn session() -> ServerSession {
    session_with(settings())
}

pub(super) fn text(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Feeds `input`, processes, returns the output and the step.
pub(super) fn exchange(sess: &mut ServerSession, input: &str) -> (String, Step) {
    exchange_bytes(sess, input.as_bytes())
}

pub(super) fn exchange_bytes(sess: &mut ServerSession, input: &[u8]) -> (String, Step) {
    sess.feed(input);
    let step = sess.process();
    (text(sess.take_output()), step)
}

/// Feeds `input` and expects exactly `expected` with `Step::NeedInput`.
pub(super) fn expect(sess: &mut ServerSession, input: &str, expected: &str) {
    let (out, step) = exchange(sess, input);
    assert_eq!(out, expected, "after {input:?}");
    assert_eq!(step, Step::NeedInput, "after {input:?}");
}

/// A session after EHLO that tolerates many errors.
pub(super) fn lenient() -> ServerSession {
    let mut st = settings();
    st.max_errors_per_session = 100;
    let mut s = session_with(st);
    expect(&mut s, "EHLO client.example\r\n", EHLO_PLAIN);
    s
}

/// A session after EHLO.
pub(super) fn greeted() -> ServerSession {
    let mut s = session();
    expect(&mut s, "EHLO client.example\r\n", EHLO_PLAIN);
    s
}

#[test]
fn greeting_uses_hostname() {
    let sess = ServerSession::new(Rc::new(settings()), None, false);
    assert_eq!(sess.output(), GREETING.as_bytes());
    assert!(sess.has_output());
    assert!(!sess.is_tls());
    assert_eq!(sess.helo(), "");
}

#[test]
fn ehlo_and_helo() {
    let mut s = session();
    expect(&mut s, "ehlo client.example\r\n", EHLO_PLAIN);
    assert_eq!(s.helo(), "client.example");
    expect(&mut s, "HELO other.example\r\n", "250 mx.example\r\n");
    assert_eq!(s.helo(), "other.example");
    expect(
        &mut s,
        "EHLO\r\n",
        "501 5.5.4 syntax: EHLO/HELO hostname\r\n",
    );
    expect(
        &mut s,
        "HELO \r\n",
        "501 5.5.4 syntax: EHLO/HELO hostname\r\n",
    );
}

#[test]
fn ehlo_advertises_auth_and_unlimited_size() {
    let mut st = settings();
    st.auth_requires_tls = false;
    st.starttls_available = false;
    st.message_size = 0;
    let mut s = session_with(st);
    expect(
        &mut s,
        "EHLO c\r\n",
        "250-mx.example\r\n250-PIPELINING\r\n250-SIZE\r\n250-8BITMIME\r\n\
         250-ENHANCEDSTATUSCODES\r\n250-AUTH PLAIN LOGIN\r\n250-CHUNKING\r\n\
         250-SMTPUTF8\r\n250 DSN\r\n",
    );
}

#[test]
fn simple_commands() {
    let mut s = session();
    expect(&mut s, "NOOP\r\n", "250 2.0.0 Ok\r\n");
    expect(&mut s, "noop anything\r\n", "250 2.0.0 Ok\r\n");
    expect(&mut s, "RSET\r\n", "250 2.0.0 Ok\r\n");
    expect(
        &mut s,
        "VRFY postmaster\r\n",
        "252 2.1.5 cannot VRFY user, but will accept message\r\n",
    );
    expect(
        &mut s,
        "HELP\r\n",
        "214 2.0.0 see https://www.rfc-editor.org/rfc/rfc5321\r\n",
    );
    expect(
        &mut s,
        "RSET now\r\n",
        "501 5.5.4 syntax error: no arguments allowed\r\n",
    );
    expect(&mut s, "VRFY\r\n", "501 5.5.4 syntax: VRFY address\r\n");
    let (out, step) = exchange(&mut s, "QUIT\r\nNOOP\r\n");
    assert_eq!(out, "221 2.0.0 Bye\r\n");
    assert_eq!(step, Step::Close);
    assert_eq!(s.process(), Step::Close);
    s.feed(b"NOOP\r\n");
    assert_eq!(s.process(), Step::Close);
    assert!(!s.has_output());
}

#[test]
fn unknown_and_malformed_lines() {
    let mut s = session();
    expect(&mut s, "FOO\r\n", "500 5.5.1 command unrecognized\r\n");
    expect(&mut s, "\r\n", "500 5.5.1 command unrecognized\r\n");
    expect(
        &mut s,
        "NOOP\nQUIT\r\n",
        "500 5.5.2 bare CR or LF not allowed\r\n",
    );
    expect(
        &mut s,
        "NO\rOP\r\n",
        "500 5.5.2 bare CR or LF not allowed\r\n",
    );
    let (out, _) = exchange_bytes(&mut s, b"NO\0OP\r\n");
    assert_eq!(out, "500 5.5.2 NUL not allowed\r\n");
    let (out, _) = exchange_bytes(&mut s, b"NOOP \xff\r\n");
    // The sixth error also exceeds max_errors_per_session (5).
    assert_eq!(
        out,
        "500 5.5.2 invalid UTF-8\r\n421 4.7.0 too many errors\r\n"
    );
}

#[test]
fn over_long_line_is_discarded_without_buffering() {
    let mut s = session();
    let long = "NOOP ".to_string() + &"x".repeat(600);
    // Fed in pieces; the engine never holds more than the limit, and says
    // so as soon as the limit is passed, not when the CRLF comes.
    for (i, chunk) in long.as_bytes().chunks(100).enumerate() {
        let (out, step) = exchange_bytes(&mut s, chunk);
        let want = if i == 5 {
            "500 5.5.2 line too long\r\n"
        } else {
            ""
        };
        assert_eq!((out.as_str(), step), (want, Step::NeedInput), "chunk {i}");
        assert!(s.buffered_input() <= 512);
    }
    // The rest of the line is dropped up to its CRLF, without a second reply.
    expect(&mut s, "\r", "");
    expect(&mut s, "\nNOOP\r\n", "250 2.0.0 Ok\r\n");
    // Exactly at the limit (510 + CRLF = 512) is fine; 513 is not.
    let ok = format!("NOOP {}\r\n", "y".repeat(505));
    assert_eq!(ok.len(), 512);
    expect(&mut s, &ok, "250 2.0.0 Ok\r\n");
    let bad = format!("NOOP {}\r\n", "y".repeat(506));
    expect(&mut s, &bad, "500 5.5.2 line too long\r\n");
}

#[test]
fn too_many_errors_closes() {
    let mut s = session();
    for _ in 0..5 {
        expect(&mut s, "BAD\r\n", "500 5.5.1 command unrecognized\r\n");
    }
    let (out, step) = exchange(&mut s, "BAD\r\nNOOP\r\n");
    assert_eq!(
        out,
        "500 5.5.1 command unrecognized\r\n421 4.7.0 too many errors\r\n"
    );
    assert_eq!(step, Step::Close);
}

#[test]
fn pipelined_commands_reply_in_order() {
    let mut s = session();
    expect(
        &mut s,
        "EHLO c\r\nNOOP\r\nFOO\r\nRSET\r\nVRFY x\r\n",
        &(EHLO_PLAIN.to_string()
            + "250 2.0.0 Ok\r\n500 5.5.1 command unrecognized\r\n250 2.0.0 Ok\r\n\
               252 2.1.5 cannot VRFY user, but will accept message\r\n"),
    );
}

#[test]
fn split_command_lines_wait_for_crlf() {
    let mut s = session();
    expect(&mut s, "NO", "");
    expect(&mut s, "OP\r", "");
    expect(&mut s, "\nNOOP\r\nNO", "250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n");
    expect(&mut s, "OP\r\n", "250 2.0.0 Ok\r\n");
}

#[test]
fn timeout_and_shutdown_close() {
    let mut s = session();
    s.timeout();
    assert_eq!(s.process(), Step::Close);
    assert_eq!(
        text(s.take_output()),
        "421 4.4.2 mx.example timeout, closing\r\n"
    );
    s.shutdown();
    assert!(!s.has_output(), "a closed session says nothing more");
    let mut s = session();
    s.feed(b"NOOP\r\n");
    s.shutdown();
    assert_eq!(s.process(), Step::Close);
    assert_eq!(
        text(s.take_output()),
        "421 4.3.2 mx.example shutting down\r\n"
    );
}
