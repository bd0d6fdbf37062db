//! Misbehaving servers: malformed or oversized replies, replies out of
//! turn, a connection closed or silent at each stage. Each must end in a
//! typed error, transient results for the recipients in flight, `Closed`.

use super::*;

/// A session with one recipient accepted and the content sent.
fn in_data_done() -> ClientSession {
    let mut s = connected(settings(), EHLO_FULL);
    s.submit(tx(&["b@y.example", "c@y.example"], "hi\n"))
        .unwrap();
    converse(
        &mut s,
        &[(
            "MAIL FROM:<a@x.example> SIZE=4\nRCPT TO:<b@y.example>\nRCPT TO:<c@y.example>\nDATA\n",
            "250 ok\n250 ok\n550 5.1.1 no\n354 go\n",
        )],
    );
    assert_output(&mut s, "hi\n.\n");
    s
}

/// Feeds `input` to a session in `DataDone`; returns the steps.
fn feed_in_data_done(input: &[u8]) -> Vec<ClientStep> {
    let mut s = in_data_done();
    s.feed(input);
    let mut steps = Vec::new();
    drain(&mut s, &mut steps);
    assert_eq!(s.stage(), Stage::Closed);
    s.feed(b"250 late\r\n");
    assert_eq!(s.poll(), ClientStep::Closed);
    steps
}

/// Asserts b@y got `Transient(expected)`, c@y kept its RCPT refusal, and
/// the session failed with `error`.
fn assert_aborted(steps: &[ClientStep], expected: &str, error: &SessionError) {
    assert_eq!(
        outcomes(done(steps)),
        [
            format!("b@y.example transient {expected}"),
            "c@y.example permanent 550 5.1.1 no".to_string()
        ]
    );
    assert_eq!(failed(steps), Some(error));
    assert_eq!(steps.last(), Some(&ClientStep::Closed));
}

fn protocol(e: ReplyError) -> SessionError {
    SessionError::Protocol(ProtocolError::Reply(e))
}

#[test]
fn endless_continuation_lines() {
    let input = "250-more\r\n".repeat(MAX_REPLY_LINES + 1);
    let steps = feed_in_data_done(input.as_bytes());
    let e = protocol(ReplyError::TooManyLines {
        limit: MAX_REPLY_LINES,
    });
    assert_aborted(
        &steps,
        "451 4.5.0 [internal] protocol error: reply with more than 100 lines",
        &e,
    );
    // Exactly the limit is fine.
    let mut input = "250-more\r\n".repeat(MAX_REPLY_LINES - 1);
    input.push_str("250 ok\r\n");
    assert_eq!(done(&feed_in_data_done_ok(input.as_bytes())).delivered(), 1);
}

fn feed_in_data_done_ok(input: &[u8]) -> Vec<ClientStep> {
    let mut s = in_data_done();
    s.feed(input);
    let mut steps = Vec::new();
    drain(&mut s, &mut steps);
    steps
}

#[test]
fn giant_line_fails_before_its_end() {
    let mut s = in_data_done();
    let chunk = vec![b'2'; 1000];
    for _ in 0..3 {
        s.feed(&chunk);
    }
    let mut steps = Vec::new();
    drain(&mut s, &mut steps);
    let e = protocol(ReplyError::LineTooLong {
        limit: MAX_REPLY_LINE_OCTETS,
    });
    assert_aborted(
        &steps,
        "451 4.5.0 [internal] protocol error: reply line longer than 2048 octets",
        &e,
    );
    // A line of exactly the limit (plus CRLF) is accepted.
    let line = format!("250 {}\r\n", "x".repeat(MAX_REPLY_LINE_OCTETS - 4));
    assert_eq!(done(&feed_in_data_done_ok(line.as_bytes())).delivered(), 1);
}

#[test]
fn malformed_codes() {
    let cases: [(&[u8], ReplyError); 6] = [
        (b"2x0 ok\r\n", ReplyError::BadCode),
        (b"25\r\n", ReplyError::BadCode),
        (b"199 ok\r\n", ReplyError::CodeOutOfRange(199)),
        (b"600 ok\r\n", ReplyError::CodeOutOfRange(600)),
        (b"250_ok\r\n", ReplyError::BadSeparator(b'_')),
        (
            b"250-a\r\n251 b\r\n",
            ReplyError::WrongContinuation {
                expected: 250,
                found: 251,
            },
        ),
    ];
    for (input, error) in cases {
        let expected = format!("451 4.5.0 [internal] protocol error: {error}");
        assert_aborted(&feed_in_data_done(input), &expected, &protocol(error));
    }
}

#[test]
fn misplaced_reply_classes() {
    let steps = feed_in_data_done(b"354 more please\r\n");
    assert!(
        matches!(failed(&steps), Some(SessionError::Protocol(ProtocolError::UnexpectedReply(r))) if r.code == 354)
    );
    let mut s = connected(settings(), EHLO_BARE);
    s.submit(tx(&["b@y.example"], "hi\n")).unwrap();
    let steps = converse(
        &mut s,
        &[
            ("MAIL FROM:<a@x.example>\n", "250 ok\n"),
            ("RCPT TO:<b@y.example>\n", "250 ok\n"),
            ("DATA\n", "250 sure\n"),
        ],
    );
    assert!(
        matches!(failed(&steps), Some(SessionError::Protocol(ProtocolError::UnexpectedReply(r))) if r.code == 250)
    );
    assert_eq!(done(&steps).recipients[0].outcome.reply().code, 451);
}

#[test]
fn reply_when_nothing_was_sent() {
    let mut s = connected(settings(), EHLO_FULL);
    s.feed(b"250 surprise\r\n");
    let mut steps = Vec::new();
    drain(&mut s, &mut steps);
    assert!(matches!(
        &steps[..],
        [
            ClientStep::Failed(SessionError::Protocol(ProtocolError::UnexpectedReply(_))),
            ClientStep::Closed
        ]
    ));
    // Extra replies after a pipelined transaction's last one, same read.
    let mut s = in_data_done();
    s.feed(b"250 ok\r\n250 extra\r\n");
    let mut steps = Vec::new();
    drain(&mut s, &mut steps);
    assert_eq!(done(&steps).delivered(), 1);
    assert!(matches!(
        failed(&steps),
        Some(SessionError::Protocol(ProtocolError::UnexpectedReply(_)))
    ));
}

#[test]
fn closed_mid_data() {
    let mut s = in_data_done();
    s.feed(b"250 par");
    s.connection_closed();
    let mut steps = Vec::new();
    drain(&mut s, &mut steps);
    assert_aborted(
        &steps,
        "451 4.4.2 [internal] connection closed by remote host",
        &SessionError::ConnectionClosed(Stage::DataDone),
    );
    assert!(!s.has_output());
}

#[test]
fn closed_when_idle_or_quitting_is_quiet() {
    let mut s = connected(settings(), EHLO_FULL);
    s.connection_closed();
    assert_eq!(s.poll(), ClientStep::Closed);
    let mut s = connected(settings(), EHLO_FULL);
    s.quit();
    s.connection_closed();
    assert_eq!(s.poll(), ClientStep::Closed);
}

/// Drives a fresh session to `stage` (lock-step, STARTTLS opportunistic).
fn at_stage(stage: Stage) -> ClientSession {
    let opportunistic = ClientSettings {
        tls: TlsPolicy::Opportunistic,
        ..settings()
    };
    let mut s = ClientSession::new(opportunistic, false);
    let mut script: Vec<(&str, &str)> = vec![
        ("", BANNER),
        (EHLO, "250-mx\n250 STARTTLS\n"),
        ("STARTTLS\n", "220 go\n"),
    ];
    let tx_script = [
        ("MAIL FROM:<a@x.example>\n", "250 ok\n"),
        ("RCPT TO:<b@y.example>\n", "250 ok\n"),
        ("DATA\n", "354 go\n"),
    ];
    let order = [
        Stage::Banner,
        Stage::Ehlo,
        Stage::StartTls,
        Stage::TlsHandshake,
    ];
    if let Some(n) = order.iter().position(|&s| s == stage) {
        converse(&mut s, &script[..n]);
        assert_eq!(s.stage(), stage);
        return s;
    }
    converse(&mut s, &script);
    s.tls_started();
    script = vec![(EHLO, "250 mx\n")];
    converse(&mut s, &script);
    match stage {
        Stage::Idle => {}
        Stage::Quit => s.quit(),
        Stage::Rset => {
            s.submit(tx(&["b@y.example"], "hi\n")).unwrap();
            converse(&mut s, &[("MAIL FROM:<a@x.example>\n", "550 no\n")]);
        }
        _ => {
            s.submit(tx(&["b@y.example"], "hi\n")).unwrap();
            let n = [Stage::Mail, Stage::Rcpt, Stage::Data, Stage::DataDone]
                .iter()
                .position(|&s| s == stage)
                .unwrap();
            converse(&mut s, &tx_script[..n]);
        }
    }
    assert_eq!(s.stage(), stage);
    s
}

#[test]
fn timeout_at_each_stage() {
    let cases = [
        (Stage::Banner, "451 4.4.2 [internal] no banner", false),
        (
            Stage::Ehlo,
            "451 4.4.2 [internal] no HELO/EHLO response",
            false,
        ),
        (
            Stage::StartTls,
            "451 4.7.5 [internal] no tls go-ahead",
            false,
        ),
        (
            Stage::TlsHandshake,
            "451 4.7.5 [internal] TLS negotiation failed",
            false,
        ),
        (
            Stage::Mail,
            "451 4.4.2 [internal] no MAIL FROM response",
            true,
        ),
        (
            Stage::Rcpt,
            "451 4.4.2 [internal] no RCPT TO response",
            true,
        ),
        (Stage::Data, "451 4.4.2 [internal] no DATA response", true),
        (
            Stage::DataDone,
            "451 4.4.2 [internal] no BODY response",
            true,
        ),
        (Stage::Rset, "451 4.4.2 [internal] no RSET response", false),
    ];
    for (stage, text, in_tx) in cases {
        let mut s = at_stage(stage);
        s.take_output();
        s.timeout();
        let mut steps = Vec::new();
        drain(&mut s, &mut steps);
        assert_eq!(
            failed(&steps),
            Some(&SessionError::Timeout(stage)),
            "{stage:?}"
        );
        assert_eq!(SessionError::Timeout(stage).reply().to_string(), text);
        if in_tx {
            assert_eq!(
                outcomes(done(&steps)),
                [format!("b@y.example transient {text}")]
            );
        }
        assert_eq!(steps.last(), Some(&ClientStep::Closed), "{stage:?}");
        assert!(!s.has_output(), "{stage:?}");
        s.timeout();
        s.connection_closed();
        assert_eq!(s.poll(), ClientStep::Closed);
    }
    for stage in [Stage::Idle, Stage::Quit] {
        let mut s = at_stage(stage);
        s.timeout();
        assert_eq!(s.poll(), ClientStep::Closed);
    }
}
