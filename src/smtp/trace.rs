//! The Received: trace header (RFC 5321 §4.4, protocol names RFC 3848).
//!
//! Owns header formatting only; the driver supplies the id and the date.
//! May call: `crate::message`. Must never: do I/O or read a clock.

use crate::message::Envelope;
use std::fmt::Write as _;

/// The `with` protocol name: ESMTP plus S for TLS and A for AUTH.
pub fn protocol_name(tls: bool, authenticated: bool) -> &'static str {
    match (tls, authenticated) {
        (false, false) => "ESMTP",
        (true, false) => "ESMTPS",
        (false, true) => "ESMTPA",
        (true, true) => "ESMTPSA",
    }
}

/// Trace header the driver prepends to the body once it has the id:
/// `from helo ([peer])`, `by hostname`, `with` protocol, `id`, `for <rcpt>`
/// when there is exactly one recipient, and `date` (an RFC 5322
/// date-time). Folded lines, CRLF-terminated.
pub fn received_header(
    env: &Envelope,
    hostname: &str,
    tls: bool,
    id: impl std::fmt::Display,
    date: &str,
) -> String {
    let helo = if env.helo.is_empty() {
        "unknown"
    } else {
        env.helo.as_str()
    };
    // One buffer, written in place (writing to a String cannot fail).
    let mut h = String::with_capacity(192 + helo.len() + hostname.len() + date.len());
    let _ = write!(h, "Received: from {helo}");
    if let Some(ip) = env.peer {
        let _ = write!(h, " ([{ip}])");
    }
    let proto = protocol_name(tls, env.auth_user.is_some());
    let _ = write!(h, "\r\n\tby {hostname} (impulse) with {proto} id {id}");
    if let [only] = env.recipients.as_slice() {
        let _ = write!(h, "\r\n\tfor <{}>", only.address);
    }
    let _ = write!(h, ";\r\n\t{date}\r\n");
    h
}
