//! Wire-level checks: id and question matching, CNAME chains, negative TTLs.

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, MX, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::outbound::dns::wire::*;

fn n(s: &str) -> Name {
    parse_name(s).expect("name")
}

fn reply(id: u16, q: &str, qt: RecordType) -> Message {
    let mut m = Message::new(id, MessageType::Response, OpCode::Query);
    m.add_query(Query::query(n(q), qt));
    m
}

#[test]
fn query_round_trips_and_asks_for_recursion() {
    let bytes = build_query(0x1234, &n("Example.COM"), QType::Mx);
    let m = Message::from_vec(&bytes).expect("decode");
    assert_eq!(m.metadata.id, 0x1234);
    assert!(m.metadata.recursion_desired);
    assert_eq!(m.queries[0].query_type, RecordType::MX);
    assert_eq!(
        m.edns.as_ref().map(|e| e.max_payload()),
        Some(EDNS_PAYLOAD_OCTETS)
    );
}

#[test]
fn mismatched_replies_are_ignored() {
    let name = n("example.com");
    let ok = reply(7, "example.com", RecordType::MX).to_vec().unwrap();
    assert!(parse_reply(&ok, 7, &name, QType::Mx).is_ok());
    assert_eq!(
        parse_reply(&ok, 8, &name, QType::Mx),
        Err(Ignored::Mismatch)
    );
    assert_eq!(
        parse_reply(&ok, 7, &n("other.com"), QType::Mx),
        Err(Ignored::Mismatch)
    );
    assert_eq!(parse_reply(&ok, 7, &name, QType::A), Err(Ignored::Mismatch));
    let mut query = reply(7, "example.com", RecordType::MX);
    query.metadata.message_type = MessageType::Query;
    assert_eq!(
        parse_reply(&query.to_vec().unwrap(), 7, &name, QType::Mx),
        Err(Ignored::Mismatch)
    );
    assert!(matches!(
        parse_reply(&ok[..5], 7, &name, QType::Mx),
        Err(Ignored::Malformed(_))
    ));
    // Question names compare without regard to case (0x20 mixing).
    let upper = reply(7, "EXAMPLE.com", RecordType::MX).to_vec().unwrap();
    assert!(parse_reply(&upper, 7, &name, QType::Mx).is_ok());
}

#[test]
fn cname_chain_in_the_answer_is_followed_with_the_smallest_ttl() {
    let mut m = reply(1, "www.example.com", RecordType::A);
    m.add_answer(Record::from_rdata(
        n("www.example.com"),
        300,
        RData::CNAME(CNAME(n("a.example.net"))),
    ));
    m.add_answer(Record::from_rdata(
        n("a.example.net"),
        30,
        RData::CNAME(CNAME(n("b.example.org"))),
    ));
    m.add_answer(Record::from_rdata(
        n("b.example.org"),
        600,
        RData::A(A([192, 0, 2, 1].into())),
    ));
    // A record for a name outside the chain must not be taken.
    m.add_answer(Record::from_rdata(
        n("evil.example"),
        600,
        RData::A(A([6, 6, 6, 6].into())),
    ));
    let r = parse_reply(&m.to_vec().unwrap(), 1, &n("www.example.com"), QType::A).unwrap();
    assert_eq!(
        r,
        Reply::Answer(Answer::Records {
            data: Data::Addrs(vec!["192.0.2.1".parse().unwrap()]),
            ttl: 30
        })
    );
}

#[test]
fn unfollowed_cname_and_negative_ttls() {
    let mut m = reply(1, "alias.example", RecordType::MX);
    m.add_answer(Record::from_rdata(
        n("alias.example"),
        300,
        RData::CNAME(CNAME(n("Real.Example"))),
    ));
    let r = parse_reply(&m.to_vec().unwrap(), 1, &n("alias.example"), QType::Mx).unwrap();
    assert_eq!(
        r,
        Reply::Answer(Answer::NoData {
            ttl: None,
            cname: Some("real.example".into())
        })
    );

    let soa = SOA::new(n("ns.example"), n("h.example"), 1, 1, 1, 1, 120);
    let mut m = reply(1, "gone.example", RecordType::MX);
    m.metadata.response_code = ResponseCode::NXDomain;
    m.add_authority(Record::from_rdata(
        n("example"),
        900,
        RData::SOA(soa.clone()),
    ));
    let r = parse_reply(&m.to_vec().unwrap(), 1, &n("gone.example"), QType::Mx).unwrap();
    assert_eq!(r, Reply::Answer(Answer::NxDomain { ttl: Some(120) }));
    let mut m = reply(1, "x.example", RecordType::MX);
    m.add_authority(Record::from_rdata(n("example"), 60, RData::SOA(soa)));
    let r = parse_reply(&m.to_vec().unwrap(), 1, &n("x.example"), QType::Mx).unwrap();
    assert_eq!(
        r,
        Reply::Answer(Answer::NoData {
            ttl: Some(60),
            cname: None
        })
    );
}

#[test]
fn truncation_failures_and_null_mx() {
    let name = n("example.com");
    let mut m = reply(3, "example.com", RecordType::MX);
    m.metadata.truncation = true;
    assert_eq!(
        parse_reply(&m.to_vec().unwrap(), 3, &name, QType::Mx),
        Ok(Reply::Truncated)
    );
    let mut m = reply(3, "example.com", RecordType::MX);
    m.metadata.response_code = ResponseCode::ServFail;
    assert_eq!(
        parse_reply(&m.to_vec().unwrap(), 3, &name, QType::Mx),
        Ok(Reply::Failure(ResponseCode::ServFail))
    );
    let mut m = reply(3, "example.com", RecordType::MX);
    m.add_answer(Record::from_rdata(
        name.clone(),
        60,
        RData::MX(MX::new(0, Name::root())),
    ));
    let r = parse_reply(&m.to_vec().unwrap(), 3, &name, QType::Mx).unwrap();
    assert_eq!(
        r,
        Reply::Answer(Answer::Records {
            data: Data::Mx(vec![MxRecord {
                preference: 0,
                exchange: String::new()
            }]),
            ttl: 60
        })
    );
}

#[test]
fn names_are_checked_and_idna_encoded() {
    assert!(parse_name("").is_none());
    assert!(parse_name("a..b").is_none());
    assert_eq!(normalize(&n("Bücher.Example.")), "xn--bcher-kva.example");
}
