//! Property tests: a cut or bit-flipped segment never yields a garbage
//! record. Cuts yield exactly the prefix of fully written records; flips
//! yield a subsequence that keeps every record the flips did not touch.

use impulse::message::{BodyType, DsnRet, Envelope, MessageId, Notify, Recipient};
use impulse::spool::record::{
    decode_payload, encode_record, Outcome, Record, SegmentHeader, FORMAT_VERSION, FRAME_HEADER_LEN,
};
use impulse::spool::scan::scan_segment;
use proptest::prelude::*;

fn id() -> impl Strategy<Value = MessageId> {
    (0u64..1 << 48, any::<u16>(), any::<u32>()).prop_map(|(epoch_ms, shard, seq)| MessageId {
        epoch_ms,
        shard,
        seq,
    })
}

fn envelope() -> impl Strategy<Value = Envelope> {
    let rcpt = (
        "[a-z]{0,8}@[a-z.]{0,8}",
        proptest::option::of(any::<(bool, bool, bool, bool)>()),
        proptest::option::of("[ -~]{0,12}"),
    )
        .prop_map(|(address, n, orcpt)| Recipient {
            address,
            notify: n.map(|(never, success, failure, delay)| Notify {
                never,
                success,
                failure,
                delay,
            }),
            orcpt,
        });
    (
        ".{0,12}",
        0u8..3,
        proptest::option::of(".{0,8}"),
        0u8..3,
        any::<bool>(),
        proptest::collection::vec(rcpt, 0..4),
        proptest::option::of(".{0,6}"),
        proptest::option::of(any::<std::net::IpAddr>()),
        ".{0,10}",
        any::<u64>(),
        proptest::option::of("[a-z0-9._-]{1,12}"),
    )
        .prop_map(
            |(
                mail_from,
                ret,
                envid,
                bt,
                smtputf8,
                recipients,
                auth_user,
                peer,
                helo,
                t,
                binding,
            )| {
                Envelope {
                    mail_from,
                    ret: [None, Some(DsnRet::Full), Some(DsnRet::Hdrs)][ret as usize],
                    envid,
                    body_type: [
                        BodyType::SevenBit,
                        BodyType::EightBitMime,
                        BodyType::BinaryMime,
                    ][bt as usize],
                    smtputf8,
                    recipients,
                    auth_user,
                    peer,
                    helo,
                    received_at_ms: t,
                    binding,
                }
            },
        )
}

fn record() -> impl Strategy<Value = Record> {
    prop_oneof![
        (
            id(),
            envelope(),
            proptest::collection::vec(any::<u8>(), 0..200)
        )
            .prop_map(|(id, envelope, body)| Record::Message { id, envelope, body }),
        (id(), any::<u32>(), 0u8..3, ".{0,20}").prop_map(|(id, rcpt, o, reply)| {
            let outcome = [Outcome::Delivered, Outcome::Failed, Outcome::Deferred][o as usize];
            Record::Outcome {
                id,
                rcpt,
                outcome,
                reply,
            }
        }),
        (id(), any::<u64>(), any::<u32>()).prop_map(|(id, next_attempt_ms, attempts)| {
            Record::Retry {
                id,
                next_attempt_ms,
                attempts,
            }
        }),
        id().prop_map(|id| Record::Done { id }),
        (id(), proptest::option::of("[a-z0-9_-]{0,20}"))
            .prop_map(|(id, binding)| Record::Rebind { id, binding }),
    ]
}

/// Builds a segment image; returns it with each record's (start, end).
fn build(recs: &[Record]) -> (Vec<u8>, Vec<(usize, usize)>) {
    let h = SegmentHeader {
        version: FORMAT_VERSION,
        shard: 1,
        segment: 7,
        created_ms: 99,
    };
    let mut buf = h.encode().to_vec();
    let mut spans = Vec::new();
    for r in recs {
        let start = buf.len();
        encode_record(r, start as u64, &mut buf);
        spans.push((start, buf.len()));
    }
    (buf, spans)
}

/// Decodes what a scan finds: (offset, record) pairs.
fn decode_all(buf: &[u8]) -> Vec<(usize, Record)> {
    scan_segment(buf)
        .frames
        .iter()
        .filter_map(|f| {
            let o = f.offset as usize;
            decode_payload(
                f.frame.record_type,
                f.frame.version,
                &buf[o + FRAME_HEADER_LEN..o + f.frame.len],
            )
            .ok()
            .map(|r| (o, r))
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn roundtrip(recs in proptest::collection::vec(record(), 0..8)) {
        let (buf, spans) = build(&recs);
        let got = decode_all(&buf);
        let want: Vec<(usize, Record)> = spans.iter().map(|s| s.0).zip(recs).collect();
        prop_assert_eq!(got, want);
        prop_assert_eq!(scan_segment(&buf).torn_bytes, 0);
    }

    #[test]
    fn block_padding_is_not_a_torn_tail(recs in proptest::collection::vec(record(), 0..6)) {
        let (mut buf, spans) = build(&recs);
        let data_end = buf.len();
        buf.resize(data_end.next_multiple_of(4096), 0);
        let scan = scan_segment(&buf);
        prop_assert_eq!(scan.frames.len(), spans.len());
        prop_assert_eq!(scan.torn_bytes, 0);
        prop_assert_eq!(scan.padding_bytes as usize, buf.len() - data_end);
        prop_assert_eq!(scan.valid_end as usize, data_end);
    }

    #[test]
    fn every_cut_yields_exact_prefix(recs in proptest::collection::vec(record(), 1..6)) {
        let (buf, spans) = build(&recs);
        for cut in 0..=buf.len() {
            let got = decode_all(&buf[..cut]);
            let want: Vec<(usize, Record)> = spans
                .iter()
                .zip(recs.iter())
                .filter(|((_, end), _)| *end <= cut)
                .map(|((s, _), r)| (*s, r.clone()))
                .collect();
            prop_assert_eq!(&got, &want, "cut at {}", cut);
            let scan = scan_segment(&buf[..cut]);
            prop_assert!(scan.corrupt.is_empty(), "a cut is a torn tail, not corruption");
            if cut >= 32 {
                let valid_end = spans.iter().map(|sp| sp.1).filter(|e| *e <= cut).max();
                prop_assert_eq!(scan.valid_end as usize, valid_end.unwrap_or(32));
            }
        }
    }

    #[test]
    fn bit_flips_never_yield_garbage(
        recs in proptest::collection::vec(record(), 1..8),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..4),
    ) {
        let (mut buf, spans) = build(&recs);
        let mut hit = Vec::new();
        for (idx, bit) in &flips {
            let pos = idx.index(buf.len());
            buf[pos] ^= 1 << bit;
            hit.push(pos);
        }
        let got = decode_all(&buf);
        for (off, rec) in &got {
            let i = spans.iter().position(|s| s.0 == *off);
            prop_assert!(i.is_some(), "record at unknown offset {}", off);
            prop_assert_eq!(rec, &recs[i.unwrap_or(0)]);
        }
        for (i, (s, e)) in spans.iter().enumerate() {
            // Two flips of the same bit cancel out; compare bytes instead.
            let untouched = !hit.iter().any(|p| (*s..*e).contains(p));
            if untouched {
                prop_assert!(got.iter().any(|(o, _)| o == s), "untouched record {} lost", i);
            }
        }
    }
}
