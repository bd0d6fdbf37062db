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
pub use crate::config::LogFormat;
pub use crate::events::{Protocol, Source};
use crate::smtp::client::Stage;

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

/// Appends `text` as a JSON string, quotes included.
pub fn json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                let mut b = [0u16; 2];
                for unit in c.encode_utf16(&mut b) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// One line being built, as Momentum's `@`-separated fields or as a JSON
/// object naming each field.
pub struct Line<'o> {
    out: &'o mut String,
    format: LogFormat,
    first: bool,
}

impl<'o> Line<'o> {
    /// Starts a line in `out`.
    pub fn new(out: &'o mut String, format: LogFormat) -> Self {
        if format == LogFormat::Json {
            out.push('{');
        }
        Line {
            out,
            format,
            first: true,
        }
    }

    fn sep(&mut self, name: &str) {
        match self.format {
            LogFormat::Momentum if !self.first => self.out.push('@'),
            LogFormat::Momentum => {}
            LogFormat::Json => {
                if !self.first {
                    self.out.push(',');
                }
                json_string(self.out, name);
                self.out.push(':');
            }
        }
        self.first = false;
    }

    /// A text field.
    pub fn text(&mut self, name: &str, value: &str) -> &mut Self {
        self.sep(name);
        match self.format {
            LogFormat::Momentum => field(self.out, value),
            LogFormat::Json => json_string(self.out, value),
        }
        self
    }

    /// A number (written bare in both forms).
    pub fn num(&mut self, name: &str, value: impl std::fmt::Display) -> &mut Self {
        self.sep(name);
        let _ = write!(self.out, "{value}");
        self
    }

    /// Ends the line (with its newline).
    pub fn end(&mut self) {
        if self.format == LogFormat::Json {
            self.out.push('}');
        }
        self.out.push('\n');
    }
}

/// The local part and domain of an address (split at its last `@`; the
/// null sender is two empty fields).
pub fn split(address: &str) -> (&str, &str) {
    address.rsplit_once('@').unwrap_or((address, ""))
}

fn head<'o>(out: &'o mut String, format: LogFormat, time: u64, id: &str, kind: &str) -> Line<'o> {
    let mut l = Line::new(out, format);
    l.num("time", time).text("msgid", id).text("type", kind);
    l
}

fn ip(remote: Option<IpAddr>) -> String {
    remote.map(|a| a.to_string()).unwrap_or_default()
}

/// An R line (with its newline).
pub fn reception(out: &mut String, format: LogFormat, r: &Reception<'_>) {
    let (rl, rd) = split(r.recipient);
    let (sl, sd) = split(r.sender);
    head(out, format, r.time, r.id, "R")
        .text("rcpt_local", rl)
        .text("rcpt_domain", rd)
        .text("sender_local", sl)
        .text("sender_domain", sd)
        .text("peer_ip", &ip(r.peer))
        .num("size", r.size)
        .text("protocol", r.protocol.name())
        .text("binding_group", r.source.group)
        .text("binding", r.source.binding)
        .end();
}

/// The fields D, T and P share, with the stage number of T and P.
fn attempt_fields(l: &mut Line<'_>, a: &Attempt<'_>, stage: Option<u8>) {
    l.text("domain", a.domain)
        .num(
            if stage.is_some() {
                "bytes_sent"
            } else {
                "size"
            },
            a.size,
        )
        .text("binding_group", a.source.group)
        .text("binding", a.source.binding);
    if let Some(n) = stage {
        l.num("stage", n);
    }
    l.num("retries", a.retries)
        .num(
            "secs_in_queue",
            format_args!("{:.3}", a.secs_in_queue.max(0.0)),
        )
        .text("remote_ip", &ip(a.remote));
}

/// A D line (with its newline).
pub fn delivery(out: &mut String, format: LogFormat, a: &Attempt<'_>) {
    let mut l = head(out, format, a.time, a.id, "D");
    attempt_fields(&mut l, a, None);
    l.end();
}

/// A T line (`permanent` false) or a P line (true), with its newline.
pub fn failure(
    out: &mut String,
    format: LogFormat,
    a: &Attempt<'_>,
    f: &Failure<'_>,
    permanent: bool,
) {
    let mut l = head(out, format, a.time, a.id, if permanent { "P" } else { "T" });
    attempt_fields(&mut l, a, Some(stage_number(f.stage)));
    l.text("response", f.response).end();
}

/// A bouncelog B line for `recipient` (with its newline).
pub fn bounce(
    out: &mut String,
    format: LogFormat,
    a: &Attempt<'_>,
    f: &Failure<'_>,
    (recipient, sender): (&str, &str),
    class: BounceClass,
) {
    let (rl, rd) = split(recipient);
    let (sl, sd) = split(sender);
    head(out, format, a.time, a.id, "B")
        .text("rcpt_local", rl)
        .text("rcpt_domain", rd)
        .text("sender_local", sl)
        .text("sender_domain", sd)
        .text("binding_group", a.source.group)
        .text("binding", a.source.binding)
        .num("stage", stage_number(f.stage))
        .num("class_code", class.code())
        .text("remote_ip", &ip(a.remote))
        .text("raw_response", f.response)
        .end();
}

/// The heartbeat line of mainlog and bouncelog.
pub fn heartbeat(out: &mut String, format: LogFormat, time: u64) {
    head(out, format, time, "", "M").end();
}

#[cfg(test)]
mod tests;
