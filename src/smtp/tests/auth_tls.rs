//! STARTTLS (RFC 3207), AUTH (RFC 4954) and the Received header.

use super::*;
use crate::smtp::received_header;

const EHLO_TLS: &str = "250-mx.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n\
250-ENHANCEDSTATUSCODES\r\n250-AUTH PLAIN LOGIN\r\n250-CHUNKING\r\n250-SMTPUTF8\r\n250 DSN\r\n";
/// base64("\0user\0pass")
const PLAIN_USER_PASS: &str = "AHVzZXIAcGFzcw==";

fn creds(authzid: &str, user: &str, password: &str) -> Step {
    Step::Authenticate {
        authzid: authzid.into(),
        user: user.into(),
        password: password.into(),
    }
}

/// A session on a TLS (implicit or after STARTTLS) connection after EHLO.
fn tls_greeted() -> ServerSession {
    let mut s = ServerSession::new(Rc::new(settings()), "192.0.2.7".parse().ok(), true);
    assert_eq!(text(s.take_output()), GREETING);
    assert!(s.is_tls());
    expect(&mut s, "EHLO c.example\r\n", EHLO_TLS);
    s
}

#[test]
fn starttls_resets_the_session() {
    let mut s = greeted();
    expect(&mut s, "MAIL FROM:<a@b.example>\r\n", "250 2.1.0 Ok\r\n");
    let (out, step) = exchange(&mut s, "STARTTLS\r\n");
    assert_eq!(out, "220 2.0.0 Ready to start TLS\r\n");
    assert_eq!(step, Step::StartTls);
    assert_eq!(s.process(), Step::NeedInput);
    s.tls_started();
    assert!(s.is_tls());
    assert_eq!(s.helo(), "");
    expect(
        &mut s,
        "MAIL FROM:<a@b.example>\r\n",
        "503 5.5.1 send HELO/EHLO first\r\n",
    );
    expect(&mut s, "EHLO c.example\r\n", EHLO_TLS);
    // RFC 3207 §4.2: a second STARTTLS is a bad sequence, not "unavailable".
    expect(&mut s, "STARTTLS\r\n", "503 5.5.1 TLS already active\r\n");
    let mut s = tls_greeted();
    expect(&mut s, "STARTTLS\r\n", "503 5.5.1 TLS already active\r\n");
}

#[test]
fn starttls_refuses_pipelined_injection() {
    let mut s = greeted();
    let (out, step) = exchange(&mut s, "STARTTLS\r\nMAIL FROM:<a@b.example>\r\n");
    assert_eq!(out, "554 5.5.1 pipelining after STARTTLS not allowed\r\n");
    assert_eq!(step, Step::Close);
}

#[test]
fn starttls_unavailable_or_with_arguments() {
    let mut st = settings();
    st.starttls_available = false;
    let mut s = session_with(st);
    expect(&mut s, "STARTTLS\r\n", "454 4.7.0 TLS not available\r\n");
    expect(
        &mut s,
        "STARTTLS now\r\n",
        "501 5.5.4 syntax error: no arguments allowed\r\n",
    );
}

#[test]
fn auth_refusals() {
    let mut s = greeted();
    let text538 = "538 5.7.11 encryption required for requested authentication mechanism\r\n";
    expect(
        &mut s,
        &format!("AUTH PLAIN {PLAIN_USER_PASS}\r\n"),
        text538,
    );
    let mut st = settings();
    st.auth_available = false;
    let mut s = session_with(st);
    expect(
        &mut s,
        "AUTH PLAIN\r\n",
        "503 5.5.1 authentication not enabled\r\n",
    );
    let mut s = tls_greeted();
    expect(
        &mut s,
        "AUTH CRAM-MD5\r\n",
        "504 5.5.4 unrecognized authentication type\r\n",
    );
    expect(
        &mut s,
        "AUTH\r\n",
        "501 5.5.4 syntax: AUTH mechanism [initial-response]\r\n",
    );
    expect(&mut s, "MAIL FROM:<a@b.example>\r\n", "250 2.1.0 Ok\r\n");
    let during = "503 5.5.1 AUTH not allowed during a mail transaction\r\n";
    expect(&mut s, "AUTH PLAIN\r\n", during);
}

#[test]
fn auth_plain_initial_response_allows_relaying() {
    let mut s = tls_greeted();
    let (out, step) = exchange(&mut s, &format!("AUTH PLAIN {PLAIN_USER_PASS}\r\n"));
    assert_eq!(out, "");
    assert_eq!(step, creds("", "user", "pass"));
    assert_eq!(s.process(), Step::NeedInput);
    s.auth_result(true);
    assert_eq!(
        text(s.take_output()),
        "235 2.7.0 authentication successful\r\n"
    );
    assert_eq!(s.auth_user(), Some("user"));
    expect(
        &mut s,
        "AUTH PLAIN\r\n",
        "503 5.5.1 already authenticated\r\n",
    );
    let tx = "MAIL FROM:<a@b.example>\r\nRCPT TO:<x@anywhere.example>\r\nDATA\r\n";
    let ready = "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n";
    expect(&mut s, tx, ready);
    let Step::Message(m) = exchange(&mut s, "hi\r\n.\r\n").1 else {
        panic!("no message");
    };
    assert_eq!(m.0.auth_user.as_deref(), Some("user"));
    let h = received_header(
        &m.0,
        "mx.example",
        true,
        "ID9",
        "Mon, 1 Jan 2024 00:00:00 +0000",
    );
    assert_eq!(
        h,
        "Received: from c.example ([192.0.2.7])\r\n\tby mx.example (impulse) with ESMTPSA id ID9\
         \r\n\tfor <x@anywhere.example>;\r\n\tMon, 1 Jan 2024 00:00:00 +0000\r\n"
    );
}

#[test]
fn auth_plain_challenge_and_failures() {
    let mut s = tls_greeted();
    expect(&mut s, "AUTH PLAIN\r\n", "334 \r\n");
    let (out, step) = exchange(&mut s, "AGFsaWNlAHNlY3JldA==\r\n");
    assert_eq!((out.as_str(), step), ("", creds("", "alice", "secret")));
    s.auth_result(false);
    assert_eq!(
        text(s.take_output()),
        "535 5.7.8 authentication credentials invalid\r\n"
    );
    expect(
        &mut s,
        "AUTH PLAIN\r\n*\r\n",
        "334 \r\n501 5.7.0 authentication cancelled\r\n",
    );
    expect(
        &mut s,
        "AUTH PLAIN !!!\r\n",
        "501 5.5.2 invalid base64 data\r\n",
    );
    // base64("user\0pass"): only two fields.
    expect(
        &mut s,
        "AUTH PLAIN dXNlcgBwYXNz\r\n",
        "501 5.5.2 malformed PLAIN response\r\n",
    );
}

/// RFC 4616 §2: an authorization identity other than the authenticated
/// one is refused (nobody may act for another user); "" or the user's own
/// name is fine.
#[test]
fn auth_plain_refuses_a_foreign_authorization_identity() {
    // base64("admin\0user\0pass")
    const AS_ADMIN: &str = "YWRtaW4AdXNlcgBwYXNz";
    let mut s = tls_greeted();
    let (out, step) = exchange(&mut s, &format!("AUTH PLAIN {AS_ADMIN}\r\n"));
    assert_eq!(
        out,
        "535 5.7.8 not authorized to act for the requested identity\r\n"
    );
    assert_eq!(step, Step::NeedInput, "no credentials handed to the driver");
    assert_eq!(s.auth_user(), None);
    // Same through the 334 challenge.
    expect(&mut s, "AUTH PLAIN\r\n", "334 \r\n");
    let (out, _) = exchange(&mut s, &format!("{AS_ADMIN}\r\n"));
    assert!(out.starts_with("535 5.7.8 "), "{out}");
    // base64("user\0user\0pass"): acting as yourself is allowed.
    let (out, step) = exchange(&mut s, "AUTH PLAIN dXNlcgB1c2VyAHBhc3M=\r\n");
    assert_eq!((out.as_str(), step), ("", creds("user", "user", "pass")));
    s.auth_result(true);
    assert_eq!(s.auth_user(), Some("user"));
}

/// The driver refuses an address over its failed-AUTH budget without
/// checking the password: 421 4.7.0 and the session ends, pipelined input
/// unread.
#[test]
fn auth_refused_for_too_many_failures_closes() {
    let mut s = tls_greeted();
    let (_, step) = exchange(&mut s, &format!("AUTH PLAIN {PLAIN_USER_PASS}\r\nNOOP\r\n"));
    assert_eq!(step, creds("", "user", "pass"));
    s.auth_refused_too_many_failures();
    assert_eq!(s.process(), Step::Close);
    assert_eq!(
        text(s.take_output()),
        "421 4.7.0 mx.example too many failed authentications, try again later\r\n"
    );
    assert_eq!(s.auth_user(), None);
}

#[test]
fn auth_login_exchange() {
    let mut s = tls_greeted();
    expect(&mut s, "AUTH LOGIN\r\n", "334 VXNlcm5hbWU6\r\n");
    expect(&mut s, "dXNlcg==\r\n", "334 UGFzc3dvcmQ6\r\n");
    let (out, step) = exchange(&mut s, "cGFzcw==\r\n");
    assert_eq!((out.as_str(), step), ("", creds("", "user", "pass")));
    s.auth_result(false);
    s.take_output();
    // Initial response carries the user name; pipelined commands wait.
    let (out, step) = exchange(&mut s, "AUTH LOGIN dXNlcg==\r\ncGFzcw==\r\nNOOP\r\n");
    assert_eq!(out, "334 UGFzc3dvcmQ6\r\n");
    assert_eq!(step, creds("", "user", "pass"));
    s.auth_result(true);
    assert_eq!(s.process(), Step::NeedInput);
    assert_eq!(
        text(s.take_output()),
        "235 2.7.0 authentication successful\r\n250 2.0.0 Ok\r\n"
    );
}

#[test]
fn auth_offered_without_tls_when_allowed() {
    let mut st = settings();
    st.auth_requires_tls = false;
    let mut s = session_with(st);
    s.feed(b"EHLO c\r\n");
    s.process();
    assert!(text(s.take_output()).contains("250-AUTH PLAIN LOGIN\r\n"));
    let (_, step) = exchange(&mut s, &format!("AUTH PLAIN {PLAIN_USER_PASS}\r\n"));
    assert_eq!(step, creds("", "user", "pass"));
}

#[test]
fn received_header_variants() {
    let env = crate::message::Envelope {
        mail_from: String::new(),
        ret: None,
        envid: None,
        body_type: Default::default(),
        smtputf8: false,
        recipients: Vec::new(),
        auth_user: None,
        peer: None,
        helo: String::new(),
        received_at_ms: 0,
        binding: None,
    };
    assert_eq!(
        received_header(&env, "mx", false, "I", "D"),
        "Received: from unknown\r\n\tby mx (impulse) with ESMTP id I;\r\n\tD\r\n"
    );
}

#[test]
fn auth_line_limit_and_rcpt_length() {
    let mut s = tls_greeted();
    expect(&mut s, "AUTH PLAIN\r\n", "334 \r\n");
    let long = "A".repeat(12_287) + "\r\n";
    expect(
        &mut s,
        &long,
        "500 5.5.6 authentication exchange line is too long\r\n",
    );
    expect(&mut s, "NOOP\r\n", "250 2.0.0 Ok\r\n");
    expect(&mut s, "MAIL FROM:<a@b.example>\r\n", "250 2.1.0 Ok\r\n");
    let rcpt = format!("RCPT TO:<{}@example.com>\r\n", "r".repeat(65));
    expect(&mut s, &rcpt, "501 5.1.3 address too long\r\n");
}

#[test]
fn received_header_plain_session_with_two_recipients() {
    let rcpt = |a: &str| crate::message::Recipient {
        address: a.into(),
        notify: None,
        orcpt: None,
    };
    let env = crate::message::Envelope {
        mail_from: "a@b.example".into(),
        ret: None,
        envid: None,
        body_type: Default::default(),
        smtputf8: false,
        recipients: vec![rcpt("x@example.com"), rcpt("y@example.com")],
        auth_user: None,
        peer: "2001:db8::1".parse().ok(),
        helo: "c.example".into(),
        received_at_ms: 0,
        binding: None,
    };
    assert_eq!(
        received_header(&env, "mx", false, "I", "D"),
        "Received: from c.example ([2001:db8::1])\r\n\tby mx (impulse) with ESMTP id I;\r\n\tD\r\n"
    );
}
