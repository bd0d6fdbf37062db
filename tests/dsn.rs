//! DSN generation against golden files, parsed back with mail-parser.
//!
//! `UPDATE_GOLDEN=1 cargo test --test dsn` rewrites `tests/golden/dsn/`;
//! review the diff before committing it.

use impulse::bounce::{self, Action, Dsn, DsnSettings, InlineOriginal, RecipientReport};
use impulse::message::{BodyType, DsnRet, Envelope, Notify, Recipient};
use mail_parser::{MessageParser, MimeHeaders, PartType};
use std::path::PathBuf;

/// 2024-03-01T12:00:00Z.
const RECEIVED_MS: u64 = 1_709_294_400_000;
/// One hour and a bit later.
const NOW_MS: u64 = RECEIVED_MS + 3_700_500;

const ORIGINAL: &[u8] = b"Received: from client.example.com ([192.0.2.7])\r\n\
    \tby mta.example.org; Fri, 01 Mar 2024 12:00:00 +0000\r\n\
    From: Alice <alice@example.com>\r\n\
    To: bob@example.net, carol@example.net\r\n\
    Subject: Quarterly numbers\r\n\
    Message-ID: <q1@example.com>\r\n\
    Date: Fri, 01 Mar 2024 11:59:58 +0000\r\n\
    \r\n\
    Hello Bob,\r\n\
    \r\n\
    the numbers are attached.\r\n";

fn settings() -> DsnSettings {
    DsnSettings::new("mta.example.org")
}

fn rcpt(address: &str, notify: Option<Notify>, orcpt: Option<&str>) -> Recipient {
    Recipient {
        address: address.into(),
        notify,
        orcpt: orcpt.map(String::from),
    }
}

fn envelope(ret: Option<DsnRet>, envid: Option<&str>, recipients: Vec<Recipient>) -> Envelope {
    Envelope {
        mail_from: "alice@example.com".into(),
        ret,
        envid: envid.map(String::from),
        body_type: BodyType::SevenBit,
        smtputf8: false,
        recipients,
        auth_user: None,
        peer: None,
        helo: "client.example.com".into(),
        received_at_ms: RECEIVED_MS,
        binding: None,
    }
}

fn failed(r: Recipient, status: &str, mta: &str, reply: &str) -> RecipientReport {
    RecipientReport {
        recipient: r,
        action: Action::Failed,
        status: status.into(),
        remote_mta: Some(mta.into()),
        diagnostic: Some(reply.into()),
        last_attempt_ms: Some(NOW_MS - 500),
        will_retry_until_ms: None,
    }
}

fn notify(failure: bool, delay: bool, success: bool) -> Option<Notify> {
    Some(Notify {
        never: false,
        success,
        failure,
        delay,
    })
}

const NEVER: Option<Notify> = Some(Notify {
    never: true,
    success: false,
    failure: false,
    delay: false,
});

/// Compares with (or, under UPDATE_GOLDEN=1, writes) the golden file.
fn check_golden(name: &str, dsn: &Dsn) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/dsn")
        .join(format!("{name}.eml"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &dsn.content).expect("write golden file");
        return;
    }
    let want = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    if want != dsn.content {
        panic!(
            "{name}: DSN differs from {}\n--- got ---\n{}",
            path.display(),
            String::from_utf8_lossy(&dsn.content)
        );
    }
}

/// Structural checks every DSN must pass.
fn check_well_formed(dsn: &Dsn) {
    let text = &dsn.content;
    for (i, line) in text.split(|b| *b == b'\n').enumerate() {
        assert!(line.len() <= 999, "line {i} is {} octets", line.len());
    }
    for (i, b) in text.iter().enumerate() {
        if *b == b'\n' {
            assert!(i > 0 && text[i - 1] == b'\r', "bare LF at {i}");
        }
        if *b == b'\r' {
            assert_eq!(text.get(i + 1), Some(&b'\n'), "bare CR at {i}");
        }
    }
    assert!(
        dsn.envelope.mail_from.is_empty(),
        "DSN must use the null sender"
    );
    assert_eq!(dsn.envelope.recipients.len(), 1);
    assert_eq!(dsn.envelope.recipients[0].address, "alice@example.com");
    assert_eq!(dsn.envelope.received_at_ms, NOW_MS);
}

/// Parses the DSN and returns (part content types, delivery-status text,
/// third part bytes).
fn parse_report(dsn: &Dsn) -> (Vec<String>, String, Vec<u8>) {
    let msg = MessageParser::default()
        .parse(&dsn.content)
        .expect("mail-parser parses the DSN");
    let ct = msg.content_type().expect("top-level Content-Type");
    assert_eq!(ct.ctype(), "multipart");
    assert_eq!(ct.subtype(), Some("report"));
    assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
    assert_eq!(
        msg.from().and_then(|a| a.first()).and_then(|a| a.address()),
        Some("mailer-daemon@mta.example.org")
    );
    assert_eq!(
        msg.to().and_then(|a| a.first()).and_then(|a| a.address()),
        Some("alice@example.com")
    );
    assert_eq!(
        msg.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-replied")
    );
    assert!(msg
        .message_id()
        .is_some_and(|id| id.ends_with("@mta.example.org")));
    assert!(msg.date().is_some());
    let PartType::Multipart(children) = &msg.parts[0].body else {
        panic!("root is not multipart");
    };
    let mut types = Vec::new();
    let mut status = String::new();
    let mut third = Vec::new();
    for (i, id) in children.iter().enumerate() {
        let part = &msg.parts[*id as usize];
        let ct = part.content_type().expect("part Content-Type");
        types.push(format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or("")));
        match i {
            1 => status = String::from_utf8_lossy(part.contents()).into_owned(),
            2 => {
                third = match &part.body {
                    PartType::Message(m) => m.raw_message().to_vec(),
                    _ => part.contents().to_vec(),
                }
            }
            _ => {}
        }
    }
    (types, status, third)
}

#[test]
fn single_failure_ret_hdrs() {
    let r = rcpt("bob@example.net", None, None);
    let env = envelope(Some(DsnRet::Hdrs), None, vec![r.clone()]);
    let reports = [failed(
        r,
        "5.1.1",
        "mx1.example.net",
        "smtp; 550 5.1.1 <bob@example.net>: user unknown",
    )];
    let dsn = bounce::generate(
        &settings(),
        &env,
        ORIGINAL,
        &reports,
        NOW_MS,
        "0192F3A4B5C6-01-0000002A-1",
    )
    .expect("a failure with default NOTIFY gets a DSN");
    check_well_formed(&dsn);
    assert_eq!(dsn.envelope.body_type, BodyType::SevenBit);
    let (types, status, third) = parse_report(&dsn);
    assert_eq!(
        types,
        [
            "text/plain",
            "message/delivery-status",
            "text/rfc822-headers"
        ]
    );
    assert!(status.contains("Final-Recipient: rfc822; bob@example.net\r\n"));
    assert!(status.contains("Action: failed\r\nStatus: 5.1.1\r\n"));
    assert!(!status.contains("Original-Envelope-Id"));
    assert!(third.starts_with(b"Received: from client.example.com"));
    assert!(
        !contains(&third, b"Hello Bob"),
        "RET=HDRS must not return the body"
    );
    check_golden("single_failure_ret_hdrs", &dsn);
}

#[test]
fn multi_recipient_orcpt_envid_ret_full() {
    let bob = rcpt(
        "bob@example.net",
        notify(true, false, false),
        Some("rfc822;bob+2Bq1@example.net"),
    );
    let carol = rcpt("carol@example.net", None, Some("rfc822;carol@example.net"));
    let dave = rcpt("dave@example.net", NEVER, None);
    let env = envelope(
        Some(DsnRet::Full),
        Some("Q1-2024-batch7"),
        vec![bob.clone(), carol.clone(), dave.clone()],
    );
    let reports = [
        failed(
            bob,
            "5.1.1",
            "mx1.example.net",
            "smtp; 550 5.1.1 user unknown",
        ),
        failed(carol, "5.2.2", "mx2.example.net", "552 5.2.2 mailbox full"),
        failed(
            dave,
            "5.1.1",
            "mx1.example.net",
            "smtp; 550 5.1.1 user unknown",
        ),
    ];
    let dsn = bounce::generate(
        &settings(),
        &env,
        ORIGINAL,
        &reports,
        NOW_MS,
        "0192F3A4B5C6-01-0000002B-1",
    )
    .expect("two recipients are due a DSN");
    check_well_formed(&dsn);
    let (types, status, third) = parse_report(&dsn);
    assert_eq!(
        types,
        ["text/plain", "message/delivery-status", "message/rfc822"]
    );
    assert!(status.contains("Original-Envelope-Id: Q1-2024-batch7\r\n"));
    assert!(status.contains("Original-Recipient: rfc822;bob+q1@example.net\r\n"));
    assert!(status.contains("Diagnostic-Code: smtp; 552 5.2.2 mailbox full\r\n"));
    assert!(
        !status.contains("dave@"),
        "NOTIFY=NEVER recipient must not be listed"
    );
    assert_eq!(status.matches("Final-Recipient:").count(), 2);
    assert_eq!(third, ORIGINAL, "RET=FULL returns the whole original");
    check_golden("multi_recipient_orcpt_envid_ret_full", &dsn);
}

#[test]
fn delay_dsn() {
    let bob = rcpt("bob@example.net", notify(true, true, false), None);
    let env = envelope(None, None, vec![bob.clone()]);
    let report = RecipientReport {
        recipient: bob,
        action: Action::Delayed,
        status: "4.4.1".into(),
        remote_mta: None,
        diagnostic: Some("smtp; 450 4.4.1 [internal] Connection Timed Out".into()),
        last_attempt_ms: Some(NOW_MS - 500),
        will_retry_until_ms: Some(RECEIVED_MS + 86_400_000),
    };
    let mut cfg = settings();
    cfg.inline_original = InlineOriginal::All;
    let dsn = bounce::generate(
        &cfg,
        &env,
        ORIGINAL,
        &[report],
        NOW_MS,
        "0192F3A4B5C6-01-0000002C-d1",
    )
    .expect("NOTIFY=DELAY gets a delay DSN");
    check_well_formed(&dsn);
    let text = String::from_utf8_lossy(&dsn.content).into_owned();
    assert!(text.contains("Subject: Delayed Mail (still being retried)\r\n"));
    let (types, status, _) = parse_report(&dsn);
    // Only failures carry the full content (RFC 3461 §4.3).
    assert_eq!(
        types,
        [
            "text/plain",
            "message/delivery-status",
            "text/rfc822-headers"
        ]
    );
    assert!(status.contains("Action: delayed\r\n"));
    assert!(status.contains("Will-Retry-Until: Sat, 02 Mar 2024 12:00:00 +0000\r\n"));
    assert!(!status.contains("Remote-MTA"));
    check_golden("delay_dsn", &dsn);
}

#[test]
fn eight_bit_original() {
    let original = "From: Jörg <joerg@example.com>\r\nTo: bob@example.net\r\n\
        Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nMIME-Version: 1.0\r\n\
        Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
        Grüße aus Köln — bis bald.\r\n";
    let bob = rcpt("bob@example.net", None, None);
    let mut env = envelope(Some(DsnRet::Full), None, vec![bob.clone()]);
    env.body_type = BodyType::EightBitMime;
    let reports = [failed(
        bob,
        "5.7.1",
        "mx1.example.net",
        "smtp; 554 5.7.1 message rejected as spam content",
    )];
    let dsn = bounce::generate(
        &settings(),
        &env,
        original.as_bytes(),
        &reports,
        NOW_MS,
        "0192F3A4B5C6-01-0000002D-1",
    )
    .expect("DSN due");
    check_well_formed(&dsn);
    assert_eq!(dsn.envelope.body_type, BodyType::EightBitMime);
    let text = String::from_utf8_lossy(&dsn.content).into_owned();
    assert!(
        text.contains("\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n")
    );
    let (types, _, third) = parse_report(&dsn);
    assert_eq!(types[2], "message/rfc822");
    assert_eq!(third, original.as_bytes());
    check_golden("eight_bit_original", &dsn);
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
