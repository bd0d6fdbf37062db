//! DATA and BDAT content: end detection, smuggling, unstuffing, limits.

use super::*;

const READY: &str = "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n";
const TX: &str = "MAIL FROM:<a@b.example>\r\nRCPT TO:<x@example.com>\r\nDATA\r\n";

/// A session inside DATA.
fn in_data() -> ServerSession {
    in_data_with(settings())
}

fn in_data_with(st: ServerSettings) -> ServerSession {
    let mut s = session_with(st);
    expect(&mut s, "EHLO c\r\n", EHLO_PLAIN);
    expect(&mut s, TX, READY);
    s
}

fn body_of(step: Step) -> Vec<u8> {
    match step {
        Step::Message(m) => m.1,
        other => panic!("expected a message, got {other:?}"),
    }
}

#[test]
fn smuggling_sequences_never_end_data() {
    for smuggle in ["\n.\n", "\r.\n", "\n.\r\n", "\r\n.\n", "\r\n.\r", "\r.\r\n"] {
        let mut s = in_data();
        // Everything up to the real CRLF.CRLF is content, including a
        // would-be second transaction.
        let input = format!("a{smuggle}MAIL FROM:<evil@x.example>\r\nRCPT TO:<v@x.example>\r\n");
        expect(&mut s, &input, "");
        assert!(s.in_data(), "{smuggle:?}");
        let (out, step) = exchange(&mut s, "\r\n.\r\nNOOP\r\n");
        assert_eq!(
            out, "550 5.6.0 message contains bare CR or LF (RFC 5321 2.3.8)\r\n250 2.0.0 Ok\r\n",
            "{smuggle:?}"
        );
        assert_eq!(step, Step::NeedInput);
    }
}

#[test]
fn only_crlf_dot_crlf_ends_data_and_unstuffing_is_exact() {
    let mut s = in_data();
    let (out, step) = exchange(&mut s, ".first\r\n..second\r\n...\r\n. \r\nx.\r\n\r\n.\r\n");
    assert_eq!(out, "");
    assert_eq!(body_of(step), b"first\r\n.second\r\n..\r\n \r\nx.\r\n\r\n");
}

#[test]
fn data_split_at_every_byte() {
    let content = b"..a\r\nb\r\n.\r\nNOOP\r\n";
    let mut s = in_data();
    let mut body = None;
    for &b in content.iter() {
        s.feed(&[b]);
        match s.process() {
            Step::NeedInput => {}
            step => body = Some(body_of(step)),
        }
    }
    assert_eq!(body.as_deref(), Some(&b".a\r\nb\r\n"[..]));
    assert_eq!(s.buffered_input(), 6, "NOOP waits for message_stored");
    s.message_stored(Ok("I".into()));
    assert_eq!(s.process(), Step::NeedInput);
    assert_eq!(
        text(s.take_output()),
        "250 2.0.0 Ok: queued as I\r\n250 2.0.0 Ok\r\n"
    );
}

#[test]
fn content_rejections_read_to_the_end() {
    let cases: [(&[u8], &str); 3] = [
        (b"a\0b\r\n.\r\n", "550 5.6.0 message contains NUL\r\n"),
        (b"caf\xc3\xa9\r\n.\r\n", ""),
        (b"ok\r\n.\r\n", ""),
    ];
    for (input, reply) in cases {
        let mut s = in_data();
        let (out, step) = exchange_bytes(&mut s, input);
        assert_eq!(out, reply);
        assert_eq!(matches!(step, Step::Message(_)), reply.is_empty());
    }
    let mut s = in_data();
    let long = format!("{}\r\n.\r\n", "l".repeat(99));
    expect(&mut s, &long, "550 5.6.0 message line too long\r\n");
    let mut s = in_data();
    let (_, step) = exchange(&mut s, &format!("{}\r\n.\r\n", "l".repeat(98)));
    assert_eq!(body_of(step).len(), 100);
}

#[test]
fn eight_bit_needs_8bitmime_when_configured() {
    let mut st = settings();
    st.reject_8bit_without_8bitmime = true;
    let mut s = in_data_with(st.clone());
    expect(
        &mut s,
        "caf\u{e9}\r\n.\r\n",
        "554 5.6.1 8-bit content requires BODY=8BITMIME\r\n",
    );
    let mut s = session_with(st);
    let tx =
        "EHLO c\r\nMAIL FROM:<a@b.example> BODY=8BITMIME\r\nRCPT TO:<x@example.com>\r\nDATA\r\n";
    expect(&mut s, tx, &(EHLO_PLAIN.to_string() + READY));
    let (out, step) = exchange(&mut s, "caf\u{e9}\r\n.\r\n");
    assert_eq!(out, "");
    assert_eq!(body_of(step), "caf\u{e9}\r\n".as_bytes());
}

#[test]
fn oversize_data_is_consumed_then_refused() {
    let mut s = in_data();
    let line = format!("{}\r\n", "x".repeat(48));
    for _ in 0..21 {
        expect(&mut s, &line, "");
    }
    let (out, step) = exchange(&mut s, ".\r\nNOOP\r\n");
    assert_eq!(
        out,
        "552 5.3.4 message size exceeds fixed limit\r\n250 2.0.0 Ok\r\n"
    );
    assert_eq!(step, Step::NeedInput);
    // Exactly the limit is fine: 20 lines of 50 octets = 1000.
    let mut s = in_data();
    let (_, step) = exchange(&mut s, &(line.repeat(20) + ".\r\n"));
    assert_eq!(body_of(step).len(), 1000);
}

const BDAT_READY: &str = "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n";
const BDAT_TX: &str = "MAIL FROM:<a@b.example>\r\nRCPT TO:<x@example.com>\r\n";

#[test]
fn bdat_chunks_are_binary_and_exact() {
    let mut s = greeted();
    expect(&mut s, BDAT_TX, BDAT_READY);
    expect(&mut s, "BDAT 8\r\nab\n.\n\r\0", "");
    assert!(s.in_data());
    let (out, step) = exchange(&mut s, "\nBDAT 3 LAST\r\n.\r\nNOOP\r\n");
    assert_eq!(out, "250 2.0.0 8 octets received\r\n");
    assert_eq!(body_of(step), b"ab\n.\n\r\0\n.\r\n");
    s.message_stored(Ok("B".into()));
    assert_eq!(s.process(), Step::NeedInput);
    assert_eq!(
        text(s.take_output()),
        "250 2.0.0 Ok: queued as B\r\n250 2.0.0 Ok\r\n"
    );
}

#[test]
fn bdat_zero_last_and_sequencing() {
    let mut s = greeted();
    expect(&mut s, "BDAT 3\r\nabc", "503 5.5.1 need MAIL command\r\n");
    expect(&mut s, BDAT_TX, BDAT_READY);
    let (out, step) = exchange(&mut s, "BDAT 0 LAST\r\n");
    assert_eq!(out, "");
    assert_eq!(body_of(step), b"");
    s.message_stored(Ok("Z".into()));
    s.take_output();
    expect(&mut s, BDAT_TX, BDAT_READY);
    expect(&mut s, "BDAT 2\r\nhi", "250 2.0.0 2 octets received\r\n");
    expect(
        &mut s,
        "DATA\r\n",
        "503 5.5.1 DATA not allowed after BDAT\r\n",
    );
    expect(
        &mut s,
        "RCPT TO:<y@example.com>\r\n",
        "503 5.5.1 RCPT not allowed after BDAT\r\n",
    );
    expect(
        &mut s,
        "BDAT x\r\n",
        "501 5.5.4 syntax: BDAT size [LAST]\r\n",
    );
    let (out, step) = exchange(&mut s, "bdat 1 last\r\n!");
    assert_eq!(out, "");
    assert_eq!(body_of(step), b"hi!");
}

#[test]
fn bdat_oversize_is_consumed_then_refused() {
    let mut s = greeted();
    expect(&mut s, BDAT_TX, BDAT_READY);
    let chunk = format!("BDAT 600\r\n{}", "y".repeat(600));
    expect(&mut s, &chunk, "250 2.0.0 600 octets received\r\n");
    let (out, step) = exchange(&mut s, &(chunk.clone() + "NOOP\r\n"));
    assert_eq!(
        out,
        "552 5.3.4 message size exceeds fixed limit\r\n250 2.0.0 Ok\r\n"
    );
    assert_eq!(step, Step::NeedInput);
    expect(&mut s, &chunk, "503 5.5.1 need MAIL command\r\n");
}

#[test]
fn bdat_pipelined_whole_transaction() {
    let mut s = session();
    let input = "EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@example.com>\r\n\
                 BDAT 5\r\nhelloBDAT 6 LAST\r\n world";
    let (out, step) = exchange(&mut s, input);
    assert_eq!(
        out,
        EHLO_PLAIN.to_string() + BDAT_READY + "250 2.0.0 5 octets received\r\n"
    );
    assert_eq!(body_of(step), b"hello world");
}

#[test]
fn bdat_after_refused_recipients_swallows_the_chunk() {
    let mut s = greeted();
    expect(
        &mut s,
        "MAIL FROM:<a@b.example>\r\nRCPT TO:<x@other.example>\r\nBDAT 4 LAST\r\nNOOPNOOP\r\n",
        "250 2.1.0 Ok\r\n550 5.7.1 relaying denied\r\n554 5.5.1 no valid recipients\r\n\
         250 2.0.0 Ok\r\n",
    );
}

#[test]
fn smtputf8_permits_eight_bit_content() {
    let mut st = settings();
    st.reject_8bit_without_8bitmime = true;
    let mut s = session_with(st);
    let tx = "EHLO c\r\nMAIL FROM:<jörg@b.example> SMTPUTF8\r\nRCPT TO:<x@example.com>\r\nDATA\r\n";
    expect(&mut s, tx, &(EHLO_PLAIN.to_string() + READY));
    let (out, step) = exchange_bytes(&mut s, b"\xff\r\n.\r\n");
    assert_eq!(out, "");
    let Step::Message(m) = step else {
        panic!("no message")
    };
    assert!(m.0.smtputf8);
    assert_eq!(m.0.mail_from, "jörg@b.example");
    assert_eq!(m.1, b"\xff\r\n");
}
