//! The incremental parser that turns a server's bytes into replies
//! (`smtp::reply::Reply`) within fixed limits.
//!
//! Owns: `ReplyParser`, `ReplyError`; re-exports `EnhancedStatus` from
//! `smtp::status`. May call: `smtp::reply`, `smtp::status`. Must never: do
//! I/O, panic on input, or let a parser's memory exceed
//! `MAX_REPLY_LINES × MAX_REPLY_LINE_OCTETS`.

pub use crate::reply::status::EnhancedStatus;
use crate::reply::Reply;

/// Longest reply line accepted, without its CRLF (RFC 5321 says 512 with
/// CRLF; real servers exceed that, so we are lenient up to this bound).
pub const MAX_REPLY_LINE_OCTETS: usize = 2048;

/// Most lines accepted in one (multi-line) reply.
pub const MAX_REPLY_LINES: usize = 100;

/// Lowest and highest reply codes SMTP uses (2xx to 5xx).
const MIN_REPLY_CODE: u16 = 200;
const MAX_REPLY_CODE: u16 = 599;

/// Octets of the reply code at the start of each line.
const CODE_OCTETS: usize = 3;

/// Why the server's bytes are not a valid reply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// A line exceeded `MAX_REPLY_LINE_OCTETS`.
    #[error("reply line longer than {limit} octets")]
    LineTooLong {
        /// The limit exceeded.
        limit: usize,
    },
    /// A reply had more than `MAX_REPLY_LINES` lines.
    #[error("reply with more than {limit} lines")]
    TooManyLines {
        /// The limit exceeded.
        limit: usize,
    },
    /// A line did not start with three digits.
    #[error("reply line does not start with a three-digit code")]
    BadCode,
    /// The code is outside 200-599.
    #[error("reply code {0} outside 2xx-5xx")]
    CodeOutOfRange(u16),
    /// The code was followed by neither space, `-` nor end of line.
    #[error("reply code followed by {0:#04x} instead of space or '-'")]
    BadSeparator(u8),
    /// A continuation line carried a different code than the first line.
    #[error("continuation line with code {found} in a {expected} reply")]
    WrongContinuation {
        /// Code of the reply's first line.
        expected: u16,
        /// Code of the offending line.
        found: u16,
    },
}

/// Incremental reply parser: feed bytes, get complete replies.
#[derive(Debug, Default)]
pub struct ReplyParser {
    /// The current, incomplete line (at most `MAX_REPLY_LINE_OCTETS` + CR).
    line: Vec<u8>,
    /// Code of the reply being assembled, once its first line is in.
    code: Option<u16>,
    /// Lines of the reply being assembled.
    lines: Vec<String>,
}

impl ReplyParser {
    /// New, empty parser.
    pub fn new() -> Self {
        Self::default()
    }

    /// True when no partial line or reply is buffered.
    pub fn is_empty(&self) -> bool {
        self.line.is_empty() && self.code.is_none()
    }

    /// Octets held for the reply being assembled (bounded by the limits).
    pub fn buffered_octets(&self) -> usize {
        self.line.capacity() + self.lines.iter().map(String::capacity).sum::<usize>()
    }

    /// Consumes bytes from `input` up to the end of the next complete reply
    /// and returns it, or consumes all of `input` and returns `None`. The
    /// reply's lines have control characters replaced by `?`, and the first
    /// line's enhanced code (if its class matches the reply code) removed
    /// from each line that starts with it. After
    /// an error the parser's state is unspecified: the caller must drop the
    /// connection.
    pub fn next_reply(&mut self, input: &mut &[u8]) -> Result<Option<Reply>, ReplyError> {
        while !input.is_empty() {
            let (chunk, rest, complete) = match input.iter().position(|&b| b == b'\n') {
                Some(lf) => (&input[..lf], &input[lf + 1..], true),
                None => (*input, &[][..], false),
            };
            // One spare octet for the CR that precedes the LF.
            if self.line.len() + chunk.len() > MAX_REPLY_LINE_OCTETS + 1 {
                return Err(ReplyError::LineTooLong {
                    limit: MAX_REPLY_LINE_OCTETS,
                });
            }
            self.line.extend_from_slice(chunk);
            *input = rest;
            if !complete {
                break;
            }
            // Taken out and put back so the buffer is reused line to line.
            let mut line = std::mem::take(&mut self.line);
            let reply = self.take_line(&line);
            line.clear();
            self.line = line;
            if let Some(reply) = reply? {
                return Ok(Some(reply));
            }
        }
        Ok(None)
    }

    /// Adds one line (LF removed); returns the reply if it was the last line.
    fn take_line(&mut self, raw: &[u8]) -> Result<Option<Reply>, ReplyError> {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.len() > MAX_REPLY_LINE_OCTETS {
            return Err(ReplyError::LineTooLong {
                limit: MAX_REPLY_LINE_OCTETS,
            });
        }
        let (code, last, text) = parse_line(raw)?;
        if let Some(expected) = self.code {
            if expected != code {
                return Err(ReplyError::WrongContinuation {
                    expected,
                    found: code,
                });
            }
        }
        if self.lines.len() >= MAX_REPLY_LINES {
            return Err(ReplyError::TooManyLines {
                limit: MAX_REPLY_LINES,
            });
        }
        self.code = Some(code);
        self.lines.push(sanitize(text));
        if !last {
            return Ok(None);
        }
        self.code = None;
        let mut lines = std::mem::take(&mut self.lines);
        let enhanced = lines
            .first()
            .and_then(|l| EnhancedStatus::at_start(code, l));
        if let Some(e) = enhanced {
            for line in &mut lines {
                strip_status(line, e);
            }
        }
        Ok(Some(Reply {
            code,
            enhanced,
            lines,
        }))
    }
}

/// Removes `e` (and the space after it) from the start of `line`, if the
/// line starts with it; other lines are left as they are.
fn strip_status(line: &mut String, e: EnhancedStatus) {
    let word = line.split(' ').next().unwrap_or("");
    if EnhancedStatus::parse(word) == Some(e) {
        let cut = (word.len() + 1).min(line.len());
        line.drain(..cut);
    }
}

/// Splits a line into code, "is last line", and text.
fn parse_line(raw: &[u8]) -> Result<(u16, bool, &[u8]), ReplyError> {
    let digits = raw.get(..CODE_OCTETS).ok_or(ReplyError::BadCode)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(ReplyError::BadCode);
    }
    let code = digits
        .iter()
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    if !(MIN_REPLY_CODE..=MAX_REPLY_CODE).contains(&code) {
        return Err(ReplyError::CodeOutOfRange(code));
    }
    match raw.get(CODE_OCTETS) {
        None => Ok((code, true, &[])),
        Some(b' ') => Ok((code, true, &raw[CODE_OCTETS + 1..])),
        Some(b'-') => Ok((code, false, &raw[CODE_OCTETS + 1..])),
        Some(&other) => Err(ReplyError::BadSeparator(other)),
    }
}

/// Text as a string safe to log: invalid UTF-8 and control characters
/// (a hostile server could inject log lines) are replaced.
fn sanitize(text: &[u8]) -> String {
    let text = String::from_utf8_lossy(text);
    let unsafe_char = |c: char| c.is_control() && c != '\t';
    if !text.chars().any(unsafe_char) {
        // The usual reply: one allocation of the exact size.
        return text.into_owned();
    }
    let mut clean = String::with_capacity(text.len());
    clean.extend(text.chars().map(|c| if unsafe_char(c) { '?' } else { c }));
    clean
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(wire: &[u8]) -> Reply {
        let mut input = wire;
        let reply = ReplyParser::new().next_reply(&mut input).unwrap().unwrap();
        assert!(input.is_empty(), "one reply");
        reply
    }

    #[test]
    fn one_line_round_trips_through_display_and_the_wire() {
        for wire in [
            &b"550 5.1.1 no such user\r\n"[..],
            b"250 2.0.0\r\n",
            b"220 mx.example ESMTP\r\n",
        ] {
            let r = parse(wire);
            let text = std::str::from_utf8(wire).unwrap().trim_end();
            assert_eq!(r.to_string(), text);
            assert_eq!(r.to_bytes(), wire);
        }
        let r = parse(b"550 5.1.1 no such user\r\n");
        assert_eq!(r.enhanced, EnhancedStatus::parse("5.1.1"));
        assert_eq!(r.lines, ["no such user"]);
        assert_eq!(r.text(), "no such user");
    }

    #[test]
    fn multi_line_strips_the_first_lines_code_from_each_line() {
        let wire = b"550-5.1.1 no such\r\n550-5.1.1\r\n550-unmarked\r\n550 5.1.1 user\r\n";
        let r = parse(wire);
        assert_eq!(r.enhanced, EnhancedStatus::parse("5.1.1"));
        assert_eq!(r.lines, ["no such", "", "unmarked", "user"]);
        assert_eq!(r.to_string(), "550 5.1.1 no such unmarked user");
        // A code other than the first line's is text.
        let r = parse(b"451-4.7.1 greylisted\r\n451 4.3.0 later\r\n");
        assert_eq!(r.lines, ["greylisted", "4.3.0 later"]);
        assert_eq!(r.to_string(), "451 4.7.1 greylisted 4.3.0 later");
    }

    #[test]
    fn a_code_of_the_wrong_class_or_shape_stays_in_the_text() {
        let r = parse(b"450 5.1.1 odd\r\n");
        assert_eq!(
            (r.enhanced, r.lines.clone()),
            (None, vec!["5.1.1 odd".into()])
        );
        assert_eq!(r.to_string(), "450 5.1.1 odd");
        let r = parse(b"250-mx.example\r\n250 2.0.0 ok\r\n");
        assert_eq!(r.enhanced, None);
        assert_eq!(r.to_string(), "250 mx.example 2.0.0 ok");
    }
}
