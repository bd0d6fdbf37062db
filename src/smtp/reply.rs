//! SMTP replies as data: a code, an optional RFC 3463 enhanced status code
//! and one or more text lines, rendered to the wire form.
//!
//! Owns only the `Reply` type. May call: nothing in the crate. Must never:
//! do I/O (rendering appends to a buffer).

use std::fmt;

/// One SMTP reply (possibly multi-line).
///
/// `enhanced` is `None` for the replies RFC 2034 exempts (greeting,
/// HELO/EHLO) and for replies that are not 2xx/4xx/5xx (334, 354).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Three-digit reply code (RFC 5321 §4.2).
    pub code: u16,
    /// Enhanced status code such as `"5.5.1"` (RFC 3463), if any.
    pub enhanced: Option<String>,
    /// Text lines; never empty (an empty text is one empty line).
    pub lines: Vec<String>,
}

impl Reply {
    /// A one-line reply with an enhanced status code.
    pub fn new(code: u16, enhanced: &str, text: impl Into<String>) -> Self {
        Reply {
            code,
            enhanced: Some(enhanced.to_string()),
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

    /// True for transient (4xx) and permanent (5xx) failures.
    pub fn is_error(&self) -> bool {
        self.code >= 400
    }

    /// True for replies that end the session (421 and 221).
    pub fn closes_session(&self) -> bool {
        self.code == 421 || self.code == 221
    }

    /// Appends the wire form (`code[-| ][enhanced ]text\r\n` per line).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            out.extend_from_slice(format!("{:03}{}", self.code, sep).as_bytes());
            if let Some(enh) = &self.enhanced {
                out.extend_from_slice(enh.as_bytes());
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

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_line_with_enhanced_code() {
        let r = Reply::new(550, "5.7.1", "relaying denied");
        assert_eq!(r.to_bytes(), b"550 5.7.1 relaying denied\r\n");
        assert!(r.is_error());
    }

    #[test]
    fn renders_plain_and_empty_text() {
        assert_eq!(Reply::plain(334, "").to_bytes(), b"334 \r\n");
        assert_eq!(Reply::new(250, "2.0.0", "").to_bytes(), b"250 2.0.0\r\n");
    }

    #[test]
    fn renders_multi_line() {
        let r = Reply::multi(250, vec!["mx.example".into(), "PIPELINING".into()]);
        assert_eq!(r.to_bytes(), b"250-mx.example\r\n250 PIPELINING\r\n");
        assert_eq!(Reply::multi(250, vec![]).to_bytes(), b"250 \r\n");
    }
}
