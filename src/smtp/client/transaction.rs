//! One mail transaction as the client runs it: what the driver submits,
//! the replies collected along the way, and the per-recipient result.
//!
//! Owns: `Transaction`, `TransactionResult`, `RecipientResult`, `Outcome`
//! and the bookkeeping of a transaction in flight. May call:
//! `crate::message`, `smtp::reply` (`Reply`). Must never: do
//! I/O, leave a submitted recipient without a result (an undecided one is
//! transient), or count one delivered without a positive RCPT reply and a
//! positive final reply to its content.

use crate::message::{BodyType, Content, DsnRet, Envelope, Recipient};
use crate::reply::Reply;

/// A message to send in one transaction (one batch of recipients).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    /// Reverse path without brackets; empty for the null sender.
    pub mail_from: String,
    /// DSN RET, sent only if the server offers DSN.
    pub ret: Option<DsnRet>,
    /// DSN ENVID (not yet xtext-encoded), sent only if DSN is offered.
    pub envid: Option<String>,
    /// Body type; decides BODY= and whether the server can take it.
    pub body_type: BodyType,
    /// The message needs SMTPUTF8.
    pub smtputf8: bool,
    /// Recipients of this batch, each with its DSN parameters.
    pub recipients: Vec<Recipient>,
    /// Message content (headers and body, CRLF line ends, not dot-stuffed).
    pub body: Content,
}

impl Transaction {
    /// A transaction for a batch of an envelope's recipients.
    pub fn from_envelope(env: &Envelope, recipients: Vec<Recipient>, body: Content) -> Self {
        Transaction {
            mail_from: env.mail_from.clone(),
            ret: env.ret,
            envid: env.envid.clone(),
            body_type: env.body_type,
            smtputf8: env.smtputf8,
            recipients,
            body,
        }
    }
}

/// What became of one recipient, with the reply that decided it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx to the end of data (a 251 counts as delivered).
    Delivered(Reply),
    /// 4xx, or the session failed before a final reply: retry later.
    Transient(Reply),
    /// 5xx: bounce.
    Permanent(Reply),
}

impl Outcome {
    /// Classifies a final reply: 2xx delivered, 5xx permanent, else transient.
    pub fn classify(reply: Reply) -> Self {
        if reply.is_positive() {
            Outcome::Delivered(reply)
        } else if reply.is_permanent() {
            Outcome::Permanent(reply)
        } else {
            Outcome::Transient(reply)
        }
    }

    /// The reply that decided the outcome.
    pub fn reply(&self) -> &Reply {
        match self {
            Outcome::Delivered(r) | Outcome::Transient(r) | Outcome::Permanent(r) => r,
        }
    }

    /// True for `Delivered`.
    pub fn is_delivered(&self) -> bool {
        matches!(self, Outcome::Delivered(_))
    }
}

/// One recipient's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecipientResult {
    /// The recipient as submitted.
    pub recipient: Recipient,
    /// The server's reply to its RCPT, if one came.
    pub rcpt_reply: Option<Reply>,
    /// What became of it.
    pub outcome: Outcome,
}

/// The result of a submitted transaction, recipients in submission order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionResult {
    /// Reply to MAIL FROM; `None` if MAIL was never answered.
    pub mail_reply: Option<Reply>,
    /// Final reply for the content: end of data, last BDAT, the first
    /// failing BDAT, or a refusal of DATA itself; `None` if none came.
    pub data_reply: Option<Reply>,
    /// One entry per submitted recipient.
    pub recipients: Vec<RecipientResult>,
}

impl TransactionResult {
    /// Number of recipients delivered.
    pub fn delivered(&self) -> usize {
        self.recipients
            .iter()
            .filter(|r| r.outcome.is_delivered())
            .count()
    }
}

/// How the content goes out.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum ContentMode {
    /// DATA, 354, dot-stuffed content.
    Data,
    /// BDAT chunks.
    Bdat,
}

/// A transaction between submit and its result.
#[derive(Debug)]
pub(super) struct InFlight {
    pub tx: Transaction,
    /// MAIL, RCPTs (and DATA) went out in one write.
    pub pipelined: bool,
    pub mode: ContentMode,
    pub mail_reply: Option<Reply>,
    pub rcpt_replies: Vec<Option<Reply>>,
    pub data_reply: Option<Reply>,
    /// Offset of the next BDAT chunk to send (lock-step chunking).
    pub next_chunk: usize,
    /// A BDAT chunk before the last one was refused.
    pub chunk_failed: bool,
}

impl InFlight {
    /// Fresh bookkeeping for `tx`.
    pub fn new(tx: Transaction, pipelined: bool, mode: ContentMode) -> Self {
        let n = tx.recipients.len();
        InFlight {
            tx,
            pipelined,
            mode,
            mail_reply: None,
            rcpt_replies: vec![None; n],
            data_reply: None,
            next_chunk: 0,
            chunk_failed: false,
        }
    }

    /// MAIL was accepted.
    pub fn mail_ok(&self) -> bool {
        self.mail_reply.as_ref().is_some_and(Reply::is_positive)
    }

    /// Number of recipients accepted so far.
    pub fn accepted(&self) -> usize {
        self.rcpt_replies
            .iter()
            .filter(|r| r.as_ref().is_some_and(Reply::is_positive))
            .count()
    }

    /// MAIL accepted and at least one recipient too: the content goes out.
    pub fn has_content_to_send(&self) -> bool {
        self.mail_ok() && self.accepted() > 0
    }

    /// The result. A recipient whose fate no reply decided gets
    /// `Transient(abort)` (the session failed under it).
    pub fn resolve(self, abort: Option<&Reply>) -> TransactionResult {
        let failed_mail = self.mail_reply.clone().filter(|r| !r.is_positive());
        let fallback = abort.cloned().unwrap_or_else(|| {
            Reply::internal(451, (4, 3, 0), "transaction ended without a final reply")
        });
        let recipients = self
            .tx
            .recipients
            .into_iter()
            .zip(self.rcpt_replies)
            .map(|(recipient, rcpt_reply)| {
                let outcome = match (&failed_mail, &rcpt_reply, &self.data_reply) {
                    (Some(mail), _, _) => Outcome::classify(mail.clone()),
                    (None, Some(r), _) if !r.is_positive() => Outcome::classify(r.clone()),
                    (None, Some(_), Some(data)) => Outcome::classify(data.clone()),
                    _ => Outcome::Transient(fallback.clone()),
                };
                RecipientResult {
                    recipient,
                    rcpt_reply,
                    outcome,
                }
            })
            .collect();
        TransactionResult {
            mail_reply: self.mail_reply,
            data_reply: self.data_reply,
            recipients,
        }
    }
}

/// A result where every recipient failed before anything was sent.
pub(super) fn local_failure(tx: Transaction, reply: &Reply) -> TransactionResult {
    let recipients = tx
        .recipients
        .into_iter()
        .map(|recipient| RecipientResult {
            recipient,
            rcpt_reply: None,
            outcome: Outcome::classify(reply.clone()),
        })
        .collect();
    TransactionResult {
        mail_reply: None,
        data_reply: None,
        recipients,
    }
}
