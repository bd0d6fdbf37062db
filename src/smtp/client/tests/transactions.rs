//! Scripted transactions: lock-step and pipelined, refusals at every
//! command, content encoding, ESMTP parameters, reuse and QUIT.

use super::*;
use crate::message::{DsnRet, Notify};

#[test]
fn lock_step_delivery_then_quit() {
    let mut s = connected(settings(), EHLO_BARE);
    s.submit(tx(&["b@y.example"], "Subject: t\n\nhello\n"))
        .unwrap();
    assert_eq!(s.stage(), Stage::Mail);
    let steps = converse(
        &mut s,
        &[
            ("MAIL FROM:<a@x.example>\n", "250 ok\n"),
            ("RCPT TO:<b@y.example>\n", "250 ok\n"),
            ("DATA\n", "354 go ahead\n"),
            ("Subject: t\n\nhello\n.\n", "250 2.0.0 queued as 42\n"),
        ],
    );
    let result = done(&steps);
    assert_eq!(
        outcomes(result),
        ["b@y.example delivered 250 2.0.0 queued as 42"]
    );
    assert_eq!(result.mail_reply.as_ref().map(|r| r.code), Some(250));
    assert_eq!(steps.last(), Some(&ClientStep::Ready));
    assert_eq!(s.stage(), Stage::Idle);
    s.quit();
    assert_eq!(s.stage(), Stage::Quit);
    assert_eq!(
        converse(&mut s, &[("QUIT\n", "221 bye\n")]),
        [ClientStep::Closed]
    );
}

#[test]
fn pipelining_sends_one_write_and_matches_replies_in_order() {
    let mut s = connected(settings(), EHLO_FULL);
    s.submit(tx(&["b@y.example", "c@y.example", "d@y.example"], "hi\n"))
        .unwrap();
    let steps = converse(
        &mut s,
        &[
            (
                "MAIL FROM:<a@x.example> SIZE=4\nRCPT TO:<b@y.example>\n\
                 RCPT TO:<c@y.example>\nRCPT TO:<d@y.example>\nDATA\n",
                "250 2.1.0 ok\n250 2.1.5 ok\n550 5.1.1 no such user\n450 4.2.1 busy\n354 go\n",
            ),
            ("hi\n.\n", "250 2.0.0 ok\n"),
        ],
    );
    assert_eq!(
        outcomes(done(&steps)),
        [
            "b@y.example delivered 250 2.0.0 ok",
            "c@y.example permanent 550 5.1.1 no such user",
            "d@y.example transient 450 4.2.1 busy",
        ]
    );
    let enhanced = done(&steps).recipients[1]
        .rcpt_reply
        .as_ref()
        .and_then(|r| r.enhanced);
    assert_eq!(enhanced.map(|e| e.to_string()).as_deref(), Some("5.1.1"));
    assert_eq!(steps.last(), Some(&ClientStep::Ready));
}

#[test]
fn pipelined_replies_split_across_reads() {
    let mut s = connected(settings(), EHLO_FULL);
    s.submit(tx(&["b@y.example"], "hi\n")).unwrap();
    s.take_output();
    s.feed(b"250 ok\r\n25");
    assert_eq!(s.stage(), Stage::Rcpt);
    s.feed(b"0 ok\r\n354 go\r");
    assert_eq!(s.stage(), Stage::Data);
    assert!(!s.has_output());
    s.feed(b"\n");
    assert_eq!(s.stage(), Stage::DataDone);
    assert_output(&mut s, "hi\n.\n");
}

#[test]
fn all_refused_pipelined_data_503_then_rset() {
    let mut s = connected(settings(), EHLO_FULL);
    s.submit(tx(&["b@y.example", "c@y.example"], "hi\n"))
        .unwrap();
    let steps = converse(
        &mut s,
        &[
            (
                "MAIL FROM:<a@x.example> SIZE=4\nRCPT TO:<b@y.example>\nRCPT TO:<c@y.example>\nDATA\n",
                "250 ok\n550 5.1.1 no\n451 4.3.0 later\n554 5.5.1 no valid recipients\n",
            ),
            ("RSET\n", "250 ok\n"),
        ],
    );
    assert_eq!(steps, [ClientStep::Ready]);
    let mut s2 = connected(settings(), EHLO_FULL);
    s2.submit(tx(&["b@y.example", "c@y.example"], "hi\n"))
        .unwrap();
    s2.take_output();
    s2.feed(&wire(
        "250 ok\n550 5.1.1 no\n451 4.3.0 later\n554 5.5.1 no valid recipients\n",
    ));
    let mut steps = Vec::new();
    drain(&mut s2, &mut steps);
    let result = done(&steps);
    assert_eq!(
        outcomes(result),
        [
            "b@y.example permanent 550 5.1.1 no",
            "c@y.example transient 451 4.3.0 later"
        ]
    );
    assert_eq!(result.data_reply.as_ref().map(|r| r.code), Some(554));
    assert_output(&mut s2, "RSET\n");
}

#[test]
fn all_refused_pipelined_data_354_gets_a_lone_dot() {
    let mut s = connected(settings(), EHLO_FULL);
    s.submit(tx(&["b@y.example"], "secret\n")).unwrap();
    let steps = converse(
        &mut s,
        &[
            (
                "MAIL FROM:<a@x.example> SIZE=8\nRCPT TO:<b@y.example>\nDATA\n",
                "250 ok\n550 5.1.1 no\n354 go\n",
            ),
            (".\n", "554 5.5.1 no recipients\n"),
        ],
    );
    assert_eq!(
        outcomes(done(&steps)),
        ["b@y.example permanent 550 5.1.1 no"]
    );
    assert_eq!(steps.last(), Some(&ClientStep::Ready));
}

#[test]
fn all_refused_lock_step_skips_data_and_resets() {
    let mut s = connected(settings(), EHLO_BARE);
    s.submit(tx(&["b@y.example", "c@y.example"], "hi\n"))
        .unwrap();
    let steps = converse(
        &mut s,
        &[
            ("MAIL FROM:<a@x.example>\n", "250 ok\n"),
            ("RCPT TO:<b@y.example>\n", "550 no\n"),
            ("RCPT TO:<c@y.example>\n", "550 no\n"),
        ],
    );
    assert_eq!(
        outcomes(done(&steps)),
        [
            "b@y.example permanent 550 no",
            "c@y.example permanent 550 no"
        ]
    );
    assert_eq!(steps.last(), Some(&ClientStep::NeedInput));
    assert_eq!(s.stage(), Stage::Rset);
    assert_eq!(
        converse(&mut s, &[("RSET\n", "250 ok\n")]),
        [ClientStep::Ready]
    );
}

#[test]
fn mail_refused_lock_step() {
    for (code, kind) in [
        ("451 4.3.0 later", "transient"),
        ("550 5.7.1 go away", "permanent"),
    ] {
        let mut s = connected(settings(), EHLO_BARE);
        s.submit(tx(&["b@y.example", "c@y.example"], "hi\n"))
            .unwrap();
        let steps = converse(
            &mut s,
            &[("MAIL FROM:<a@x.example>\n", &format!("{code}\n"))],
        );
        assert_eq!(
            outcomes(done(&steps)),
            [
                format!("b@y.example {kind} {code}"),
                format!("c@y.example {kind} {code}")
            ]
        );
        assert!(done(&steps)
            .recipients
            .iter()
            .all(|r| r.rcpt_reply.is_none()));
        assert_eq!(
            converse(&mut s, &[("RSET\n", "250 ok\n")]),
            [ClientStep::Ready]
        );
    }
}

#[test]
fn mail_refused_pipelined_consumes_every_reply() {
    let mut s = connected(settings(), EHLO_FULL);
    s.submit(tx(&["b@y.example"], "hi\n")).unwrap();
    let steps = converse(
        &mut s,
        &[
            (
                "MAIL FROM:<a@x.example> SIZE=4\nRCPT TO:<b@y.example>\nDATA\n",
                "552 5.3.4 too big\n503 5.5.1 need MAIL\n503 5.5.1 need MAIL\n",
            ),
            ("RSET\n", "250 ok\n"),
        ],
    );
    assert_eq!(steps, [ClientStep::Ready]);
}

#[test]
fn data_refused_lock_step() {
    let mut s = connected(settings(), EHLO_BARE);
    s.submit(tx(&["b@y.example"], "hi\n")).unwrap();
    let steps = converse(
        &mut s,
        &[
            ("MAIL FROM:<a@x.example>\n", "250 ok\n"),
            ("RCPT TO:<b@y.example>\n", "250 ok\n"),
            ("DATA\n", "451 4.3.0 not now\n"),
        ],
    );
    assert_eq!(
        outcomes(done(&steps)),
        ["b@y.example transient 451 4.3.0 not now"]
    );
    assert_eq!(
        converse(&mut s, &[("RSET\n", "250 ok\n")]),
        [ClientStep::Ready]
    );
}

#[test]
fn final_reply_decides_accepted_recipients_only() {
    for (code, kind) in [
        ("452 4.3.1 full", "transient"),
        ("554 5.7.1 spam", "permanent"),
    ] {
        let mut s = connected(settings(), EHLO_FULL);
        s.submit(tx(&["b@y.example", "c@y.example"], "x\n"))
            .unwrap();
        let steps = converse(
            &mut s,
            &[
                (
                    "MAIL FROM:<a@x.example> SIZE=3\nRCPT TO:<b@y.example>\nRCPT TO:<c@y.example>\nDATA\n",
                    "250 ok\n250 ok\n550 no\n354 go\n",
                ),
                ("x\n.\n", &format!("{code}\n")),
            ],
        );
        assert_eq!(
            outcomes(done(&steps)),
            [
                format!("b@y.example {kind} {code}"),
                "c@y.example permanent 550 no".to_string()
            ]
        );
        assert_eq!(
            done(&steps)
                .data_reply
                .as_ref()
                .map(ToString::to_string)
                .as_deref(),
            Some(code)
        );
        // The transaction ended with the final reply: no RSET.
        assert_eq!(steps.last(), Some(&ClientStep::Ready));
        assert!(!s.has_output());
    }
}

#[test]
fn dot_stuffing_on_the_wire() {
    let mut s = connected(settings(), EHLO_FULL);
    s.submit(tx(&["b@y.example"], ".\n..x\nlast line")).unwrap();
    converse(
        &mut s,
        &[(
            "MAIL FROM:<a@x.example> SIZE=17\nRCPT TO:<b@y.example>\nDATA\n",
            "250 ok\n250 ok\n354 go\n",
        )],
    );
    assert_output(&mut s, "..\n...x\nlast line\n.\n");
}

#[test]
fn dsn_parameters_only_when_offered() {
    let mut t = tx(&["b@y.example"], "hi\n");
    t.ret = Some(DsnRet::Hdrs);
    t.envid = Some("id+1 x".to_string());
    t.recipients[0].notify = Some(Notify {
        success: true,
        failure: true,
        ..Notify::default()
    });
    t.recipients[0].orcpt = Some("rfc822;b@y.example".to_string());
    let mut s = connected(settings(), EHLO_FULL);
    s.submit(t.clone()).unwrap();
    assert_output(
        &mut s,
        "MAIL FROM:<a@x.example> SIZE=4 RET=HDRS ENVID=id+2B1+20x\n\
         RCPT TO:<b@y.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@y.example\nDATA\n",
    );
    let mut s = connected(settings(), "250-mx.example\n250 PIPELINING\n");
    s.submit(t).unwrap();
    assert_output(
        &mut s,
        "MAIL FROM:<a@x.example>\nRCPT TO:<b@y.example>\nDATA\n",
    );
}

#[test]
fn eight_bit_to_server_without_8bitmime_fails_permanently() {
    let mut t = tx_bytes(&["b@y.example", "c@y.example"], "caf\u{e9}\r\n".as_bytes());
    t.body_type = BodyType::EightBitMime;
    let mut s = connected(settings(), EHLO_BARE);
    s.submit(t.clone()).unwrap();
    assert!(!s.has_output());
    let mut steps = Vec::new();
    drain(&mut s, &mut steps);
    let conversion = "554 5.6.3 [internal] conversion required and not supported";
    assert_eq!(
        outcomes(done(&steps)),
        [
            format!("b@y.example permanent {conversion}"),
            format!("c@y.example permanent {conversion}")
        ]
    );
    assert_eq!(steps.last(), Some(&ClientStep::Ready));
    // The same message to a server with 8BITMIME says so.
    let mut s = connected(settings(), EHLO_FULL);
    s.submit(t).unwrap();
    assert_output(
        &mut s,
        "MAIL FROM:<a@x.example> SIZE=7 BODY=8BITMIME\nRCPT TO:<b@y.example>\nRCPT TO:<c@y.example>\nDATA\n",
    );
}

#[test]
fn declared_8bitmime_that_is_7bit_goes_anywhere() {
    let mut t = tx(&["b@y.example"], "plain\n");
    t.body_type = BodyType::EightBitMime;
    let mut s = connected(settings(), EHLO_BARE);
    s.submit(t).unwrap();
    assert_output(&mut s, "MAIL FROM:<a@x.example>\n");
}

#[test]
fn smtputf8_and_size_limits() {
    let mut t = tx(&["b@y.example"], "hi\n");
    t.smtputf8 = true;
    let mut s = connected(settings(), EHLO_FULL);
    s.submit(t.clone()).unwrap();
    assert_output(
        &mut s,
        "MAIL FROM:<a@x.example> SIZE=4 SMTPUTF8\nRCPT TO:<b@y.example>\nDATA\n",
    );
    let mut s = connected(settings(), EHLO_BARE);
    s.submit(t).unwrap();
    let mut steps = Vec::new();
    drain(&mut s, &mut steps);
    assert_eq!(
        outcomes(done(&steps)),
        ["b@y.example permanent 554 5.6.7 [internal] SMTPUTF8 required but not supported by remote host"]
    );
    let mut s = connected(settings(), EHLO_FULL);
    s.submit(tx(&["b@y.example"], &"x".repeat(1001))).unwrap();
    let mut steps = Vec::new();
    drain(&mut s, &mut steps);
    assert_eq!(
        outcomes(done(&steps)),
        ["b@y.example permanent 552 5.3.4 [internal] message size exceeds remote limit"]
    );
    assert!(!s.has_output());
}

#[test]
fn pipelining_off_in_settings_means_lock_step() {
    let no_pipelining = ClientSettings {
        use_pipelining: false,
        ..settings()
    };
    let mut s = connected(no_pipelining, EHLO_FULL);
    let mut t = tx(&["b@y.example"], "hi\n");
    t.mail_from = String::new();
    t.recipients[0].notify = Some(Notify {
        never: true,
        ..Notify::default()
    });
    s.submit(t).unwrap();
    let steps = converse(
        &mut s,
        &[
            ("MAIL FROM:<> SIZE=4\n", "250 ok\n"),
            ("RCPT TO:<b@y.example> NOTIFY=NEVER\n", "250 ok\n"),
            ("DATA\n", "354 go\n"),
            ("hi\n.\n", "250 ok\n"),
        ],
    );
    assert_eq!(outcomes(done(&steps)), ["b@y.example delivered 250 ok"]);
}

#[test]
fn connection_reuse_for_two_transactions() {
    let mut s = connected(settings(), EHLO_FULL);
    for n in 1..=2 {
        s.submit(tx(&["b@y.example"], "hi\n")).unwrap();
        let steps = converse(
            &mut s,
            &[
                (
                    "MAIL FROM:<a@x.example> SIZE=4\nRCPT TO:<b@y.example>\nDATA\n",
                    "250 ok\n250 ok\n354 go\n",
                ),
                ("hi\n.\n", &format!("250 ok {n}\n")),
            ],
        );
        assert_eq!(
            outcomes(done(&steps)),
            [format!("b@y.example delivered 250 ok {n}")]
        );
        assert_eq!(steps.last(), Some(&ClientStep::Ready));
    }
    s.quit();
    assert_eq!(
        converse(&mut s, &[("QUIT\n", "221 bye\n")]),
        [ClientStep::Closed]
    );
}

#[test]
fn quit_during_a_transaction_waits_for_it() {
    let mut s = connected(settings(), EHLO_BARE);
    s.submit(tx(&["b@y.example"], "hi\n")).unwrap();
    s.quit();
    let steps = converse(
        &mut s,
        &[
            ("MAIL FROM:<a@x.example>\n", "451 later\n"),
            ("RSET\n", "250 ok\n"),
        ],
    );
    assert_eq!(steps, [ClientStep::NeedInput]);
    assert_eq!(
        converse(&mut s, &[("QUIT\n", "221 bye\n")]),
        [ClientStep::Closed]
    );
}

#[test]
fn submit_refusals_hand_the_transaction_back() {
    let mut s = ClientSession::new(settings(), false);
    let err = s.submit(tx(&["b@y.example"], "hi\n")).unwrap_err();
    assert_eq!(err.error, SubmitError::NotReady);
    assert_eq!(err.transaction, tx(&["b@y.example"], "hi\n"));
    let mut s = connected(
        ClientSettings {
            max_recipients_per_batch: 2,
            ..settings()
        },
        EHLO_BARE,
    );
    let cases = [
        (tx(&[], "hi\n"), SubmitError::NoRecipients),
        (
            tx(&["b@y", "c@y", "d@y"], "hi\n"),
            SubmitError::TooManyRecipients { limit: 2 },
        ),
        (tx(&["b@y>\r\nRSET"], "hi\n"), SubmitError::InvalidEnvelope),
    ];
    for (t, error) in cases {
        assert_eq!(s.submit(t).unwrap_err().error, error);
    }
    assert!(!s.has_output());
    assert_eq!(s.poll(), ClientStep::Ready);
    s.submit(tx(&["b@y"], "hi\n")).unwrap();
    assert_eq!(
        s.submit(tx(&["b@y"], "hi\n")).unwrap_err().error,
        SubmitError::NotReady
    );
}

#[test]
fn service_closing_mid_transaction() {
    let mut s = connected(settings(), EHLO_FULL);
    s.submit(tx(&["b@y.example", "c@y.example"], "hi\n"))
        .unwrap();
    let steps = converse(
        &mut s,
        &[(
            "MAIL FROM:<a@x.example> SIZE=4\nRCPT TO:<b@y.example>\nRCPT TO:<c@y.example>\nDATA\n",
            "250 ok\n250 ok\n421 4.3.2 shutting down\n",
        )],
    );
    let closing = "421 4.3.2 shutting down";
    assert_eq!(
        outcomes(done(&steps)),
        [
            format!("b@y.example transient {closing}"),
            format!("c@y.example transient {closing}")
        ]
    );
    assert!(matches!(failed(&steps), Some(SessionError::ServiceClosing(r)) if r.code == 421));
    assert_eq!(steps.last(), Some(&ClientStep::Closed));
    assert!(!s.has_output());
}
