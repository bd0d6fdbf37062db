//! Types that travel between pipeline stages: message ids, envelopes, the
//! recipients still to deliver and what an attempt came to for each.
//!
//! Owns the shared vocabulary: `MessageId` (and `BadMessageId`), `Envelope`,
//! `Recipient`, `Notify`, `BodyType`, `DsnRet`, the content of a received
//! message (`Content`, in `content`), and the recipients still to deliver
//! with what an attempt came to for each (`QueuedRcpt`, `PendingRcpts`,
//! `RcptResult`), and
//! the compact table keyed by message id that the queue and the spool's
//! book keep per queued message (`IdTable`, in `ids`).
//! May call: `reply` (the reply type, which calls nothing else),
//! `runtime::hash` (which calls nothing in the crate), std and `thiserror`:
//! nothing that imports a stage, so that every stage may import it. Must
//! never do I/O.
//! `smtp::server` produces these, `intake` hands them to `spool`, and
//! `queue`, `outbound` and `bounce` pass them on and read them back.

mod content;
mod ids;

pub use content::Content;
pub use ids::IdTable;

use std::fmt;
use std::net::IpAddr;
use std::rc::Rc;
use std::str::FromStr;

use crate::reply::Reply;

/// A message id, unique across shards and restarts.
///
/// `epoch_ms` is the shard's start time in milliseconds since the Unix
/// epoch (raised above any id found in the spool at recovery), `shard` the
/// receiving shard, `seq` a per-shard counter. Shown as
/// `EEEEEEEEEEEE-SS-QQQQQQQQ` in hex (e.g. `0192F3A4B5C6-01-0000002A`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId {
    /// Shard start time, milliseconds since the Unix epoch (48 bits used).
    pub epoch_ms: u64,
    /// Receiving shard.
    pub shard: u16,
    /// Sequence number within this shard and epoch.
    pub seq: u32,
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:012X}-{:02X}-{:08X}",
            self.epoch_ms, self.shard, self.seq
        )
    }
}

/// Error returned when a string is not a message id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a message id (expected EEEEEEEEEEEE-SS-QQQQQQQQ in hex): {0:?}")]
pub struct BadMessageId(pub String);

impl FromStr for MessageId {
    type Err = BadMessageId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadMessageId(s.to_string());
        let mut parts = s.split('-');
        let (Some(e), Some(sh), Some(q), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        if e.len() != 12 || sh.len() < 2 || sh.len() > 4 || q.len() != 8 {
            return Err(bad());
        }
        Ok(MessageId {
            epoch_ms: u64::from_str_radix(e, 16).map_err(|_| bad())?,
            shard: u16::from_str_radix(sh, 16).map_err(|_| bad())?,
            seq: u32::from_str_radix(q, 16).map_err(|_| bad())?,
        })
    }
}

/// A shard's name for a binding: an index into its table of binding
/// names, which only grows, so an id keeps its meaning across reloads
/// (0 is `default`). Ids never leave the shard; the spool keeps names.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BindingId(pub u16);

/// RFC 3461 RET parameter.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum DsnRet {
    /// Return the full message in a DSN.
    Full,
    /// Return headers only.
    Hdrs,
}

/// RFC 6152 / RFC 3030 body type from `MAIL ... BODY=`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum BodyType {
    /// No BODY parameter, or BODY=7BIT.
    #[default]
    SevenBit,
    /// BODY=8BITMIME.
    EightBitMime,
    /// BODY=BINARYMIME (only with BDAT).
    BinaryMime,
}

/// RFC 3461 NOTIFY flags of one recipient. `None` everywhere means the
/// client sent no NOTIFY (the MTA's default: failures, maybe delays).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct Notify {
    /// NOTIFY=NEVER.
    pub never: bool,
    /// SUCCESS was listed.
    pub success: bool,
    /// FAILURE was listed.
    pub failure: bool,
    /// DELAY was listed.
    pub delay: bool,
}

impl Notify {
    /// True when the client did not send a NOTIFY parameter.
    pub fn is_default(&self) -> bool {
        *self == Notify::default()
    }
}

/// One accepted recipient with its DSN parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    /// The forward path, without angle brackets.
    pub address: String,
    /// NOTIFY parameter, if any.
    pub notify: Option<Notify>,
    /// ORCPT parameter as sent: `addr-type;xtext`.
    pub orcpt: Option<String>,
}

impl Recipient {
    /// A recipient without DSN parameters.
    pub fn new(address: impl Into<String>) -> Recipient {
        Recipient {
            address: address.into(),
            notify: None,
            orcpt: None,
        }
    }
}

/// Everything about a message except its content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The reverse path without brackets; empty for the null sender.
    pub mail_from: String,
    /// RET parameter.
    pub ret: Option<DsnRet>,
    /// ENVID parameter (xtext-decoded).
    pub envid: Option<String>,
    /// BODY parameter.
    pub body_type: BodyType,
    /// SMTPUTF8 parameter was given.
    pub smtputf8: bool,
    /// Recipients accepted with 250.
    pub recipients: Vec<Recipient>,
    /// Authenticated user, if the session used AUTH.
    pub auth_user: Option<String>,
    /// Client address.
    pub peer: Option<IpAddr>,
    /// HELO/EHLO argument.
    pub helo: String,
    /// Reception time, milliseconds since the Unix epoch.
    pub received_at_ms: u64,
    /// The binding assigned at reception (`None`: `default`), kept in the
    /// spool so a restart does not reassign it.
    pub binding: Option<String>,
}

impl Envelope {
    /// An envelope with these addresses and nothing else set (7-bit, no
    /// DSN parameters, no client details, received at time 0).
    pub fn new(mail_from: impl Into<String>, recipients: &[&str]) -> Envelope {
        Envelope {
            mail_from: mail_from.into(),
            ret: None,
            envid: None,
            body_type: BodyType::SevenBit,
            smtputf8: false,
            recipients: recipients.iter().map(|r| Recipient::new(*r)).collect(),
            auth_user: None,
            peer: None,
            helo: String::new(),
            received_at_ms: 0,
            binding: None,
        }
    }
}

/// A recipient still to be delivered: its place in the envelope and its
/// address (what spool recovery finds pending, the queue hands out and
/// outbound sends to).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedRcpt {
    /// Index in the message's envelope recipient list.
    pub index: u32,
    /// The address.
    pub address: Box<str>,
}

impl QueuedRcpt {
    /// The destination domain, lower-cased.
    pub fn domain(&self) -> String {
        domain_of(&self.address)
    }

    /// True when the address is in `domain` (lower-case), without allocating.
    pub fn in_domain(&self, domain: &str) -> bool {
        self.address
            .rsplit_once('@')
            .map_or(domain.is_empty(), |(_, d)| d.eq_ignore_ascii_case(domain))
    }
}

/// Recipients still to deliver, in envelope order: one inline (the bulk
/// case: no allocation beyond its address), more on the heap. Recovery
/// builds them and the queue keeps them, so a queue of millions holds no
/// per-message list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PendingRcpts {
    /// Exactly one.
    One(QueuedRcpt),
    /// Any other number.
    Many(Vec<QueuedRcpt>),
}

impl Default for PendingRcpts {
    fn default() -> Self {
        PendingRcpts::Many(Vec::new())
    }
}

impl From<Vec<QueuedRcpt>> for PendingRcpts {
    fn from(mut v: Vec<QueuedRcpt>) -> Self {
        if v.len() == 1 {
            if let Some(r) = v.pop() {
                return PendingRcpts::One(r);
            }
        }
        v.shrink_to_fit();
        PendingRcpts::Many(v)
    }
}

impl FromIterator<QueuedRcpt> for PendingRcpts {
    fn from_iter<I: IntoIterator<Item = QueuedRcpt>>(iter: I) -> Self {
        let mut iter = iter.into_iter();
        let Some(first) = iter.next() else {
            return PendingRcpts::default();
        };
        match iter.next() {
            None => PendingRcpts::One(first),
            Some(second) => {
                let mut v = vec![first, second];
                v.extend(iter);
                v.shrink_to_fit();
                PendingRcpts::Many(v)
            }
        }
    }
}

impl std::ops::Deref for PendingRcpts {
    type Target = [QueuedRcpt];
    fn deref(&self) -> &[QueuedRcpt] {
        match self {
            PendingRcpts::One(r) => std::slice::from_ref(r),
            PendingRcpts::Many(v) => v,
        }
    }
}

impl<'a> IntoIterator for &'a PendingRcpts {
    type Item = &'a QueuedRcpt;
    type IntoIter = std::slice::Iter<'a, QueuedRcpt>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl PendingRcpts {
    /// Takes out the one at `pos` (panics beyond the end, like `Vec`).
    pub fn remove(&mut self, pos: usize) -> QueuedRcpt {
        match self {
            PendingRcpts::One(_) if pos == 0 => match std::mem::take(self) {
                PendingRcpts::One(r) => r,
                PendingRcpts::Many(_) => unreachable!("matched One"),
            },
            PendingRcpts::One(_) => panic!("removal index {pos} beyond one recipient"),
            PendingRcpts::Many(v) => v.remove(pos),
        }
    }

    /// Keeps those for which `keep` holds.
    pub fn retain(&mut self, mut keep: impl FnMut(&QueuedRcpt) -> bool) {
        match self {
            PendingRcpts::One(r) => {
                if !keep(r) {
                    *self = PendingRcpts::default();
                }
            }
            PendingRcpts::Many(v) => v.retain(|r| keep(r)),
        }
    }

    /// Takes all out, leaving none.
    pub fn take(&mut self) -> Vec<QueuedRcpt> {
        match std::mem::take(self) {
            PendingRcpts::One(r) => vec![r],
            PendingRcpts::Many(v) => v,
        }
    }
}

/// The lower-cased domain of an address (empty for a bare local part).
pub fn domain_of(address: &str) -> String {
    address
        .rsplit_once('@')
        .map_or(String::new(), |(_, d)| d.to_ascii_lowercase())
}

/// What one delivery attempt came to for one recipient, with the reply
/// (remote, or ours marked `[internal]`) that decided it. Shared: one
/// reply often settles many recipients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RcptResult {
    /// Accepted by the next hop.
    Delivered(Rc<Reply>),
    /// Permanent failure (5xx, null MX, ...).
    Failed(Rc<Reply>),
    /// Transient failure (4xx, connection trouble, ...).
    Deferred(Rc<Reply>),
}

impl RcptResult {
    /// The reply that decided it.
    pub fn reply(&self) -> &Rc<Reply> {
        match self {
            RcptResult::Delivered(r) | RcptResult::Failed(r) | RcptResult::Deferred(r) => r,
        }
    }
}
