//! Tests of the client engine: scripted conversations with a fake server,
//! hostile servers, and property tests. Scripts write line ends as `\n`;
//! `wire` turns them into CRLF on both sides.

mod chunking;
mod handshake;
mod hostile;
mod props;
mod transactions;

use super::*;
use crate::message::{BodyType, Recipient};

/// EHLO reply with everything but STARTTLS and CHUNKING.
const EHLO_FULL: &str = "250-mx.example\n250-PIPELINING\n250-SIZE 1000\n250-8BITMIME\n\
                         250-DSN\n250-ENHANCEDSTATUSCODES\n250 SMTPUTF8\n";
/// EHLO reply without any extension.
const EHLO_BARE: &str = "250 mx.example\n";
const BANNER: &str = "220 mx.example ESMTP\n";
const EHLO: &str = "EHLO client.example\n";

/// `\n` line ends as CRLF.
fn wire(s: &str) -> Vec<u8> {
    s.replace('\n', "\r\n").into_bytes()
}

fn settings() -> ClientSettings {
    ClientSettings {
        tls: TlsPolicy::Off,
        use_chunking: false,
        ..ClientSettings::new("client.example")
    }
}

/// Polls until a non-event step, pushing everything it returns.
fn drain(s: &mut ClientSession, steps: &mut Vec<ClientStep>) {
    loop {
        let step = s.poll();
        let event = matches!(step, ClientStep::Done(_) | ClientStep::Failed(_));
        steps.push(step);
        if !event {
            return;
        }
    }
}

/// Runs a script: for each `(sent, reply)` asserts the client's output is
/// exactly `sent`, then feeds `reply` and collects the steps (events and
/// the state step that ends each round).
fn converse(s: &mut ClientSession, script: &[(&str, &str)]) -> Vec<ClientStep> {
    let mut steps = Vec::new();
    for (i, (sent, reply)) in script.iter().enumerate() {
        let out = s.take_output();
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&wire(sent)),
            "client bytes at script step {i}"
        );
        steps.clear();
        s.feed(&wire(reply));
        drain(s, &mut steps);
    }
    steps
}

/// Asserts what the client has left to write.
fn assert_output(s: &mut ClientSession, expected: &str) {
    assert_eq!(
        String::from_utf8_lossy(&s.take_output()),
        String::from_utf8_lossy(&wire(expected))
    );
}

/// A session past the greeting and EHLO, `Ready`.
fn connected(settings: ClientSettings, ehlo_reply: &str) -> ClientSession {
    let mut s = ClientSession::new(settings, false);
    let steps = converse(&mut s, &[("", BANNER), (EHLO, ehlo_reply)]);
    assert_eq!(steps, [ClientStep::Ready]);
    s
}

fn rcpt(address: &str) -> Recipient {
    Recipient {
        address: address.to_string(),
        notify: None,
        orcpt: None,
    }
}

fn tx(recipients: &[&str], body: &str) -> Transaction {
    tx_bytes(recipients, &wire(body))
}

fn tx_bytes(recipients: &[&str], body: &[u8]) -> Transaction {
    Transaction {
        mail_from: "a@x.example".to_string(),
        ret: None,
        envid: None,
        body_type: BodyType::SevenBit,
        smtputf8: false,
        recipients: recipients.iter().map(|r| rcpt(r)).collect(),
        body: body.to_vec().into(),
    }
}

/// Each recipient as `address kind reply`, e.g. `b@y delivered 250 ok`.
fn outcomes(result: &TransactionResult) -> Vec<String> {
    result
        .recipients
        .iter()
        .map(|r| {
            let kind = match r.outcome {
                Outcome::Delivered(_) => "delivered",
                Outcome::Transient(_) => "transient",
                Outcome::Permanent(_) => "permanent",
            };
            format!("{} {kind} {}", r.recipient.address, r.outcome.reply())
        })
        .collect()
}

/// The single `Done` among `steps`.
fn done(steps: &[ClientStep]) -> &TransactionResult {
    let mut results = steps.iter().filter_map(|s| match s {
        ClientStep::Done(r) => Some(r),
        _ => None,
    });
    let first = results.next().expect("a Done step");
    assert!(results.next().is_none(), "one Done step: {steps:?}");
    first
}

fn failed(steps: &[ClientStep]) -> Option<&SessionError> {
    steps.iter().find_map(|s| match s {
        ClientStep::Failed(e) => Some(e),
        _ => None,
    })
}
