//! The SMTP server session on arbitrary client bytes: no panic, bounded
//! memory and output, and (without STARTTLS, whose pipelining rule depends
//! on read boundaries by design) the same messages and replies whether the
//! input arrives in one read or in many.
//!
//! Input layout: byte 0 picks the settings, byte 1 the read size, the rest
//! is what the client sends.

#![no_main]

use std::rc::Rc;

use impulse::message::Envelope;
use impulse::smtp::server::AUTH_LINE_MAX_OCTETS;
use impulse::smtp::{ServerSession, ServerSettings, Step};
use libfuzzer_sys::fuzz_target;

/// Small limits, so that the fuzzer reaches them.
const COMMAND_LINE_OCTETS: usize = 128;
const DATA_LINE_OCTETS: usize = 100;
const MESSAGE_OCTETS: u64 = 300;
/// Output per input octet can't exceed this (EHLO is the most verbose).
const OUTPUT_PER_INPUT_OCTET: usize = 32;
const OUTPUT_SLACK_OCTETS: usize = 1024;

fn settings(flags: u8) -> ServerSettings {
    let bit = |n: u8| flags & (1 << n) != 0;
    ServerSettings {
        hostname: "mx.example".into(),
        max_command_line_octets: COMMAND_LINE_OCTETS,
        max_data_line_octets: DATA_LINE_OCTETS,
        message_size: if bit(0) { MESSAGE_OCTETS } else { 0 },
        max_recipients_per_message: 3,
        max_errors_per_session: if bit(1) { 2 } else { 50 },
        max_receptions_per_connection: u32::from(bit(2)),
        require_ehlo: !bit(3),
        allow_null_envelope_sender: true,
        starttls_available: bit(4),
        auth_available: bit(5),
        auth_requires_tls: bit(6),
        can_relay: false,
        relay_domains: vec!["example.com".into()],
        reject_8bit_without_8bitmime: bit(7),
    }
}

#[derive(Debug, PartialEq)]
struct Run {
    received: Vec<(Envelope, Vec<u8>)>,
    output: Vec<u8>,
    closed: bool,
}

/// Drives a session like the I/O driver would, answering every step at once.
fn drive(flags: u8, confirm: bool, chunks: &mut dyn Iterator<Item = &[u8]>) -> Run {
    let mut s = ServerSession::new(Rc::new(settings(flags)), None, false);
    s.confirm_recipients(confirm);
    let mut run = Run {
        received: Vec::new(),
        output: s.take_output(),
        closed: false,
    };
    for chunk in chunks {
        s.feed(chunk);
        loop {
            match s.process() {
                Step::NeedInput => break,
                Step::Close => {
                    run.output.extend(s.take_output());
                    run.closed = true;
                    return run;
                }
                Step::Authenticate { .. } => s.auth_result(false),
                Step::StartTls => s.tls_started(),
                Step::Recipient(_) => s.recipient_checked(None),
                Step::Message(m) => {
                    run.received.push(*m);
                    s.message_stored(Ok(format!("ID{}", run.received.len())));
                }
            }
        }
        // A session waiting for input holds less than one line.
        assert!(s.buffered_input() <= COMMAND_LINE_OCTETS.max(AUTH_LINE_MAX_OCTETS));
        run.output.extend(s.take_output());
    }
    run
}

fuzz_target!(|data: &[u8]| {
    let [flags, read, input @ ..] = data else {
        return;
    };
    let confirm = read & 0x80 != 0;
    let read_octets = usize::from(read & 0x7f) + 1;
    let whole = drive(*flags, confirm, &mut std::iter::once(input));
    assert!(whole.output.len() <= OUTPUT_PER_INPUT_OCTET * input.len() + OUTPUT_SLACK_OCTETS);
    assert!(whole.output.is_empty() || whole.output.ends_with(b"\r\n"));
    let pieces = drive(*flags, confirm, &mut input.chunks(read_octets));
    let starttls = input
        .windows(b"STARTTLS".len())
        .any(|w| w.eq_ignore_ascii_case(b"STARTTLS"));
    if !starttls {
        assert_eq!(whole, pieces);
    }
});
