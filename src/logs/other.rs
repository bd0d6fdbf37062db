//! The paniclog and rejectlog lines (reference §5.1), sans-IO:
//!
//! ```text
//! 1700000000:[ERROR] DB: spool append failed: ...
//! 1700000000: R="192.0.2.7:40112" L="127.0.0.1:25" C="" P="sending rcptto response" E=550 M=smtp CTXCONN=[] CTXMESS=[] 5.7.1 relaying denied
//! ```
//!
//! Momentum writes the paniclog as `epoch:text`; impulse's text starts
//! with the level and the subsystem as Momentum names them. The rejectlog
//! is Momentum 2.2's space-separated layout without the 3.x pathway
//! fields; `C` (connection id) stays empty and the context dictionaries
//! stay empty until policy exists. Free text escapes `\` and control
//! characters with a backslash (`\\`, `\x0a`), and quoted values also `"`,
//! as Momentum's acctlog does: no text can end a line or close a field.

use std::fmt::Write as _;
use std::net::SocketAddr;

use super::mainlog::Line;
use crate::config::LogFormat;
use crate::events::{Level, Subsystem};
use crate::smtp::server::RejectPhase;

/// Appends `text` with `\`, control characters and (when `quoted`) `"`
/// escaped by a backslash.
pub fn escaped(out: &mut String, text: &str, quoted: bool) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' if quoted => out.push_str("\\\""),
            c if c.is_control() => {
                let mut b = [0; 4];
                for byte in c.encode_utf8(&mut b).bytes() {
                    let _ = write!(out, "\\x{byte:02x}");
                }
            }
            c => out.push(c),
        }
    }
}

/// A paniclog line (with its newline).
pub fn panic(
    out: &mut String,
    format: LogFormat,
    time: u64,
    level: Level,
    subsystem: Subsystem,
    what: &str,
) {
    match format {
        LogFormat::Momentum => {
            let _ = write!(out, "{time}:[{}] {}: ", level.name(), subsystem.name());
            escaped(out, what, false);
            out.push('\n');
        }
        LogFormat::Json => Line::new(out, format)
            .num("time", time)
            .text("level", level.name())
            .text("subsystem", subsystem.name())
            .text("text", what)
            .end(),
    }
}

/// Momentum's phase state (as `rejection counts` names them) of a refusal.
pub fn phase_state(phase: RejectPhase) -> &'static str {
    match phase {
        RejectPhase::Connect => "just connected",
        RejectPhase::Ehlo => "sending ehlo/helo response",
        RejectPhase::Auth | RejectPhase::Command => "esmtp setup phase",
        RejectPhase::Mail => "sending mailfrom response",
        RejectPhase::Rcpt => "sending rcptto response",
        RejectPhase::Data => "sending body response",
    }
}

/// A refusal, for the rejectlog.
#[derive(Clone, Debug)]
pub struct Refusal<'a> {
    /// Epoch seconds.
    pub time: u64,
    /// The client.
    pub peer: Option<SocketAddr>,
    /// Our address it reached.
    pub local: Option<SocketAddr>,
    /// Where in the session.
    pub phase: RejectPhase,
    /// Our reply code.
    pub code: u16,
    /// Our reply text (first line).
    pub text: &'a str,
}

/// The module Momentum names in `M=`: impulse's SMTP engine.
const MODULE: &str = "smtp";

/// A rejectlog line (with its newline).
pub fn rejection(out: &mut String, format: LogFormat, r: &Refusal<'_>) {
    let addr = |a: Option<SocketAddr>| a.map(|a| a.to_string()).unwrap_or_default();
    match format {
        LogFormat::Momentum => {
            let _ = write!(
                out,
                "{}: R=\"{}\" L=\"{}\" C=\"\" P=\"{}\" E={} M={MODULE} CTXCONN=[] CTXMESS=[] ",
                r.time,
                addr(r.peer),
                addr(r.local),
                phase_state(r.phase),
                r.code
            );
            escaped(out, r.text, false);
            out.push('\n');
        }
        LogFormat::Json => Line::new(out, format)
            .num("time", r.time)
            .text("remote", &addr(r.peer))
            .text("local", &addr(r.local))
            .text("conn", "")
            .text("phase", phase_state(r.phase))
            .num("code", r.code)
            .text("module", MODULE)
            .text("text", r.text)
            .end(),
    }
}
