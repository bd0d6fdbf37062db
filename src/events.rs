//! A shard's event stream: the typed facts its stages report (a message
//! received, a recipient delivered or failed, a command rejected, a
//! connection opened or closed, a panic-level error) and the consumers
//! that subscribe to them (the counters now; the Momentum log writers and
//! metrics later).
//!
//! Owns `Event`, the `Events` bus and `Counters`. Dispatch is synchronous
//! and shard-local: `emit` hands the event to every subscriber before it
//! returns, so nothing queues up behind a slow consumer. A consumer that
//! cannot take an event (its own buffer full) says so, and the bus counts
//! it as lost for that consumer and reports it (log line, rate-limited,
//! and the `events_lost` counter). May call: message, smtp (reply types),
//! bounce (classes), runtime (the clock). Must never: drop an event silently, do I/O inside
//! `emit`, or block.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use crate::bounce::BounceClass;
use crate::message::{MessageId, Recipient};
use crate::reply::Reply;
use crate::runtime::logger::RepeatLimiter;
use crate::smtp::client::Stage;
use crate::smtp::server::RejectPhase;

/// Which side of the MTA a connection is on.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// A client connected to one of our listeners.
    Inbound,
    /// We connected to a remote server to deliver.
    Outbound,
}

/// The binding a message is sent from and its group (Momentum's log
/// fields `binding` and `binding_group`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Source<'a> {
    /// The binding (`default` when none is assigned).
    pub binding: &'a str,
    /// Its group (`default` when none lists it).
    pub group: &'a str,
}

/// A paniclog line's level (Momentum's names and numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// 0.
    Debug,
    /// 1.
    Info,
    /// 2.
    Notice,
    /// 3.
    Warning,
    /// 4.
    Error,
    /// 5.
    Critical,
}

impl Level {
    /// Momentum's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Notice => "NOTICE",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
            Level::Critical => "CRITICAL",
        }
    }
}

/// The part of the MTA a paniclog line is about, with Momentum's names
/// (`Debug_Flags` subsystems) where one fits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subsystem {
    /// Generic (Momentum's `ERROR`).
    General,
    /// The spool and its files (Momentum's `DB`).
    Spool,
    /// SMTP sessions, in and out.
    Smtp,
    /// DNS resolution.
    Dns,
    /// Connections and sockets.
    Net,
    /// Signals and the control of shards (reload, shutdown).
    Sig,
    /// The logs themselves (Momentum's `LOG1`).
    Log,
    /// TLS.
    Ssl,
    /// Start-up.
    Start,
}

impl Subsystem {
    /// Momentum's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Subsystem::General => "ERROR",
            Subsystem::Spool => "DB",
            Subsystem::Smtp => "SMTP",
            Subsystem::Dns => "DNS",
            Subsystem::Net => "NET",
            Subsystem::Sig => "SIG",
            Subsystem::Log => "LOG1",
            Subsystem::Ssl => "SSL",
            Subsystem::Start => "START",
        }
    }
}

thread_local! {
    /// The bus of the shard running on this thread, for code that reports
    /// paniclog lines without holding the bus (the spool's internals).
    static BUS: RefCell<Option<Rc<Events>>> = const { RefCell::new(None) };
}

/// Makes `bus` this thread's paniclog target until the shard ends.
pub fn install(bus: Rc<Events>) {
    BUS.with(|b| *b.borrow_mut() = Some(bus));
}

/// Removes this thread's bus (the shard is ending).
pub fn uninstall() {
    BUS.with(|b| b.borrow_mut().take());
}

/// A paniclog line from anywhere: through this shard's bus when one is
/// installed, else (the main thread, a tool) to the process log only.
pub fn paniclog(level: Level, subsystem: Subsystem, what: &str) {
    let bus = BUS.with(|b| b.borrow().clone());
    match bus {
        Some(bus) => bus.report(level, subsystem, what),
        None => log::log!(
            if level >= Level::Error {
                log::Level::Error
            } else {
                log::Level::Warn
            },
            "paniclog: [{}] {}: {what}",
            level.name(),
            subsystem.name()
        ),
    }
}

/// How a message came in (the mainlog R line's `protocol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// SMTP or ESMTP from a client.
    Esmtp,
    /// Made here: a DSN, or mail a policy generated.
    Internal,
}

impl Protocol {
    /// Momentum's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Esmtp => "esmtp",
            Protocol::Internal => "internal",
        }
    }
}

/// One recipient's delivery attempt: what mainlog's D, T and P lines
/// say about it besides the reply.
#[derive(Clone, Copy, Debug)]
pub struct Try<'a> {
    /// The binding it is sent from.
    pub source: Source<'a>,
    /// The message.
    pub id: MessageId,
    /// The recipient.
    pub recipient: &'a str,
    /// The envelope sender (empty for `<>`, and when the message was not
    /// read for this attempt).
    pub sender: &'a str,
    /// Octets of the message (what was sent, when it was).
    pub octets: usize,
    /// Earlier rounds of attempts that ended in a deferral.
    pub retries: u32,
    /// When the message was received (epoch ms).
    pub received_at_ms: u64,
    /// The remote host's name, when a connection was made.
    pub host: Option<&'a str>,
    /// Its address.
    pub remote: Option<IpAddr>,
    /// Where in the outbound session the attempt ended (none: no
    /// connection was made).
    pub stage: Option<Stage>,
}

/// One thing that happened on a shard. Borrowed: a subscriber that keeps
/// an event copies what it needs.
#[derive(Debug)]
pub enum Event<'a> {
    /// A message is durable in the spool and queued.
    Reception {
        /// The binding it is sent from.
        source: Source<'a>,
        /// Its spool id.
        id: MessageId,
        /// Envelope sender (empty for `<>`).
        sender: &'a str,
        /// Envelope recipients.
        recipients: &'a [Recipient],
        /// Octets spooled (trace header included).
        octets: usize,
        /// The client.
        peer: Option<SocketAddr>,
        /// How it came in.
        protocol: Protocol,
    },
    /// A recipient was accepted by the next hop.
    Delivery {
        /// The attempt.
        attempt: Try<'a>,
        /// The remote reply.
        reply: &'a Reply,
    },
    /// A recipient was deferred (4xx, connection trouble, DNS trouble).
    TransientFailure {
        /// The attempt.
        attempt: Try<'a>,
        /// The reply (remote, or ours marked `[internal]`).
        reply: &'a Reply,
        /// Momentum's bounce class of the reply.
        class: BounceClass,
    },
    /// A recipient failed for good (5xx, expiry, retries used up).
    PermanentFailure {
        /// The attempt.
        attempt: Try<'a>,
        /// The reply (remote, or ours marked `[internal]`).
        reply: &'a Reply,
        /// Momentum's bounce class of the reply.
        class: BounceClass,
    },
    /// We refused something a client sent.
    Rejection {
        /// Where in the session.
        phase: RejectPhase,
        /// Our reply code (4xx or 5xx).
        code: u16,
        /// Our reply text (first line).
        reply: &'a str,
        /// The client.
        peer: Option<SocketAddr>,
        /// Our address it connected to.
        local: Option<SocketAddr>,
    },
    /// A connection began.
    ConnectionOpened {
        /// Inbound or outbound.
        direction: Direction,
        /// The other end.
        peer: Option<SocketAddr>,
    },
    /// A connection ended.
    ConnectionClosed {
        /// Inbound or outbound.
        direction: Direction,
        /// The other end.
        peer: Option<SocketAddr>,
    },
    /// Something went wrong that an operator must look at (the paniclog).
    Panic {
        /// How bad.
        level: Level,
        /// Which part of the MTA.
        subsystem: Subsystem,
        /// What, in words.
        what: &'a str,
    },
    /// An adaptive back-off started, stepped back or ended for a binding
    /// × domain (reported once, by the owner shard of its counters).
    Backoff {
        /// The binding.
        binding: &'a str,
        /// The destination domain.
        domain: &'a str,
        /// The rule.
        rule: &'a str,
        /// `started`, `restarted`, `step N/M` or `ended`.
        change: &'a str,
        /// What it allows now, in words (`configured limits` once ended).
        allows: &'a str,
    },
}

/// What a subscriber did with an event.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Taken {
    /// The event is the subscriber's.
    Yes,
    /// The subscriber could not take it (its buffer is full): counted lost.
    Full,
}

/// A consumer of a shard's events. `offer` runs inside `emit`: it must be
/// quick, do no I/O, and never block.
pub trait Subscriber {
    /// Its name in loss reports.
    fn name(&self) -> &'static str;
    /// Takes one event, or says it cannot.
    fn offer(&self, event: &Event<'_>) -> Taken;
}

struct Subscription {
    consumer: Rc<dyn Subscriber>,
    lost: Cell<u64>,
}

/// At most one loss report per subscriber per interval.
const LOSS_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// A shard's event bus.
pub struct Events {
    shard: usize,
    subscribers: RefCell<Vec<Subscription>>,
    loss_reports: RefCell<RepeatLimiter<&'static str>>,
}

impl Events {
    /// A bus with no subscribers.
    pub fn new(shard: usize) -> Self {
        Events {
            shard,
            subscribers: RefCell::new(Vec::new()),
            loss_reports: RefCell::new(RepeatLimiter::new(LOSS_LOG_INTERVAL)),
        }
    }

    /// Adds a consumer; it sees every event emitted from now on.
    pub fn subscribe(&self, consumer: Rc<dyn Subscriber>) {
        self.subscribers.borrow_mut().push(Subscription {
            consumer,
            lost: Cell::new(0),
        });
    }

    /// Hands `event` to every subscriber.
    pub fn emit(&self, event: Event<'_>) {
        let subs = self.subscribers.borrow();
        for s in subs.iter() {
            if s.consumer.offer(&event) == Taken::Full {
                let lost = s.lost.get() + 1;
                s.lost.set(lost);
                let name = s.consumer.name();
                if let Some(suppressed) = self
                    .loss_reports
                    .borrow_mut()
                    .admit(&name, crate::runtime::sched::now())
                {
                    log::error!(
                        "paniclog: shard {}: [ERROR] LOG1: event consumer {name} is behind: {lost} event(s) lost so far{}",
                        self.shard,
                        if suppressed > 0 {
                            format!(" ({suppressed} report(s) suppressed)")
                        } else {
                            String::new()
                        }
                    );
                }
            }
        }
    }

    /// An error in `subsystem` for the paniclog (and the process log).
    pub fn panic(&self, subsystem: Subsystem, what: &str) {
        self.report(Level::Error, subsystem, what);
    }

    /// A paniclog line at `level`, also written to the process log.
    pub fn report(&self, level: Level, subsystem: Subsystem, what: &str) {
        log::log!(
            if level >= Level::Error {
                log::Level::Error
            } else {
                log::Level::Warn
            },
            "paniclog: shard {}: [{}] {}: {what}",
            self.shard,
            level.name(),
            subsystem.name()
        );
        self.emit(Event::Panic {
            level,
            subsystem,
            what,
        });
    }

    /// Events each subscriber could not take, by name.
    pub fn lost(&self) -> Vec<(&'static str, u64)> {
        self.subscribers
            .borrow()
            .iter()
            .map(|s| (s.consumer.name(), s.lost.get()))
            .collect()
    }
}

/// Totals of a shard's events; `Send`, so shards' counters can be gathered
/// and added up on any thread.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Messages received and spooled.
    pub received: u64,
    /// Recipients of those messages.
    pub received_recipients: u64,
    /// Octets spooled for them.
    pub received_octets: u64,
    /// Recipients delivered.
    pub delivered: u64,
    /// Recipient deferrals.
    pub transient_failures: u64,
    /// Recipients failed for good.
    pub permanent_failures: u64,
    /// Client commands refused, by phase (`RejectPhase::ALL` order).
    pub rejections: [u64; RejectPhase::ALL.len()],
    /// Inbound connections opened and closed.
    pub inbound_opened: u64,
    /// Inbound connections closed.
    pub inbound_closed: u64,
    /// Outbound connections opened.
    pub outbound_opened: u64,
    /// Outbound connections closed.
    pub outbound_closed: u64,
    /// Panic-level errors.
    pub panics: u64,
    /// Back-off changes (starts, steps, ends) this shard reported.
    pub backoff_changes: u64,
    /// Events some consumer could not take.
    pub events_lost: u64,
    /// Receptions that waited for the logs to catch up (back-pressure).
    pub log_waits: u64,
    /// Receptions refused because the logs stayed behind.
    pub log_refusals: u64,
    /// Failed opens and writes of log files.
    pub log_write_errors: u64,
}

impl CounterSnapshot {
    /// Adds another shard's totals.
    pub fn add(&mut self, o: &CounterSnapshot) {
        self.received += o.received;
        self.received_recipients += o.received_recipients;
        self.received_octets += o.received_octets;
        self.delivered += o.delivered;
        self.transient_failures += o.transient_failures;
        self.permanent_failures += o.permanent_failures;
        for (a, b) in self.rejections.iter_mut().zip(o.rejections) {
            *a += b;
        }
        self.inbound_opened += o.inbound_opened;
        self.inbound_closed += o.inbound_closed;
        self.outbound_opened += o.outbound_opened;
        self.outbound_closed += o.outbound_closed;
        self.panics += o.panics;
        self.backoff_changes += o.backoff_changes;
        self.events_lost += o.events_lost;
        self.log_waits += o.log_waits;
        self.log_refusals += o.log_refusals;
        self.log_write_errors += o.log_write_errors;
    }

    /// One line, `name=value` pairs, for the log.
    pub fn render(&self) -> String {
        let rejected: Vec<String> = RejectPhase::ALL
            .iter()
            .zip(self.rejections)
            .filter(|(_, n)| *n > 0)
            .map(|(p, n)| format!("rejected_{}={n}", p.name()))
            .collect();
        format!(
            "received={} received_recipients={} received_octets={} delivered={} \
             transient_failures={} permanent_failures={} rejected={}{}{} inbound_connections={} \
             inbound_open={} outbound_connections={} outbound_open={} panics={} backoff_changes={} \
             events_lost={} log_waits={} log_refusals={} log_write_errors={}",
            self.received,
            self.received_recipients,
            self.received_octets,
            self.delivered,
            self.transient_failures,
            self.permanent_failures,
            self.rejections.iter().sum::<u64>(),
            if rejected.is_empty() { "" } else { " " },
            rejected.join(" "),
            self.inbound_opened,
            self.inbound_opened.saturating_sub(self.inbound_closed),
            self.outbound_opened,
            self.outbound_opened.saturating_sub(self.outbound_closed),
            self.panics,
            self.backoff_changes,
            self.events_lost,
            self.log_waits,
            self.log_refusals,
            self.log_write_errors,
        )
    }
}

/// The per-shard counters: a subscriber that never refuses an event.
#[derive(Default)]
pub struct Counters {
    now: RefCell<CounterSnapshot>,
}

impl Counters {
    /// The totals so far; `lost` is the bus's loss count to include.
    pub fn snapshot(&self, events: &Events) -> CounterSnapshot {
        let mut s = self.now.borrow().clone();
        s.events_lost = events.lost().iter().map(|(_, n)| n).sum();
        s
    }
}

impl Subscriber for Counters {
    fn name(&self) -> &'static str {
        "counters"
    }

    fn offer(&self, event: &Event<'_>) -> Taken {
        let mut c = self.now.borrow_mut();
        match event {
            Event::Reception {
                recipients, octets, ..
            } => {
                c.received += 1;
                c.received_recipients += recipients.len() as u64;
                c.received_octets += *octets as u64;
            }
            Event::Delivery { .. } => c.delivered += 1,
            Event::TransientFailure { .. } => c.transient_failures += 1,
            Event::PermanentFailure { .. } => c.permanent_failures += 1,
            Event::Rejection { phase, .. } => c.rejections[phase.index()] += 1,
            Event::ConnectionOpened { direction, .. } => match direction {
                Direction::Inbound => c.inbound_opened += 1,
                Direction::Outbound => c.outbound_opened += 1,
            },
            Event::ConnectionClosed { direction, .. } => match direction {
                Direction::Inbound => c.inbound_closed += 1,
                Direction::Outbound => c.outbound_closed += 1,
            },
            Event::Panic { .. } => c.panics += 1,
            Event::Backoff { .. } => c.backoff_changes += 1,
        }
        Taken::Yes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: Source = Source {
        binding: "default",
        group: "default",
    };

    /// Takes `room` events, then refuses.
    struct Small {
        room: Cell<u32>,
    }

    impl Subscriber for Small {
        fn name(&self) -> &'static str {
            "small"
        }
        fn offer(&self, _: &Event<'_>) -> Taken {
            if self.room.get() == 0 {
                return Taken::Full;
            }
            self.room.set(self.room.get() - 1);
            Taken::Yes
        }
    }

    fn id() -> MessageId {
        MessageId {
            epoch_ms: 1,
            shard: 0,
            seq: 1,
        }
    }

    #[test]
    fn counters_count_every_kind_and_a_full_consumer_is_counted_lost() {
        let bus = Events::new(0);
        let counters = Rc::new(Counters::default());
        bus.subscribe(counters.clone());
        bus.subscribe(Rc::new(Small { room: Cell::new(3) }));
        let rcpts = [Recipient::new("b@y"), Recipient::new("c@y")];
        bus.emit(Event::Reception {
            source: SOURCE,
            id: id(),
            sender: "a@x",
            recipients: &rcpts,
            octets: 100,
            peer: None,
            protocol: Protocol::Esmtp,
        });
        let attempt = |recipient| Try {
            source: SOURCE,
            id: id(),
            recipient,
            sender: "a@x",
            octets: 100,
            retries: 0,
            received_at_ms: 1,
            host: Some("mx.y"),
            remote: None,
            stage: None,
        };
        bus.emit(Event::Delivery {
            attempt: attempt("b@y"),
            reply: &Reply::new(250, "2.0.0", "ok"),
        });
        bus.emit(Event::PermanentFailure {
            attempt: attempt("c@y"),
            reply: &Reply::new(550, "5.1.1", "no such user"),
            class: BounceClass::InvalidRecipient,
        });
        bus.emit(Event::Rejection {
            phase: RejectPhase::Rcpt,
            code: 550,
            reply: "5.7.1 relaying denied",
            peer: None,
            local: None,
        });
        bus.panic(Subsystem::General, "test");
        let s = counters.snapshot(&bus);
        assert_eq!(
            (s.received, s.received_recipients, s.received_octets),
            (1, 2, 100)
        );
        assert_eq!((s.delivered, s.permanent_failures, s.panics), (1, 1, 1));
        assert_eq!(s.rejections[RejectPhase::Rcpt.index()], 1);
        assert_eq!(bus.lost(), vec![("counters", 0), ("small", 2)]);
        assert_eq!(s.events_lost, 2);
        let mut sum = s.clone();
        sum.add(&s);
        assert_eq!(sum.received, 2);
        assert!(
            sum.render().contains("rejected_rcptto=2"),
            "{}",
            sum.render()
        );
    }
}
