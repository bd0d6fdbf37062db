//! SMTP replies as data: a code, an optional RFC 3463 enhanced status code
//! and one or more text lines. The one reply type of the crate: what the
//! server sends, what the client read from a remote server (or made up,
//! marked `[internal]`), and what delivery results, events, the spool's
//! outcome records and DSNs carry. Text is made only at the edges:
//! `write_to` (the wire) and `Display` (log lines, spool records, DSNs).
//!
//! Owns `Reply` and `IntoStatus`, and in `status` the enhanced status type
//! and its parser; `smtp` re-exports both as `smtp::reply` and
//! `smtp::status`. May call: nothing else in the crate. Must never: do I/O
//! (rendering appends to a buffer).

use std::borrow::Cow;
use std::fmt;
use std::io::Write;

pub mod status;

use status::EnhancedStatus;

/// What starts the text of a reply we made up ourselves (Momentum's mark).
const INTERNAL_MARK: &str = "[internal] ";

/// One SMTP reply (possibly multi-line).
///
/// `enhanced` is `None` for the replies RFC 2034 exempts (greeting,
/// HELO/EHLO), for replies that are not 2xx/4xx/5xx (334, 354), and for
/// remote replies without one. `lines` never carry the enhanced code: the
/// wire form puts it at the start of each line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Three-digit reply code (RFC 5321 §4.2).
    pub code: u16,
    /// Enhanced status code such as 5.5.1 (RFC 3463), if any.
    pub enhanced: Option<EnhancedStatus>,
    /// Text lines without the enhanced code; never empty (an empty text is
    /// one empty line).
    pub lines: Vec<String>,
}

/// What `Reply::new` takes as the enhanced status code: an
/// `EnhancedStatus`, a `(class, subject, detail)` triple, or an `"x.y.z"`
/// literal written in the code (not input: one that does not parse is a
/// bug, and leaves the reply without an enhanced code).
pub trait IntoStatus {
    /// The status code, if this is one.
    fn into_status(self) -> Option<EnhancedStatus>;
}

impl IntoStatus for EnhancedStatus {
    fn into_status(self) -> Option<EnhancedStatus> {
        Some(self)
    }
}

impl IntoStatus for (u8, u16, u16) {
    fn into_status(self) -> Option<EnhancedStatus> {
        Some(EnhancedStatus {
            class: self.0,
            subject: self.1,
            detail: self.2,
        })
    }
}

impl IntoStatus for &str {
    fn into_status(self) -> Option<EnhancedStatus> {
        let status = EnhancedStatus::parse(self);
        debug_assert!(status.is_some(), "not an enhanced status code: {self:?}");
        status
    }
}

impl Reply {
    /// A one-line reply with an enhanced status code.
    pub fn new(code: u16, enhanced: impl IntoStatus, text: impl Into<String>) -> Self {
        Reply {
            code,
            enhanced: enhanced.into_status(),
            lines: vec![text.into()],
        }
    }

    /// A one-line reply without an enhanced status code (220, 334, 354).
    pub fn plain(code: u16, text: impl Into<String>) -> Self {
        Reply {
            code,
            enhanced: None,
            lines: vec![text.into()],
        }
    }

    /// A multi-line reply without enhanced status codes (EHLO).
    pub fn multi(code: u16, lines: Vec<String>) -> Self {
        let lines = if lines.is_empty() {
            vec![String::new()]
        } else {
            lines
        };
        Reply {
            code,
            enhanced: None,
            lines,
        }
    }

    /// A reply made up by us rather than read from a peer, marked the way
    /// Momentum does: `451 4.4.2 [internal] no banner`.
    pub fn internal(code: u16, enhanced: (u8, u16, u16), text: &str) -> Self {
        Reply::new(code, enhanced, format!("{INTERNAL_MARK}{text}"))
    }

    /// The text after the `[internal]` mark, if this is one of our own
    /// one-line replies.
    pub fn internal_text(&self) -> Option<&str> {
        match self.lines.as_slice() {
            [line] => line.strip_prefix(INTERNAL_MARK),
            _ => None,
        }
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        self.code / 100 == 2
    }

    /// 3xx (only 354 is expected, and only after DATA).
    pub fn is_intermediate(&self) -> bool {
        self.code / 100 == 3
    }

    /// 4xx.
    pub fn is_transient(&self) -> bool {
        self.code / 100 == 4
    }

    /// 5xx.
    pub fn is_permanent(&self) -> bool {
        self.code / 100 == 5
    }

    /// True for transient (4xx) and permanent (5xx) failures.
    pub fn is_error(&self) -> bool {
        self.code >= 400
    }

    /// True for replies that end the session (421 and 221).
    pub fn closes_session(&self) -> bool {
        self.code == 421 || self.code == 221
    }

    /// The text without code and enhanced code: the non-empty lines joined
    /// by a space (borrowed when there is only one).
    pub fn text(&self) -> Cow<'_, str> {
        let mut lines = self.lines.iter().filter(|l| !l.is_empty());
        let Some(first) = lines.next() else {
            return Cow::Borrowed("");
        };
        let Some(second) = lines.next() else {
            return Cow::Borrowed(first);
        };
        let mut text = format!("{first} {second}");
        for line in lines {
            text.push(' ');
            text.push_str(line);
        }
        Cow::Owned(text)
    }

    /// Appends the wire form (`code[-| ][enhanced ]text\r\n` per line).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            // Writing to a Vec cannot fail.
            let _ = write!(out, "{:03}{sep}", self.code);
            if let Some(enh) = &self.enhanced {
                let _ = write!(out, "{enh}");
                if !line.is_empty() {
                    out.push(b' ');
                }
            }
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The wire form as a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }
}

/// The one-line form that is logged, recorded in the spool and put in
/// DSNs: `550 5.1.1 no such user` (the lines joined by a space).
impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(enh) = &self.enhanced {
            write!(f, " {enh}")?;
        }
        let text = self.text();
        if !text.is_empty() {
            write!(f, " {text}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_line_with_enhanced_code() {
        let r = Reply::new(550, "5.7.1", "relaying denied");
        assert_eq!(r.to_bytes(), b"550 5.7.1 relaying denied\r\n");
        assert_eq!(r.to_string(), "550 5.7.1 relaying denied");
        assert!(r.is_error() && r.is_permanent() && !r.is_transient());
        assert_eq!(r, Reply::new(550, (5, 7, 1), "relaying denied"));
    }

    #[test]
    fn renders_plain_and_empty_text() {
        assert_eq!(Reply::plain(334, "").to_bytes(), b"334 \r\n");
        assert_eq!(Reply::plain(334, "").to_string(), "334");
        assert_eq!(Reply::new(250, "2.0.0", "").to_bytes(), b"250 2.0.0\r\n");
        assert_eq!(Reply::new(250, "2.0.0", "").to_string(), "250 2.0.0");
    }

    #[test]
    fn renders_multi_line() {
        let r = Reply::multi(250, vec!["mx.example".into(), "PIPELINING".into()]);
        assert_eq!(r.to_bytes(), b"250-mx.example\r\n250 PIPELINING\r\n");
        assert_eq!(r.to_string(), "250 mx.example PIPELINING");
        assert_eq!(Reply::multi(250, vec![]).to_bytes(), b"250 \r\n");
    }

    #[test]
    fn multi_line_with_enhanced_code_repeats_it_on_the_wire_only() {
        let r = Reply {
            code: 550,
            enhanced: EnhancedStatus::parse("5.1.1"),
            lines: vec!["no such".into(), "".into(), "user".into()],
        };
        assert_eq!(
            r.to_bytes(),
            b"550-5.1.1 no such\r\n550-5.1.1\r\n550 5.1.1 user\r\n"
        );
        assert_eq!(r.text(), "no such user");
        assert_eq!(r.to_string(), "550 5.1.1 no such user");
    }

    #[test]
    fn internal_replies_are_marked() {
        let r = Reply::internal(451, (4, 4, 2), "no banner");
        assert_eq!(r.to_string(), "451 4.4.2 [internal] no banner");
        assert_eq!(r.text(), "[internal] no banner");
        assert_eq!(r.internal_text(), Some("no banner"));
        assert_eq!(Reply::new(451, "4.4.2", "no banner").internal_text(), None);
        assert!(r.is_transient() && !r.closes_session());
        assert!(Reply::plain(421, "bye").closes_session());
    }
}
