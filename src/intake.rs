//! Intake: the cleanup stage between an inbound session and the queue
//! (Postfix's cleanup). For each message a session has received in full it
//! stamps the arrival time and a spool id, adds the trace header, runs the
//! intake hooks (where policy verdicts and DKIM signing go), assigns the
//! binding it is sent from (unless a hook did: policy has the last word;
//! mail for `default` is refused with 451 when `default_binding = "none"`),
//! appends the
//! message to the shard's spool, reports the reception, and hands the
//! message to the queue manager.
//!
//! The trace header is kept beside the body (`message::Content`), not
//! joined to it: the spool, the queue and outbound share that one content.
//!
//! May call: spool, the queue manager's `accept`, binding (assignment), events, smtp (trace
//! header, reply type), config, message, runtime (the wall clock). Must
//! never: acknowledge a message before the spool says it is durable, hand
//! the queue a message the spool does not hold, or copy the body.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use crate::runtime::sched;

use crate::binding::{Bindings, MessageFields};
use crate::events::{Event, Events, Protocol, Source, Subsystem};
use crate::message::{Content, Envelope, MessageId};
use crate::queue::driver::ShardQueue;
use crate::reply::Reply;
use crate::smtp::received_header;
use crate::spool::{Spool, SpoolError};

/// Where a message came from, as the session knows it.
#[derive(Clone, Copy, Debug)]
pub struct Arrival<'a> {
    /// The client.
    pub peer: Option<SocketAddr>,
    /// The address it connected to.
    pub local: Option<SocketAddr>,
    /// The session was under TLS.
    pub tls: bool,
    /// This host's name, for the trace header.
    pub hostname: &'a str,
}

/// A step every message passes before it is spooled: it may refuse the
/// message (the client gets the reply) or add header fields (a signature).
/// Runs on the shard: quick, no I/O, never blocking.
pub trait Hook {
    /// Its name in logs.
    fn name(&self) -> &'static str;
    /// Looks at the envelope and the content: `head` (the trace header and
    /// what earlier hooks added, which it may extend) then `body`, as the
    /// client sent it.
    fn inspect(&self, envelope: &Envelope, head: &mut Vec<u8>, body: &[u8]) -> Result<(), Reply>;
}

/// How long a reception waits for logs that are behind before its 451.
const LOG_ROOM_WAIT: Duration = Duration::from_secs(60);

/// A shard's intake stage.
pub struct Intake {
    spool: Rc<Spool>,
    queue: Rc<ShardQueue>,
    events: Rc<Events>,
    bindings: Rc<Bindings>,
    hooks: RefCell<Vec<Rc<dyn Hook>>>,
}

impl Intake {
    /// The stage, with no hooks.
    pub fn new(
        spool: Rc<Spool>,
        queue: Rc<ShardQueue>,
        events: Rc<Events>,
        bindings: Rc<Bindings>,
    ) -> Self {
        Intake {
            spool,
            queue,
            events,
            bindings,
            hooks: RefCell::new(Vec::new()),
        }
    }

    /// Adds a hook; it runs after those added before it.
    pub fn add_hook(&self, hook: Rc<dyn Hook>) {
        self.hooks.borrow_mut().push(hook);
    }

    /// True while the spool takes new mail (not short of space).
    pub fn takes_mail(&self) -> bool {
        self.spool.takes_mail()
    }

    /// Takes one message: `Ok(id)` only once it is durable and queued.
    pub async fn receive(
        &self,
        arrival: Arrival<'_>,
        mut env: Envelope,
        body: Vec<u8>,
    ) -> Result<MessageId, Reply> {
        // Back-pressure: while the disk under the logs is behind, new mail
        // waits for it (its lines must not be dropped, nor pile up).
        if !self.queue.logs().room(&self.events, LOG_ROOM_WAIT).await {
            return Err(Reply::new(
                451,
                (4, 3, 0),
                "Requested action aborted: the logs cannot keep up, try again later",
            ));
        }
        let now = sched::wall();
        env.received_at_ms = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let id = self.spool.allocate_id();
        let date = time::OffsetDateTime::from(now)
            .format(&time::format_description::well_known::Rfc2822)
            .unwrap_or_default();
        let mut head = received_header(&env, arrival.hostname, arrival.tls, id, &date).into_bytes();
        for hook in self.hooks.borrow().iter() {
            // The session reports the refusal (phase data) when it sends it.
            if let Err(reply) = hook.inspect(&env, &mut head, &body) {
                log::info!("{id}: refused by intake hook {}: {reply}", hook.name());
                return Err(reply);
            }
        }
        if env.binding.is_none() && self.bindings.has_rules() {
            let fields = MessageFields::new(&env, &body, arrival.local, arrival.peer);
            env.binding = self.bindings.assign(&fields).await.map(|b| b.to_string());
        }
        if env.binding.is_none() && self.bindings.default_refused() {
            return Err(Reply::new(
                451,
                (4, 4, 4),
                "No binding for this message (default_binding is none); try again later",
            ));
        }
        let content = Content::new(head, body);
        match self.spool.append_content(id, &env, &content).await {
            Ok(()) => {
                let (binding, group) = self.bindings.source_of(env.binding.as_deref());
                self.events.emit(Event::Reception {
                    source: Source {
                        binding: &binding,
                        group: &group,
                    },
                    id,
                    sender: &env.mail_from,
                    recipients: &env.recipients,
                    octets: content.len(),
                    peer: arrival.peer,
                    protocol: Protocol::Esmtp,
                });
                self.queue.accept(id, env, content);
                // Its R lines are written before the 250 (see `logs`).
                self.queue.logs().written().await;
                Ok(id)
            }
            Err(e) => Err(self.spool_failure(&e)),
        }
    }

    fn spool_failure(&self, e: &SpoolError) -> Reply {
        let (code, enhanced) = e.smtp_reply_code();
        self.events
            .panic(Subsystem::Spool, &format!("spool append failed: {e}"));
        Reply::new(
            code,
            enhanced,
            "Requested action aborted: message not stored, try again later",
        )
    }
}
