//! The fields of a received message that assignment rules test: the
//! envelope, the header section of the content, and where it came from.
//!
//! Owns the header lookup of the rules. May call: config (the `Fields`
//! trait), message (the envelope). Must never: read past the header
//! section.

use std::net::SocketAddr;

use crate::config::rule::Fields;
use crate::message::Envelope;

/// A received message as the rules see it.
pub struct MessageFields<'a> {
    env: &'a Envelope,
    content: &'a [u8],
    rcpts: Vec<&'a str>,
    local: Option<SocketAddr>,
    peer: Option<SocketAddr>,
}

impl<'a> MessageFields<'a> {
    /// The fields of `env` and `content` (the message as the client sent
    /// it), received on `local` from `peer`.
    pub fn new(
        env: &'a Envelope,
        content: &'a [u8],
        local: Option<SocketAddr>,
        peer: Option<SocketAddr>,
    ) -> Self {
        MessageFields {
            env,
            content,
            rcpts: env.recipients.iter().map(|r| r.address.as_str()).collect(),
            local,
            peer,
        }
    }
}

impl Fields for MessageFields<'_> {
    fn mail_from(&self) -> &str {
        &self.env.mail_from
    }

    fn rcpt_to(&self) -> &[&str] {
        &self.rcpts
    }

    fn header(&self, name: &str) -> Option<String> {
        header_value(self.content, name)
    }

    fn recv_ip(&self) -> Option<String> {
        self.local.map(|a| a.ip().to_string())
    }

    fn recv_port(&self) -> Option<String> {
        self.local.map(|a| a.port().to_string())
    }

    fn sender_ip(&self) -> Option<String> {
        self.peer.map(|a| a.ip().to_string())
    }
}

/// The first header field `name` of `content` (case-insensitive),
/// unfolded and trimmed; the search ends at the blank line.
pub fn header_value(content: &[u8], name: &str) -> Option<String> {
    let mut lines = content.split(|b| *b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return None;
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        if !line[..colon].eq_ignore_ascii_case(name.as_bytes()) {
            continue;
        }
        let mut value = String::from_utf8_lossy(&line[colon + 1..])
            .trim()
            .to_string();
        while let Some(next) = lines.peek() {
            if !next.starts_with(b" ") && !next.starts_with(b"\t") {
                break;
            }
            let next = lines.next().unwrap_or_default();
            let next = next.strip_suffix(b"\r").unwrap_or(next);
            value.push(' ');
            value.push_str(String::from_utf8_lossy(next).trim());
        }
        return Some(value);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_unfold_and_stop_at_the_body() {
        let m = b"From: a@b\r\nX-Campaign: spring\r\n  sale\r\nSubject: hi\r\n\r\nX-Late: no\r\n";
        assert_eq!(
            header_value(m, "x-campaign").as_deref(),
            Some("spring sale")
        );
        assert_eq!(header_value(m, "SUBJECT").as_deref(), Some("hi"));
        assert_eq!(header_value(m, "X-Late"), None);
        assert_eq!(header_value(b"", "a"), None);
        assert_eq!(
            header_value(b"no colon line\r\nA: 1\r\n", "a").as_deref(),
            Some("1")
        );
    }
}
