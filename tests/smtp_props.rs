//! Property tests of the sans-IO SMTP server through its public API:
//! arbitrary input never panics and keeps memory and output bounded, and
//! how the input is split into reads never changes what is received.

use std::rc::Rc;

use impulse::message::Envelope;
use impulse::smtp::server::AUTH_LINE_MAX_OCTETS;
use impulse::smtp::{ServerSession, ServerSettings, Step};
use proptest::prelude::*;

const COMMAND_LINE_OCTETS: usize = 512;
/// Output per input octet can't exceed this (EHLO is the most verbose).
const OUTPUT_PER_INPUT_OCTET: usize = 32;
const OUTPUT_SLACK_OCTETS: usize = 1024;

fn settings() -> ServerSettings {
    ServerSettings {
        hostname: "mx.example".into(),
        max_command_line_octets: COMMAND_LINE_OCTETS,
        max_data_line_octets: 1000,
        message_size: 0,
        max_recipients_per_message: 100,
        max_errors_per_session: 50,
        max_receptions_per_connection: 0,
        require_ehlo: true,
        allow_null_envelope_sender: true,
        starttls_available: true,
        auth_available: true,
        auth_requires_tls: false,
        can_relay: false,
        relay_domains: vec!["example.com".into()],
        reject_8bit_without_8bitmime: false,
    }
}

type Received = Vec<(Envelope, Vec<u8>)>;

/// Drives a session like the I/O driver would, answering every step at
/// once. Returns the messages received, all output, and whether it closed.
fn drive(chunks: &[&[u8]]) -> (Received, Vec<u8>, bool) {
    let mut s = ServerSession::new(Rc::new(settings()), None, false);
    let mut output = s.take_output();
    let mut received = Vec::new();
    let mut seq = 0u32;
    for chunk in chunks {
        s.feed(chunk);
        loop {
            match s.process() {
                Step::NeedInput => break,
                Step::Close => {
                    output.extend(s.take_output());
                    return (received, output, true);
                }
                Step::Authenticate { password, .. } => s.auth_result(password == "pass"),
                Step::StartTls => s.tls_started(),
                Step::Recipient(_) => s.recipient_checked(None),
                Step::Message(m) => {
                    received.push(*m);
                    seq += 1;
                    s.message_stored(Ok(format!("ID{seq}")));
                }
            }
        }
        // A session waiting for input holds less than one line.
        assert!(s.buffered_input() <= COMMAND_LINE_OCTETS.max(AUTH_LINE_MAX_OCTETS));
        output.extend(s.take_output());
    }
    (received, output, false)
}

fn split<'a>(input: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut chunks = Vec::new();
    let mut rest = input;
    for &n in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (a, b) = rest.split_at(n.clamp(1, rest.len()));
        chunks.push(a);
        rest = b;
    }
    chunks
}

const FRAGMENTS: &[&str] = &[
    "EHLO c\r\n",
    "HELO c\r\n",
    "MAIL FROM:<a@b.example>\r\n",
    "MAIL FROM:<>  SIZE=10 BODY=8BITMIME\r\n",
    "RCPT TO:<x@example.com>\r\n",
    "RCPT TO:<x@other.example> NOTIFY=NEVER\r\n",
    "DATA\r\n",
    "BDAT 5\r\n",
    "BDAT 3 LAST\r\n",
    "\r\n.\r\n",
    ".\r\n",
    "\n.\n",
    "AUTH PLAIN\r\n",
    "AUTH LOGIN\r\n",
    "AHVzZXIAcGFzcw==\r\n",
    "STARTTLS\r\n",
    "RSET\r\n",
    "NOOP\r\n",
    "*\r\n",
    "\r",
    "\n",
    "\0",
];

fn noisy_input() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        prop::sample::select(FRAGMENTS).prop_map(|f| f.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..40),
    ];
    prop::collection::vec(piece, 0..60).prop_map(|v| v.concat())
}

/// Content lines (no CR/LF inside), some starting with dots.
fn lines() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec("[.]{0,3}[ -~]{0,20}", 0..12)
}

fn data_transaction(lines: &[String]) -> (Vec<u8>, Vec<u8>) {
    let mut wire =
        b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@example.com>\r\nDATA\r\n".to_vec();
    let mut content = Vec::new();
    for l in lines {
        content.extend_from_slice(l.as_bytes());
        content.extend_from_slice(b"\r\n");
        if l.starts_with('.') {
            wire.push(b'.');
        }
        wire.extend_from_slice(l.as_bytes());
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b".\r\nQUIT\r\n");
    (wire, content)
}

fn bdat_transaction(content: &[u8], chunk_sizes: &[usize]) -> Vec<u8> {
    let mut wire = b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@example.com>\r\n".to_vec();
    let chunks = split(content, chunk_sizes);
    for (i, c) in chunks.iter().enumerate() {
        let last = if i + 1 == chunks.len() { " LAST" } else { "" };
        wire.extend_from_slice(format!("BDAT {}{last}\r\n", c.len()).as_bytes());
        wire.extend_from_slice(c);
    }
    if chunks.is_empty() {
        wire.extend_from_slice(b"BDAT 0 LAST\r\n");
    }
    wire.extend_from_slice(b"QUIT\r\n");
    wire
}

proptest! {
    #[test]
    fn arbitrary_input_never_panics_and_output_is_bounded(
        input in noisy_input(),
        sizes in prop::collection::vec(1usize..64, 1..8),
    ) {
        let (_, output, _) = drive(&split(&input, &sizes));
        prop_assert!(output.len() <= OUTPUT_PER_INPUT_OCTET * input.len() + OUTPUT_SLACK_OCTETS);
        // Every reply line is CRLF-terminated and starts with a code.
        prop_assert!(output.ends_with(b"\r\n"));
    }

    #[test]
    fn data_is_independent_of_read_boundaries(
        lines in lines(),
        sizes in prop::collection::vec(1usize..20, 1..8),
    ) {
        let (wire, content) = data_transaction(&lines);
        let (whole, out_whole, closed) = drive(&[&wire]);
        prop_assert!(closed);
        prop_assert_eq!(whole.len(), 1);
        prop_assert_eq!(&whole[0].1, &content);
        let (pieces, out_pieces, _) = drive(&split(&wire, &sizes));
        prop_assert_eq!(whole, pieces);
        prop_assert_eq!(out_whole, out_pieces);
    }

    #[test]
    fn bdat_is_independent_of_read_boundaries(
        content in prop::collection::vec(any::<u8>(), 0..200),
        chunk_sizes in prop::collection::vec(1usize..80, 1..4),
        sizes in prop::collection::vec(1usize..20, 1..8),
    ) {
        let wire = bdat_transaction(&content, &chunk_sizes);
        let (whole, out_whole, closed) = drive(&[&wire]);
        prop_assert!(closed);
        prop_assert_eq!(whole.len(), 1);
        prop_assert_eq!(&whole[0].1, &content);
        let (pieces, out_pieces, _) = drive(&split(&wire, &sizes));
        prop_assert_eq!(whole, pieces);
        prop_assert_eq!(out_whole, out_pieces);
    }
}

/// Every single split point of one DATA transaction gives the same result.
#[test]
fn data_split_at_every_byte_boundary() {
    let lines: Vec<String> = ["Subject: x", ".dot", "..two", "", "."]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (wire, content) = data_transaction(&lines);
    let (whole, out_whole, _) = drive(&[&wire]);
    assert_eq!(whole[0].1, content);
    for i in 0..=wire.len() {
        let (a, b) = wire.split_at(i);
        let (got, out, closed) = drive(&[a, b]);
        assert!(closed, "split at {i}");
        assert_eq!(got, whole, "split at {i}");
        assert_eq!(out, out_whole, "split at {i}");
    }
}
