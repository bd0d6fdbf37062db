//! DNS wire format: builds queries and turns responses into typed answers.
//!
//! hickory-proto does the encoding and decoding; this file decides what a
//! response *means* for one question: records (following a CNAME chain in
//! the answer section), NODATA, NXDOMAIN (with the RFC 2308 negative TTL), a
//! server failure, truncation, or a datagram that is not ours to read.
//! Owns `QType`, `Answer`, `Reply`, `Ignored` and the record types. May
//! call: nothing in the crate; `hickory-proto`. Must never: do I/O, read a
//! clock or draw randomness (the caller supplies the query id), read a reply
//! whose id or question is not ours (`Ignored::Mismatch`), or collect
//! records past `MAX_CNAME_CHAIN` CNAMEs.

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

/// Longest CNAME chain followed inside one response.
pub const MAX_CNAME_CHAIN: usize = 8;
/// EDNS(0) UDP payload we advertise (the DNS flag day 2020 value).
pub const EDNS_PAYLOAD_OCTETS: u16 = 1232;

/// The record types the resolver asks for.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum QType {
    /// Mail exchangers.
    Mx,
    /// IPv4 addresses.
    A,
    /// IPv6 addresses.
    Aaaa,
}

impl QType {
    fn record_type(self) -> RecordType {
        match self {
            QType::Mx => RecordType::MX,
            QType::A => RecordType::A,
            QType::Aaaa => RecordType::AAAA,
        }
    }

    /// The type's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            QType::Mx => "MX",
            QType::A => "A",
            QType::Aaaa => "AAAA",
        }
    }
}

/// One MX record as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MxRecord {
    /// Lower is preferred.
    pub preference: u16,
    /// Exchange name, lower-case ASCII (IDNA), no trailing dot; `""` is the
    /// root, i.e. `"."`.
    pub exchange: String,
}

/// The records of one answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Data {
    /// MX records in the order received.
    Mx(Vec<MxRecord>),
    /// A or AAAA addresses in the order received.
    Addrs(Vec<IpAddr>),
}

/// What a well-formed, matching, untruncated response says about the question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Records of the asked type; `ttl` is the smallest along the CNAME chain.
    Records { data: Data, ttl: u32 },
    /// The name exists but holds no records of the type. `ttl` is the RFC 2308
    /// negative TTL from the SOA (`None` = no SOA: do not cache). `cname` is
    /// the end of a CNAME chain the server did not follow.
    NoData {
        ttl: Option<u32>,
        cname: Option<String>,
    },
    /// The name does not exist; `ttl` as for `NoData`.
    NxDomain { ttl: Option<u32> },
}

/// A response to our question, read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// A usable answer.
    Answer(Answer),
    /// TC bit set: ask again over TCP.
    Truncated,
    /// SERVFAIL, REFUSED, FORMERR, ...: try another server.
    Failure(ResponseCode),
}

/// Why a datagram was not read as a reply to our question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ignored {
    /// Undecodable bytes.
    Malformed(String),
    /// Wrong id, not a response, or a different question: maybe spoofed.
    Mismatch,
}

/// Lower-case ASCII without the trailing dot; `""` for the root.
pub fn normalize(name: &Name) -> String {
    let mut s = name.to_ascii();
    while s.ends_with('.') {
        s.pop();
    }
    s.make_ascii_lowercase();
    s
}

/// A domain as typed (UTF-8 allowed, IDNA-encoded) as an absolute DNS name;
/// `None` when it cannot be one.
pub fn parse_name(domain: &str) -> Option<Name> {
    let trimmed = domain.strip_suffix('.').unwrap_or(domain);
    if trimmed.is_empty() {
        return None;
    }
    let mut name = Name::from_utf8(trimmed).ok()?;
    name.set_fqdn(true);
    Some(name)
}

/// A recursive query (RD set, EDNS(0)) for `name`/`qtype` with `id`.
pub fn build_query(id: u16, name: &Name, qtype: QType) -> Vec<u8> {
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    let mut q = Query::query(name.clone(), qtype.record_type());
    q.set_query_class(DNSClass::IN);
    msg.add_query(q);
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD_OCTETS);
    msg.set_edns(edns);
    // Encoding a message we built from a checked name cannot fail; an empty
    // query would only make the server answer FORMERR, never panic here.
    msg.to_vec().unwrap_or_default()
}

/// Reads `bytes` as the reply to query `id` for `name`/`qtype`.
pub fn parse_reply(bytes: &[u8], id: u16, name: &Name, qtype: QType) -> Result<Reply, Ignored> {
    let msg = Message::from_vec(bytes).map_err(|e| Ignored::Malformed(e.to_string()))?;
    let meta = &msg.metadata;
    let same_question = msg.queries.len() == 1 && {
        let q = &msg.queries[0];
        q.name.eq_ignore_root(name)
            && q.query_type == qtype.record_type()
            && q.query_class == DNSClass::IN
    };
    if meta.id != id || meta.message_type != MessageType::Response || !same_question {
        return Err(Ignored::Mismatch);
    }
    if meta.truncation {
        return Ok(Reply::Truncated);
    }
    match meta.response_code {
        ResponseCode::NoError => Ok(Reply::Answer(read_answer(&msg, name, qtype, false))),
        ResponseCode::NXDomain => Ok(Reply::Answer(read_answer(&msg, name, qtype, true))),
        other => Ok(Reply::Failure(other)),
    }
}

/// Follows the CNAME chain from `name` through the answer section and
/// collects the records of `qtype` at its end.
fn read_answer(msg: &Message, name: &Name, qtype: QType, nxdomain: bool) -> Answer {
    let mut current = name.clone();
    let mut min_ttl = u32::MAX;
    let mut chained = false;
    for _ in 0..=MAX_CNAME_CHAIN {
        let at_current =
            |r: &&Record| r.dns_class == DNSClass::IN && r.name.eq_ignore_root(&current);
        let data = collect(msg.answers.iter().filter(at_current), qtype);
        if let Some((data, ttl)) = data {
            return Answer::Records {
                data,
                ttl: min_ttl.min(ttl),
            };
        }
        let next = msg
            .answers
            .iter()
            .filter(at_current)
            .find_map(|r| match &r.data {
                RData::CNAME(c) => Some((c.0.clone(), r.ttl)),
                _ => None,
            });
        match next {
            Some((target, ttl)) => {
                min_ttl = min_ttl.min(ttl);
                current = target;
                chained = true;
            }
            None => break,
        }
    }
    let ttl = negative_ttl(msg);
    if nxdomain {
        Answer::NxDomain { ttl }
    } else {
        Answer::NoData {
            ttl,
            cname: chained.then(|| normalize(&current)),
        }
    }
}

fn collect<'a>(records: impl Iterator<Item = &'a Record>, qtype: QType) -> Option<(Data, u32)> {
    let mut ttl = u32::MAX;
    let mut mx = Vec::new();
    let mut addrs = Vec::new();
    for r in records {
        match (&r.data, qtype) {
            (RData::MX(m), QType::Mx) => mx.push(MxRecord {
                preference: m.preference,
                exchange: normalize(&m.exchange),
            }),
            (RData::A(a), QType::A) => addrs.push(IpAddr::V4(a.0)),
            (RData::AAAA(a), QType::Aaaa) => addrs.push(IpAddr::V6(a.0)),
            _ => continue,
        }
        ttl = ttl.min(r.ttl);
    }
    match qtype {
        QType::Mx if !mx.is_empty() => Some((Data::Mx(mx), ttl)),
        QType::A | QType::Aaaa if !addrs.is_empty() => Some((Data::Addrs(addrs), ttl)),
        _ => None,
    }
}

/// RFC 2308 §5: the negative TTL is the smaller of the SOA record's own TTL
/// and its MINIMUM field; without an SOA the answer must not be cached.
fn negative_ttl(msg: &Message) -> Option<u32> {
    msg.authorities.iter().find_map(|r| match &r.data {
        RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
        _ => None,
    })
}
