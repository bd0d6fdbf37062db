//! ESMTP service extensions advertised in the EHLO reply.
//!
//! Owns: `Extensions` and its parser. May call: `smtp::reply` (`Reply`).
//! Must never: do I/O, or fail or panic on an odd EHLO line: unknown
//! keywords are ignored, and a SIZE without a readable number means no
//! fixed limit. Sizes are bounded by the reply parser's limits.

use crate::reply::Reply;

/// What the server advertised (all false after HELO).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extensions {
    /// EHLO succeeded (false after the HELO fallback).
    pub esmtp: bool,
    /// RFC 2920 PIPELINING.
    pub pipelining: bool,
    /// RFC 1870 SIZE: `None` not advertised, `Some(0)` no fixed limit.
    pub size: Option<u64>,
    /// RFC 6152 8BITMIME.
    pub eight_bit_mime: bool,
    /// RFC 3207 STARTTLS.
    pub starttls: bool,
    /// RFC 3030 CHUNKING (BDAT).
    pub chunking: bool,
    /// RFC 3030 BINARYMIME.
    pub binary_mime: bool,
    /// RFC 6531 SMTPUTF8.
    pub smtputf8: bool,
    /// RFC 3461 DSN.
    pub dsn: bool,
    /// RFC 2034 ENHANCEDSTATUSCODES.
    pub enhanced_status_codes: bool,
    /// RFC 4954 AUTH mechanisms, upper-cased, in advertised order.
    pub auth: Vec<String>,
}

impl Extensions {
    /// Parses a positive EHLO reply; the first line is the greeting.
    pub fn from_ehlo(reply: &Reply) -> Self {
        let mut ext = Extensions {
            esmtp: true,
            ..Extensions::default()
        };
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => ext.pipelining = true,
                "SIZE" => ext.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "8BITMIME" => ext.eight_bit_mime = true,
                "STARTTLS" => ext.starttls = true,
                "CHUNKING" => ext.chunking = true,
                "BINARYMIME" => ext.binary_mime = true,
                "SMTPUTF8" => ext.smtputf8 = true,
                "DSN" => ext.dsn = true,
                "ENHANCEDSTATUSCODES" => ext.enhanced_status_codes = true,
                "AUTH" => {
                    for mech in words.map(str::to_ascii_uppercase) {
                        if !ext.auth.contains(&mech) {
                            ext.auth.push(mech);
                        }
                    }
                }
                _ => {}
            }
        }
        ext
    }

    /// The SIZE limit if the server declared a fixed one.
    pub fn size_limit(&self) -> Option<u64> {
        self.size.filter(|&n| n > 0)
    }
}
