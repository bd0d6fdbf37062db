//! One sink connection: drives impulse's sans-IO server engine
//! (`smtp::server`) over glommio TCP (+ rustls after STARTTLS), applies
//! the configured behaviour (delays, injected 4xx/5xx, greylisting,
//! limits) and counts what it accepted.

use std::collections::HashSet;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use glommio::net::TcpStream;
use impulse::message::Envelope;
use impulse::smtp::reply::Reply;
use impulse::smtp::{ServerSession, ServerSettings, Step};

use super::behaviour::Effective;
use super::Shard;
use crate::net::{with_timeout, Conn};
use crate::{unix_micros, SENT_HEADER};

/// Idle time before the sink closes a silent connection.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Read buffer per connection.
const READ_OCTETS: usize = 64 * 1024;

/// Runs one connection accepted on listening address number `addr_idx`.
pub async fn run(shard: Rc<Shard>, stream: TcpStream, addr_idx: usize) {
    let g = &shard.global;
    let stat = &g.addrs[addr_idx];
    let local = stat.addr.ip();
    let ip = stream
        .peer_addr()
        .map_or(IpAddr::from([0, 0, 0, 0]), |p| p.ip());
    let rules = shard.behaviour.for_address(local);
    let mut conn = Conn::Plain(stream);
    let now = stat.current.fetch_add(1, Relaxed) + 1;
    let max = rules.max_connections.unwrap_or(0);
    if max > 0 && now > max {
        stat.current.fetch_sub(1, Relaxed);
        stat.refused.fetch_add(1, Relaxed);
        let _ = conn
            .write_all(b"421 4.7.0 sink: too many connections\r\n")
            .await;
        conn.close().await;
        return;
    }
    stat.peak.fetch_max(now, Relaxed);
    stat.connections.fetch_add(1, Relaxed);
    g.open(ip);
    if let Conn::Plain(s) = &conn {
        let _ = s.set_nodelay(true);
    }
    if let Some(ms) = rules.banner_delay_ms.filter(|ms| *ms > 0) {
        glommio::timer::sleep(Duration::from_millis(ms)).await;
    }
    let tls = shard.tls.clone().filter(|_| rules.starttls.unwrap_or(true));
    let settings = ServerSettings {
        hostname: "impulse-sink.invalid".into(),
        message_size: 0,
        max_recipients_per_message: usize::MAX,
        max_receptions_per_connection: rules.max_messages_per_connection.unwrap_or(0),
        starttls_available: tls.is_some(),
        can_relay: true,
        ..ServerSettings::default()
    };
    let mut sess = ServerSession::new(Rc::new(settings), Some(ip), false);
    sess.confirm_recipients(shard.behaviour.touches_rcpt());
    let mut domains_seen: HashSet<String> = HashSet::new();
    let mut buf = vec![0u8; READ_OCTETS];
    loop {
        match sess.process() {
            Step::NeedInput => {
                if sess.has_output() {
                    let out = sess.take_output();
                    if !matches!(
                        with_timeout(IDLE_TIMEOUT, conn.write_all(&out)).await,
                        Some(Ok(()))
                    ) {
                        break;
                    }
                }
                match with_timeout(IDLE_TIMEOUT, conn.read(&mut buf)).await {
                    Some(Ok(0)) | Some(Err(_)) => break,
                    Some(Ok(n)) => sess.feed(&buf[..n]),
                    None => sess.timeout(),
                }
            }
            Step::StartTls => {
                let out = sess.take_output();
                let Some(cfg) = tls.clone() else { break };
                if conn.write_all(&out).await.is_err() {
                    break;
                }
                match with_timeout(IDLE_TIMEOUT, conn.accept_tls(cfg)).await {
                    Some(Ok(())) => sess.tls_started(),
                    _ => break,
                }
            }
            // Not offered: refuse rather than pretend.
            Step::Authenticate { .. } => sess.auth_result(false),
            Step::Recipient(rcpt) => {
                let domain = domain_of(&rcpt);
                let e = shard.behaviour.for_domain(local, &domain);
                if !e.rcpt_delay.is_zero() {
                    glommio::timer::sleep(e.rcpt_delay).await;
                }
                let refusal = rcpt_refusal(&shard, &e, ip, &rcpt);
                let mut l = shard.local.borrow_mut();
                let d = l.domains.entry(domain.clone()).or_default();
                match &refusal {
                    Some(r) if r.code >= 500 => d.rcpt_5xx += 1,
                    Some(_) => d.rcpt_4xx += 1,
                    None => {}
                }
                if domains_seen.insert(domain) {
                    d.connections += 1;
                }
                if refusal.is_some() {
                    g.refused.fetch_add(1, Relaxed);
                }
                drop(l);
                sess.recipient_checked(refusal);
            }
            Step::Message(msg) => {
                let (env, body) = *msg;
                let result = message(&shard, local, ip, &env, body, &mut domains_seen).await;
                sess.message_stored(result);
            }
            Step::Close => {
                if sess.has_output() {
                    let out = sess.take_output();
                    let _ = with_timeout(IDLE_TIMEOUT, conn.write_all(&out)).await;
                }
                break;
            }
        }
    }
    conn.close().await;
    stat.current.fetch_sub(1, Relaxed);
    g.close(ip);
}

/// The reply to refuse a RCPT with, if it is to be refused.
fn rcpt_refusal(shard: &Shard, e: &Effective, ip: IpAddr, rcpt: &str) -> Option<Reply> {
    if e.greylist && shard.global.first_attempt(ip, rcpt) {
        return Some(Reply::new(
            451,
            "4.7.1",
            "sink: greylisted, try again later",
        ));
    }
    let x = shard.rng.borrow_mut().f64();
    if x < e.rcpt_5xx {
        Some(Reply::new(550, "5.1.1", "sink: injected recipient failure"))
    } else if x < e.rcpt_5xx + e.rcpt_4xx {
        Some(Reply::new(
            451,
            "4.7.1",
            "sink: injected temporary recipient failure",
        ))
    } else {
        None
    }
}

/// Decides, counts and (with --store) writes one message.
async fn message(
    shard: &Shard,
    local: IpAddr,
    ip: IpAddr,
    env: &Envelope,
    body: Vec<u8>,
    domains_seen: &mut HashSet<String>,
) -> Result<String, Reply> {
    let domains: Vec<String> = env
        .recipients
        .iter()
        .map(|r| domain_of(&r.address))
        .collect();
    let first = domains.first().cloned().unwrap_or_default();
    let e = shard.behaviour.for_domain(local, &first);
    if !e.data_delay.is_zero() {
        glommio::timer::sleep(e.data_delay).await;
    }
    let x = shard.rng.borrow_mut().f64();
    let refusal = if x < e.data_5xx {
        Some(Reply::new(554, "5.6.0", "sink: injected message failure"))
    } else if x < e.data_5xx + e.data_4xx {
        Some(Reply::new(
            451,
            "4.3.0",
            "sink: injected temporary message failure",
        ))
    } else {
        None
    };
    let latency = sent_stamp(&body).map(|t| unix_micros().saturating_sub(t));
    if let Some(r) = refusal {
        let mut l = shard.local.borrow_mut();
        let d = l.domains.entry(first).or_default();
        if r.code >= 500 {
            d.data_5xx += 1;
        } else {
            d.data_4xx += 1;
        }
        shard.global.refused.fetch_add(1, Relaxed);
        return Err(r);
    }
    let seq = count_accepted(shard, ip, env, domains, latency, domains_seen);
    let id = format!("{}-{seq}", shard.id);
    if let Some(dir) = &shard.store {
        if store(dir, &id, env, body).await.is_err() {
            shard.local.borrow_mut().store_errors += 1;
        }
    }
    Ok(id)
}

/// Counts an accepted message everywhere it counts; returns its number.
fn count_accepted(
    shard: &Shard,
    ip: IpAddr,
    env: &Envelope,
    domains: Vec<String>,
    latency: Option<u64>,
    domains_seen: &mut HashSet<String>,
) -> u64 {
    let now = Instant::now();
    let mut l = shard.local.borrow_mut();
    let mut per_domain: Vec<(String, u64)> = Vec::new();
    for d in domains {
        match per_domain.iter_mut().find(|x| x.0 == d) {
            Some(x) => x.1 += 1,
            None => per_domain.push((d, 1)),
        }
    }
    for (d, n) in per_domain {
        let stat = l.domains.entry(d.clone()).or_default();
        stat.accepted(now, n, latency);
        if domains_seen.insert(d) {
            stat.connections += 1;
        }
    }
    let rcpts = env.recipients.len() as u64;
    l.all.accepted(now, rcpts, latency);
    l.note_time(unix_micros());
    if latency.is_none() {
        l.unstamped += 1;
    }
    let src = l.sources.entry(ip).or_default();
    src.0 += 1;
    src.1 += rcpts;
    shard.global.recipients.fetch_add(rcpts, Relaxed);
    shard.global.messages.fetch_add(1, Relaxed) + 1
}

/// Writes `<dir>/<id>.eml`: an envelope comment, then the content.
async fn store(
    dir: &std::path::Path,
    id: &str,
    env: &Envelope,
    body: Vec<u8>,
) -> std::io::Result<()> {
    let rcpts: Vec<&str> = env.recipients.iter().map(|r| r.address.as_str()).collect();
    let mut data = format!(
        "X-Sink-Envelope: from=<{}> to=<{}>\r\n",
        env.mail_from,
        rcpts.join(">,<")
    )
    .into_bytes();
    data.extend_from_slice(&body);
    let f = glommio::io::BufferedFile::create(dir.join(format!("{id}.eml"))).await?;
    let r = f.write_at(data, 0).await;
    f.close().await?;
    r.map(|_| ()).map_err(std::io::Error::from)
}

/// Lower-case domain of an address ("" without one).
fn domain_of(address: &str) -> String {
    address
        .rsplit_once('@')
        .map_or(String::new(), |(_, d)| d.to_ascii_lowercase())
}

/// The `X-Impulse-Sent` value, searched in the header section only.
pub fn sent_stamp(body: &[u8]) -> Option<u64> {
    let head_end = find(body, b"\r\n\r\n").unwrap_or(body.len());
    let head = &body[..head_end];
    let name = SENT_HEADER.as_bytes();
    let mut at = 0;
    while at < head.len() {
        let line_end = find(&head[at..], b"\r\n").map_or(head.len(), |i| at + i);
        let line = &head[at..line_end];
        if line.len() > name.len()
            && line[..name.len()].eq_ignore_ascii_case(name)
            && line[name.len()] == b':'
        {
            let v = std::str::from_utf8(&line[name.len() + 1..]).ok()?;
            return v.trim().parse().ok();
        }
        at = line_end + 2;
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_stamp_in_headers_only() {
        assert_eq!(sent_stamp(b"X-Impulse-Sent: 42\r\nA: b\r\n\r\nx"), Some(42));
        assert_eq!(
            sent_stamp(b"Received: from x\r\n\tby y\r\nx-impulse-sent:7\r\n\r\n"),
            Some(7)
        );
        assert_eq!(sent_stamp(b"A: b\r\n\r\nX-Impulse-Sent: 42\r\n"), None);
        assert_eq!(sent_stamp(b"X-Impulse-Sent: soon\r\n\r\n"), None);
        assert_eq!(domain_of("U@D.Example"), "d.example");
    }
}
