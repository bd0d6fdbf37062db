//! Scripted greetings, EHLO/HELO and STARTTLS under each TLS policy.

use super::*;

fn tls(policy: TlsPolicy) -> ClientSettings {
    ClientSettings {
        tls: policy,
        ..settings()
    }
}

const EHLO_TLS: &str = "250-mx.example\n250-STARTTLS\n250 8BITMIME\n";

#[test]
fn extensions_are_parsed() {
    let s = connected(
        settings(),
        "250-mx.example hello\n250-pipelining\n250-SIZE 52428800\n250-8BITMIME\n250-STARTTLS\n\
         250-CHUNKING\n250-SMTPUTF8\n250-DSN\n250-ENHANCEDSTATUSCODES\n250-AUTH PLAIN login\n\
         250-AUTH=LOGIN\n250 X-UNKNOWN 1\n",
    );
    let ext = s.extensions();
    assert!(ext.esmtp && ext.pipelining && ext.eight_bit_mime && ext.starttls);
    assert!(ext.chunking && ext.smtputf8 && ext.dsn && ext.enhanced_status_codes);
    assert!(!ext.binary_mime);
    assert_eq!(ext.size, Some(52_428_800));
    assert_eq!(ext.auth, ["PLAIN", "LOGIN"]);
    let s = connected(settings(), "250-mx\n250 SIZE\n");
    assert_eq!(
        (s.extensions().size, s.extensions().size_limit()),
        (Some(0), None)
    );
}

#[test]
fn greeting_refused_or_garbage() {
    for banner in ["554 5.7.1 no thanks\n", "421 4.3.2 busy\n"] {
        let mut s = ClientSession::new(settings(), false);
        let steps = converse(&mut s, &[("", banner)]);
        assert!(
            matches!(
                failed(&steps),
                Some(SessionError::GreetingRejected(_) | SessionError::ServiceClosing(_))
            ),
            "{steps:?}"
        );
        assert_eq!(steps.last(), Some(&ClientStep::Closed));
    }
    let mut s = ClientSession::new(settings(), false);
    let steps = converse(&mut s, &[("", "554 go away\n")]);
    assert_eq!(
        failed(&steps).map(|e| e.reply().to_string()).as_deref(),
        Some("554 go away")
    );
    assert_output(&mut s, "QUIT\n");
    let mut s = ClientSession::new(settings(), false);
    let steps = converse(&mut s, &[("", "SSH-2.0-OpenSSH_9.6\n")]);
    assert_eq!(
        failed(&steps),
        Some(&SessionError::Protocol(ProtocolError::Reply(
            ReplyError::BadCode
        )))
    );
    assert!(!s.has_output());
}

#[test]
fn ehlo_5xx_falls_back_to_helo() {
    let mut s = ClientSession::new(settings(), false);
    let steps = converse(
        &mut s,
        &[
            ("", BANNER),
            (EHLO, "502 5.5.2 command not recognized\n"),
            ("HELO client.example\n", "250 mx.example\n"),
        ],
    );
    assert_eq!(steps, [ClientStep::Ready]);
    assert!(!s.extensions().esmtp);
    s.submit(tx(&["b@y.example"], "hi\n")).unwrap();
    assert_output(&mut s, "MAIL FROM:<a@x.example>\n");
}

#[test]
fn ehlo_4xx_or_helo_refused_fails() {
    let mut s = ClientSession::new(settings(), false);
    let steps = converse(&mut s, &[("", BANNER), (EHLO, "451 4.3.0 later\n")]);
    assert!(matches!(failed(&steps), Some(SessionError::HelloRejected(r)) if r.code == 451));
    assert_output(&mut s, "QUIT\n");
    let mut s = ClientSession::new(settings(), false);
    let steps = converse(
        &mut s,
        &[
            ("", BANNER),
            (EHLO, "500 what\n"),
            ("HELO client.example\n", "550 no\n"),
        ],
    );
    assert!(matches!(failed(&steps), Some(SessionError::HelloRejected(r)) if r.code == 550));
    assert_eq!(steps.last(), Some(&ClientStep::Closed));
}

#[test]
fn starttls_offered_then_ehlo_again() {
    for policy in [TlsPolicy::Opportunistic, TlsPolicy::Required] {
        let mut s = ClientSession::new(tls(policy), false);
        let steps = converse(
            &mut s,
            &[
                ("", BANNER),
                (EHLO, EHLO_TLS),
                ("STARTTLS\n", "220 2.0.0 ready\n"),
            ],
        );
        assert_eq!(steps, [ClientStep::StartTls]);
        assert_eq!(s.stage(), Stage::TlsHandshake);
        assert_eq!(s.poll(), ClientStep::StartTls);
        s.tls_started();
        assert!(s.tls_active());
        assert_eq!(*s.extensions(), Extensions::default());
        let steps = converse(&mut s, &[(EHLO, "250-mx.example\n250 PIPELINING\n")]);
        assert_eq!(steps, [ClientStep::Ready]);
        assert!(s.extensions().pipelining && !s.extensions().starttls);
    }
}

#[test]
fn starttls_required_but_not_advertised() {
    let mut s = ClientSession::new(tls(TlsPolicy::Required), false);
    let steps = converse(&mut s, &[("", BANNER), (EHLO, EHLO_FULL)]);
    assert_eq!(
        failed(&steps),
        Some(&SessionError::TlsRequiredNotAdvertised)
    );
    assert_eq!(
        failed(&steps).map(|e| e.reply().to_string()).as_deref(),
        Some("451 4.7.6 [internal] STARTTLS required but not advertised")
    );
    assert_eq!(steps.last(), Some(&ClientStep::Closed));
    assert_output(&mut s, "QUIT\n");
}

#[test]
fn starttls_not_used_when_off_absent_or_implicit() {
    let s = connected(tls(TlsPolicy::Off), EHLO_TLS);
    assert!(!s.tls_active());
    let s = connected(tls(TlsPolicy::Opportunistic), EHLO_FULL);
    assert!(!s.tls_active());
    let mut s = ClientSession::new(tls(TlsPolicy::Required), true);
    assert_eq!(
        converse(&mut s, &[("", BANNER), (EHLO, EHLO_TLS)]),
        [ClientStep::Ready]
    );
}

#[test]
fn starttls_refused() {
    let mut s = ClientSession::new(tls(TlsPolicy::Opportunistic), false);
    let steps = converse(
        &mut s,
        &[
            ("", BANNER),
            (EHLO, EHLO_TLS),
            ("STARTTLS\n", "454 4.7.0 TLS not available\n"),
        ],
    );
    assert_eq!(steps, [ClientStep::Ready]);
    assert!(!s.tls_active());
    let mut s = ClientSession::new(tls(TlsPolicy::Required), false);
    let steps = converse(
        &mut s,
        &[
            ("", BANNER),
            (EHLO, EHLO_TLS),
            ("STARTTLS\n", "454 4.7.0 TLS not available\n"),
        ],
    );
    assert!(matches!(failed(&steps), Some(SessionError::StartTlsRejected(r)) if r.code == 454));
    assert_output(&mut s, "QUIT\n");
}

#[test]
fn tls_handshake_failure_is_reported() {
    let mut s = ClientSession::new(tls(TlsPolicy::Opportunistic), false);
    converse(
        &mut s,
        &[("", BANNER), (EHLO, EHLO_TLS), ("STARTTLS\n", "220 go\n")],
    );
    s.tls_failed();
    let mut steps = Vec::new();
    drain(&mut s, &mut steps);
    assert_eq!(
        steps,
        [
            ClientStep::Failed(SessionError::TlsFailed),
            ClientStep::Closed
        ]
    );
    assert_eq!(
        SessionError::TlsFailed.reply().to_string(),
        "451 4.7.5 [internal] TLS negotiation failed"
    );
    assert!(!s.has_output());
}

#[test]
fn plain_text_after_starttls_go_ahead_is_rejected() {
    for split in [false, true] {
        let mut s = ClientSession::new(tls(TlsPolicy::Opportunistic), false);
        converse(&mut s, &[("", BANNER), (EHLO, EHLO_TLS)]);
        assert_output(&mut s, "STARTTLS\n");
        if split {
            s.feed(b"220 go\r\n");
            s.feed(b"250-injected\r\n");
        } else {
            s.feed(b"220 go\r\n250-injected\r\n");
        }
        let mut steps = Vec::new();
        drain(&mut s, &mut steps);
        assert_eq!(
            steps,
            [
                ClientStep::Failed(SessionError::Protocol(ProtocolError::DataAfterStartTls)),
                ClientStep::Closed
            ]
        );
    }
}

#[test]
fn quit_before_the_greeting_skips_starttls() {
    let mut s = ClientSession::new(tls(TlsPolicy::Opportunistic), false);
    s.quit();
    let steps = converse(
        &mut s,
        &[("", BANNER), (EHLO, EHLO_TLS), ("QUIT\n", "221 bye\n")],
    );
    assert_eq!(steps, [ClientStep::Closed]);
}
