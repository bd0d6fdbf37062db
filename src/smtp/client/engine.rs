//! The client's reaction to each reply: the state machine behind
//! `ClientSession`. Replies are matched to commands strictly in order
//! (RFC 2920 §3.1), so pipelined and lock-step sessions share one path.
//!
//! Owns what each reply makes the session do next. May call: the client
//! session (`super`), its `encode`, `reply` and `transaction`,
//! `smtp::reply` (`Reply`) and `crate::message`. Must never: do I/O (commands are appended to the
//! session's output buffer), panic on a server reply, pipeline unless the
//! server advertised PIPELINING and the settings allow it, or send content
//! the server cannot take (the transaction fails locally first).

use crate::message::BodyType;
use crate::reply::Reply;

use super::encode::{self, MailParams};
use super::transaction::{local_failure, ContentMode, InFlight, Transaction};
use super::{ClientSession, ClientStep, Expect, ProtocolError, SessionError, TlsPolicy};

/// A 421 reply: the server is closing the transmission channel.
const SERVICE_CLOSING: u16 = 421;

/// The only intermediate reply SMTP uses (after DATA).
const START_MAIL_INPUT: u16 = 354;

impl ClientSession {
    /// Handles one complete reply.
    pub(super) fn on_reply(&mut self, reply: Reply) {
        let Some(expect) = self.expected.pop_front() else {
            self.fail(ProtocolError::UnexpectedReply(reply).into());
            return;
        };
        if reply.code == SERVICE_CLOSING && expect != Expect::Quit {
            self.record(expect, &reply);
            self.fail(SessionError::ServiceClosing(reply));
            return;
        }
        // 354 is the only intermediate reply, and only DATA gets it (and
        // DATA never gets 2xx). Otherwise server and client disagree about
        // the state, and the session cannot go on.
        let after_data = expect == Expect::Data;
        let misplaced = if after_data {
            reply.is_positive() || (reply.is_intermediate() && reply.code != START_MAIL_INPUT)
        } else {
            reply.is_intermediate() && expect != Expect::Quit
        };
        if misplaced {
            self.fail(ProtocolError::UnexpectedReply(reply).into());
            return;
        }
        match expect {
            Expect::Banner => self.on_banner(reply),
            Expect::Ehlo => self.on_ehlo(reply),
            Expect::Helo => self.on_helo(reply),
            Expect::StartTls => self.on_starttls(reply),
            Expect::Mail => self.on_mail(reply),
            Expect::Rcpt(i) => self.on_rcpt(i, reply),
            Expect::Data => self.on_data(reply),
            Expect::Body | Expect::DummyDot => self.on_content_done(expect, reply),
            Expect::Bdat { last } => self.on_bdat(last, reply),
            Expect::Rset => self.on_rset(reply),
            Expect::Quit => self.closed = true,
        }
    }

    /// Fails the session: the transaction in flight (if any) ends with
    /// every undecided recipient transient, then `Failed`, then `Closed`.
    pub(super) fn fail(&mut self, error: SessionError) {
        if self.closed {
            return;
        }
        if let Some(inflight) = self.inflight.take() {
            let abort = error.reply();
            self.events
                .push_back(ClientStep::Done(inflight.resolve(Some(&abort))));
        }
        // Polite QUIT only where the server is still in a sane state.
        let polite = matches!(
            error,
            SessionError::GreetingRejected(_)
                | SessionError::HelloRejected(_)
                | SessionError::TlsRequiredNotAdvertised
                | SessionError::StartTlsRejected(_)
                | SessionError::RsetRejected(_)
        );
        if polite {
            self.output.extend_from_slice(b"QUIT\r\n");
        }
        self.events.push_back(ClientStep::Failed(error));
        self.expected.clear();
        self.awaiting_tls = false;
        self.closed = true;
    }

    /// Called whenever nothing may be outstanding: sends a requested QUIT.
    pub(super) fn on_idle(&mut self) {
        let idle = !self.closed
            && !self.awaiting_tls
            && self.expected.is_empty()
            && self.inflight.is_none();
        if idle && self.quit_requested {
            self.output.extend_from_slice(b"QUIT\r\n");
            self.expected.push_back(Expect::Quit);
        }
    }

    /// Stores a reply that ends the session where the result will see it.
    fn record(&mut self, expect: Expect, reply: &Reply) {
        let Some(inflight) = self.inflight.as_mut() else {
            return;
        };
        match expect {
            Expect::Mail => inflight.mail_reply = Some(reply.clone()),
            Expect::Rcpt(i) => {
                if let Some(slot) = inflight.rcpt_replies.get_mut(i) {
                    *slot = Some(reply.clone());
                }
            }
            Expect::Data | Expect::Body | Expect::Bdat { .. } => {
                inflight.data_reply.get_or_insert_with(|| reply.clone());
            }
            _ => {}
        }
    }

    pub(super) fn send_ehlo(&mut self) {
        let cmd = format!("EHLO {}\r\n", self.settings.ehlo_hostname);
        self.output.extend_from_slice(cmd.as_bytes());
        self.expected.push_back(Expect::Ehlo);
    }

    fn on_banner(&mut self, reply: Reply) {
        if reply.is_positive() {
            self.send_ehlo();
        } else {
            self.fail(SessionError::GreetingRejected(reply));
        }
    }

    fn on_ehlo(&mut self, reply: Reply) {
        if reply.is_positive() {
            self.extensions = super::Extensions::from_ehlo(&reply);
            self.after_hello();
        } else if reply.is_permanent() {
            // RFC 5321 §3.2: an old server that does not know EHLO.
            let cmd = format!("HELO {}\r\n", self.settings.ehlo_hostname);
            self.output.extend_from_slice(cmd.as_bytes());
            self.expected.push_back(Expect::Helo);
        } else {
            self.fail(SessionError::HelloRejected(reply));
        }
    }

    fn on_helo(&mut self, reply: Reply) {
        if reply.is_positive() {
            self.extensions = super::Extensions::default();
            self.after_hello();
        } else {
            self.fail(SessionError::HelloRejected(reply));
        }
    }

    fn after_hello(&mut self) {
        // A session asked to quit does not bother with STARTTLS first.
        let want_tls =
            !self.tls_active && self.settings.tls != TlsPolicy::Off && !self.quit_requested;
        if want_tls && self.extensions.starttls {
            self.output.extend_from_slice(b"STARTTLS\r\n");
            self.expected.push_back(Expect::StartTls);
        } else if want_tls && self.settings.tls == TlsPolicy::Required {
            self.fail(SessionError::TlsRequiredNotAdvertised);
        } else {
            self.on_idle();
        }
    }

    fn on_starttls(&mut self, reply: Reply) {
        if reply.is_positive() {
            // Bytes after the go-ahead in the same read are plain text the
            // server (or a man in the middle) injected: `feed` rejects them
            // (CVE-2011-0411 style) since `awaiting_tls` is now set.
            self.awaiting_tls = true;
        } else if self.settings.tls == TlsPolicy::Required {
            self.fail(SessionError::StartTlsRejected(reply));
        } else {
            self.on_idle();
        }
    }

    /// Checks what the server can take, then sends MAIL (and, pipelined,
    /// the RCPTs and DATA).
    pub(super) fn start_transaction(&mut self, tx: Transaction) {
        let chunking = self.settings.use_chunking && self.extensions.chunking;
        if let Some(reply) = self.unsendable(&tx, chunking) {
            self.events
                .push_back(ClientStep::Done(local_failure(tx, &reply)));
            return;
        }
        let ext = &self.extensions;
        let params = MailParams::new(&tx, ext);
        let pipelined = self.settings.use_pipelining && ext.pipelining;
        let mode = if chunking {
            ContentMode::Bdat
        } else {
            ContentMode::Data
        };
        encode::mail_command(&tx, params, self.output.bytes());
        self.expected.push_back(Expect::Mail);
        if pipelined {
            for (i, rcpt) in tx.recipients.iter().enumerate() {
                encode::rcpt_command(rcpt, params.dsn, self.output.bytes());
                self.expected.push_back(Expect::Rcpt(i));
            }
            if mode == ContentMode::Data {
                self.output.extend_from_slice(b"DATA\r\n");
                self.expected.push_back(Expect::Data);
            }
        }
        self.inflight = Some(InFlight::new(tx, pipelined, mode));
    }

    /// The permanent failure for a message this server cannot take as it
    /// is, decided before anything is sent.
    fn unsendable(&self, tx: &Transaction, chunking: bool) -> Option<Reply> {
        let ext = &self.extensions;
        let too_big = ext
            .size_limit()
            .is_some_and(|limit| tx.body.len() as u64 > limit);
        // Content declared 8BITMIME that is in fact all 7-bit may go to a
        // server without 8BITMIME, without the BODY parameter.
        let unsendable_8bit = tx.body_type == BodyType::EightBitMime
            && !ext.eight_bit_mime
            && encode::has_eight_bit(&tx.body);
        let unsendable_binary =
            tx.body_type == BodyType::BinaryMime && !(chunking && ext.binary_mime);
        if too_big {
            Some(Reply::internal(
                552,
                (5, 3, 4),
                "message size exceeds remote limit",
            ))
        } else if unsendable_8bit || unsendable_binary {
            // RFC 6152 §3 leaves a choice between converting the content
            // and returning it as undeliverable. Converting 8-bit MIME to
            // 7-bit means rewriting MIME structure (and breaks DKIM
            // signatures), so impulse does not convert: it fails.
            Some(Reply::internal(
                554,
                (5, 6, 3),
                "conversion required and not supported",
            ))
        } else if tx.smtputf8 && !ext.smtputf8 {
            let text = "SMTPUTF8 required but not supported by remote host";
            Some(Reply::internal(554, (5, 6, 7), text))
        } else {
            None
        }
    }

    fn on_mail(&mut self, reply: Reply) {
        let Some(inflight) = self.inflight.as_mut() else {
            return self.fail(ProtocolError::UnexpectedReply(reply).into());
        };
        let ok = reply.is_positive();
        inflight.mail_reply = Some(reply);
        if inflight.pipelined {
            return;
        }
        if ok {
            self.send_rcpt(0);
        } else {
            self.finish(true);
        }
    }

    fn send_rcpt(&mut self, i: usize) {
        let Some(inflight) = self.inflight.as_ref() else {
            return;
        };
        if let Some(rcpt) = inflight.tx.recipients.get(i) {
            encode::rcpt_command(rcpt, self.extensions.dsn, self.output.bytes());
            self.expected.push_back(Expect::Rcpt(i));
        }
    }

    fn on_rcpt(&mut self, i: usize, reply: Reply) {
        let Some(inflight) = self.inflight.as_mut() else {
            return self.fail(ProtocolError::UnexpectedReply(reply).into());
        };
        if let Some(slot) = inflight.rcpt_replies.get_mut(i) {
            *slot = Some(reply);
        }
        let last = i + 1 >= inflight.tx.recipients.len();
        if !inflight.pipelined && !last {
            self.send_rcpt(i + 1);
        } else if last && !(inflight.pipelined && inflight.mode == ContentMode::Data) {
            self.after_rcpts();
        }
    }

    /// All RCPT replies are in and DATA was not pipelined.
    fn after_rcpts(&mut self) {
        let Some(inflight) = self.inflight.as_mut() else {
            return;
        };
        if !inflight.has_content_to_send() {
            self.finish(true);
        } else if inflight.mode == ContentMode::Data {
            self.output.extend_from_slice(b"DATA\r\n");
            self.expected.push_back(Expect::Data);
        } else if inflight.pipelined {
            while self.send_chunk() {}
        } else {
            self.send_chunk();
        }
    }

    fn on_data(&mut self, reply: Reply) {
        let Some(inflight) = self.inflight.as_mut() else {
            return self.fail(ProtocolError::UnexpectedReply(reply).into());
        };
        if reply.code != START_MAIL_INPUT {
            // Refused (with pipelining: typically 503/554 after every RCPT
            // was refused). The transaction is over; RSET to be sure.
            inflight.data_reply = Some(reply);
            self.finish(true);
        } else if inflight.has_content_to_send() {
            encode::data_body(&inflight.tx.body, &mut self.output);
            self.expected.push_back(Expect::Body);
        } else {
            // 354 although MAIL or every RCPT failed: end the empty
            // content at once (RFC 2920 §3.1), the result is already known.
            self.output.extend_from_slice(b".\r\n");
            self.expected.push_back(Expect::DummyDot);
        }
    }

    fn on_content_done(&mut self, expect: Expect, reply: Reply) {
        if let Some(inflight) = self.inflight.as_mut() {
            if expect == Expect::Body {
                inflight.data_reply = Some(reply);
            }
        }
        self.finish(false);
    }

    /// Sends the next BDAT chunk; false when that was the last one.
    fn send_chunk(&mut self) -> bool {
        let Some(inflight) = self.inflight.as_mut() else {
            return false;
        };
        let body = &inflight.tx.body;
        let start = inflight.next_chunk.min(body.len());
        let end = start
            .saturating_add(self.settings.bdat_chunk_octets.max(1))
            .min(body.len());
        let last = end == body.len();
        encode::bdat_chunk(body, start..end, last, &mut self.output);
        inflight.next_chunk = end;
        self.expected.push_back(Expect::Bdat { last });
        !last
    }

    fn on_bdat(&mut self, last: bool, reply: Reply) {
        let Some(inflight) = self.inflight.as_mut() else {
            return self.fail(ProtocolError::UnexpectedReply(reply).into());
        };
        let ok = reply.is_positive();
        if !ok || last {
            // The first failure decides (RFC 3030 §3: later pipelined
            // chunks are discarded by the server).
            inflight.data_reply.get_or_insert(reply);
        }
        inflight.chunk_failed |= !ok && !last;
        if last {
            let rset = inflight.chunk_failed;
            self.finish(rset);
        } else if !inflight.pipelined {
            if ok {
                self.send_chunk();
            } else {
                self.finish(true);
            }
        }
    }

    fn on_rset(&mut self, reply: Reply) {
        if reply.is_positive() {
            self.on_idle();
        } else {
            self.fail(SessionError::RsetRejected(reply));
        }
    }

    /// The transaction's result is known: report it, then RSET if the
    /// server may still hold transaction state, or become idle.
    fn finish(&mut self, rset: bool) {
        if let Some(inflight) = self.inflight.take() {
            self.events
                .push_back(ClientStep::Done(inflight.resolve(None)));
        }
        if rset {
            self.output.extend_from_slice(b"RSET\r\n");
            self.expected.push_back(Expect::Rset);
        } else {
            self.on_idle();
        }
    }
}
