//! The DATA decoder and the BDAT body accumulator on arbitrary content:
//! splitting the input at any point decodes exactly as the whole does.
//!
//! Input layout: bytes 0-1 the split point, byte 2 the limits, the rest is
//! the content after the DATA command (or the BDAT chunks).

#![no_main]

use impulse::smtp::data::{Body, DataDecoder};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq)]
struct Decoded {
    consumed: usize,
    finished: bool,
    bytes: Vec<u8>,
    len: u64,
    flags: impulse::smtp::data::ContentFlags,
}

fn decode(parts: &[&[u8]], max_octets: u64, max_line_octets: usize) -> Decoded {
    let mut d = DataDecoder::new(max_octets, max_line_octets);
    let mut consumed = 0;
    let mut finished = false;
    for part in parts {
        let (n, done) = d.feed(part);
        assert!(n <= part.len());
        consumed += n;
        if done {
            finished = true;
            break;
        }
        assert_eq!(n, part.len(), "an unfinished decoder consumes everything");
    }
    let body = d.finish();
    Decoded {
        consumed,
        finished,
        bytes: body.bytes,
        len: body.len,
        flags: body.flags,
    }
}

fn accumulate(parts: &[&[u8]], max_octets: u64) -> Body {
    let mut body = Body::new(max_octets);
    for part in parts {
        body.push(part);
    }
    body
}

fuzz_target!(|data: &[u8]| {
    let [s0, s1, limits, input @ ..] = data else {
        return;
    };
    let at = usize::from(u16::from_le_bytes([*s0, *s1])) % (input.len() + 1);
    let max_octets = u64::from(limits & 0x0f) * 16;
    let max_line_octets = usize::from(limits >> 4) * 8 + 1;
    let (a, b) = input.split_at(at);

    let whole = decode(&[input], max_octets, max_line_octets);
    let split = decode(&[a, b], max_octets, max_line_octets);
    assert_eq!(whole, split, "DATA split at {at}");
    if !whole.flags.rejects() {
        assert_eq!(whole.bytes.len() as u64, whole.len);
    }

    let whole = accumulate(&[input], max_octets);
    let split = accumulate(&[a, b], max_octets);
    assert_eq!(whole.bytes, split.bytes, "BDAT split at {at}");
    assert_eq!((whole.len, whole.flags), (split.len, split.flags));
    assert_eq!(whole.len, input.len() as u64);
});
