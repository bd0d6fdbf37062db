//! One outbound SMTP connection: drives `smtp::client` over a [`Conn`],
//! applying Momentum's per-stage timeouts and the domain's STARTTLS policy.
//!
//! May call: smtp::client, conn, config (a domain's settings). Must never:
//! decide what becomes of a recipient (it returns the engine's results).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future;

use crate::config::{Delivery, TlsMode};
use crate::conn::{with_timeout, Conn, Dialer};
use crate::reply::Reply;
use crate::smtp::client::{
    ClientSession, ClientSettings, ClientStep, SessionError, Stage, TlsPolicy, Transaction,
    TransactionResult,
};

/// Bytes read from the server at a time.
const READ_OCTETS: usize = 4096;

/// A connection that reached `Ready` (greeting, EHLO, STARTTLS done).
pub struct Outbound {
    session: ClientSession,
    conn: Conn,
    buf: Vec<u8>,
    /// The host name used for TLS and logs.
    pub host: String,
    /// The address connected to.
    pub addr: SocketAddr,
    timeouts: Timeouts,
    /// The stage the session last waited in (where a failure happened).
    waited: Stage,
}

#[derive(Clone, Copy)]
struct Timeouts {
    connect: Duration,
    ehlo: Duration,
    mailfrom: Duration,
    rcptto: Duration,
    body: Duration,
    rset: Duration,
}

impl Timeouts {
    fn for_stage(&self, stage: Stage) -> Duration {
        match stage {
            Stage::Banner => self.connect,
            Stage::Ehlo | Stage::StartTls | Stage::TlsHandshake => self.ehlo,
            Stage::Mail | Stage::Data => self.mailfrom,
            Stage::Rcpt => self.rcptto,
            Stage::DataDone => self.body,
            Stage::Rset | Stage::Quit | Stage::Idle | Stage::Closed => self.rset,
        }
    }
}

/// What a step of the engine came to.
enum Event {
    Ready,
    Done(TransactionResult),
    Failed(SessionError),
    Closed,
}

fn client_settings(d: &Delivery) -> ClientSettings {
    let mut s = ClientSettings::new(d.ehlo_hostname.clone());
    s.tls = match d.tls {
        TlsMode::No => TlsPolicy::Off,
        TlsMode::IfAvailable => TlsPolicy::Opportunistic,
        TlsMode::Required => TlsPolicy::Required,
    };
    s.max_recipients_per_batch = d.max_recipients_per_batch;
    s
}

impl Outbound {
    /// Connects from `from` (a source address) and runs the handshake. `Err` carries the reply to record
    /// for the attempt (the caller tries the next host).
    pub async fn open(
        dialer: &dyn Dialer,
        from: Option<std::net::IpAddr>,
        addr: SocketAddr,
        host: &str,
        d: &Delivery,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<Outbound, Reply> {
        let timeouts = Timeouts {
            connect: d.connect_timeout,
            ehlo: d.ehlo_timeout,
            mailfrom: d.mailfrom_timeout,
            rcptto: d.rcptto_timeout,
            body: d.body_timeout,
            rset: d.rset_timeout,
        };
        let conn = dialer
            .dial(from, addr, d.connect_timeout)
            .await
            .map_err(|e| {
                let (code, text) = if e.kind() == std::io::ErrorKind::TimedOut {
                    (450, "Connection Timed Out".to_string())
                } else {
                    (451, format!("connect to {addr} failed: {e}"))
                };
                Reply::internal(code, (4, 4, 1), &text)
            })?;
        let mut out = Outbound {
            session: ClientSession::new(client_settings(d), false),
            conn,
            buf: vec![0; READ_OCTETS],
            host: host.to_string(),
            addr,
            timeouts,
            waited: Stage::Banner,
        };
        let failure = match out.step(Some(&tls)).await {
            Event::Ready => return Ok(out),
            Event::Failed(e) => e.reply(),
            Event::Done(_) | Event::Closed => {
                Reply::internal(451, (4, 4, 2), "connection closed by remote host")
            }
        };
        out.conn.close().await;
        Err(failure)
    }

    /// Sends one transaction and waits for its result. `Err` means the
    /// session is unusable afterwards; its transaction result (if any) is
    /// returned with it.
    pub async fn send(
        &mut self,
        tx: Transaction,
    ) -> Result<TransactionResult, (Option<TransactionResult>, Reply)> {
        if let Err(rejected) = self.session.submit(tx) {
            let reply = Reply::internal(
                451,
                (4, 3, 0),
                &format!("cannot submit: {:?}", rejected.error),
            );
            return Err((None, reply));
        }
        match self.step(None).await {
            Event::Done(result) => {
                // A session failure right after a result is reported next.
                Ok(result)
            }
            Event::Failed(e) => Err((None, e.reply())),
            Event::Ready | Event::Closed => Err((
                None,
                Reply::internal(451, (4, 4, 2), "connection closed by remote host"),
            )),
        }
    }

    /// The stage the session last waited for a reply in: where a broken
    /// transaction ended.
    pub fn stage(&self) -> Stage {
        self.waited
    }

    /// Waits until the next transaction can be sent (e.g. after an RSET
    /// that followed a refused transaction); false when the session ended.
    pub async fn ready(&mut self) -> bool {
        matches!(self.step(None).await, Event::Ready)
    }

    /// QUIT and close.
    pub async fn quit(mut self) {
        self.session.quit();
        let limit = self.timeouts.rset;
        let _ = future::or(
            async {
                loop {
                    if matches!(self.step(None).await, Event::Closed | Event::Failed(_)) {
                        break;
                    }
                }
            },
            async {
                crate::runtime::sched::sleep(limit).await;
            },
        )
        .await;
        self.conn.close().await;
    }

    /// Runs the engine until it needs the caller.
    async fn step(&mut self, tls: Option<&std::sync::Arc<rustls::ClientConfig>>) -> Event {
        loop {
            if self.session.has_output() {
                let limit = self.timeouts.for_stage(self.session.stage());
                // The body goes from the shared content to the socket.
                let parts = self.session.output().slices();
                let written = with_timeout(limit, self.conn.write_all_parts(parts)).await;
                self.session.clear_output();
                if !matches!(written, Some(Ok(()))) {
                    self.session.connection_closed();
                    continue;
                }
            }
            match self.session.poll() {
                ClientStep::NeedInput => {
                    self.waited = self.session.stage();
                    let limit = self.timeouts.for_stage(self.waited);
                    match with_timeout(limit, self.conn.read(&mut self.buf)).await {
                        Some(Ok(0)) | Some(Err(_)) => self.session.connection_closed(),
                        Some(Ok(n)) => self.session.feed(&self.buf[..n]),
                        None => self.session.timeout(),
                    }
                }
                ClientStep::StartTls => {
                    let Some(config) = tls else {
                        self.session.tls_failed();
                        continue;
                    };
                    let name = self.host.clone();
                    match with_timeout(
                        self.timeouts.ehlo,
                        self.conn.connect_tls(config.clone(), &name),
                    )
                    .await
                    {
                        Some(Ok(())) => self.session.tls_started(),
                        _ => self.session.tls_failed(),
                    }
                }
                ClientStep::Ready => return Event::Ready,
                ClientStep::Done(r) => return Event::Done(r),
                ClientStep::Failed(e) => return Event::Failed(e),
                ClientStep::Closed => {
                    if self.session.has_output() {
                        let parts = self.session.output().slices();
                        let _ = with_timeout(self.timeouts.rset, self.conn.write_all_parts(parts))
                            .await;
                        self.session.clear_output();
                    }
                    return Event::Closed;
                }
            }
        }
    }
}
