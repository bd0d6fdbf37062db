//! DNS response reading on arbitrary datagrams: `parse_reply` returns a
//! reply or says why it ignored the bytes, never panics.
//!
//! Byte 0 picks the question type and the mode:
//! * bit 7 clear: the rest is the datagram as received;
//! * bit 7 set: the rest is a header and the sections after the question;
//!   the harness puts our question in between (QDCOUNT 1), so that the
//!   answer-reading code is reached without the fuzzer guessing a name.
//!
//! The query id is always the datagram's own, for the same reason.

#![no_main]

use impulse::outbound::dns::wire::{parse_name, parse_reply, Answer, Reply};
use impulse::outbound::dns::{Data, QType, MAX_CNAME_CHAIN};
use libfuzzer_sys::fuzz_target;

const HEADER_OCTETS: usize = 12;
const NAME: &str = "mx.example";
/// `mx.example.` in wire form.
const NAME_WIRE: &[u8] = b"\x02mx\x07example\x00";

fn qtype(b: u8) -> (QType, u16) {
    match b % 3 {
        0 => (QType::Mx, 15),
        1 => (QType::A, 1),
        _ => (QType::Aaaa, 28),
    }
}

fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else {
        return;
    };
    let (qtype, code) = qtype(*mode);
    let datagram = if mode & 0x80 == 0 || rest.len() < HEADER_OCTETS {
        rest.to_vec()
    } else {
        let mut d = rest[..HEADER_OCTETS].to_vec();
        d[4..6].copy_from_slice(&1u16.to_be_bytes());
        d.extend_from_slice(NAME_WIRE);
        d.extend_from_slice(&code.to_be_bytes());
        d.extend_from_slice(&1u16.to_be_bytes());
        d.extend_from_slice(&rest[HEADER_OCTETS..]);
        d
    };
    let id = match datagram.get(..2) {
        Some(b) => u16::from_be_bytes([b[0], b[1]]),
        None => 0,
    };
    let name = parse_name(NAME).expect("a valid name");
    let Ok(Reply::Answer(answer)) = parse_reply(&datagram, id, &name, qtype) else {
        return;
    };
    match answer {
        Answer::Records { data, .. } => match (data, qtype) {
            (Data::Mx(mx), QType::Mx) => assert!(!mx.is_empty()),
            (Data::Addrs(a), QType::A) => assert!(!a.is_empty() && a.iter().all(|a| a.is_ipv4())),
            (Data::Addrs(a), QType::Aaaa) => {
                assert!(!a.is_empty() && a.iter().all(|a| a.is_ipv6()))
            }
            (data, qtype) => panic!("{data:?} for a {} question", qtype.name()),
        },
        Answer::NoData { cname, .. } => {
            if let Some(c) = cname {
                assert!(!c.ends_with('.') && c.len() <= 255 * (MAX_CNAME_CHAIN + 1));
            }
        }
        Answer::NxDomain { .. } => {}
    }
});
