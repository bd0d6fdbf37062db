//! MAIL, RCPT, DATA sequencing, parameters, relay control and limits.

use super::*;
use crate::message::{BodyType, DsnRet, Notify, Recipient};
use crate::reply::Reply;

const OK_MAIL: &str = "250 2.1.0 Ok\r\n";
const OK_RCPT: &str = "250 2.1.5 Ok\r\n";
const GO_AHEAD: &str = "354 End data with <CR><LF>.<CR><LF>\r\n";

fn message(step: Step) -> (crate::message::Envelope, Vec<u8>) {
    match step {
        Step::Message(m) => *m,
        other => panic!("expected a message, got {other:?}"),
    }
}

#[test]
fn full_transaction_unpipelined() {
    let mut s = greeted();
    expect(&mut s, "MAIL FROM:<a@sender.example>\r\n", OK_MAIL);
    expect(&mut s, "RCPT TO:<b@example.com>\r\n", OK_RCPT);
    expect(&mut s, "DATA\r\n", GO_AHEAD);
    assert!(s.in_data());
    expect(&mut s, "Subject: hi\r\n\r\nbody\r\n", "");
    let (out, step) = exchange(&mut s, ".\r\n");
    assert_eq!(out, "");
    assert!(!s.in_data());
    let (env, body) = message(step);
    assert_eq!(body, b"Subject: hi\r\n\r\nbody\r\n");
    assert_eq!(env.mail_from, "a@sender.example");
    assert_eq!(env.helo, "client.example");
    assert_eq!(env.peer, "192.0.2.7".parse().ok());
    assert_eq!(env.received_at_ms, 0);
    assert_eq!(env.auth_user, None);
    assert_eq!(
        env.recipients,
        vec![Recipient {
            address: "b@example.com".into(),
            notify: None,
            orcpt: None
        }]
    );
    // Paused until the driver answers.
    assert_eq!(s.process(), Step::NeedInput);
    assert!(!s.has_output());
    s.message_stored(Ok("ID1".into()));
    assert_eq!(text(s.take_output()), "250 2.0.0 Ok: queued as ID1\r\n");
    let (out, step) = exchange(&mut s, "QUIT\r\n");
    assert_eq!((out.as_str(), step), ("221 2.0.0 Bye\r\n", Step::Close));
}

#[test]
fn full_transaction_pipelined_with_params() {
    let mut s = session();
    let input = "EHLO c.example\r\n\
        MAIL FROM:<a@s.example> SIZE=100 BODY=8BITMIME RET=HDRS ENVID=ab+2Bc AUTH=<>\r\n\
        RCPT TO:<x@example.com> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;x+40example.com\r\n\
        RCPT TO:<y@a.sub.example> NOTIFY=never\r\n\
        RCPT TO:<z@elsewhere.example>\r\n\
        DATA\r\n";
    let (out, step) = exchange(&mut s, input);
    assert_eq!(
        out,
        EHLO_PLAIN.to_string()
            + OK_MAIL
            + OK_RCPT
            + OK_RCPT
            + "550 5.7.1 relaying denied\r\n"
            + GO_AHEAD
    );
    assert_eq!(step, Step::NeedInput);
    let (out, step) = exchange(&mut s, "x\r\n.\r\nQUIT\r\n");
    assert_eq!(out, "");
    let (env, body) = message(step);
    assert_eq!(body, b"x\r\n");
    assert_eq!(env.body_type, BodyType::EightBitMime);
    assert_eq!(env.ret, Some(DsnRet::Hdrs));
    assert_eq!(env.envid.as_deref(), Some("ab+c"));
    assert_eq!(env.recipients.len(), 2);
    let n = env.recipients[0].notify.unwrap_or_default();
    assert!(n.success && n.delay && !n.failure && !n.never);
    assert_eq!(
        env.recipients[0].orcpt.as_deref(),
        Some("rfc822;x+40example.com")
    );
    assert_eq!(
        env.recipients[1].notify,
        Some(Notify {
            never: true,
            ..Notify::default()
        })
    );
    // QUIT stays buffered until the message is stored.
    assert_eq!(s.process(), Step::NeedInput);
    s.message_stored(Ok("Q".into()));
    assert_eq!(s.process(), Step::Close);
    assert_eq!(
        text(s.take_output()),
        "250 2.0.0 Ok: queued as Q\r\n221 2.0.0 Bye\r\n"
    );
}

#[test]
fn sequencing_errors() {
    let mut s = session();
    expect(
        &mut s,
        "MAIL FROM:<a@b.example>\r\n",
        "503 5.5.1 send HELO/EHLO first\r\n",
    );
    let mut s = greeted();
    expect(
        &mut s,
        "RCPT TO:<b@example.com>\r\n",
        "503 5.5.1 need MAIL command\r\n",
    );
    expect(&mut s, "DATA\r\n", "503 5.5.1 need MAIL command\r\n");
    expect(&mut s, "MAIL FROM:<a@b.example>\r\n", OK_MAIL);
    expect(
        &mut s,
        "MAIL FROM:<a@b.example>\r\n",
        "503 5.5.1 nested MAIL command\r\n",
    );
    expect(&mut s, "DATA\r\n", "503 5.5.1 need RCPT command\r\n");
    expect(&mut s, "RSET\r\n", "250 2.0.0 Ok\r\n");
    expect(
        &mut s,
        "RCPT TO:<b@example.com>\r\n",
        "503 5.5.1 need MAIL command\r\n",
    );
}

#[test]
fn helo_without_require_ehlo_and_helo_mode_params() {
    let mut st = settings();
    st.require_ehlo = false;
    let mut s = session_with(st);
    expect(
        &mut s,
        "MAIL FROM:<a@b.example> SIZE=10\r\n",
        "555 5.5.4 parameters require EHLO\r\n",
    );
    expect(&mut s, "MAIL FROM:<a@b.example>\r\n", OK_MAIL);
    expect(
        &mut s,
        "RCPT TO:<b@example.com> NOTIFY=NEVER\r\n",
        "555 5.5.4 parameters require EHLO\r\n",
    );
    let mut s = greeted();
    expect(&mut s, "HELO c\r\n", "250 mx.example\r\n");
    expect(
        &mut s,
        "MAIL FROM:<a@b.example> BODY=8BITMIME\r\n",
        "555 5.5.4 parameters require EHLO\r\n",
    );
}

#[test]
fn mail_parameter_errors() {
    let mut s = lenient();
    let cases = [
        (
            "MAIL FROM:<a@b.example> FOO=1\r\n",
            "555 5.5.4 unsupported parameter\r\n",
        ),
        (
            "MAIL FROM:<a@b.example> SIZE=abc\r\n",
            "501 5.5.4 bad SIZE value\r\n",
        ),
        (
            "MAIL FROM:<a@b.example> BODY=BINARYMIME\r\n",
            "501 5.5.4 unsupported BODY type\r\n",
        ),
        (
            "MAIL FROM:<a@b.example> RET=ALL\r\n",
            "501 5.5.4 RET must be FULL or HDRS\r\n",
        ),
        (
            "MAIL FROM:<a@b.example> ENVID=a+zz\r\n",
            "501 5.5.4 bad ENVID xtext\r\n",
        ),
    ];
    for (input, reply) in cases {
        expect(&mut s, input, reply);
        expect(&mut s, "RSET\r\n", "250 2.0.0 Ok\r\n");
    }
    let more = [
        (
            "MAIL FROM:<a@b.example> SIZE=1 SIZE=2\r\n",
            "501 5.5.4 duplicate parameter\r\n",
        ),
        (
            "MAIL FROM:<a@b.example> SIZE=1001\r\n",
            "552 5.3.4 message size exceeds fixed limit\r\n",
        ),
        (
            "MAIL FROM:a@b.example\r\n",
            "501 5.1.7 path must be enclosed in <>\r\n",
        ),
        (
            "MAIL TO:<a@b.example>\r\n",
            "501 5.1.7 syntax: MAIL FROM:<address>\r\n",
        ),
        (
            "MAIL FROM:<a@b.example>x\r\n",
            "501 5.1.7 garbage after path\r\n",
        ),
        ("MAIL FROM:<a@@b>\r\n", "501 5.1.7 bad address syntax\r\n"),
    ];
    for (input, reply) in more {
        expect(&mut s, input, reply);
    }
}

#[test]
fn mail_addresses() {
    let mut s = greeted();
    expect(&mut s, "MAIL FROM:<>\r\n", OK_MAIL);
    expect(&mut s, "RSET\r\n", "250 2.0.0 Ok\r\n");
    expect(&mut s, "mail from: <a@b.example> size=10\r\n", OK_MAIL);
    expect(&mut s, "RSET\r\n", "250 2.0.0 Ok\r\n");
    expect(
        &mut s,
        "MAIL FROM:<jörg@b.example>\r\n",
        "553 5.6.7 non-ASCII address requires SMTPUTF8\r\n",
    );
    expect(&mut s, "MAIL FROM:<jörg@b.example> SMTPUTF8\r\n", OK_MAIL);
    expect(&mut s, "RCPT TO:<ü@example.com>\r\n", OK_RCPT);
    let long = format!("MAIL FROM:<{}@b.example>\r\n", "l".repeat(65));
    let mut s = greeted();
    expect(&mut s, &long, "501 5.1.7 address too long\r\n");
    let mut st = settings();
    st.allow_null_envelope_sender = false;
    let mut s = session_with(st);
    expect(&mut s, "EHLO c\r\n", EHLO_PLAIN);
    expect(
        &mut s,
        "MAIL FROM:<>\r\n",
        "550 5.7.1 null sender not allowed\r\n",
    );
}

#[test]
fn rcpt_parameters_and_addresses() {
    let mut s = lenient();
    expect(&mut s, "MAIL FROM:<a@b.example>\r\n", OK_MAIL);
    let cases = [
        (
            "RCPT TO:<x@example.com> NOTIFY=NEVER,SUCCESS\r\n",
            "501 5.5.4 NOTIFY=NEVER cannot be combined\r\n",
        ),
        (
            "RCPT TO:<x@example.com> NOTIFY=SOMETIMES\r\n",
            "501 5.5.4 bad NOTIFY value\r\n",
        ),
        (
            "RCPT TO:<x@example.com> ORCPT=rfc822\r\n",
            "501 5.5.4 bad ORCPT value\r\n",
        ),
        (
            "RCPT TO:<x@example.com> XYZ\r\n",
            "555 5.5.4 unsupported parameter\r\n",
        ),
        ("RCPT TO:<>\r\n", "501 5.1.3 bad address syntax\r\n"),
        (
            "RCPT TO:x@example.com\r\n",
            "501 5.1.3 path must be enclosed in <>\r\n",
        ),
    ];
    for (input, reply) in cases {
        expect(&mut s, input, reply);
    }
}

#[test]
fn relay_control() {
    let mut s = greeted();
    expect(&mut s, "MAIL FROM:<a@b.example>\r\n", OK_MAIL);
    expect(&mut s, "RCPT TO:<x@EXAMPLE.com>\r\n", OK_RCPT);
    expect(
        &mut s,
        "RCPT TO:<x@sub.example>\r\n",
        "550 5.7.1 relaying denied\r\n",
    );
    expect(&mut s, "RCPT TO:<x@deep.a.sub.example>\r\n", OK_RCPT);
    expect(
        &mut s,
        "RCPT TO:<x@[192.0.2.1]>\r\n",
        "550 5.7.1 relaying denied\r\n",
    );
    // <postmaster> means postmaster@hostname, which is not a relay domain here.
    expect(
        &mut s,
        "RCPT TO:<Postmaster>\r\n",
        "550 5.7.1 relaying denied\r\n",
    );
    let mut st = settings();
    st.relay_domains.push("mx.example".into());
    let mut s = session_with(st);
    expect(
        &mut s,
        "EHLO c\r\nMAIL FROM:<>\r\n",
        &(EHLO_PLAIN.to_string() + OK_MAIL),
    );
    expect(
        &mut s,
        "RCPT TO:<postmaster>\r\nDATA\r\n",
        &(OK_RCPT.to_string() + GO_AHEAD),
    );
    let (_, step) = exchange(&mut s, ".\r\n");
    assert_eq!(
        message(step).0.recipients[0].address,
        "postmaster@mx.example"
    );
    let mut st = settings();
    st.can_relay = true;
    let mut s = session_with(st);
    expect(
        &mut s,
        "EHLO c\r\nMAIL FROM:<>\r\n",
        &(EHLO_PLAIN.to_string() + OK_MAIL),
    );
    expect(&mut s, "RCPT TO:<x@anywhere.example>\r\n", OK_RCPT);
}

#[test]
fn recipient_limit_is_not_an_error() {
    let mut s = greeted();
    let mut input = "MAIL FROM:<a@b.example>\r\n".to_string();
    let mut expected = OK_MAIL.to_string();
    for i in 0..10 {
        input.push_str(&format!("RCPT TO:<r{i}@example.com>\r\n"));
        expected.push_str(if i < 3 {
            OK_RCPT
        } else {
            "452 4.5.3 too many recipients\r\n"
        });
    }
    input.push_str("DATA\r\n");
    expected.push_str(GO_AHEAD);
    expect(&mut s, &input, &expected);
    let (_, step) = exchange(&mut s, ".\r\n");
    assert_eq!(message(step).0.recipients.len(), 3);
}

#[test]
fn data_with_no_valid_recipients() {
    let mut s = greeted();
    expect(
        &mut s,
        "MAIL FROM:<a@b.example>\r\nRCPT TO:<x@other.example>\r\nDATA\r\n",
        "250 2.1.0 Ok\r\n550 5.7.1 relaying denied\r\n554 5.5.1 no valid recipients\r\n",
    );
    expect(
        &mut s,
        "DATA now\r\n",
        "501 5.5.4 syntax error: no arguments allowed\r\n",
    );
}

#[test]
fn store_failure_and_reception_limit() {
    let mut st = settings();
    st.max_receptions_per_connection = 1;
    let mut s = session_with(st);
    let tx = "MAIL FROM:<a@b.example>\r\nRCPT TO:<x@example.com>\r\nDATA\r\n";
    expect(&mut s, "EHLO c\r\n", EHLO_PLAIN);
    expect(&mut s, tx, &(OK_MAIL.to_string() + OK_RCPT + GO_AHEAD));
    let (_, step) = exchange(&mut s, ".\r\n");
    message(step);
    s.message_stored(Err(crate::smtp::Reply::new(
        451,
        "4.3.0",
        "temporary failure",
    )));
    assert_eq!(text(s.take_output()), "451 4.3.0 temporary failure\r\n");
    // A failed store does not count as a reception.
    expect(&mut s, tx, &(OK_MAIL.to_string() + OK_RCPT + GO_AHEAD));
    let (_, step) = exchange(&mut s, ".\r\n");
    message(step);
    s.message_stored(Ok("ID2".into()));
    let (out, step) = exchange(&mut s, "MAIL FROM:<a@b.example>\r\n");
    assert_eq!(
        out,
        "250 2.0.0 Ok: queued as ID2\r\n421 4.7.0 too many messages in this session\r\n"
    );
    assert_eq!(step, Step::Close);
}

#[test]
fn ehlo_resets_transaction() {
    let mut s = greeted();
    expect(&mut s, "MAIL FROM:<a@b.example>\r\n", OK_MAIL);
    expect(&mut s, "EHLO again\r\n", EHLO_PLAIN);
    expect(&mut s, "MAIL FROM:<a@b.example>\r\n", OK_MAIL);
}

#[test]
fn recipient_hook_is_off_by_default_and_pauses_when_on() {
    let mut s = greeted();
    expect(&mut s, "MAIL FROM:<a@b.example>\r\n", "250 2.1.0 Ok\r\n");
    expect(&mut s, "RCPT TO:<x@example.com>\r\n", "250 2.1.5 Ok\r\n");

    let mut s = greeted();
    s.confirm_recipients(true);
    // Pipelined: the session stops at each RCPT until the driver decides.
    let (out, step) = exchange(
        &mut s,
        "MAIL FROM:<a@b.example>\r\nRCPT TO:<x@example.com>\r\nRCPT TO:<y@example.com>\r\n\
         RCPT TO:<z@elsewhere.example>\r\nDATA\r\n",
    );
    assert_eq!(out, "250 2.1.0 Ok\r\n");
    assert_eq!(step, Step::Recipient("x@example.com".into()));
    assert_eq!(s.process(), Step::NeedInput, "paused until decided");
    s.recipient_checked(Some(Reply::new(451, "4.7.1", "greylisted")));
    assert_eq!(s.process(), Step::Recipient("y@example.com".into()));
    s.recipient_checked(None);
    // The session's own checks come first: relaying is refused without asking.
    let (out, step) = exchange(&mut s, "");
    assert_eq!(
        out,
        "451 4.7.1 greylisted\r\n250 2.1.5 Ok\r\n550 5.7.1 relaying denied\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
    );
    assert_eq!(step, Step::NeedInput);
    let (_, step) = exchange(&mut s, "Subject: t\r\n\r\nhi\r\n.\r\n");
    let Step::Message(msg) = step else {
        panic!("expected a message, got {step:?}")
    };
    let addrs: Vec<_> = msg
        .0
        .recipients
        .iter()
        .map(|r| r.address.as_str())
        .collect();
    assert_eq!(addrs, ["y@example.com"]);
}

#[test]
fn recipient_hook_refusals_do_not_count_as_client_errors_and_421_closes() {
    let mut st = settings();
    st.max_errors_per_session = 1;
    let mut s = session_with(st);
    s.confirm_recipients(true);
    expect(&mut s, "EHLO c\r\n", EHLO_PLAIN);
    expect(&mut s, "MAIL FROM:<a@b.example>\r\n", "250 2.1.0 Ok\r\n");
    for _ in 0..3 {
        let (_, step) = exchange(&mut s, "RCPT TO:<x@example.com>\r\n");
        assert_eq!(step, Step::Recipient("x@example.com".into()));
        s.recipient_checked(Some(Reply::new(550, "5.1.1", "no such user")));
        assert_eq!(s.process(), Step::NeedInput);
        assert_eq!(text(s.take_output()), "550 5.1.1 no such user\r\n");
    }
    let (_, step) = exchange(&mut s, "RCPT TO:<x@example.com>\r\n");
    assert_eq!(step, Step::Recipient("x@example.com".into()));
    s.recipient_checked(Some(Reply::new(421, "4.7.0", "too busy")));
    assert_eq!(s.process(), Step::Close);
    assert_eq!(text(s.take_output()), "421 4.7.0 too busy\r\n");
}

#[test]
fn refusals_are_reported_with_their_phase() {
    use crate::smtp::server::RejectPhase;
    let mut s = greeted();
    assert!(
        s.take_rejections().is_empty(),
        "greeting and EHLO are not refusals"
    );
    exchange(&mut s, "RCPT TO:<b@example.com>\r\n");
    exchange(&mut s, "MAIL FROM:<a@sender.example> BOGUS=1\r\n");
    exchange(&mut s, "MAIL FROM:<a@sender.example>\r\n");
    exchange(&mut s, "RCPT TO:<not an address\r\n");
    exchange(&mut s, "XYZZY\r\n");
    exchange(&mut s, "NOOP\r\n");
    let got: Vec<(RejectPhase, u16)> = s
        .take_rejections()
        .into_iter()
        .map(|(p, r)| (p, r.code))
        .collect();
    assert_eq!(
        got.iter().map(|g| g.0).collect::<Vec<_>>(),
        vec![
            RejectPhase::Rcpt,
            RejectPhase::Mail,
            RejectPhase::Rcpt,
            RejectPhase::Command
        ],
        "{got:?}"
    );
    assert!(got.iter().all(|(_, c)| *c >= 500), "{got:?}");
    assert!(s.take_rejections().is_empty(), "taken once");
}
