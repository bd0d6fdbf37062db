//! One delivery connection's life: find the domain's hosts, connect, send
//! jobs until the domain's queue is empty (waiting `idle_timeout` for
//! more), then QUIT. Results are settled through the queue and recorded in
//! the spool before anything else happens.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use super::{now_ms, ShardDelivery};
use crate::bounce::{classify, BounceClass};
use crate::config::Delivery;
use crate::events::{Direction, Event, Events};
use crate::message::{Envelope, MessageId, Recipient};
use crate::outbound::dns::MxResult;
use crate::outbound::session::Outbound;
use crate::queue::{Job, Next, RcptResult, Settlement};
use crate::smtp::client::{Outcome as ClientOutcome, Transaction};
use crate::spool::{Outcome, Record, SpoolError};

/// First wait before writing an outcome again after a spool failure.
const RECORD_RETRY_FIRST: Duration = Duration::from_millis(20);
/// Longest wait between such attempts.
const RECORD_RETRY_MAX: Duration = Duration::from_secs(2);

/// Jobs settled concurrently when a whole domain is settled at once.
const SETTLE_CONCURRENCY: usize = 256;

/// Why a domain cannot be delivered to right now.
enum Unroutable {
    /// Null MX, no such domain: fail.
    Permanent(Rc<str>),
    /// DNS trouble, no addresses, no host answered: try later.
    Transient(Rc<str>),
}

fn reply(text: String) -> Rc<str> {
    Rc::from(text)
}

/// Reports an outbound connection opened, and closed when dropped.
struct OpenConnection<'a> {
    events: &'a Events,
    peer: SocketAddr,
}

impl<'a> OpenConnection<'a> {
    fn new(events: &'a Events, peer: SocketAddr) -> Self {
        events.emit(Event::ConnectionOpened {
            direction: Direction::Outbound,
            peer: Some(peer),
        });
        OpenConnection { events, peer }
    }
}

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.events.emit(Event::ConnectionClosed {
            direction: Direction::Outbound,
            peer: Some(self.peer),
        });
    }
}

/// A reply as recorded (`"550 5.1.1 text"`) and its Momentum bounce class.
fn bounce_class(reply: &str) -> BounceClass {
    let code = reply
        .get(..3)
        .and_then(|c| c.parse::<u16>().ok())
        .unwrap_or(0);
    let text = reply.get(3..).unwrap_or("").trim_start();
    classify(code, None, text)
}

impl ShardDelivery {
    /// Runs one connection for `domain` until its work runs out.
    pub(super) async fn worker(self: &Rc<Self>, domain: &Rc<str>, d: &Arc<Delivery>) {
        let mut conn = match self.connect(domain, d).await {
            Ok(c) => c,
            Err(Unroutable::Permanent(r)) => {
                return self.settle_domain(domain, RcptResult::Failed(r), d).await
            }
            Err(Unroutable::Transient(r)) => {
                return self.settle_domain(domain, RcptResult::Deferred(r), d).await
            }
        };
        let _open = OpenConnection::new(&self.events, conn.addr);
        let mut sent = 0u32;
        loop {
            let job = self.queue.borrow_mut().take(domain);
            let Some(job) = job else {
                if self.stop.is_fired() || !self.wait_for_work(domain, d.idle_timeout).await {
                    break;
                }
                continue;
            };
            let broken = self.deliver(&mut conn, job, d).await;
            sent += 1;
            let used_up =
                d.max_deliveries_per_connection > 0 && sent >= d.max_deliveries_per_connection;
            if broken {
                return;
            }
            if used_up || self.stop.is_fired() {
                break;
            }
        }
        conn.quit().await;
    }

    /// Waits until `domain` has ready work or `limit` passes.
    async fn wait_for_work(&self, domain: &Rc<str>, limit: Duration) -> bool {
        if self.queue.borrow().ready_len(domain) > 0 {
            return true;
        }
        let signal = self
            .idle
            .borrow_mut()
            .entry(domain.clone())
            .or_default()
            .clone();
        let woke = futures_lite::future::or(
            async {
                signal.wait().await;
                true
            },
            async {
                glommio::timer::sleep(limit).await;
                false
            },
        )
        .await;
        woke && self.queue.borrow().ready_len(domain) > 0
    }

    /// The hosts to try, in order: static routes, else the MX.
    async fn targets(
        &self,
        domain: &str,
        d: &Delivery,
    ) -> Result<Vec<(String, SocketAddr)>, Unroutable> {
        let mut out = Vec::new();
        if !d.routes.is_empty() {
            let mut last = None;
            for r in &d.routes {
                if let Some(a) = r.addr() {
                    out.push((r.host.clone(), a));
                    continue;
                }
                match self.resolver.resolve_host(&r.host).await {
                    Ok(res) => out.extend(
                        res.addresses()
                            .map(|(h, ip)| (h.name.clone(), SocketAddr::new(ip, r.port))),
                    ),
                    Err(e) => last = Some(e),
                }
            }
            if out.is_empty() {
                let why = last.map_or("no address for the configured routes".to_string(), |e| {
                    e.to_string()
                });
                return Err(Unroutable::Transient(reply(format!(
                    "451 4.4.3 [internal] {why}"
                ))));
            }
            return Ok(out);
        }
        match self.resolver.resolve_mx(domain).await {
            Err(e) => Err(Unroutable::Transient(reply(format!(
                "451 4.4.3 [internal] {e}"
            )))),
            Ok(res) => {
                match &*res {
                    MxResult::NullMx => Err(Unroutable::Permanent(reply(
                        "550 5.1.10 [internal] NULL MX domain does not accept mail".into(),
                    ))),
                    MxResult::NoSuchDomain => Err(Unroutable::Permanent(reply(format!(
                        "550 5.1.2 [internal] domain {domain} does not exist"
                    )))),
                    hosts => {
                        out.extend(hosts.addresses().map(|(h, ip)| {
                            (h.name.clone(), SocketAddr::new(ip, d.remote_smtp_port))
                        }));
                        if out.is_empty() {
                            return Err(Unroutable::Transient(reply(
                                "454 4.4.4 [internal] no MX or A for domain".into(),
                            )));
                        }
                        Ok(out)
                    }
                }
            }
        }
    }

    async fn connect(&self, domain: &str, d: &Delivery) -> Result<Outbound, Unroutable> {
        let targets = self.targets(domain, d).await?;
        let mut last = None;
        for (host, addr) in targets {
            match Outbound::open(addr, &host, d, self.tls.client(&d.tls_client)).await {
                Ok(c) => {
                    log::debug!(
                        "shard {}: {domain}: connected to {} [{}]",
                        self.shard,
                        c.host,
                        c.addr
                    );
                    return Ok(c);
                }
                Err(r) => {
                    log::debug!("shard {}: {domain}: {host} [{addr}]: {r}", self.shard);
                    last = Some(r);
                }
            }
        }
        let why = last.map_or(
            "no MXs for this domain could be reached at this time".into(),
            |r| r.to_string(),
        );
        Err(Unroutable::Transient(reply(format!("421 4.4.0 [internal] no MXs for this domain could be reached at this time (last: {why})"))))
    }

    /// Envelope and content of a queued message.
    pub(super) async fn fetch(
        &self,
        id: MessageId,
    ) -> Result<(Rc<Envelope>, Rc<[u8]>), SpoolError> {
        if let Some(r) = self.resident.borrow().get(&id) {
            return Ok((r.env.clone(), r.body.clone()));
        }
        let (env, body) = self.spool.read_live(id).await?;
        Ok((Rc::new(env), Rc::from(body)))
    }

    /// Sends one job over `conn`; true when the connection broke.
    async fn deliver(&self, conn: &mut Outbound, job: Job, d: &Arc<Delivery>) -> bool {
        let (env, body) = match self.fetch(job.id).await {
            Ok(x) => x,
            Err(e) => {
                self.events
                    .panic(&format!("reading {} from the spool: {e}", job.id));
                let r = reply(format!("451 4.3.0 [internal] spool read failed: {e}"));
                let results = job
                    .recipients
                    .iter()
                    .map(|q| (q.index, RcptResult::Deferred(r.clone())))
                    .collect::<Vec<_>>();
                self.finish(&job, &results, None, d).await;
                return false;
            }
        };
        let mut results = Vec::with_capacity(job.recipients.len());
        let mut broken = None;
        for batch in job.recipients.chunks(d.max_recipients_per_batch.max(1)) {
            if let Some(r) = &broken {
                results.extend(
                    batch
                        .iter()
                        .map(|q| (q.index, RcptResult::Deferred(Rc::clone(r)))),
                );
                continue;
            }
            let rcpts: Vec<Recipient> = batch
                .iter()
                .map(|q| {
                    env.recipients
                        .get(q.index as usize)
                        .cloned()
                        .unwrap_or_else(|| Recipient::new(q.address.to_string()))
                })
                .collect();
            match conn
                .send(Transaction::from_envelope(&env, rcpts, body.clone()))
                .await
            {
                Ok(result) => {
                    for (q, rr) in batch.iter().zip(result.recipients) {
                        let text = reply(rr.outcome.reply().to_string());
                        let r = match rr.outcome {
                            ClientOutcome::Delivered(_) => RcptResult::Delivered(text),
                            ClientOutcome::Transient(_) => RcptResult::Deferred(text),
                            ClientOutcome::Permanent(_) => RcptResult::Failed(text),
                        };
                        results.push((q.index, r));
                    }
                    if !conn.ready().await {
                        broken = Some(reply(
                            "451 4.4.2 [internal] connection closed by remote host".into(),
                        ));
                    }
                }
                Err((_, r)) => {
                    let r = reply(r.to_string());
                    results.extend(
                        batch
                            .iter()
                            .map(|q| (q.index, RcptResult::Deferred(r.clone()))),
                    );
                    broken = Some(r);
                }
            }
        }
        let remote = conn.host.clone();
        self.finish(&job, &results, Some(&remote), d).await;
        broken.is_some()
    }

    /// Settles a job in the queue, spools a DSN for failures, then
    /// records the settlement. The DSN goes first: a crash in between
    /// repeats an attempt (and perhaps a DSN) but never loses the DSN.
    async fn finish(
        &self,
        job: &Job,
        results: &[(u32, RcptResult)],
        remote: Option<&str>,
        d: &Delivery,
    ) {
        let s = self
            .queue
            .borrow_mut()
            .settle(job, results, &d.retry, now_ms());
        self.report(job, results, &s, remote);
        let failures: Vec<&crate::queue::Final> =
            s.finals.iter().filter(|f| !f.delivered).collect();
        // Neither may be forgotten: each is retried until it is durable,
        // and this connection (with this message) waits for it.
        if !failures.is_empty() && d.generate_bounces {
            if let Some(dsn) = self.make_dsn(s.id, &failures, remote, d).await {
                self.until_durable(s.id, "spooling its DSN", || self.store_dsn(&dsn))
                    .await;
                self.accept_dsn(dsn);
            }
        }
        self.until_durable(s.id, "recording its results", || self.record(&s))
            .await;
        match s.next {
            Next::Done => self.release(&s.id),
            Next::Retry { .. } => {
                self.delay_notice(s.id, d).await;
                self.release(&s.id);
            }
            Next::Waiting => {}
        }
    }

    /// Emits one event per recipient result: delivered or failed for good
    /// as the settlement says (a deferral past its expiry is a failure),
    /// deferred otherwise.
    fn report(&self, job: &Job, results: &[(u32, RcptResult)], s: &Settlement, host: Option<&str>) {
        for f in &s.finals {
            let (recipient, reply) = (&*f.rcpt.address, &*f.reply);
            self.events.emit(if f.delivered {
                Event::Delivery {
                    id: s.id,
                    recipient,
                    host,
                    reply,
                }
            } else {
                Event::PermanentFailure {
                    id: s.id,
                    recipient,
                    host,
                    reply,
                    class: bounce_class(reply),
                }
            });
        }
        for (index, r) in results {
            let RcptResult::Deferred(reply) = r else {
                continue;
            };
            if s.finals.iter().any(|f| f.rcpt.index == *index) {
                continue;
            }
            let Some(q) = job.recipients.iter().find(|q| q.index == *index) else {
                continue;
            };
            self.events.emit(Event::TransientFailure {
                id: s.id,
                recipient: &q.address,
                host,
                reply,
                class: bounce_class(reply),
            });
        }
    }

    /// Writes OUTCOME records, then DONE or RETRY, in one batch.
    async fn record(&self, s: &Settlement) -> Result<(), SpoolError> {
        let finals: Vec<(u32, Outcome, &str)> = s
            .finals
            .iter()
            .map(|f| {
                let outcome = if f.delivered {
                    Outcome::Delivered
                } else {
                    Outcome::Failed
                };
                (f.rcpt.index, outcome, &*f.reply)
            })
            .collect();
        let then = match s.next {
            Next::Done => Some(Record::Done { id: s.id }),
            Next::Retry { at, attempts } => Some(Record::Retry {
                id: s.id,
                next_attempt_ms: at,
                attempts,
            }),
            Next::Waiting => None,
        };
        self.spool.append_settlement(s.id, &finals, then).await
    }

    /// Runs `write` until it succeeds, waiting longer after each failure
    /// (a full disk, an I/O error). Gives up only when the spool is closed
    /// (shutdown): the work is then repeated after the restart, never lost.
    async fn until_durable<F, Fut>(&self, id: MessageId, what: &str, mut write: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), SpoolError>>,
    {
        let mut delay = RECORD_RETRY_FIRST;
        let mut failures = 0u64;
        loop {
            match write().await {
                Ok(()) => {
                    if failures > 0 {
                        log::info!(
                            "shard {}: {id}: {what} succeeded after {failures} failed attempt(s)",
                            self.shard
                        );
                    }
                    return;
                }
                Err(SpoolError::Closed) => {
                    self.events.panic(&format!(
                        "{id}: {what}: spool closed; the attempt is repeated after restart"
                    ));
                    return;
                }
                Err(e) => {
                    failures += 1;
                    // 1st, 2nd, 4th, 8th ... failure: the log shows it is
                    // stuck without a line per retry.
                    if failures.is_power_of_two() {
                        self.events.panic(&format!("{id}: {what} failed ({failures} time(s) so far): {e}; retrying, delivery of this message waits"));
                    }
                    glommio::timer::sleep(delay).await;
                    delay = (delay * 2).min(RECORD_RETRY_MAX);
                }
            }
        }
    }

    /// Settles every ready job of a domain with the same result.
    async fn settle_domain(
        self: &Rc<Self>,
        domain: &Rc<str>,
        result: RcptResult,
        d: &Arc<Delivery>,
    ) {
        let jobs = self.queue.borrow_mut().take_all(domain);
        if jobs.is_empty() {
            return;
        }
        let kind = match &result {
            RcptResult::Delivered(_) => "delivered",
            RcptResult::Failed(_) => "failed",
            RcptResult::Deferred(_) => "deferred",
        };
        let admitted = self
            .repeats
            .borrow_mut()
            .admit(&(domain.clone(), kind), std::time::Instant::now());
        if let Some(held) = admitted {
            let also = if held > 0 {
                format!(" ({held} similar line(s) for this domain held back)")
            } else {
                String::new()
            };
            log::info!(
                "shard {}: {domain}: {} message(s) settled as {result:?}{also}",
                self.shard,
                jobs.len()
            );
        }
        let jobs = Rc::new(jobs);
        let per_task = jobs.len().div_ceil(SETTLE_CONCURRENCY);
        let mut tasks = Vec::new();
        for start in (0..jobs.len()).step_by(per_task.max(1)) {
            let (me, jobs, result, d) = (self.clone(), jobs.clone(), result.clone(), d.clone());
            tasks.push(glommio::spawn_local(async move {
                for job in jobs.iter().skip(start).take(per_task) {
                    let results: Vec<(u32, RcptResult)> = job
                        .recipients
                        .iter()
                        .map(|q| (q.index, result.clone()))
                        .collect();
                    me.finish(job, &results, None, &d).await;
                }
            }));
        }
        for t in tasks {
            t.await;
        }
    }
}
