use super::*;

const M: LogFormat = LogFormat::Momentum;

fn source() -> Source<'static> {
    Source {
        group: "group-a",
        binding: "binding-a",
    }
}

fn attempt(remote: &str) -> Attempt<'static> {
    Attempt {
        time: 1064871280,
        id: "20/00-25593-945A87F3",
        domain: "postalengine.com",
        size: 266,
        source: source(),
        retries: 0,
        secs_in_queue: 0.393,
        remote: Some(remote.parse().unwrap()),
    }
}

fn line(f: impl FnOnce(&mut String)) -> String {
    let mut out = String::new();
    f(&mut out);
    out
}

#[test]
fn a_delivery_line_is_the_manuals_example_byte_for_byte() {
    assert_eq!(
        line(|o| delivery(o, M, &attempt("10.0.0.1"))),
        "1064871280@20/00-25593-945A87F3@D@postalengine.com@266@group-a@binding-a@0@0.393@10.0.0.1\n"
    );
}

#[test]
fn every_line_type_is_pinned() {
    let r = Reception {
        time: 1700000000,
        id: "0000018BCFE568-00-00000001",
        recipient: "bob@example.net",
        sender: "news@shop.example",
        peer: Some("192.0.2.7".parse().unwrap()),
        size: 4321,
        protocol: Protocol::Esmtp,
        source: source(),
    };
    assert_eq!(
        line(|o| reception(o, M, &r)),
        "1700000000@0000018BCFE568-00-00000001@R@bob@example.net@news@shop.example@192.0.2.7@4321@esmtp@group-a@binding-a\n"
    );
    // The null sender is two empty fields; internal mail has no peer.
    let dsn = Reception {
        sender: "",
        peer: None,
        protocol: Protocol::Internal,
        ..r
    };
    assert_eq!(
        line(|o| reception(o, M, &dsn)),
        "1700000000@0000018BCFE568-00-00000001@R@bob@example.net@@@@4321@internal@group-a@binding-a\n"
    );
    let mut a = attempt("2001:db8::25");
    a.retries = 3;
    a.secs_in_queue = 18.5349;
    let busy = Failure {
        stage: Some(Stage::Rcpt),
        response: "421 4.7.0 Try again later",
    };
    assert_eq!(
        line(|o| failure(o, M, &a, &busy, false)),
        "1064871280@20/00-25593-945A87F3@T@postalengine.com@266@group-a@binding-a@4@3@18.535@2001:db8::25@421 4.7.0 Try again later\n"
    );
    let unknown = Failure {
        stage: Some(Stage::DataDone),
        response: "550 5.1.1 no such user",
    };
    assert_eq!(
        line(|o| failure(o, M, &a, &unknown, true)),
        "1064871280@20/00-25593-945A87F3@P@postalengine.com@266@group-a@binding-a@9@3@18.535@2001:db8::25@550 5.1.1 no such user\n"
    );
    // No connection: stage 0, no remote address.
    a.remote = None;
    let dns = Failure {
        stage: None,
        response: "554 5.4.4 [internal] no MX or A for postalengine.com",
    };
    assert_eq!(
        line(|o| failure(o, M, &a, &dns, true)),
        "1064871280@20/00-25593-945A87F3@P@postalengine.com@266@group-a@binding-a@0@3@18.535@@554 5.4.4 [internal] no MX or A for postalengine.com\n"
    );
    a.remote = Some("10.0.0.1".parse().unwrap());
    assert_eq!(
        line(|o| bounce(o, M, &a, &unknown, ("bob@postalengine.com", "news@shop.example"), BounceClass::InvalidRecipient)),
        "1064871280@20/00-25593-945A87F3@B@bob@postalengine.com@news@shop.example@group-a@binding-a@9@10@10.0.0.1@550 5.1.1 no such user\n"
    );
    assert_eq!(line(|o| heartbeat(o, M, 1064871280)), "1064871280@@M\n");
}

#[test]
fn hostile_addresses_and_replies_cannot_forge_a_line_or_shift_a_field() {
    // A quoted local part with an @, a CR LF and a whole forged line; a
    // reply with the same and a percent sign.
    let forged =
        "\"x\r\n1064871280@20/00-25593-945A87F3@D@bank.example@1@g@b@0@0.0@1.2.3.4\n@\"@evil.test";
    let r = Reception {
        time: 1,
        id: "id",
        recipient: forged,
        sender: "a%40@b",
        peer: None,
        size: 1,
        protocol: Protocol::Esmtp,
        source: source(),
    };
    let text = line(|o| reception(o, M, &r));
    assert_eq!(text.matches('\n').count(), 1, "{text:?}");
    assert!(text.ends_with('\n') && !text.contains('\r'));
    assert_eq!(text.trim_end().split('@').count(), 12, "{text:?}");
    let f = Failure {
        stage: Some(Stage::DataDone),
        response: "550 5.7.1 100% sure\r\n1@x@D@y\u{7f}\u{85}",
    };
    let text = line(|o| failure(o, M, &attempt("10.0.0.1"), &f, true));
    assert_eq!(text.matches('\n').count(), 1, "{text:?}");
    assert_eq!(text.trim_end().split('@').count(), 12, "{text:?}");
    assert!(
        text.ends_with("@550 5.7.1 100%25 sure%0D%0A1%40x%40D%40y%7F%C2%85\n"),
        "{text:?}"
    );
}

#[test]
fn every_client_stage_has_the_manuals_number() {
    let all = [
        (None, 0),
        (Some(Stage::Closed), 0),
        (Some(Stage::Idle), 1),
        (Some(Stage::Mail), 2),
        (Some(Stage::Rcpt), 4),
        (Some(Stage::Data), 6),
        (Some(Stage::DataDone), 9),
        (Some(Stage::Ehlo), 10),
        (Some(Stage::Banner), 12),
        (Some(Stage::Rset), 13),
        (Some(Stage::StartTls), 15),
        (Some(Stage::TlsHandshake), 17),
        (Some(Stage::Quit), 22),
    ];
    for (stage, n) in all {
        assert_eq!(stage_number(stage), n, "{stage:?}");
    }
}
