//! Byte-level helpers for building DSNs: RFC 5322 dates, header folding,
//! text wrapping, header-section extraction and 8-bit/MIME-safety checks.
//!
//! Owns the line limits (`MAX_LINE_OCTETS`, `WRAP_COLUMN_OCTETS`). May call:
//! nothing in the crate; the `time` crate formats dates. Must never: do I/O
//! or read a clock (times come in as ms), panic on any input (an
//! unformattable date clamps or falls back), or let text written through
//! `push_field`/`push_paragraph` start a new line or field (controls become
//! spaces).

use time::format_description::well_known::Rfc2822;
use time::OffsetDateTime;

/// RFC 5322 §2.1.1 hard limit on a line, CRLF excluded.
pub const MAX_LINE_OCTETS: usize = 998;
/// Where header fields are folded and text is wrapped when possible.
pub const WRAP_COLUMN_OCTETS: usize = 76;
/// Longest unbreakable piece put on one line; longer words are split so
/// that no line can exceed `MAX_LINE_OCTETS` whatever the indentation.
const MAX_WORD_OCTETS: usize = 900;
/// Latest instant `time` formats (9999-12-31T23:59:59Z).
const MAX_FORMATTABLE_SECS: i64 = 253_402_300_799;
/// Used only if formatting fails, which the clamp above rules out.
const EPOCH_DATE: &str = "Thu, 01 Jan 1970 00:00:00 +0000";

/// `ms` since the Unix epoch as an RFC 5322 date in UTC.
pub fn rfc5322_date(ms: u64) -> String {
    let secs = i64::try_from(ms / 1000)
        .unwrap_or(MAX_FORMATTABLE_SECS)
        .min(MAX_FORMATTABLE_SECS);
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc2822).ok())
        .unwrap_or_else(|| EPOCH_DATE.to_string())
}

/// `s` with every control character (CR and LF included) turned into a
/// space, so that untrusted text cannot start a new line or field.
pub fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `s` reduced to ASCII letters, digits and `-`, for ids and boundaries.
pub fn token(s: &str) -> String {
    let t: String = s
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    if t.is_empty() {
        "0".to_string()
    } else {
        t
    }
}

/// Decodes RFC 3461 xtext (`+HH` escapes); malformed escapes are kept.
pub fn xtext_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'+' && i + 2 < b.len() {
            let (hi, lo) = (b[i + 1], b[i + 2]);
            if is_upper_hex(hi) && is_upper_hex(lo) {
                out.push(hex_value(hi) << 4 | hex_value(lo));
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// xtext escapes use upper-case hex digits only.
fn is_upper_hex(d: u8) -> bool {
    matches!(d, b'0'..=b'9' | b'A'..=b'F')
}

/// Value of one ASCII hex digit (the caller has checked it is one).
fn hex_value(d: u8) -> u8 {
    match d {
        b'0'..=b'9' => d - b'0',
        _ => d.wrapping_sub(b'A').wrapping_add(10),
    }
}

/// Splits `text` into words no longer than `MAX_WORD_OCTETS`, cutting
/// over-long words at character boundaries.
fn words(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for mut w in text.split_whitespace() {
        while w.len() > MAX_WORD_OCTETS {
            let mut cut = MAX_WORD_OCTETS;
            while !w.is_char_boundary(cut) {
                cut -= 1;
            }
            out.push(&w[..cut]);
            w = &w[cut..];
        }
        out.push(w);
    }
    out
}

/// Greedy word wrap: the first line starts with `first`, later ones with
/// `rest`; lines break before `WRAP_COLUMN_OCTETS` where words allow.
fn fill(first: &str, rest: &str, text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = first.to_string();
    let mut empty = true;
    for w in words(text) {
        if !empty && line.len() + 1 + w.len() > WRAP_COLUMN_OCTETS {
            lines.push(std::mem::replace(&mut line, rest.to_string()));
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(w);
        empty = false;
    }
    lines.push(line);
    lines
}

/// Appends `Name: value` CRLF, folded (RFC 5322 §2.2.3) at whitespace.
pub fn push_field(out: &mut Vec<u8>, name: &str, value: &str) {
    for l in fill(&format!("{name}: "), " ", &one_line(value)) {
        out.extend_from_slice(l.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// Appends `text` wrapped as a paragraph with the given indentation.
pub fn push_paragraph(out: &mut Vec<u8>, first: &str, rest: &str, text: &str) {
    for l in fill(first, rest, &one_line(text)) {
        out.extend_from_slice(l.trim_end().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// The header section of `content`, through the CRLF ending its last
/// field (empty when the message starts with a blank line; the whole
/// content when there is no body).
pub fn header_section(content: &[u8]) -> &[u8] {
    if content.starts_with(b"\r\n") {
        return &[];
    }
    match content.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(pos) => &content[..pos + 2],
        None => content,
    }
}

/// True when any byte has the high bit set.
pub fn has_8bit(bytes: &[u8]) -> bool {
    bytes.iter().any(|b| *b >= 0x80)
}

/// True when `bytes` can be sent as 7bit/8bit MIME: no NUL, CR and LF only
/// as CRLF pairs, no line over `MAX_LINE_OCTETS`.
pub fn is_mime_safe(bytes: &[u8]) -> bool {
    let mut line_len = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            0 => return false,
            b'\r' => {
                if bytes.get(i + 1) != Some(&b'\n') {
                    return false;
                }
                line_len = 0;
                i += 2;
                continue;
            }
            b'\n' => return false,
            _ => {
                line_len += 1;
                if line_len > MAX_LINE_OCTETS {
                    return false;
                }
            }
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_700_000_000_123),
            "Tue, 14 Nov 2023 22:13:20 +0000"
        );
        assert_eq!(rfc5322_date(u64::MAX), "Fri, 31 Dec 9999 23:59:59 +0000");
    }

    #[test]
    fn xtext() {
        assert_eq!(xtext_decode("rfc822;a+2Bb@x"), "rfc822;a+b@x");
        assert_eq!(xtext_decode("a+"), "a+");
        assert_eq!(xtext_decode("a+2"), "a+2");
        assert_eq!(xtext_decode("a+zz"), "a+zz");
        assert_eq!(xtext_decode("+3D"), "=");
        assert_eq!(xtext_decode("a++1b"), "a++1b");
    }

    #[test]
    fn folding_keeps_lines_short() {
        let mut out = Vec::new();
        let long = "word ".repeat(100) + &"x".repeat(3000);
        push_field(
            &mut out,
            "Diagnostic-Code",
            &format!("smtp; 550 {long}\r\nX-Injected: 1"),
        );
        let text = String::from_utf8(out).unwrap();
        for line in text.split("\r\n") {
            assert!(line.len() <= MAX_LINE_OCTETS, "{}", line.len());
        }
        assert!(text.starts_with("Diagnostic-Code: smtp; 550 word"));
        assert!(!text.contains("\r\nX-Injected"));
        assert!(text
            .lines()
            .skip(1)
            .all(|l| l.is_empty() || l.starts_with(' ')));
    }

    #[test]
    fn header_sections() {
        assert_eq!(
            header_section(b"A: 1\r\nB: 2\r\n\r\nbody\r\n"),
            b"A: 1\r\nB: 2\r\n"
        );
        assert_eq!(header_section(b"\r\nbody\r\n"), b"");
        assert_eq!(header_section(b"A: 1\r\n"), b"A: 1\r\n");
    }

    #[test]
    fn mime_safety() {
        assert!(is_mime_safe(b"a\r\nb\r\n"));
        assert!(!is_mime_safe(b"a\nb\r\n"));
        assert!(!is_mime_safe(b"a\rb\r\n"));
        assert!(!is_mime_safe(b"a\0b\r\n"));
        assert!(is_mime_safe(&[b'x'; MAX_LINE_OCTETS]));
        assert!(!is_mime_safe(&[b'x'; MAX_LINE_OCTETS + 1]));
    }
}
