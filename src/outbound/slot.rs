//! A connection slot: one ready SMTP connection lent out by the pool. A
//! job goes in (envelope, shared body, the recipients to send to) and a
//! typed result per recipient comes out; the transactions, recipient
//! batches and a connection that breaks half-way are handled here.
//!
//! Owns `Slot`. May call: the session (`smtp::client` over the socket),
//! message types, smtp (the reply type), events (the connection's
//! closing, when it is dropped).
//! Must never: touch the spool or the queue, or copy the body (it is
//! shared, `message::Content`, from the spool read or the reception).

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use super::key::PoolKey;
use super::session::Outbound;
use crate::config::Delivery;
use crate::events::{Direction, Event, Events};
use crate::message::{Content, Envelope, QueuedRcpt, RcptResult, Recipient};
use crate::reply::Reply;
use crate::smtp::client::{Outcome as ClientOutcome, Stage, Transaction};

/// Reports an outbound connection opened, and closed when dropped; counts
/// the shard's open outbound connections meanwhile.
pub(super) struct Opened {
    events: Rc<Events>,
    open: Rc<Cell<u32>>,
    peer: SocketAddr,
}

impl Opened {
    pub(super) fn new(events: Rc<Events>, open: Rc<Cell<u32>>, peer: SocketAddr) -> Self {
        events.emit(Event::ConnectionOpened {
            direction: Direction::Outbound,
            peer: Some(peer),
        });
        open.set(open.get() + 1);
        Opened { events, open, peer }
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        self.open.set(self.open.get().saturating_sub(1));
        self.events.emit(Event::ConnectionClosed {
            direction: Direction::Outbound,
            peer: Some(self.peer),
        });
    }
}

/// One ready connection, lent to one delivery task at a time. Dropping it
/// closes the socket without QUIT (what a broken connection gets); the
/// pool's `release` keeps it for reuse or QUITs it.
pub struct Slot {
    session: Outbound,
    key: PoolKey,
    pub(super) settings: Arc<Delivery>,
    /// Jobs sent over this connection (`max_deliveries_per_connection`).
    sent: u32,
    /// The reply every further recipient gets once the connection broke.
    broken: Option<(Rc<Reply>, Stage)>,
    /// Declared last: the closed event follows the socket's close.
    _opened: Opened,
}

impl Slot {
    pub(super) fn new(
        session: Outbound,
        key: PoolKey,
        settings: Arc<Delivery>,
        opened: Opened,
    ) -> Slot {
        Slot {
            session,
            key,
            settings,
            sent: 0,
            broken: None,
            _opened: opened,
        }
    }

    /// The pool key: binding and remote host.
    pub fn key(&self) -> &PoolKey {
        &self.key
    }

    /// The remote host's name, as recorded with each result.
    pub fn host(&self) -> &str {
        &self.session.host
    }

    /// The remote server's address.
    pub fn remote(&self) -> std::net::IpAddr {
        self.session.addr.ip()
    }

    /// True once the connection broke: it can carry nothing more.
    pub fn is_broken(&self) -> bool {
        self.broken.is_some()
    }

    /// True when the connection has carried `max_deliveries_per_connection`.
    pub fn used_up(&self) -> bool {
        let max = self.settings.max_deliveries_per_connection;
        max > 0 && self.sent >= max
    }

    /// Sends one job: the recipients in transactions of at most
    /// `max_recipients_per_batch`, the body shared with each. Returns a
    /// result per recipient (by envelope index); a recipient the server
    /// never answered for is left out, and counts as deferred. Once the
    /// connection breaks, the remaining batches are deferred with its reply.
    /// With each result, the session stage it ended in (Momentum's stage
    /// field: RCPT, MAIL or the reply after the content; where the
    /// connection broke).
    pub async fn send(
        &mut self,
        envelope: &Envelope,
        body: &Content,
        recipients: &[QueuedRcpt],
    ) -> (Vec<(u32, RcptResult)>, Vec<Stage>) {
        self.sent += 1;
        let mut results = Vec::with_capacity(recipients.len());
        let mut stages = Vec::with_capacity(recipients.len());
        for batch in recipients.chunks(self.settings.max_recipients_per_batch.max(1)) {
            if let Some((r, stage)) = &self.broken {
                results.extend(
                    batch
                        .iter()
                        .map(|q| (q.index, RcptResult::Deferred(Rc::clone(r)))),
                );
                stages.extend(batch.iter().map(|_| *stage));
                continue;
            }
            let rcpts: Vec<Recipient> = batch
                .iter()
                .map(|q| {
                    envelope
                        .recipients
                        .get(q.index as usize)
                        .cloned()
                        .unwrap_or_else(|| Recipient::new(q.address.to_string()))
                })
                .collect();
            match self
                .session
                .send(Transaction::from_envelope(envelope, rcpts, body.clone()))
                .await
            {
                Ok(result) => {
                    let mail_refused = result.mail_reply.as_ref().is_some_and(|r| r.code >= 400);
                    for (q, rr) in batch.iter().zip(result.recipients) {
                        stages.push(match &rr.rcpt_reply {
                            _ if mail_refused => Stage::Mail,
                            Some(r) if r.code >= 400 => Stage::Rcpt,
                            None => Stage::Rcpt,
                            Some(_) => Stage::DataDone,
                        });
                        let r = match rr.outcome {
                            ClientOutcome::Delivered(r) => RcptResult::Delivered(Rc::new(r)),
                            ClientOutcome::Transient(r) => RcptResult::Deferred(Rc::new(r)),
                            ClientOutcome::Permanent(r) => RcptResult::Failed(Rc::new(r)),
                        };
                        results.push((q.index, r));
                    }
                    if !self.session.ready().await {
                        self.broken = Some((
                            Rc::new(Reply::internal(
                                451,
                                (4, 4, 2),
                                "connection closed by remote host",
                            )),
                            self.session.stage(),
                        ));
                    }
                }
                Err((_, r)) => {
                    let r = Rc::new(r);
                    let stage = self.session.stage();
                    results.extend(
                        batch
                            .iter()
                            .map(|q| (q.index, RcptResult::Deferred(r.clone()))),
                    );
                    stages.extend(batch.iter().map(|_| stage));
                    self.broken = Some((r, stage));
                }
            }
        }
        (results, stages)
    }

    /// QUIT and close.
    pub(super) async fn quit(self) {
        let Slot {
            session, _opened, ..
        } = self;
        session.quit().await;
        drop(_opened);
    }
}
