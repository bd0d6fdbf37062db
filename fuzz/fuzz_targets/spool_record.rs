//! Spool record decoding on arbitrary bytes, and the codec's round trip.
//!
//! Byte 0 picks the mode:
//! * even: the rest is raw segment bytes; the header, a frame check and a
//!   record decode run at offset 32 (where a segment's first frame sits);
//! * odd: the rest is a payload of the record type in byte 1; the harness
//!   frames it with a valid length and CRC so that payload decoding is
//!   reached (a fuzzer cannot guess a CRC32C).
//!
//! Whatever decodes must encode back to the same bytes (when it was
//! written at this code's version; an older version's record is written
//! anew at this one) and decode to the same record.

#![no_main]

use impulse::spool::record::{
    check_frame, decode_message_parts, decode_payload, decode_record, encode_message_frame,
    encode_record, reframe, Record, RecordType, SegmentHeader, FRAME_HEADER_LEN, RECORD_VERSION,
    SEGMENT_HEADER_LEN,
};
use libfuzzer_sys::fuzz_target;

const OFFSET: u64 = SEGMENT_HEADER_LEN as u64;
/// Where the segment header's reserved field starts (SPEC.md 1.1).
const RESERVED_AT: usize = 24;

fn record_type(b: u8) -> RecordType {
    match b % 5 {
        0 => RecordType::Message,
        1 => RecordType::RecipientOutcome,
        2 => RecordType::Retry,
        3 => RecordType::Done,
        _ => RecordType::Rebind,
    }
}

/// A valid frame at `OFFSET` around `payload`.
fn frame(t: RecordType, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; FRAME_HEADER_LEN];
    f[0..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    f[4] = t as u8;
    f[5] = RECORD_VERSION;
    f.extend_from_slice(payload);
    reframe(&mut f, OFFSET);
    f
}

/// `bytes` start with a frame that decoded as `rec` with length `len`.
fn round_trip(rec: &Record, len: usize, bytes: &[u8]) {
    let mut out = Vec::new();
    let n = encode_record(rec, OFFSET, &mut out);
    assert_eq!(n, out.len());
    let current = bytes[5] == RECORD_VERSION;
    if current {
        assert_eq!(out, bytes[..len], "encoding is canonical");
    }
    let (again, n) = decode_record(&out, OFFSET).expect("an encoded record decodes");
    assert_eq!(&again, rec);
    if current {
        assert_eq!(n, len);
    }
    if let Record::Message { id, envelope, body } = rec {
        let mut direct = Vec::new();
        encode_message_frame(id, envelope, body, OFFSET, &mut direct);
        assert_eq!(direct, out, "both MESSAGE encoders agree");
        let (pid, penv, pbody) = decode_message_parts(&out[FRAME_HEADER_LEN..], RECORD_VERSION).unwrap();
        assert_eq!((&pid, &penv, pbody), (id, envelope, &body[..]));
    }
}

fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else {
        return;
    };
    if mode & 1 == 0 {
        if let Ok(h) = SegmentHeader::decode(rest) {
            // The reserved field (24..28) is not checked on reading, so
            // only the fields before it must come back as they were.
            let encoded = h.encode();
            assert_eq!(encoded[..RESERVED_AT], rest[..RESERVED_AT]);
            assert_eq!(SegmentHeader::decode(&encoded), Ok(h));
        }
        let at = rest.get(SEGMENT_HEADER_LEN..).unwrap_or(&[]);
        if let Ok(f) = check_frame(at, OFFSET) {
            assert!(f.len >= FRAME_HEADER_LEN && f.len <= at.len());
        }
        if let Ok((rec, len)) = decode_record(at, OFFSET) {
            round_trip(&rec, len, at);
        }
        let _ = decode_message_parts(rest, 1);
        let _ = decode_message_parts(rest, RECORD_VERSION);
        return;
    }
    let [t, payload @ ..] = rest else {
        return;
    };
    let t = record_type(*t);
    let f = frame(t, payload);
    let checked = check_frame(&f, OFFSET).expect("the harness frames correctly");
    assert_eq!((checked.record_type, checked.len), (t, f.len()));
    match decode_record(&f, OFFSET) {
        Ok((rec, len)) => {
            assert_eq!(rec.record_type(), t);
            assert_eq!(decode_payload(t, RECORD_VERSION, payload).as_ref(), Ok(&rec));
            round_trip(&rec, len, &f);
        }
        Err(e) => assert_eq!(decode_payload(t, RECORD_VERSION, payload), Err(e)),
    }
});
