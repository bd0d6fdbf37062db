//! DATA and BDAT handling for the server session: when content may start,
//! feeding the decoders, and turning finished content into a message or a
//! refusal.
//!
//! Owns content sequencing only; the decoding itself is `smtp::data`.
//! Content is taken straight from the driver's input when nothing is
//! buffered before it (`take_content`, called by `feed`). A
//! message handed to the driver stays charged to the budget until
//! `message_stored`. May call: the session (`super`), `smtp::data`,
//! `smtp::reply`, `crate::message`. Must never: do I/O, store content
//! without MAIL and an accepted RCPT, or hand the driver a message whose
//! content is refused (oversize, bare CR/LF, NUL, long line, no memory, or
//! 8-bit the settings refuse).

use super::{BdatChunk, Flow, Phase, ServerSession, Step};
use crate::message::{BodyType, Envelope};
use crate::reply::Reply;
use crate::smtp::data::{Body, DataDecoder};

impl ServerSession {
    /// Why DATA/BDAT cannot start now, if it cannot.
    fn content_refusal(&self) -> Option<Reply> {
        match &self.txn {
            None => Some(Reply::new(503, "5.5.1", "need MAIL command")),
            Some(t) if t.recipients.is_empty() && t.rcpt_refused => {
                Some(Reply::new(554, "5.5.1", "no valid recipients"))
            }
            Some(t) if t.recipients.is_empty() => {
                Some(Reply::new(503, "5.5.1", "need RCPT command"))
            }
            Some(_) => None,
        }
    }

    pub(super) fn data(&mut self) -> Flow {
        let refusal = match &self.txn {
            Some(t) if t.bdat.is_some() => {
                Some(Reply::new(503, "5.5.1", "DATA not allowed after BDAT"))
            }
            _ => self.content_refusal(),
        };
        if let Some(reply) = refusal {
            self.respond(reply);
            return Flow::Continue;
        }
        self.send(Reply::plain(354, "End data with <CR><LF>.<CR><LF>"));
        let s = &self.settings;
        let (max, line) = (s.message_size, s.max_data_line_octets);
        let decoder = match &self.budget {
            Some(b) => DataDecoder::charged(max, line, b.charge()),
            None => DataDecoder::new(max, line),
        };
        self.phase = Phase::Data(decoder);
        Flow::Continue
    }

    /// An empty body for BDAT, charged to the budget if there is one.
    fn new_body(&self) -> Body {
        let mut body = Body::new(self.settings.message_size);
        body.charge = self.budget.as_ref().map(|b| b.charge());
        body
    }

    /// Content from `input` for the DATA decoder or the BDAT chunk in
    /// progress, taken before anything is buffered; returns the octets
    /// used. The phases below then find the content already taken.
    pub(super) fn take_content(&mut self, input: &[u8]) -> usize {
        let used = match &mut self.phase {
            Phase::Data(decoder) => decoder.feed(input).0,
            Phase::Bdat(chunk) => {
                let take =
                    usize::try_from(chunk.remaining).map_or(input.len(), |r| r.min(input.len()));
                if chunk.refuse.is_none() {
                    if let Some(body) = self.txn.as_mut().and_then(|t| t.bdat.as_mut()) {
                        body.push(&input[..take]);
                    }
                }
                chunk.remaining -= take as u64;
                take
            }
            _ => return 0,
        };
        self.content_received(used);
        used
    }

    pub(super) fn data_phase(&mut self) -> Flow {
        let Phase::Data(decoder) = &mut self.phase else {
            return Flow::Continue;
        };
        let (used, done) = decoder.feed(&self.input[self.pos..]);
        self.pos += used;
        self.content_received(used);
        if !done {
            return Flow::NeedInput;
        }
        self.request_done();
        match std::mem::replace(&mut self.phase, Phase::Command) {
            Phase::Data(decoder) => self.finish_message(decoder.finish()),
            _ => Flow::Continue,
        }
    }

    pub(super) fn bdat(&mut self, size: u64, last: bool) -> Flow {
        let refuse = self.content_refusal();
        let fresh = self.new_body();
        if let (None, Some(txn)) = (&refuse, self.txn.as_mut()) {
            if txn.bdat.is_none() {
                txn.bdat = Some(fresh);
            }
        }
        self.phase = Phase::Bdat(BdatChunk {
            size,
            remaining: size,
            last,
            refuse,
        });
        Flow::Continue
    }

    pub(super) fn bdat_phase(&mut self) -> Flow {
        let Phase::Bdat(chunk) = &mut self.phase else {
            return Flow::Continue;
        };
        let avail = self.input.len() - self.pos;
        let take = usize::try_from(chunk.remaining).map_or(avail, |r| r.min(avail));
        if chunk.refuse.is_none() {
            if let Some(body) = self.txn.as_mut().and_then(|t| t.bdat.as_mut()) {
                body.push(&self.input[self.pos..self.pos + take]);
            }
        }
        self.pos += take;
        chunk.remaining -= take as u64;
        self.content_received(take);
        let Phase::Bdat(chunk) = &mut self.phase else {
            return Flow::Continue;
        };
        if chunk.remaining > 0 {
            return Flow::NeedInput;
        }
        self.request_done();
        let Phase::Bdat(chunk) = std::mem::replace(&mut self.phase, Phase::Command) else {
            return Flow::Continue;
        };
        if let Some(reply) = chunk.refuse {
            self.respond(reply);
            return Flow::Continue;
        }
        let flags = self
            .txn
            .as_ref()
            .and_then(|t| t.bdat.as_ref())
            .map(|b| b.flags)
            .unwrap_or_default();
        if flags.oversize {
            self.txn = None;
            self.error(Reply::new(552, "5.3.4", "message size exceeds fixed limit"));
            return Flow::Continue;
        }
        if flags.no_memory {
            self.txn = None;
            self.respond(no_memory());
            return Flow::Continue;
        }
        if !chunk.last {
            let text = format!("{} octets received", chunk.size);
            self.send(Reply::new(250, "2.0.0", text));
            return Flow::Continue;
        }
        let body = self
            .txn
            .as_mut()
            .and_then(|t| t.bdat.take())
            .unwrap_or_default();
        self.finish_message(body)
    }

    /// Checks finished content and hands the message to the driver.
    fn finish_message(&mut self, mut body: Body) -> Flow {
        let Some(txn) = self.txn.take() else {
            return Flow::Continue;
        };
        let f = body.flags;
        let eight_bit_ok = txn.params.body != BodyType::SevenBit || txn.params.smtputf8;
        let refusal = if f.oversize {
            Some(Reply::new(552, "5.3.4", "message size exceeds fixed limit"))
        } else if f.bare_cr_lf {
            let text = "message contains bare CR or LF (RFC 5321 2.3.8)";
            Some(Reply::new(550, "5.6.0", text))
        } else if f.nul {
            Some(Reply::new(550, "5.6.0", "message contains NUL"))
        } else if f.line_too_long {
            Some(Reply::new(550, "5.6.0", "message line too long"))
        } else if f.no_memory {
            Some(no_memory())
        } else if f.eight_bit && !eight_bit_ok && self.settings.reject_8bit_without_8bitmime {
            Some(Reply::new(
                554,
                "5.6.1",
                "8-bit content requires BODY=8BITMIME",
            ))
        } else {
            None
        };
        if let Some(reply) = refusal {
            self.respond(reply);
            return Flow::Continue;
        }
        let envelope = Envelope {
            mail_from: txn.mail_from,
            ret: txn.params.ret,
            envid: txn.params.envid,
            body_type: txn.params.body,
            smtputf8: txn.params.smtputf8,
            recipients: txn.recipients,
            auth_user: self.auth_user.clone(),
            peer: self.peer,
            helo: self.helo.clone(),
            received_at_ms: 0,
            binding: None,
        };
        self.phase = Phase::WaitStore;
        // The octets stay charged until the driver has stored them.
        self.held = body.charge.take();
        Flow::Yield(Step::Message(Box::new((envelope, body.bytes))))
    }
}

/// The shard's content budget could not hold this message.
fn no_memory() -> Reply {
    Reply::new(452, "4.3.1", "Insufficient system resources")
}
