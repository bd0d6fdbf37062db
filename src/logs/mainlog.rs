//! ec_logger's mainlog and bounce_logger's bouncelog lines (2.2 layouts):
//!
//! ```text
//! time@msgid@R@rcpt_local@rcpt_domain@sender_local@sender_domain@peer_ip@size@protocol@binding_group@binding
//! time@msgid@D@domain@size@binding_group@binding@retries@secs_in_queue@remote_ip
//! time@msgid@T@domain@bytes_sent@binding_group@binding@stage@retries@secs_in_queue@remote_ip@response
//! time@msgid@P@domain@bytes_sent@binding_group@binding@stage@retries@secs_in_queue@remote_ip@response
//! time@msgid@B@rcpt_local@rcpt_domain@sender_local@sender_domain@binding_group@binding@stage@class_code@remote_ip@raw_response
//! time@@M
//! ```
//!
//! `time` is epoch seconds, `secs_in_queue` has three decimals. Momentum
//! 2.2 escapes nothing in these logs; its manual suggests replacing `@`
//! and newlines. impulse percent-encodes, in every field, `%` (`%25`),
//! `@` (`%40`) and every control character (`%0A`, `%0D`, `%7F`, ...):
//! a field can neither end its line nor move the fields after it, a
//! parser that splits on `@` keeps working, and the text is recoverable.

use std::fmt::Write as _;
use std::net::IpAddr;

use crate::bounce::BounceClass;
pub use crate::events::Source;
use crate::smtp::client::Stage;

/// How a message came in (the R line's `protocol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// SMTP or ESMTP from a client.
    Esmtp,
    /// Made here: a DSN, or mail a policy generated.
    Internal,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Esmtp => "esmtp",
            Protocol::Internal => "internal",
        }
    }
}

/// A message received, one line per recipient.
#[derive(Clone, Debug)]
pub struct Reception<'a> {
    /// Epoch seconds.
    pub time: u64,
    /// The message id.
    pub id: &'a str,
    /// The recipient.
    pub recipient: &'a str,
    /// The envelope sender (empty for `<>`).
    pub sender: &'a str,
    /// The client's address (none for internal mail).
    pub peer: Option<IpAddr>,
    /// Octets, headers included.
    pub size: usize,
    /// How it came in.
    pub protocol: Protocol,
    /// The binding it is assigned to.
    pub source: Source<'a>,
}

/// A delivery attempt's outcome for one recipient domain.
#[derive(Clone, Debug)]
pub struct Attempt<'a> {
    /// Epoch seconds.
    pub time: u64,
    /// The message id.
    pub id: &'a str,
    /// The recipient domain.
    pub domain: &'a str,
    /// Octets of the message (sent, for T and P).
    pub size: usize,
    /// The binding it was sent from.
    pub source: Source<'a>,
    /// Earlier attempts that ended in a deferral.
    pub retries: u32,
    /// Seconds since reception.
    pub secs_in_queue: f64,
    /// The remote server's address, when a connection was made.
    pub remote: Option<IpAddr>,
}

/// What went wrong, for T, P and B lines.
#[derive(Clone, Debug)]
pub struct Failure<'a> {
    /// Where in the outbound session (none: no connection was made).
    pub stage: Option<Stage>,
    /// The reply, one line.
    pub response: &'a str,
}

/// Momentum's connection stage number (reference §6) of a client stage;
/// none is "not connected" (0).
pub fn stage_number(stage: Option<Stage>) -> u8 {
    match stage {
        None | Some(Stage::Closed) => 0,
        Some(Stage::Idle) => 1,
        Some(Stage::Mail) => 2,
        Some(Stage::Rcpt) => 4,
        Some(Stage::Data) => 6,
        Some(Stage::DataDone) => 9,
        Some(Stage::Ehlo) => 10,
        Some(Stage::Banner) => 12,
        Some(Stage::Rset) => 13,
        Some(Stage::StartTls) => 15,
        Some(Stage::TlsHandshake) => 17,
        Some(Stage::Quit) => 22,
    }
}

/// Appends `text` as one field (see the module's escaping rule).
pub fn field(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '%' | '@' => {
                let _ = write!(out, "%{:02X}", c as u32);
            }
            c if c.is_control() => {
                let mut b = [0; 4];
                for byte in c.encode_utf8(&mut b).bytes() {
                    let _ = write!(out, "%{byte:02X}");
                }
            }
            c => out.push(c),
        }
    }
}

/// The local part and domain of an address (split at its last `@`; the
/// null sender is two empty fields).
fn split(address: &str) -> (&str, &str) {
    address.rsplit_once('@').unwrap_or((address, ""))
}

/// Appends `@` and one field.
fn next(out: &mut String, text: &str) {
    out.push('@');
    field(out, text);
}

fn head(out: &mut String, time: u64, id: &str, kind: char) {
    let _ = write!(out, "{time}@");
    field(out, id);
    out.push('@');
    out.push(kind);
}

fn ip(remote: Option<IpAddr>) -> String {
    remote.map(|a| a.to_string()).unwrap_or_default()
}

/// An R line (with its newline).
pub fn reception(out: &mut String, r: &Reception<'_>) {
    head(out, r.time, r.id, 'R');
    let (rl, rd) = split(r.recipient);
    let (sl, sd) = split(r.sender);
    for f in [
        rl,
        rd,
        sl,
        sd,
        &ip(r.peer),
        &r.size.to_string(),
        r.protocol.name(),
    ] {
        next(out, f);
    }
    next(out, r.source.group);
    next(out, r.source.binding);
    out.push('\n');
}

/// The fields D, T and P share, with the stage number of T and P.
fn attempt_fields(out: &mut String, a: &Attempt<'_>, stage: Option<u8>) {
    next(out, a.domain);
    let _ = write!(out, "@{}", a.size);
    next(out, a.source.group);
    next(out, a.source.binding);
    if let Some(n) = stage {
        let _ = write!(out, "@{n}");
    }
    let _ = write!(out, "@{}@{:.3}", a.retries, a.secs_in_queue.max(0.0));
    next(out, &ip(a.remote));
}

/// A D line (with its newline).
pub fn delivery(out: &mut String, a: &Attempt<'_>) {
    head(out, a.time, a.id, 'D');
    attempt_fields(out, a, None);
    out.push('\n');
}

/// A T line (`permanent` false) or a P line (true), with its newline.
pub fn failure(out: &mut String, a: &Attempt<'_>, f: &Failure<'_>, permanent: bool) {
    head(out, a.time, a.id, if permanent { 'P' } else { 'T' });
    attempt_fields(out, a, Some(stage_number(f.stage)));
    next(out, f.response);
    out.push('\n');
}

/// A bouncelog B line for `recipient` (with its newline).
pub fn bounce(
    out: &mut String,
    a: &Attempt<'_>,
    f: &Failure<'_>,
    recipient: &str,
    sender: &str,
    class: BounceClass,
) {
    head(out, a.time, a.id, 'B');
    let (rl, rd) = split(recipient);
    let (sl, sd) = split(sender);
    for x in [rl, rd, sl, sd, a.source.group, a.source.binding] {
        next(out, x);
    }
    let _ = write!(out, "@{}@{}", stage_number(f.stage), class.code());
    next(out, &ip(a.remote));
    next(out, f.response);
    out.push('\n');
}

/// The heartbeat line of mainlog and bouncelog.
pub fn heartbeat(out: &mut String, time: u64) {
    let _ = writeln!(out, "{time}@@M");
}

#[cfg(test)]
mod tests;
