//! DSN rules outside the golden files: when a DSN is due, how much of
//! the original it quotes, and line-length / injection safety.

use impulse::bounce::{self, Action, Dsn, DsnSettings, InlineOriginal, RecipientReport};
use impulse::message::{BodyType, DsnRet, Envelope, Notify, Recipient};
use mail_parser::{MessageParser, MimeHeaders, PartType};

const NOW_MS: u64 = 1_709_298_000_000;
const ORIGINAL: &[u8] = b"From: a@example.com\r\nSubject: hi\r\n\r\nbody line\r\n";

fn env(mail_from: &str, ret: Option<DsnRet>) -> Envelope {
    Envelope {
        mail_from: mail_from.into(),
        ret,
        envid: None,
        body_type: BodyType::SevenBit,
        smtputf8: false,
        recipients: Vec::new(),
        auth_user: None,
        peer: None,
        helo: "client".into(),
        received_at_ms: NOW_MS - 60_000,
        binding: None,
    }
}

fn report(notify: Option<Notify>, action: Action, status: &str) -> RecipientReport {
    RecipientReport {
        recipient: Recipient {
            address: "rcpt@example.net".into(),
            notify,
            orcpt: None,
        },
        action,
        status: status.into(),
        remote_mta: None,
        diagnostic: None,
        last_attempt_ms: None,
        will_retry_until_ms: None,
    }
}

fn flags(failure: bool, delay: bool, success: bool, never: bool) -> Option<Notify> {
    Some(Notify {
        never,
        success,
        failure,
        delay,
    })
}

fn gen(cfg: &DsnSettings, e: &Envelope, content: &[u8], r: &[RecipientReport]) -> Option<Dsn> {
    bounce::generate(cfg, e, content, r, NOW_MS, "ID-1")
}

fn cfg() -> DsnSettings {
    DsnSettings::new("mta.example.org")
}

/// Content types of the report's parts, after a mail-parser round trip.
fn part_types(dsn: &Dsn) -> Vec<String> {
    let msg = MessageParser::default()
        .parse(&dsn.content)
        .expect("parses");
    let PartType::Multipart(ids) = &msg.parts[0].body else {
        panic!("not multipart");
    };
    ids.iter()
        .map(|id| {
            let ct = msg.parts[*id as usize].content_type().expect("type");
            format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or(""))
        })
        .collect()
}

fn text(dsn: &Dsn) -> String {
    String::from_utf8_lossy(&dsn.content).into_owned()
}

#[test]
fn null_sender_never_gets_a_dsn() {
    let r = [report(None, Action::Failed, "5.1.1")];
    assert!(gen(&cfg(), &env("", None), ORIGINAL, &r).is_none());
}

#[test]
fn notify_rules_decide_whether_a_dsn_is_due() {
    let e = env("s@example.com", None);
    let due = |cfg: &DsnSettings, r: RecipientReport| gen(cfg, &e, ORIGINAL, &[r]).is_some();
    let mut delays_on = cfg();
    delays_on.generate_delay_dsn = true;
    let never = flags(false, false, false, true);
    assert!(due(&cfg(), report(None, Action::Failed, "5.1.1")));
    assert!(!due(&cfg(), report(never, Action::Failed, "5.1.1")));
    assert!(!due(&cfg(), report(None, Action::Delayed, "4.4.1")));
    assert!(due(&delays_on, report(None, Action::Delayed, "4.4.1")));
    let delay_only = flags(false, true, false, false);
    assert!(due(&cfg(), report(delay_only, Action::Delayed, "4.4.1")));
    assert!(!due(&cfg(), report(delay_only, Action::Failed, "5.1.1")));
    let failure_only = flags(true, false, false, false);
    assert!(!due(
        &delays_on,
        report(failure_only, Action::Delayed, "4.4.1")
    ));
    assert!(!due(&cfg(), report(None, Action::Delivered, "2.0.0")));
    assert!(gen(&cfg(), &e, ORIGINAL, &[]).is_none());
}

#[test]
fn success_report_with_notify_success() {
    let r = report(flags(false, false, true, false), Action::Relayed, "2.0.0");
    let dsn = gen(
        &cfg(),
        &env("s@example.com", Some(DsnRet::Full)),
        ORIGINAL,
        &[r],
    )
    .expect("due");
    let t = text(&dsn);
    assert!(t.contains("Subject: Successful Mail Delivery Report\r\n"));
    assert!(t.contains("Action: relayed\r\n"));
    // Full content only comes back with failures, even with RET=FULL.
    assert_eq!(part_types(&dsn)[2], "text/rfc822-headers");
}

#[test]
fn mixed_failure_and_delay_is_one_undelivered_dsn() {
    let mut delayed = report(None, Action::Delayed, "4.2.0");
    delayed.recipient.address = "slow@example.net".into();
    delayed.will_retry_until_ms = Some(NOW_MS + 3_600_000);
    let mut c = cfg();
    c.generate_delay_dsn = true;
    let r = [report(None, Action::Failed, "5.1.1"), delayed];
    let dsn = gen(&c, &env("s@example.com", None), ORIGINAL, &r).expect("due");
    let t = text(&dsn);
    assert!(t.contains("Subject: Undelivered Mail Returned to Sender\r\n"));
    assert!(t.contains("Action: failed\r\n") && t.contains("Action: delayed\r\n"));
    assert!(t.contains("Will-Retry-Until: "));
}

#[test]
fn ret_overrides_bounces_inline_original() {
    let r = [report(None, Action::Failed, "5.1.1")];
    let mut none = cfg();
    none.inline_original = InlineOriginal::None;
    let mut all = cfg();
    all.inline_original = InlineOriginal::All;
    let types = |c: &DsnSettings, ret| {
        part_types(&gen(c, &env("s@x.org", ret), ORIGINAL, &r).expect("due"))
    };
    assert_eq!(
        types(&none, None),
        ["text/plain", "message/delivery-status"]
    );
    assert_eq!(types(&none, Some(DsnRet::Hdrs))[2], "text/rfc822-headers");
    assert_eq!(types(&all, Some(DsnRet::Hdrs))[2], "text/rfc822-headers");
    assert_eq!(types(&all, None)[2], "message/rfc822");
    assert_eq!(types(&cfg(), None)[2], "text/rfc822-headers");
    assert_eq!(types(&none, Some(DsnRet::Full))[2], "message/rfc822");
}

#[test]
fn content_8bitmime_cannot_carry_falls_back_to_headers() {
    let bare_lf = b"From: a@example.com\r\nSubject: hi\r\n\r\nbody\nline\r\n";
    let r = [report(None, Action::Failed, "5.1.1")];
    let dsn = gen(&cfg(), &env("s@x.org", Some(DsnRet::Full)), bare_lf, &r).expect("due");
    assert_eq!(part_types(&dsn)[2], "text/rfc822-headers");
    assert!(!text(&dsn).contains("body\n"));
}

#[test]
fn lines_stay_short_and_replies_cannot_inject_fields() {
    let mut r = report(None, Action::Failed, "5.1.1");
    let long = format!("smtp; 550 5.1.1 {}\r\nX-Injected: yes", "blah ".repeat(400));
    r.diagnostic = Some(long + &"z".repeat(2500));
    r.remote_mta = Some("mx.example.net\r\nX-Injected: yes".into());
    r.recipient.address = format!("{}@example.net", "l".repeat(1200));
    let dsn = gen(&cfg(), &env("s@x.org", None), ORIGINAL, &[r]).expect("due");
    let t = text(&dsn);
    for line in t.split("\r\n") {
        assert!(line.len() <= 998, "line of {} octets", line.len());
    }
    assert!(!t.contains("\r\nX-Injected"));
    assert_eq!(part_types(&dsn).len(), 3);
}

#[test]
fn invalid_status_falls_back_to_a_generic_one() {
    let r = [report(None, Action::Failed, "550 oops")];
    let dsn = gen(&cfg(), &env("s@x.org", None), ORIGINAL, &r).expect("due");
    assert!(text(&dsn).contains("\r\nStatus: 5.0.0\r\n"));
}

#[test]
fn boundary_never_occurs_in_the_quoted_original() {
    let content = b"From: a@example.com\r\nX-Trap: =_impulse-dsn-ID-1\r\n\r\nbody\r\n";
    let r = [report(None, Action::Failed, "5.1.1")];
    let dsn = gen(&cfg(), &env("s@x.org", None), content, &r).expect("due");
    assert!(text(&dsn).contains("boundary=\"=_impulse-dsn-ID-1-1\""));
    assert_eq!(part_types(&dsn).len(), 3);
}

#[test]
fn dsn_envelope_is_null_sender_to_original_sender() {
    let r = [report(None, Action::Failed, "5.1.1")];
    let mut c = cfg();
    c.mailerdaemon = "postmaster@example.org".into();
    let dsn = gen(&c, &env("jörg@example.com", None), ORIGINAL, &r).expect("due");
    assert_eq!(dsn.envelope.mail_from, "");
    assert_eq!(dsn.envelope.recipients.len(), 1);
    assert_eq!(dsn.envelope.recipients[0].address, "jörg@example.com");
    assert!(dsn.envelope.smtputf8);
    assert_eq!(dsn.envelope.body_type, BodyType::EightBitMime);
    assert_eq!(dsn.envelope.received_at_ms, NOW_MS);
    assert!(text(&dsn).starts_with("From: Mail Delivery System <postmaster@example.org>\r\n"));
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn any_text() -> impl Strategy<Value = String> {
        prop_oneof![
            ".{0,80}",
            "[ -~\\r\\n]{0,2000}",
            proptest::collection::vec(any::<char>(), 0..300)
                .prop_map(|v| v.into_iter().collect::<String>()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Whatever the inputs, a DSN is CRLF-only, has no line over 998
        /// octets, and parses as a multipart/report with 2 or 3 parts.
        #[test]
        fn any_input_gives_a_well_formed_dsn(
            address in any_text(),
            diagnostic in any_text(),
            mta in any_text(),
            envid in any_text(),
            orcpt in any_text(),
            content in proptest::collection::vec(any::<u8>(), 0..3000),
            full in any::<bool>(),
        ) {
            let mut e = env("s@example.com", Some(if full { DsnRet::Full } else { DsnRet::Hdrs }));
            e.envid = Some(envid);
            let mut r = report(None, Action::Failed, "5.1.1");
            r.recipient.address = address;
            r.recipient.orcpt = Some(orcpt);
            r.diagnostic = Some(diagnostic);
            r.remote_mta = Some(mta);
            let dsn = gen(&cfg(), &e, &content, &[r]).expect("due");
            let c = &dsn.content;
            for (i, b) in c.iter().enumerate() {
                if *b == b'\n' {
                    prop_assert!(i > 0 && c[i - 1] == b'\r', "bare LF at {}", i);
                }
                if *b == b'\r' {
                    prop_assert_eq!(c.get(i + 1), Some(&b'\n'), "bare CR at {}", i);
                }
            }
            for line in c.split(|b| *b == b'\n') {
                prop_assert!(line.len() <= 999, "line of {} octets", line.len());
            }
            let n = part_types(&dsn).len();
            prop_assert!(n == 2 || n == 3, "{} parts", n);
        }
    }
}
