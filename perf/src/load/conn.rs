//! One load-generator connection: connects, drives impulse's sans-IO
//! client engine (`smtp::client`) over glommio TCP (+ rustls after
//! STARTTLS), submits messages while the run hands out tickets, and counts
//! every outcome. Reconnects after a QUIT or a failure until the run ends.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::net::TcpStream;
use impulse::smtp::client::{ClientSession, ClientSettings, ClientStep};

use super::stats::{classify, Class, Live, ShardResult};
use super::workload::Workload;
use super::Tickets;
use crate::net::{with_timeout, Conn};
use crate::unix_micros;

/// Pause before reconnecting after a failed connection, so a dead target
/// is not hammered in a tight loop.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(50);
/// Read buffer per connection (replies are small).
const READ_OCTETS: usize = 16 * 1024;

/// What every connection of an executor shares.
pub struct Ctx {
    /// Client engine settings.
    pub settings: ClientSettings,
    /// TLS client configuration for STARTTLS.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// Messages per connection, 0 = unlimited.
    pub per_connection: u64,
    /// Connect and per-reply timeout.
    pub timeout: Duration,
    /// Where tickets (permission to send one message) come from.
    pub tickets: Tickets,
    /// Live counters.
    pub live: std::sync::Arc<Live>,
    /// Histograms and failure details.
    pub result: RefCell<ShardResult>,
    /// Message factory.
    pub workload: RefCell<Workload>,
}

/// Runs connection after connection to `target` until tickets run out.
pub async fn run(ctx: Rc<Ctx>, target: SocketAddr) {
    while !ctx.tickets.exhausted() {
        let Some(stream) = connect(&ctx, target).await else {
            // The attempt failed: it costs a message, so a run against a
            // dead target ends instead of retrying forever.
            if ctx.tickets.take().await.is_some() {
                ctx.live
                    .errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            glommio::timer::sleep(RECONNECT_BACKOFF).await;
            continue;
        };
        let sent = session(&ctx, Conn::Plain(stream)).await;
        if sent == 0 {
            // Refused before any message (greeting 421, EHLO, TLS).
            if ctx.tickets.take().await.is_some() {
                ctx.live
                    .errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            glommio::timer::sleep(RECONNECT_BACKOFF).await;
        }
    }
}

async fn connect(ctx: &Ctx, target: SocketAddr) -> Option<TcpStream> {
    match with_timeout(ctx.timeout, TcpStream::connect(target)).await {
        Some(Ok(s)) => {
            let _ = s.set_nodelay(true);
            ctx.result.borrow_mut().connections += 1;
            Some(s)
        }
        Some(Err(e)) => {
            ctx.result
                .borrow_mut()
                .failure(format!("connect {target}: {e}"));
            None
        }
        None => {
            ctx.result
                .borrow_mut()
                .failure(format!("connect {target}: timeout"));
            None
        }
    }
}

/// One SMTP session; returns the number of messages it submitted.
async fn session(ctx: &Ctx, mut conn: Conn) -> u64 {
    let mut client = ClientSession::new(ctx.settings.clone(), false);
    let mut buf = vec![0u8; READ_OCTETS];
    let mut submitted = 0u64;
    // When the last bytes went out: for the transaction in flight, the
    // end of its content (final dot or last BDAT chunk).
    let mut last_write = Instant::now();
    loop {
        if client.has_output() {
            let out = client.take_output();
            match with_timeout(ctx.timeout, conn.write_all(&out)).await {
                Some(Ok(())) => last_write = Instant::now(),
                Some(Err(_)) => client.connection_closed(),
                None => client.timeout(),
            }
        }
        match client.poll() {
            ClientStep::NeedInput => match with_timeout(ctx.timeout, conn.read(&mut buf)).await {
                Some(Ok(0)) | Some(Err(_)) => client.connection_closed(),
                Some(Ok(n)) => client.feed(&buf[..n]),
                None => client.timeout(),
            },
            ClientStep::StartTls => {
                let Some(tls) = ctx.tls.clone() else {
                    client.tls_failed();
                    continue;
                };
                match with_timeout(
                    ctx.timeout,
                    conn.connect_tls(tls, crate::net::SINK_TLS_NAME),
                )
                .await
                {
                    Some(Ok(())) => client.tls_started(),
                    _ => client.tls_failed(),
                }
            }
            ClientStep::Ready => {
                let quota_done = ctx.per_connection > 0 && submitted >= ctx.per_connection;
                let ticket = if quota_done {
                    None
                } else {
                    ctx.tickets.take().await
                };
                let Some(scheduled) = ticket else {
                    client.quit();
                    continue;
                };
                if let Some(at) = scheduled {
                    let lag = at.elapsed().as_micros() as u64;
                    ctx.result.borrow_mut().schedule_lag.record(lag);
                }
                let tx = ctx.workload.borrow_mut().next(unix_micros());
                match client.submit(tx) {
                    Ok(()) => {
                        submitted += 1;
                        ctx.live
                            .sent
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        ctx.live
                            .in_flight
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(rejected) => {
                        // A workload the engine refuses (e.g. too many recipients).
                        ctx.result.borrow_mut().failure(rejected.to_string());
                        ctx.live
                            .errors
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        client.quit();
                    }
                }
            }
            ClientStep::Done(result) => {
                let class = classify(&result);
                let mut r = ctx.result.borrow_mut();
                if class != Class::Error {
                    r.latency.record(last_write.elapsed().as_micros() as u64);
                }
                r.recipients(&result, class);
                ctx.live.count(class);
                ctx.live
                    .in_flight
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            }
            ClientStep::Failed(e) => ctx.result.borrow_mut().session_failed(&e),
            ClientStep::Closed => {
                if client.has_output() {
                    let out = client.take_output();
                    let _ = with_timeout(ctx.timeout, conn.write_all(&out)).await;
                }
                conn.close().await;
                return submitted;
            }
        }
    }
}
