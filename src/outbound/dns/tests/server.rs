//! A scriptable DNS server for tests: UDP and TCP on 127.0.0.1 with a
//! random port, serving a table of records from std threads, logging every
//! question. It can misbehave per name: SERVFAIL, REFUSED, silence, wrong
//! ids, truncation, CNAMEs left unfollowed.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// How the server treats a question.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Answer from the table.
    Normal,
    /// RCODE SERVFAIL.
    ServFail,
    /// RCODE REFUSED.
    Refused,
    /// No reply at all.
    Drop,
    /// Only a reply with the wrong id.
    WrongId,
    /// A reply with the wrong id, then the right one.
    WrongIdThenRight,
    /// Over UDP: TC set and no records; over TCP: the full answer.
    Truncate,
    /// Answer with the CNAME only, leaving the chain to the client.
    CnameOnly,
    /// Silence for the first question about the name, answers afterwards.
    DropFirst,
}

/// One logged question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Asked {
    pub name: String,
    pub qtype: RecordType,
    pub tcp: bool,
}

#[derive(Default)]
struct Table {
    records: Vec<Record>,
    modes: HashMap<String, Mode>,
    all: Option<Mode>,
    log: Vec<Asked>,
    soa_ttl: u32,
    soa_minimum: u32,
}

/// The server; stops its threads when dropped.
pub struct TestDns {
    pub addr: SocketAddr,
    table: Arc<Mutex<Table>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

fn name(s: &str) -> Name {
    let mut n: Name = s.parse().expect("test name");
    n.set_fqdn(true);
    n
}

fn key(n: &Name) -> String {
    n.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

impl TestDns {
    /// Starts on 127.0.0.1 with an empty table (SOA TTL and minimum 300).
    pub fn start() -> TestDns {
        let (udp, tcp) = bind_pair();
        let addr = udp.local_addr().expect("addr");
        let table = Arc::new(Mutex::new(Table {
            soa_ttl: 300,
            soa_minimum: 300,
            ..Table::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (t, s) = (table.clone(), stop.clone());
        let u = std::thread::spawn(move || serve_udp(udp, t, s));
        let (t, s) = (table.clone(), stop.clone());
        let c = std::thread::spawn(move || serve_tcp(tcp, t, s));
        TestDns {
            addr,
            table,
            stop,
            threads: vec![u, c],
        }
    }

    fn add(&self, owner: &str, ttl: u32, data: RData) -> &Self {
        let rec = Record::from_rdata(name(owner), ttl, data);
        self.table.lock().expect("table").records.push(rec);
        self
    }

    pub fn mx(&self, owner: &str, ttl: u32, pref: u16, exchange: &str) -> &Self {
        self.add(owner, ttl, RData::MX(MX::new(pref, name(exchange))))
    }

    pub fn a(&self, owner: &str, ttl: u32, ip: [u8; 4]) -> &Self {
        self.add(owner, ttl, RData::A(A(Ipv4Addr::from(ip))))
    }

    pub fn aaaa(&self, owner: &str, ttl: u32, ip: &str) -> &Self {
        let ip: Ipv6Addr = ip.parse().expect("v6");
        self.add(owner, ttl, RData::AAAA(AAAA(ip)))
    }

    pub fn cname(&self, owner: &str, ttl: u32, target: &str) -> &Self {
        self.add(owner, ttl, RData::CNAME(CNAME(name(target))))
    }

    /// Drops every record of `owner`.
    pub fn clear(&self, owner: &str) {
        let n = name(owner);
        self.table
            .lock()
            .expect("table")
            .records
            .retain(|r| r.name != n);
    }

    /// Sets the SOA record's TTL and MINIMUM (negative answers' TTL).
    pub fn soa(&self, ttl: u32, minimum: u32) {
        let mut t = self.table.lock().expect("table");
        t.soa_ttl = ttl;
        t.soa_minimum = minimum;
    }

    /// Misbehaves for one name (any type).
    pub fn mode_for(&self, owner: &str, mode: Mode) {
        let mut t = self.table.lock().expect("table");
        t.modes.insert(key(&name(owner)), mode);
    }

    /// Misbehaves for every name.
    pub fn mode_all(&self, mode: Mode) {
        self.table.lock().expect("table").all = Some(mode);
    }

    /// Every question so far.
    pub fn asked(&self) -> Vec<Asked> {
        self.table.lock().expect("table").log.clone()
    }

    /// Questions for `owner` of `qtype`.
    pub fn count(&self, owner: &str, qtype: RecordType) -> usize {
        self.asked()
            .iter()
            .filter(|a| a.name == owner && a.qtype == qtype)
            .count()
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn bind_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("udp bind");
        let port = udp.local_addr().expect("addr").port();
        if let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)) {
            return (udp, tcp);
        }
    }
    panic!("no UDP+TCP port pair free on 127.0.0.1");
}

const POLL: Duration = Duration::from_millis(20);

fn serve_udp(sock: UdpSocket, table: Arc<Mutex<Table>>, stop: Arc<AtomicBool>) {
    sock.set_read_timeout(Some(POLL)).expect("timeout");
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        let Ok((n, peer)) = sock.recv_from(&mut buf) else {
            continue;
        };
        for reply in respond(&buf[..n], &table, false) {
            let _ = sock.send_to(&reply, peer);
        }
    }
}

fn serve_tcp(listener: TcpListener, table: Arc<Mutex<Table>>, stop: Arc<AtomicBool>) {
    listener.set_nonblocking(true).expect("nonblocking");
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((s, _)) => tcp_conn(s, &table),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

fn tcp_conn(mut s: TcpStream, table: &Arc<Mutex<Table>>) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut len = [0u8; 2];
    if s.read_exact(&mut len).is_err() {
        return;
    }
    let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
    if s.read_exact(&mut q).is_err() {
        return;
    }
    for reply in respond(&q, table, true) {
        let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&reply);
        let _ = s.write_all(&framed);
    }
}

/// The datagrams to send back for one query.
fn respond(query: &[u8], table: &Arc<Mutex<Table>>, tcp: bool) -> Vec<Vec<u8>> {
    let Ok(q) = Message::from_vec(query) else {
        return vec![];
    };
    let Some(question) = q.queries.first().cloned() else {
        return vec![];
    };
    let mut t = table.lock().expect("table");
    let qname = key(&question.name);
    t.log.push(Asked {
        name: qname.clone(),
        qtype: question.query_type,
        tcp,
    });
    let mut mode = t
        .all
        .or_else(|| t.modes.get(&qname).copied())
        .unwrap_or(Mode::Normal);
    if mode == Mode::DropFirst {
        let seen = t.log.iter().filter(|a| a.name == qname).count();
        mode = if seen == 1 { Mode::Drop } else { Mode::Normal };
    }
    let mut r = Message::response(q.metadata.id, q.metadata.op_code);
    r.metadata.message_type = MessageType::Response;
    r.metadata.recursion_desired = true;
    r.metadata.recursion_available = true;
    r.add_query(question.clone());
    match mode {
        Mode::Drop => return vec![],
        Mode::ServFail => r.metadata.response_code = ResponseCode::ServFail,
        Mode::Refused => r.metadata.response_code = ResponseCode::Refused,
        Mode::Truncate if !tcp => r.metadata.truncation = true,
        _ => answer(
            &t,
            &mut r,
            &question.name,
            question.query_type,
            mode == Mode::CnameOnly,
        ),
    }
    let right = r.to_vec().expect("encode");
    let mut wrong = r.clone();
    wrong.metadata.id = r.metadata.id.wrapping_add(1);
    let wrong = wrong.to_vec().expect("encode");
    match mode {
        Mode::WrongId => vec![wrong],
        Mode::WrongIdThenRight => vec![wrong, right],
        _ => vec![right],
    }
}

fn answer(t: &Table, r: &mut Message, qname: &Name, qtype: RecordType, cname_only: bool) {
    let mut current = qname.clone();
    for _ in 0..16 {
        let here: Vec<&Record> = t.records.iter().filter(|rec| rec.name == current).collect();
        let wanted: Vec<Record> = here
            .iter()
            .filter(|rec| rec.record_type() == qtype)
            .map(|rec| (*rec).clone())
            .collect();
        if !wanted.is_empty() {
            r.add_answers(wanted);
            return;
        }
        match here
            .iter()
            .find(|rec| rec.record_type() == RecordType::CNAME)
        {
            Some(c) => {
                r.add_answer((*c).clone());
                if cname_only {
                    return;
                }
                if let RData::CNAME(target) = &c.data {
                    current = target.0.clone();
                }
            }
            None => {
                // A name exists when it or a descendant owns records (an
                // empty non-terminal answers NODATA, RFC 8020).
                if !t.records.iter().any(|rec| current.zone_of(&rec.name)) {
                    r.metadata.response_code = ResponseCode::NXDomain;
                }
                let soa = SOA::new(
                    name("ns.test"),
                    name("hostmaster.test"),
                    1,
                    3600,
                    600,
                    86400,
                    t.soa_minimum,
                );
                r.add_authority(Record::from_rdata(name("test"), t.soa_ttl, RData::SOA(soa)));
                return;
            }
        }
    }
}
