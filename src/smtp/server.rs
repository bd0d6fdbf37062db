//! The ESMTP server session state machine: bytes from the client go in
//! (`feed`), replies come out (`take_output`), and the driver is asked to
//! act through `Step` (authenticate, start TLS, check a recipient, store a
//! message, close).
//!
//! Owns session and transaction state, input framing, command sequencing and
//! the limits. May call: the `smtp` modules beside it (`address`, `budget`,
//! `command`, `data`, `reply`) and `crate::message`. Must never: do I/O (no
//! sockets, no clock, no disk, no async: the driver, `inbound`, does all of
//! that), panic on client input, wait for the end of an over-long command
//! line (it is answered at its limit and the rest discarded), or run input
//! pipelined after STARTTLS as if it came over TLS.
//!
//! Pausing: after `process()` returns `Authenticate`, `StartTls`,
//! `Recipient` or `Message`, the session waits for `auth_result`,
//! `tls_started`, `recipient_checked` or `message_stored`; until then
//! `process()` returns `NeedInput` and consumes nothing (input fed meanwhile
//! stays buffered, in order). After answering, the driver calls `process()`
//! again to run any pipelined input.

use std::net::IpAddr;
use std::rc::Rc;

use super::address::{self, parse_mailbox};
use super::budget::{Charge, ContentBudget};
use super::command::{
    address_reply, mail_params, parse_command, rcpt_params, Command, MailParams, Param,
};
use super::data::{Body, DataDecoder};
use super::reply::Reply;
use crate::message::{Envelope, Recipient};

mod auth;
mod content;
mod settings;
mod timers;

pub use settings::ServerSettings;
pub use timers::TimeLimits;

/// RFC 4954 §4: an AUTH exchange line may be up to 12288 octets.
pub const AUTH_LINE_MAX_OCTETS: usize = 12288;
/// Input buffer capacity kept while waiting with nothing buffered; a larger
/// one (after a content read) is freed, so a stalled session holds none.
pub const IDLE_INPUT_CAPACITY_OCTETS: usize = 4096;

/// What the session needs from the driver.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// All buffered input consumed (or the session is paused): flush output, read.
    NeedInput,
    /// Check these credentials, then call `auth_result`.
    Authenticate {
        authzid: String,
        user: String,
        password: String,
    },
    /// The 220 is in the output: flush it, handshake, call `tls_started`.
    StartTls,
    /// Only with `confirm_recipients(true)`: this RCPT passed every check
    /// of the session; decide it with `recipient_checked`.
    Recipient(String),
    /// Store this message, then call `message_stored`.
    Message(Box<(Envelope, Vec<u8>)>),
    /// Flush the output and close the connection.
    Close,
}

/// Where in a session a client was refused: Momentum's validation phases
/// (connect, ehlo, mailfrom, rcptto, data), plus AUTH and any other command.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum RejectPhase {
    /// The greeting or admission (too many connections).
    Connect,
    /// HELO/EHLO.
    Ehlo,
    /// AUTH.
    Auth,
    /// MAIL FROM.
    Mail,
    /// RCPT TO.
    Rcpt,
    /// DATA/BDAT and the message itself.
    Data,
    /// Anything else: unknown commands, syntax, sequence, STARTTLS, limits.
    Command,
}

impl RejectPhase {
    /// Every phase, in `index` order.
    pub const ALL: [RejectPhase; 7] = [
        RejectPhase::Connect,
        RejectPhase::Ehlo,
        RejectPhase::Auth,
        RejectPhase::Mail,
        RejectPhase::Rcpt,
        RejectPhase::Data,
        RejectPhase::Command,
    ];

    /// Position in [`RejectPhase::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Momentum's name for it.
    pub fn name(self) -> &'static str {
        match self {
            RejectPhase::Connect => "connect",
            RejectPhase::Ehlo => "ehlo",
            RejectPhase::Auth => "auth",
            RejectPhase::Mail => "mailfrom",
            RejectPhase::Rcpt => "rcptto",
            RejectPhase::Data => "data",
            RejectPhase::Command => "command",
        }
    }
}

/// The phase of a command line that did not parse, from its verb.
fn phase_of_verb(line: &str) -> RejectPhase {
    let verb = line.split([' ', ':']).next().unwrap_or("");
    let is = |v: &str| verb.eq_ignore_ascii_case(v);
    if is("HELO") || is("EHLO") {
        RejectPhase::Ehlo
    } else if is("MAIL") {
        RejectPhase::Mail
    } else if is("RCPT") {
        RejectPhase::Rcpt
    } else if is("DATA") || is("BDAT") {
        RejectPhase::Data
    } else if is("AUTH") {
        RejectPhase::Auth
    } else {
        RejectPhase::Command
    }
}

enum Phase {
    Command,
    AuthPlain,
    AuthLoginUser,
    AuthLoginPass(String),
    Data(DataDecoder),
    Bdat(BdatChunk),
    WaitAuth(String),
    WaitTls,
    WaitRcpt(Recipient),
    WaitStore,
    Closed,
}

struct BdatChunk {
    size: u64,
    remaining: u64,
    last: bool,
    /// The command was refused: swallow the chunk, then send this.
    refuse: Option<Reply>,
}

struct Transaction {
    mail_from: String,
    params: MailParams,
    recipients: Vec<Recipient>,
    /// Some RCPT was refused (DATA then says "no valid recipients").
    rcpt_refused: bool,
    /// Content received by BDAT so far.
    bdat: Option<Body>,
}

enum Flow {
    Continue,
    NeedInput,
    Yield(Step),
}

enum Line {
    Complete(Vec<u8>),
    Partial,
    TooLong,
}

/// One SMTP server session (one connection).
pub struct ServerSession {
    settings: Rc<ServerSettings>,
    peer: Option<IpAddr>,
    tls: bool,
    helo: String,
    esmtp: bool,
    greeted: bool,
    auth_user: Option<String>,
    txn: Option<Transaction>,
    phase: Phase,
    errors: u32,
    receptions: u32,
    input: Vec<u8>,
    pos: usize,
    /// Dropping an over-long line up to its CRLF; `discard_cr` = last octet was CR.
    discarding: bool,
    discard_cr: bool,
    /// Octets after `pos` already searched for CRLF without success.
    line_scanned: usize,
    output: Vec<u8>,
    /// Hand accepted RCPTs to the driver (`Step::Recipient`) before 250.
    confirm_recipients: bool,
    /// While set, MAIL and RCPT get this reply (the server is short of a
    /// resource, e.g. spool space): refused before any body is sent.
    refuse_mail: Option<Reply>,
    /// Request and session deadlines, when the driver set limits.
    timers: Option<timers::Timers>,
    /// The shard's budget for content in memory, when the driver set one.
    budget: Option<ContentBudget>,
    /// The charge of a message handed to the driver, until `message_stored`.
    held: Option<Charge>,
    /// The phase refusals are counted in: the command being answered.
    answering: RejectPhase,
    /// Refusals sent since the driver last took them.
    rejections: Vec<(RejectPhase, Reply)>,
}

impl ServerSession {
    /// Queues the 220 greeting in the output.
    pub fn new(settings: Rc<ServerSettings>, peer: Option<IpAddr>, tls: bool) -> Self {
        Self::with_buffers(settings, peer, tls, Vec::new(), Vec::new())
    }

    /// The same, with the input and output buffers given (emptied) by the
    /// driver, e.g. from its pool; `into_buffers` hands them back.
    pub fn with_buffers(
        settings: Rc<ServerSettings>,
        peer: Option<IpAddr>,
        tls: bool,
        mut input: Vec<u8>,
        mut output: Vec<u8>,
    ) -> Self {
        input.clear();
        output.clear();
        let greeting = Reply::plain(220, format!("{} ESMTP impulse", settings.hostname));
        let mut s = ServerSession {
            settings,
            peer,
            tls,
            helo: String::new(),
            esmtp: false,
            greeted: false,
            auth_user: None,
            txn: None,
            phase: Phase::Command,
            errors: 0,
            receptions: 0,
            input,
            pos: 0,
            discarding: false,
            discard_cr: false,
            line_scanned: 0,
            output,
            confirm_recipients: false,
            refuse_mail: None,
            timers: None,
            budget: None,
            held: None,
            answering: RejectPhase::Connect,
            rejections: Vec::new(),
        };
        s.send(greeting);
        s
    }

    /// Appends received bytes (dropped once the session is closed). While
    /// a `Step` is pending nothing is consumed, so the driver should not
    /// keep reading then; `buffered_input` tells how much is waiting.
    ///
    /// Message content with nothing buffered before it is decoded here,
    /// straight from `input` into the body: its one copy out of the read
    /// buffer. Only what follows the content is buffered.
    pub fn feed(&mut self, input: &[u8]) {
        if matches!(self.phase, Phase::Closed) {
            return;
        }
        if self.pos > 0 {
            self.input.drain(..self.pos);
            self.pos = 0;
        }
        let used = if self.input.is_empty() {
            self.take_content(input)
        } else {
            0
        };
        self.input.extend_from_slice(&input[used..]);
    }

    /// Octets fed but not yet consumed.
    pub fn buffered_input(&self) -> usize {
        self.input.len() - self.pos
    }

    /// Processes buffered input until something needs the driver.
    pub fn process(&mut self) -> Step {
        loop {
            let flow = match self.phase {
                Phase::Closed => return Step::Close,
                Phase::WaitAuth(_) | Phase::WaitTls | Phase::WaitRcpt(_) | Phase::WaitStore => {
                    return Step::NeedInput
                }
                Phase::Command => self.command_phase(),
                Phase::AuthPlain | Phase::AuthLoginUser | Phase::AuthLoginPass(_) => {
                    self.auth_phase()
                }
                Phase::Data(_) => self.data_phase(),
                Phase::Bdat(_) => self.bdat_phase(),
            };
            match flow {
                Flow::Continue => {}
                Flow::NeedInput => {
                    self.trim_input();
                    return Step::NeedInput;
                }
                Flow::Yield(step) => return step,
            }
        }
    }

    /// The input and output buffers, for reuse by another session.
    pub fn into_buffers(self) -> (Vec<u8>, Vec<u8>) {
        (self.input, self.output)
    }

    /// Takes the bytes to send to the client.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// The bytes to send, without taking them.
    pub fn output(&self) -> &[u8] {
        &self.output
    }

    /// Drops the output (after the driver wrote `output()`).
    pub fn clear_output(&mut self) {
        self.output.clear();
    }

    /// True when there are bytes to send.
    pub fn has_output(&self) -> bool {
        !self.output.is_empty()
    }

    /// Answer to `Step::Authenticate`: 235 2.7.0 or 535 5.7.8.
    pub fn auth_result(&mut self, ok: bool) {
        let Phase::WaitAuth(user) = std::mem::replace(&mut self.phase, Phase::Command) else {
            return;
        };
        self.request_done();
        if ok {
            self.auth_user = Some(user);
            self.send(Reply::new(235, "2.7.0", "authentication successful"));
        } else {
            self.error(Reply::new(
                535,
                "5.7.8",
                "authentication credentials invalid",
            ));
        }
    }

    /// After `Step::StartTls`: the handshake succeeded; forget everything
    /// learnt before it (RFC 3207 §4.2), EHLO is needed again.
    pub fn tls_started(&mut self) {
        if !matches!(self.phase, Phase::WaitTls) {
            return;
        }
        self.tls = true;
        self.helo.clear();
        self.esmtp = false;
        self.greeted = false;
        self.auth_user = None;
        self.txn = None;
        self.input.clear();
        self.pos = 0;
        self.line_scanned = 0;
        self.phase = Phase::Command;
        self.request_done();
    }

    /// Charges DATA/BDAT content buffered by this session to `budget`;
    /// MAIL is refused with 452 4.3.1 while it is exhausted.
    pub fn set_content_budget(&mut self, budget: ContentBudget) {
        self.budget = Some(budget);
    }

    /// With `Some(reply)`, MAIL and RCPT are answered with `reply` until it
    /// is cleared (the driver sets it when the server cannot take mail).
    pub fn refuse_mail(&mut self, reply: Option<Reply>) {
        self.refuse_mail = reply;
    }

    /// With `true`, every RCPT that passes the session's own checks is
    /// handed to the driver as `Step::Recipient` before it is answered
    /// (a sink injecting failures, a policy lookup). Off by default.
    pub fn confirm_recipients(&mut self, on: bool) {
        self.confirm_recipients = on;
    }

    /// Answer to `Step::Recipient`: `None` accepts (250 2.1.5), `Some(reply)`
    /// refuses with it (421 closes). A refusal decided by the driver does not
    /// count towards `max_errors_per_session`: the client did nothing wrong.
    pub fn recipient_checked(&mut self, refusal: Option<Reply>) {
        let Phase::WaitRcpt(recipient) = std::mem::replace(&mut self.phase, Phase::Command) else {
            return;
        };
        self.request_done();
        match (refusal, self.txn.as_mut()) {
            (None, Some(txn)) => {
                txn.recipients.push(recipient);
                self.send(Reply::new(250, "2.1.5", "Ok"));
            }
            (Some(reply), _) if reply.code == 421 => self.close_with(reply),
            (Some(reply), Some(txn)) => {
                txn.rcpt_refused = true;
                self.send(reply);
            }
            (_, None) => {}
        }
    }

    /// Answer to `Step::Message`: `Ok(id)` sends 250, `Err(reply)` sends that reply.
    pub fn message_stored(&mut self, result: Result<String, Reply>) {
        if !matches!(self.phase, Phase::WaitStore) {
            return;
        }
        self.phase = Phase::Command;
        self.held = None;
        self.request_done();
        match result {
            Ok(id) => {
                self.receptions = self.receptions.saturating_add(1);
                self.send(Reply::new(250, "2.0.0", format!("Ok: queued as {id}")));
            }
            Err(reply) if reply.code == 421 => self.close_with(reply),
            Err(reply) => self.send(reply),
        }
    }

    /// The driver's stage timer fired: 421 4.4.2, then `Step::Close`.
    pub fn timeout(&mut self) {
        self.answering = RejectPhase::Command;
        let text = format!("{} timeout, closing", self.settings.hostname);
        self.close_with(Reply::new(421, "4.4.2", text));
    }

    /// The server is shutting down: 421 4.3.2, then `Step::Close`.
    pub fn shutdown(&mut self) {
        self.answering = RejectPhase::Command;
        let text = format!("{} shutting down", self.settings.hostname);
        self.close_with(Reply::new(421, "4.3.2", text));
    }

    /// True while reading DATA or BDAT content.
    pub fn in_data(&self) -> bool {
        matches!(self.phase, Phase::Data(_) | Phase::Bdat(_))
    }

    /// True between MAIL and the end of the transaction (or while AUTH,
    /// STARTTLS or spooling is pending): the session must not be cut here
    /// by a graceful shutdown.
    pub fn in_transaction(&self) -> bool {
        self.txn.is_some() || !matches!(self.phase, Phase::Command | Phase::Closed)
    }

    /// True once TLS is active.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The HELO/EHLO argument ("" before one).
    pub fn helo(&self) -> &str {
        &self.helo
    }

    /// The authenticated user, if any.
    pub fn auth_user(&self) -> Option<&str> {
        self.auth_user.as_deref()
    }

    // ----- output and error accounting -----

    fn send(&mut self, reply: Reply) {
        reply.write_to(&mut self.output);
        if reply.is_error() {
            self.rejections.push((self.answering, reply));
        }
    }

    /// The refusals (4xx/5xx replies) sent since the last call, with the
    /// phase of each; bounded like the output they went out with.
    pub fn take_rejections(&mut self) -> Vec<(RejectPhase, Reply)> {
        std::mem::take(&mut self.rejections)
    }

    /// A client-caused failure: counts towards `max_errors_per_session`.
    fn error(&mut self, reply: Reply) {
        self.send(reply);
        self.errors = self.errors.saturating_add(1);
        if self.errors > self.settings.max_errors_per_session {
            self.close_with(Reply::new(421, "4.7.0", "too many errors"));
        }
    }

    /// Sends a command's reply: 421 closes; 4xx/5xx count as errors, except
    /// 452 4.5.3 (a client sending too many recipients is not misbehaving)
    /// and 452 4.3.1 (the server is short of memory, not the client wrong).
    fn respond(&mut self, reply: Reply) {
        let blameless = matches!(
            reply.enhanced.map(|e| (e.class, e.subject, e.detail)),
            Some((4, 5, 3) | (4, 3, 1))
        );
        if reply.code == 421 {
            self.close_with(reply);
        } else if reply.is_error() && !blameless {
            self.error(reply);
        } else {
            self.send(reply);
        }
    }

    fn close_with(&mut self, reply: Reply) {
        if matches!(self.phase, Phase::Closed) {
            return;
        }
        self.send(reply);
        self.phase = Phase::Closed;
        self.input = Vec::new();
        self.pos = 0;
        self.line_scanned = 0;
    }

    // ----- input framing -----

    fn trim_input(&mut self) {
        if self.pos == self.input.len() && self.input.capacity() > IDLE_INPUT_CAPACITY_OCTETS {
            self.input = Vec::new();
            self.pos = 0;
        }
    }

    /// The next CRLF-terminated line (CRLF stripped), at most `limit`
    /// octets with its CRLF. A line passing the limit is reported as
    /// `TooLong` at once (so the client hears about it without sending the
    /// rest), and the rest of it is then discarded up to its CRLF without
    /// being buffered.
    fn next_line(&mut self, limit: usize) -> Line {
        if self.discarding && !self.skip_discarded() {
            return Line::Partial;
        }
        let buf = &self.input[self.pos..];
        let window = &buf[..buf.len().min(limit)];
        // Resume where the last search stopped (one back, for a CR).
        let from = self.line_scanned.saturating_sub(1).min(window.len());
        if let Some(i) = window[from..].windows(2).position(|w| w == b"\r\n") {
            let end = from + i;
            let line = buf[..end].to_vec();
            self.pos += end + 2;
            self.line_scanned = 0;
            self.request_done();
            return Line::Complete(line);
        }
        if buf.len() < limit {
            self.line_scanned = buf.len();
            return Line::Partial;
        }
        self.discarding = true;
        self.discard_cr = false;
        self.line_scanned = 0;
        self.skip_discarded();
        Line::TooLong
    }

    /// Drops input of an over-long line; true once its CRLF was passed.
    fn skip_discarded(&mut self) -> bool {
        for (i, &b) in self.input[self.pos..].iter().enumerate() {
            if self.discard_cr && b == b'\n' {
                self.pos += i + 1;
                self.discarding = false;
                return true;
            }
            self.discard_cr = b == b'\r';
        }
        self.pos = self.input.len();
        false
    }

    fn command_phase(&mut self) -> Flow {
        self.answering = RejectPhase::Command;
        let raw = match self.next_line(self.settings.max_command_line_octets) {
            Line::Partial => return Flow::NeedInput,
            Line::TooLong => {
                self.error(Reply::new(500, "5.5.2", "line too long"));
                return Flow::Continue;
            }
            Line::Complete(raw) => raw,
        };
        let line = match command_text(raw) {
            Ok(line) => line,
            Err(reply) => {
                self.error(reply);
                return Flow::Continue;
            }
        };
        match parse_command(&line) {
            Ok(cmd) => self.dispatch(cmd),
            Err(e) => {
                self.answering = phase_of_verb(&line);
                self.error(e.reply());
                Flow::Continue
            }
        }
    }

    fn dispatch(&mut self, cmd: Command<'_>) -> Flow {
        self.answering = match cmd {
            Command::Helo(_) | Command::Ehlo(_) => RejectPhase::Ehlo,
            Command::Mail { .. } => RejectPhase::Mail,
            Command::Rcpt { .. } => RejectPhase::Rcpt,
            Command::Data | Command::Bdat { .. } => RejectPhase::Data,
            Command::Auth { .. } => RejectPhase::Auth,
            _ => RejectPhase::Command,
        };
        let reply = match cmd {
            Command::Helo(name) => self.hello(name, false),
            Command::Ehlo(name) => self.hello(name, true),
            Command::Mail { path, params } => self.mail(path, &params),
            Command::Rcpt { path, params } => match self.rcpt(path, &params) {
                Ok(recipient) if self.confirm_recipients => {
                    let address = recipient.address.clone();
                    self.phase = Phase::WaitRcpt(recipient);
                    return Flow::Yield(Step::Recipient(address));
                }
                Ok(recipient) => {
                    if let Some(txn) = self.txn.as_mut() {
                        txn.recipients.push(recipient);
                    }
                    Reply::new(250, "2.1.5", "Ok")
                }
                Err(reply) => {
                    if let Some(txn) = self.txn.as_mut() {
                        txn.rcpt_refused = true;
                    }
                    reply
                }
            },
            Command::Data => return self.data(),
            Command::Bdat { size, last } => return self.bdat(size, last),
            Command::Rset => {
                self.txn = None;
                Reply::new(250, "2.0.0", "Ok")
            }
            Command::Noop => Reply::new(250, "2.0.0", "Ok"),
            Command::Vrfy => Reply::new(252, "2.1.5", "cannot VRFY user, but will accept message"),
            Command::Help => Reply::new(214, "2.0.0", "see https://www.rfc-editor.org/rfc/rfc5321"),
            Command::Quit => Reply::new(221, "2.0.0", "Bye"),
            Command::StartTls => return self.starttls(),
            Command::Auth { mechanism, initial } => return self.auth(mechanism, initial),
        };
        if reply.code == 221 {
            self.close_with(reply);
        } else {
            self.respond(reply);
        }
        Flow::Continue
    }

    // ----- commands -----

    fn hello(&mut self, name: &str, esmtp: bool) -> Reply {
        self.txn = None;
        self.helo = name.to_string();
        self.greeted = true;
        self.esmtp = esmtp;
        let host = self.settings.hostname.clone();
        if !esmtp {
            return Reply::plain(250, host);
        }
        let s = &self.settings;
        let mut lines = vec![host, "PIPELINING".to_string()];
        lines.push(match s.message_size {
            0 => "SIZE".to_string(),
            n => format!("SIZE {n}"),
        });
        lines.extend(["8BITMIME", "ENHANCEDSTATUSCODES"].map(String::from));
        if s.starttls_available && !self.tls {
            lines.push("STARTTLS".to_string());
        }
        if self.auth_offered() {
            lines.push("AUTH PLAIN LOGIN".to_string());
        }
        lines.extend(["CHUNKING", "SMTPUTF8", "DSN"].map(String::from));
        Reply::multi(250, lines)
    }

    fn auth_offered(&self) -> bool {
        self.settings.auth_available && (self.tls || !self.settings.auth_requires_tls)
    }

    fn mail(&mut self, path: &str, params: &[Param<'_>]) -> Reply {
        let s = Rc::clone(&self.settings);
        if !self.greeted && s.require_ehlo {
            return Reply::new(503, "5.5.1", "send HELO/EHLO first");
        }
        if self.txn.is_some() {
            return Reply::new(503, "5.5.1", "nested MAIL command");
        }
        if let Some(r) = &self.refuse_mail {
            return r.clone();
        }
        let max = s.max_receptions_per_connection;
        if max != 0 && self.receptions >= max {
            return Reply::new(421, "4.7.0", "too many messages in this session");
        }
        if self.budget.as_ref().is_some_and(ContentBudget::exhausted) {
            return Reply::new(452, "4.3.1", "Insufficient system resources");
        }
        if !self.esmtp && !params.is_empty() {
            return Reply::new(555, "5.5.4", "parameters require EHLO");
        }
        let mp = match mail_params(params) {
            Ok(mp) => mp,
            Err(e) => return e.reply(),
        };
        if matches!(mp.size, Some(n) if s.message_size != 0 && n > s.message_size) {
            return Reply::new(552, "5.3.4", "message size exceeds fixed limit");
        }
        let mail_from = if path.is_empty() {
            if !s.allow_null_envelope_sender {
                return Reply::new(550, "5.7.1", "null sender not allowed");
            }
            String::new()
        } else {
            match parse_mailbox(path, mp.smtputf8) {
                Ok(m) => m.to_string(),
                Err(e) => return address_reply(e, true),
            }
        };
        self.txn = Some(Transaction {
            mail_from,
            params: mp,
            recipients: Vec::new(),
            rcpt_refused: false,
            bdat: None,
        });
        Reply::new(250, "2.1.0", "Ok")
    }

    /// Checks a RCPT; `Ok` is the recipient to accept.
    fn rcpt(&self, path: &str, params: &[Param<'_>]) -> Result<Recipient, Reply> {
        let Some(txn) = self.txn.as_ref() else {
            return Err(Reply::new(503, "5.5.1", "need MAIL command"));
        };
        if let Some(r) = &self.refuse_mail {
            return Err(r.clone());
        }
        if txn.bdat.is_some() {
            return Err(Reply::new(503, "5.5.1", "RCPT not allowed after BDAT"));
        }
        if !self.esmtp && !params.is_empty() {
            return Err(Reply::new(555, "5.5.4", "parameters require EHLO"));
        }
        let rp = match rcpt_params(params) {
            Ok(rp) => rp,
            Err(e) => return Err(e.reply()),
        };
        // RFC 5321 §4.5.1: "<Postmaster>" without a domain must be accepted;
        // it means this host, and then faces the same relay check.
        let address = if path.eq_ignore_ascii_case("postmaster") {
            format!("postmaster@{}", self.settings.hostname)
        } else {
            match parse_mailbox(path, txn.params.smtputf8) {
                Ok(m) => m.to_string(),
                Err(e) => return Err(address_reply(e, false)),
            }
        };
        if txn.recipients.len() >= self.settings.max_recipients_per_message {
            return Err(Reply::new(452, "4.5.3", "too many recipients"));
        }
        if !self.may_relay_to(&address) {
            return Err(Reply::new(550, "5.7.1", "relaying denied"));
        }
        Ok(Recipient {
            address,
            notify: rp.notify,
            orcpt: rp.orcpt,
        })
    }

    fn may_relay_to(&self, mailbox: &str) -> bool {
        let s = &self.settings;
        s.can_relay
            || self.auth_user.is_some()
            || address::domain_matches(&address::domain_of(mailbox), &s.relay_domains)
    }

    fn starttls(&mut self) -> Flow {
        if self.tls {
            // RFC 3207 §4.2: STARTTLS is not allowed once TLS is active.
            self.respond(Reply::new(503, "5.5.1", "TLS already active"));
            return Flow::Continue;
        }
        if !self.settings.starttls_available {
            self.respond(Reply::new(454, "4.7.0", "TLS not available"));
            return Flow::Continue;
        }
        if self.pos < self.input.len() {
            // CVE-2011-0411: plaintext after STARTTLS must not run as if sent over TLS.
            let text = "pipelining after STARTTLS not allowed";
            self.close_with(Reply::new(554, "5.5.1", text));
            return Flow::Continue;
        }
        self.send(Reply::new(220, "2.0.0", "Ready to start TLS"));
        self.phase = Phase::WaitTls;
        Flow::Yield(Step::StartTls)
    }
}

/// Refuses command lines with NUL, bare CR/LF or invalid UTF-8.
fn command_text(raw: Vec<u8>) -> Result<String, Reply> {
    if raw.contains(&0) {
        return Err(Reply::new(500, "5.5.2", "NUL not allowed"));
    }
    if raw.iter().any(|&b| b == b'\r' || b == b'\n') {
        return Err(Reply::new(500, "5.5.2", "bare CR or LF not allowed"));
    }
    String::from_utf8(raw).map_err(|_| Reply::new(500, "5.5.2", "invalid UTF-8"))
}
