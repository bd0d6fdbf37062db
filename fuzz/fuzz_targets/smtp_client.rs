//! The client engine driven by an arbitrary server: no panic, no hang,
//! bounded buffering, and every submitted transaction ends in exactly one
//! `Done` that accounts for each of its recipients.
//!
//! Input layout: byte 0 picks the settings, byte 1 the transaction and the
//! read size, the rest is what the server sends.

#![no_main]

use impulse::message::{BodyType, Content, Recipient};
use impulse::smtp::client::{
    ClientSession, ClientSettings, ClientStep, TlsPolicy, Transaction, MAX_REPLY_LINES,
    MAX_REPLY_LINE_OCTETS,
};
use libfuzzer_sys::fuzz_target;

/// Transactions offered per session before `quit()`.
const MAX_SUBMITS: usize = 3;
/// Polls without progress that count as a hang.
const MAX_POLLS_PER_READ: usize = 10_000;
/// Generous bound on what the reply parser may buffer (lines are kept as
/// sanitised text, which can be three times the raw octets, plus growth).
const MAX_BUFFERED_OCTETS: usize = 8 * (MAX_REPLY_LINES + 1) * (MAX_REPLY_LINE_OCTETS + 2);

fn settings(flags: u8) -> ClientSettings {
    ClientSettings {
        tls: match flags & 3 {
            0 => TlsPolicy::Off,
            1 => TlsPolicy::Opportunistic,
            _ => TlsPolicy::Required,
        },
        use_pipelining: flags & 4 != 0,
        use_chunking: flags & 8 != 0,
        max_recipients_per_batch: 3,
        bdat_chunk_octets: usize::from(flags >> 4) + 1,
        ..ClientSettings::new("client.example")
    }
}

fn transaction(shape: u8) -> Transaction {
    let body: &[u8] = match shape & 3 {
        0 => b"Subject: x\r\n\r\n.dot\r\nbody\r\n",
        1 => b"Subject: x\r\n\r\ncaf\xc3\xa9\r\n",
        2 => b"\x00binary\rbody",
        _ => b"",
    };
    let recipients = ["b@y.example", "c@y.example", "d@y.example"];
    let n = usize::from((shape >> 2) & 3).max(1);
    Transaction {
        mail_from: if shape & 0x10 != 0 {
            String::new()
        } else {
            "a@x.example".into()
        },
        ret: None,
        envid: Some("env+id".into()),
        body_type: match shape & 3 {
            1 => BodyType::EightBitMime,
            2 => BodyType::BinaryMime,
            _ => BodyType::SevenBit,
        },
        smtputf8: shape & 0x20 != 0,
        recipients: recipients[..n].iter().map(|a| Recipient::new(*a)).collect(),
        // Content in two parts split somewhere, as intake makes it.
        body: {
            let at = usize::from(shape >> 6) % (body.len() + 1);
            Content::new(body[..at].to_vec(), body[at..].to_vec())
        },
    }
}

struct Driver {
    session: ClientSession,
    shape: u8,
    tls_fails: bool,
    /// Recipient counts of the submitted transactions, oldest first.
    submitted: Vec<usize>,
    done: usize,
}

impl Driver {
    /// Polls until the session needs input or is closed; true when closed.
    fn run(&mut self) -> bool {
        for _ in 0..MAX_POLLS_PER_READ {
            let _ = self.session.take_output();
            match self.session.poll() {
                ClientStep::NeedInput => return false,
                ClientStep::Closed => return true,
                ClientStep::StartTls if self.tls_fails => self.session.tls_failed(),
                ClientStep::StartTls => self.session.tls_started(),
                ClientStep::Ready if self.submitted.len() < MAX_SUBMITS => {
                    let tx = transaction(self.shape.rotate_left(self.submitted.len() as u32));
                    let n = tx.recipients.len();
                    if self.session.submit(tx).is_ok() {
                        self.submitted.push(n);
                    } else {
                        self.session.quit();
                    }
                }
                ClientStep::Ready => self.session.quit(),
                ClientStep::Done(result) => {
                    let expected = self.submitted.get(self.done).copied();
                    assert_eq!(
                        Some(result.recipients.len()),
                        expected,
                        "one Done per submit"
                    );
                    self.done += 1;
                }
                ClientStep::Failed(_) => {}
            }
        }
        panic!("client session made no progress in {MAX_POLLS_PER_READ} polls");
    }
}

fuzz_target!(|data: &[u8]| {
    let [flags, shape, input @ ..] = data else {
        return;
    };
    let mut d = Driver {
        session: ClientSession::new(settings(*flags), false),
        shape: *shape,
        tls_fails: shape & 0x40 != 0,
        submitted: Vec::new(),
        done: 0,
    };
    let read_octets = if shape & 0x80 != 0 {
        7
    } else {
        input.len().max(1)
    };
    let mut closed = d.run();
    for chunk in input.chunks(read_octets) {
        if closed {
            break;
        }
        d.session.feed(chunk);
        assert!(d.session.buffered_input_octets() <= MAX_BUFFERED_OCTETS);
        closed = d.run();
    }
    if !closed {
        d.session.connection_closed();
        assert!(d.run(), "closed after connection_closed");
    }
    assert_eq!(
        d.done,
        d.submitted.len(),
        "every submitted transaction is done"
    );
});
