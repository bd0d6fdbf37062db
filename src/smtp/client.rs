//! The sans-IO ESMTP client engine: bytes from the server in, commands and
//! message content out, one `ClientStep` at a time.
//!
//! Owns the client side of RFC 5321 with PIPELINING (2920), SIZE (1870),
//! 8BITMIME (6152), STARTTLS (3207), CHUNKING/BINARYMIME (3030), SMTPUTF8
//! (6531), DSN (3461) and ENHANCEDSTATUSCODES (2034/3463): greeting,
//! EHLO/HELO, STARTTLS, transactions, RSET, QUIT, and the per-recipient
//! outcome of every transaction.
//!
//! Calls nothing outside `crate::message` and the `smtp` modules beside
//! it (`reply`, `status`). Never does I/O, reads a clock or
//! panics on server input; memory is bounded by the reply limits in
//! `reply` plus the content of the transaction in flight.
//!
//! The driver (outbound delivery, load generator) loops:
//! 1. write `output()` (then `clear_output()`), or `take_output()`,
//!    whenever `has_output()`;
//! 2. `poll()` until it returns `NeedInput`, `Ready`, `StartTls` or
//!    `Closed`, acting on each `Done`/`Failed` on the way;
//! 3. on `Ready`, `submit()` a transaction or `quit()`; on `StartTls`,
//!    handshake and call `tls_started()`/`tls_failed()`; on `NeedInput`,
//!    read and `feed()`, arming a timer for `stage()` that calls
//!    `timeout()`; on EOF call `connection_closed()`; on `Closed`, flush
//!    the output and close the socket.
//!
//! Choices worth knowing (details at the code):
//! * Results: 2xx (251 too) delivered, 4xx transient, 5xx permanent; a
//!   session that fails under a transaction (timeout, EOF, protocol error,
//!   421) makes every undecided recipient transient with Momentum's
//!   `451 4.4.2 [internal] ...` wording, then reports `Failed`.
//! * Content a server cannot take (over its SIZE, 8-bit without 8BITMIME,
//!   BINARYMIME without CHUNKING, SMTPUTF8 without SMTPUTF8) fails
//!   permanently before anything is sent; no conversion (RFC 6152 §3).
//! * DATA content gets CRLF line ends, dot-stuffing and a final CRLF; BDAT
//!   content goes as it is.
//! * RSET follows a transaction that ended before its content was
//!   accepted or refused as a whole; a refused RSET ends the session.

mod encode;
mod engine;
mod extensions;
mod output;
mod reply;
mod transaction;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;

use crate::reply::Reply;

pub use extensions::Extensions;
pub use output::Output;
pub use reply::{EnhancedStatus, ReplyError, ReplyParser, MAX_REPLY_LINES, MAX_REPLY_LINE_OCTETS};
pub use transaction::{Outcome, RecipientResult, Transaction, TransactionResult};

use transaction::InFlight;

/// Default largest BDAT chunk: bigger contents go out in several chunks.
pub const DEFAULT_BDAT_CHUNK_OCTETS: usize = 1024 * 1024;

/// Default recipients per transaction (Momentum's `max_recipients_per_batch`).
pub const DEFAULT_MAX_RECIPIENTS_PER_BATCH: usize = 100;

/// When to use STARTTLS (Momentum's outbound `tls`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum TlsPolicy {
    /// Never.
    Off,
    /// If offered. A refused STARTTLS continues in plain text; a failed
    /// handshake is reported (`TlsFailed`) for the driver to decide.
    Opportunistic,
    /// Always: not offered or refused fails the session.
    Required,
}

/// Per-connection settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientSettings {
    /// Name sent in EHLO/HELO.
    pub ehlo_hostname: String,
    /// STARTTLS policy.
    pub tls: TlsPolicy,
    /// Pipeline MAIL/RCPT/DATA when the server offers PIPELINING.
    pub use_pipelining: bool,
    /// Use BDAT when the server offers CHUNKING.
    pub use_chunking: bool,
    /// Most recipients `submit` accepts in one transaction; 0 = no limit.
    pub max_recipients_per_batch: usize,
    /// Largest BDAT chunk, in octets (at least 1).
    pub bdat_chunk_octets: usize,
}

impl ClientSettings {
    /// Defaults: opportunistic TLS, pipelining and chunking on.
    pub fn new(ehlo_hostname: impl Into<String>) -> Self {
        ClientSettings {
            ehlo_hostname: ehlo_hostname.into(),
            tls: TlsPolicy::Opportunistic,
            use_pipelining: true,
            use_chunking: true,
            max_recipients_per_batch: DEFAULT_MAX_RECIPIENTS_PER_BATCH,
            bdat_chunk_octets: DEFAULT_BDAT_CHUNK_OCTETS,
        }
    }
}

/// What the client waits for; the driver picks the matching timeout.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    /// The 220 greeting.
    Banner,
    /// The EHLO or HELO reply (`ehlo_timeout`).
    Ehlo,
    /// The reply to STARTTLS.
    StartTls,
    /// The driver's TLS handshake.
    TlsHandshake,
    /// The MAIL reply (`mailfrom_timeout`).
    Mail,
    /// A RCPT reply (`rcptto_timeout`).
    Rcpt,
    /// The 354 after DATA.
    Data,
    /// The reply after the content: final dot or BDAT (`body_timeout`).
    DataDone,
    /// The RSET reply (`rset_timeout`).
    Rset,
    /// The QUIT reply.
    Quit,
    /// Ready, nothing outstanding (`idle_timeout`).
    Idle,
    /// The session is over.
    Closed,
}

impl Stage {
    /// Lower-case name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Banner => "banner",
            Stage::Ehlo => "ehlo",
            Stage::StartTls => "starttls",
            Stage::TlsHandshake => "tls handshake",
            Stage::Mail => "mail",
            Stage::Rcpt => "rcpt",
            Stage::Data => "data",
            Stage::DataDone => "data done",
            Stage::Rset => "rset",
            Stage::Quit => "quit",
            Stage::Idle => "idle",
            Stage::Closed => "closed",
        }
    }
}

/// A server that broke the protocol.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Bytes that are not a valid reply.
    #[error(transparent)]
    Reply(#[from] ReplyError),
    /// A reply when none was due, or of a class that makes no sense there.
    #[error("unexpected reply: {0}")]
    UnexpectedReply(Reply),
    /// Plain-text bytes after the STARTTLS go-ahead (response injection).
    #[error("data after the STARTTLS go-ahead")]
    DataAfterStartTls,
}

/// Why a session failed. Handshake errors (before `Ready`) mean "try the
/// next MX"; errors with a transaction in flight come after its `Done`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The greeting was not 2xx.
    #[error("greeting refused: {0}")]
    GreetingRejected(Reply),
    /// EHLO got a non-5xx failure, or HELO after it failed too.
    #[error("EHLO/HELO refused: {0}")]
    HelloRejected(Reply),
    /// Policy `Required`, server did not offer STARTTLS.
    #[error("STARTTLS required but not advertised")]
    TlsRequiredNotAdvertised,
    /// Policy `Required`, STARTTLS refused.
    #[error("STARTTLS refused: {0}")]
    StartTlsRejected(Reply),
    /// The driver's TLS handshake failed.
    #[error("TLS negotiation failed")]
    TlsFailed,
    /// A 421: the server is closing the connection.
    #[error("service closing: {0}")]
    ServiceClosing(Reply),
    /// RSET was refused; the connection cannot be reused.
    #[error("RSET refused: {0}")]
    RsetRejected(Reply),
    /// The server broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// The driver's timer for this stage expired.
    #[error("timeout waiting for {}", .0.name())]
    Timeout(Stage),
    /// The peer closed the connection during this stage.
    #[error("connection closed by remote host during {}", .0.name())]
    ConnectionClosed(Stage),
}

impl SessionError {
    /// The reply to record for this failure, in Momentum's wording where
    /// it has one; recipients in flight get it as `Transient`.
    pub fn reply(&self) -> Reply {
        use SessionError as E;
        let tls = |text: &str| Reply::internal(451, (4, 7, 5), text);
        let session = |text: &str| Reply::internal(451, (4, 4, 2), text);
        match self {
            E::GreetingRejected(r)
            | E::HelloRejected(r)
            | E::StartTlsRejected(r)
            | E::ServiceClosing(r)
            | E::RsetRejected(r) => r.clone(),
            E::TlsRequiredNotAdvertised => {
                Reply::internal(451, (4, 7, 6), "STARTTLS required but not advertised")
            }
            E::TlsFailed | E::Timeout(Stage::TlsHandshake) => tls("TLS negotiation failed"),
            E::Timeout(Stage::StartTls) => tls("no tls go-ahead"),
            E::Protocol(e) => Reply::internal(451, (4, 5, 0), &format!("protocol error: {e}")),
            E::Timeout(stage) => session(match stage {
                Stage::Banner => "no banner",
                Stage::Ehlo => "no HELO/EHLO response",
                Stage::Mail => "no MAIL FROM response",
                Stage::Rcpt => "no RCPT TO response",
                Stage::Data => "no DATA response",
                Stage::DataDone => "no BODY response",
                Stage::Rset => "no RSET response",
                _ => "no response",
            }),
            E::ConnectionClosed(_) => session("connection closed by remote host"),
        }
    }
}

/// What the driver should do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientStep {
    /// Read from the server and `feed()` (after writing any output).
    NeedInput,
    /// Run the TLS handshake, then `tls_started()` or `tls_failed()`.
    StartTls,
    /// Idle: `submit()` a transaction or `quit()`.
    Ready,
    /// A submitted transaction finished.
    Done(TransactionResult),
    /// The session failed (reported once); `Closed` follows.
    Failed(SessionError),
    /// Over: write any remaining output, then close the connection.
    Closed,
}

/// Why `submit` refused a transaction.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The session is not `Ready`.
    #[error("session not ready")]
    NotReady,
    /// The transaction has no recipients.
    #[error("no recipients")]
    NoRecipients,
    /// More recipients than `max_recipients_per_batch`.
    #[error("more than {limit} recipients")]
    TooManyRecipients {
        /// The configured limit.
        limit: usize,
    },
    /// An address or parameter contains a control character (CR, LF...).
    #[error("control character in an address or parameter")]
    InvalidEnvelope,
}

/// A refused transaction, handed back with the reason.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("transaction not submitted: {error}")]
pub struct Rejected {
    /// Why.
    pub error: SubmitError,
    /// The transaction, unchanged.
    pub transaction: Transaction,
}

/// A reply the engine is waiting for, in the order the commands went out.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Expect {
    Banner,
    Ehlo,
    Helo,
    StartTls,
    Mail,
    Rcpt(usize),
    Data,
    /// Reply after the dot-stuffed content.
    Body,
    /// Reply to a BDAT chunk.
    Bdat {
        last: bool,
    },
    /// Reply after a lone dot sent because DATA got 354 with nothing to deliver.
    DummyDot,
    Rset,
    Quit,
}

impl Expect {
    fn stage(self) -> Stage {
        match self {
            Expect::Banner => Stage::Banner,
            Expect::Ehlo | Expect::Helo => Stage::Ehlo,
            Expect::StartTls => Stage::StartTls,
            Expect::Mail => Stage::Mail,
            Expect::Rcpt(_) => Stage::Rcpt,
            Expect::Data => Stage::Data,
            Expect::Body | Expect::Bdat { .. } | Expect::DummyDot => Stage::DataDone,
            Expect::Rset => Stage::Rset,
            Expect::Quit => Stage::Quit,
        }
    }
}

/// One client connection's protocol state.
#[derive(Debug)]
pub struct ClientSession {
    settings: ClientSettings,
    tls_active: bool,
    extensions: Extensions,
    parser: ReplyParser,
    /// Replies due, oldest first.
    expected: VecDeque<Expect>,
    inflight: Option<InFlight>,
    /// `Done` and `Failed` steps not yet polled.
    events: VecDeque<ClientStep>,
    output: Output,
    /// STARTTLS got its 220: waiting for the driver's handshake.
    awaiting_tls: bool,
    /// `quit()` was called: QUIT goes out as soon as the session is idle.
    quit_requested: bool,
    closed: bool,
}

impl ClientSession {
    /// A session on a fresh connection, waiting for the greeting.
    /// `tls_active` is true for implicit TLS (no STARTTLS then).
    pub fn new(settings: ClientSettings, tls_active: bool) -> Self {
        ClientSession {
            settings,
            tls_active,
            extensions: Extensions::default(),
            parser: ReplyParser::new(),
            expected: VecDeque::from([Expect::Banner]),
            inflight: None,
            events: VecDeque::new(),
            output: Output::default(),
            awaiting_tls: false,
            quit_requested: false,
            closed: false,
        }
    }

    /// Bytes read from the server. Ignored once the session is closed.
    pub fn feed(&mut self, mut input: &[u8]) {
        while !input.is_empty() && !self.closed {
            if self.awaiting_tls {
                self.fail(ProtocolError::DataAfterStartTls.into());
                return;
            }
            match self.parser.next_reply(&mut input) {
                Ok(Some(reply)) => self.on_reply(reply),
                Ok(None) => return,
                Err(e) => self.fail(ProtocolError::Reply(e).into()),
            }
        }
    }

    /// The next thing for the driver to do.
    pub fn poll(&mut self) -> ClientStep {
        if let Some(event) = self.events.pop_front() {
            event
        } else if self.closed {
            ClientStep::Closed
        } else if self.awaiting_tls {
            ClientStep::StartTls
        } else if self.is_ready() {
            ClientStep::Ready
        } else {
            ClientStep::NeedInput
        }
    }

    /// True when there are bytes to write.
    pub fn has_output(&self) -> bool {
        !self.output.is_empty()
    }

    /// Bytes to write to the server, in order, joined into one buffer
    /// (a copy of any content in it; see `output`).
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output).into_vec()
    }

    /// What to write to the server, content by reference; call
    /// `clear_output` once it is written.
    pub fn output(&self) -> &Output {
        &self.output
    }

    /// Drops the output (after the driver wrote `output()`), keeping its
    /// buffers.
    pub fn clear_output(&mut self) {
        self.output.clear();
    }

    /// Starts a transaction; only when `poll()` says `Ready`.
    pub fn submit(&mut self, tx: Transaction) -> Result<(), Rejected> {
        let limit = self.settings.max_recipients_per_batch;
        let error = if !self.is_ready() {
            Some(SubmitError::NotReady)
        } else if tx.recipients.is_empty() {
            Some(SubmitError::NoRecipients)
        } else if limit > 0 && tx.recipients.len() > limit {
            Some(SubmitError::TooManyRecipients { limit })
        } else if !envelope_is_clean(&tx) {
            Some(SubmitError::InvalidEnvelope)
        } else {
            None
        };
        match error {
            Some(error) => Err(Rejected {
                error,
                transaction: tx,
            }),
            None => {
                self.start_transaction(tx);
                Ok(())
            }
        }
    }

    /// The driver's TLS handshake succeeded: EHLO again (RFC 3207 §4.2).
    pub fn tls_started(&mut self) {
        if self.awaiting_tls && !self.closed {
            self.awaiting_tls = false;
            self.tls_active = true;
            self.extensions = Extensions::default();
            self.send_ehlo();
        }
    }

    /// The driver's TLS handshake failed: the session is over.
    pub fn tls_failed(&mut self) {
        if self.awaiting_tls && !self.closed {
            self.fail(SessionError::TlsFailed);
        }
    }

    /// Sends QUIT once nothing is outstanding (a transaction in flight
    /// finishes first); `Closed` follows the server's reply.
    pub fn quit(&mut self) {
        if !self.closed {
            self.quit_requested = true;
            self.on_idle();
        }
    }

    /// The driver's timer for `stage()` expired. Outstanding recipients
    /// fail transiently and the session closes; when idle or quitting it
    /// just closes (use `quit()` for an idle timeout).
    pub fn timeout(&mut self) {
        match self.stage() {
            Stage::Closed => {}
            Stage::Idle | Stage::Quit => self.closed = true,
            stage => self.fail(SessionError::Timeout(stage)),
        }
    }

    /// The server closed the connection (EOF or reset).
    pub fn connection_closed(&mut self) {
        match self.stage() {
            Stage::Closed => {}
            Stage::Idle | Stage::Quit => self.closed = true,
            stage => self.fail(SessionError::ConnectionClosed(stage)),
        }
    }

    /// What the session waits for.
    pub fn stage(&self) -> Stage {
        if self.closed {
            Stage::Closed
        } else if self.awaiting_tls {
            Stage::TlsHandshake
        } else {
            self.expected.front().map_or(Stage::Idle, |e| e.stage())
        }
    }

    /// What the server advertised in its last EHLO reply.
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// True once TLS is up (implicit or after STARTTLS).
    pub fn tls_active(&self) -> bool {
        self.tls_active
    }

    /// Octets of server input buffered (a partial reply; bounded).
    pub fn buffered_input_octets(&self) -> usize {
        self.parser.buffered_octets()
    }

    fn is_ready(&self) -> bool {
        !self.closed
            && !self.awaiting_tls
            && !self.quit_requested
            && self.expected.is_empty()
            && self.inflight.is_none()
    }
}

/// No address or parameter may hold a control character: CR or LF would
/// end the command line early and let content pose as commands.
fn envelope_is_clean(tx: &Transaction) -> bool {
    !encode::has_control(&tx.mail_from)
        && tx.recipients.iter().all(|r| {
            !encode::has_control(&r.address)
                && !r
                    .orcpt
                    .as_deref()
                    .is_some_and(|o| encode::has_control(o) || o.contains(' '))
        })
}
