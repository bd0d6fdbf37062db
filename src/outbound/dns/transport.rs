//! DNS over glommio sockets: one question to the configured servers, UDP
//! first, TCP when the reply is truncated; per-try timeouts, rounds over the
//! servers, replies checked against id and question.
//!
//! The only file of `dns` that touches sockets (`conf` reads resolv.conf,
//! off the shard). May call: `dns::conf`, `dns::wire`, `dns::DnsError`;
//! `glommio`, `futures-lite`, `hickory-proto`. Timeouts use the real clock:
//! they bound socket waits, not cache lifetimes. Must never: block the shard
//! (everything awaits io_uring), wait for a reply past the per-try timeout,
//! take a reply whose id or question is not ours, or hold more than one
//! reply (4096 octets over UDP, at most 64 KiB over TCP).

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpStream, UdpSocket};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::Name;

use super::conf::ResolverConfig;
use super::wire::{build_query, normalize, parse_reply, Answer, QType, Reply};
use super::DnsError;

/// Receive buffer: our EDNS payload with room to spare for servers that
/// ignore it (a longer datagram is cut and fails to decode, then TCP wins
/// on the next truncated reply).
const UDP_RECV_OCTETS: usize = 4096;

/// Asks `name`/`qtype` until a server gives a usable answer. `next_id`
/// draws a fresh random query id for each try; `on_send` counts queries.
pub async fn query(
    cfg: &ResolverConfig,
    name: &Name,
    qtype: QType,
    next_id: &dyn Fn() -> u16,
    on_send: &dyn Fn(),
) -> Result<Answer, DnsError> {
    let mut last = DnsError::Timeout {
        name: normalize(name),
        qtype: qtype.name(),
    };
    for _ in 0..cfg.attempts.max(1) {
        for ns in &cfg.nameservers {
            let id = next_id();
            let packet = build_query(id, name, qtype);
            on_send();
            let mut reply = udp(*ns, &packet, id, name, qtype, cfg.timeout).await;
            if let Ok(Reply::Truncated) = reply {
                reply = tcp(*ns, &packet, id, name, qtype, cfg.timeout).await;
            }
            match reply {
                Ok(Reply::Answer(a)) => return Ok(a),
                Ok(Reply::Truncated) => {
                    last = failure(name, qtype, "truncated reply over TCP".into());
                }
                Ok(Reply::Failure(rcode)) => {
                    last = failure(name, qtype, format!("{ns} answered {}", rcode_name(rcode)));
                }
                // A timeout never hides an error code seen on another try.
                Err(DnsError::Timeout { .. }) if !matches!(last, DnsError::Timeout { .. }) => {}
                Err(e) => last = e,
            }
        }
    }
    Err(last)
}

/// The RFC 1035/6895 mnemonic, as operators read it in logs.
fn rcode_name(rcode: ResponseCode) -> String {
    match rcode {
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        other => format!("rcode {}", u16::from(other)),
    }
}

fn failure(name: &Name, qtype: QType, reason: String) -> DnsError {
    DnsError::ServerFailure {
        name: normalize(name),
        qtype: qtype.name(),
        reason,
    }
}

fn io_error(name: &Name, qtype: QType, ns: SocketAddr, e: impl std::fmt::Display) -> DnsError {
    DnsError::Io {
        name: normalize(name),
        qtype: qtype.name(),
        reason: format!("{ns}: {e}"),
    }
}

fn timeout(name: &Name, qtype: QType) -> DnsError {
    DnsError::Timeout {
        name: normalize(name),
        qtype: qtype.name(),
    }
}

async fn with_timeout<T>(limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
    future::or(async { Some(fut.await) }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await
}

/// One UDP try. The socket is fresh (random source port) and connected, so
/// the kernel drops datagrams from other addresses; datagrams with another
/// id or question are ignored until the timeout.
async fn udp(
    ns: SocketAddr,
    packet: &[u8],
    id: u16,
    name: &Name,
    qtype: QType,
    limit: Duration,
) -> Result<Reply, DnsError> {
    let local = if ns.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let sock = UdpSocket::bind(local).map_err(|e| io_error(name, qtype, ns, e))?;
    sock.connect(ns)
        .await
        .map_err(|e| io_error(name, qtype, ns, e))?;
    sock.send(packet)
        .await
        .map_err(|e| io_error(name, qtype, ns, e))?;
    let deadline = Instant::now() + limit;
    let mut buf = vec![0u8; UDP_RECV_OCTETS];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timeout(name, qtype));
        }
        match with_timeout(left, sock.recv(&mut buf)).await {
            None => return Err(timeout(name, qtype)),
            Some(Err(e)) => return Err(io_error(name, qtype, ns, e)),
            Some(Ok(n)) => {
                if let Ok(reply) = parse_reply(&buf[..n], id, name, qtype) {
                    return Ok(reply);
                }
            }
        }
    }
}

/// One TCP try (RFC 1035 §4.2.2 two-octet length framing), the whole
/// exchange bounded by `limit`.
async fn tcp(
    ns: SocketAddr,
    packet: &[u8],
    id: u16,
    name: &Name,
    qtype: QType,
    limit: Duration,
) -> Result<Reply, DnsError> {
    let exchange = async {
        let mut stream = TcpStream::connect(ns).await?;
        let len = u16::try_from(packet.len()).map_err(std::io::Error::other)?;
        let mut framed = Vec::with_capacity(packet.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(packet);
        stream.write_all(&framed).await?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    match with_timeout(limit, exchange).await {
        None => Err(timeout(name, qtype)),
        Some(Err(e)) => Err(io_error(name, qtype, ns, e)),
        Some(Ok(buf)) => parse_reply(&buf, id, name, qtype).map_err(|why| {
            failure(
                name,
                qtype,
                format!("{ns} sent an unusable TCP reply: {why:?}"),
            )
        }),
    }
}
