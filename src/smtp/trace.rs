//! The Received: trace header (RFC 5321 §4.4, protocol names RFC 3848).
//!
//! Owns header formatting only; the driver supplies the id and the date.
//! May call: `crate::message`. Must never: do I/O or read a clock.

use crate::message::Envelope;

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
pub fn received_header(env: &Envelope, hostname: &str, tls: bool, id: &str, date: &str) -> String {
    let helo = if env.helo.is_empty() {
        "unknown"
    } else {
        env.helo.as_str()
    };
    let mut h = format!("Received: from {helo}");
    if let Some(ip) = env.peer {
        h.push_str(&format!(" ([{ip}])"));
    }
    let proto = protocol_name(tls, env.auth_user.is_some());
    h.push_str(&format!(
        "\r\n\tby {hostname} (impulse) with {proto} id {id}"
    ));
    if let [only] = env.recipients.as_slice() {
        h.push_str(&format!("\r\n\tfor <{}>", only.address));
    }
    h.push_str(&format!(";\r\n\t{date}\r\n"));
    h
}
