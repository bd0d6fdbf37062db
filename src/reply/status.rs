//! RFC 3463 enhanced status codes (`class.subject.detail`): the one type
//! and the one parser every stage uses (client replies, bounce
//! classification, DSN rendering, delivery results).
//!
//! Pure; no I/O. May call: nothing in the crate. Must never accept what
//! RFC 3463 does not: the class is one of 2, 4, 5; subject and detail are
//! 1 to 3 digits.

use std::fmt;

/// Most digits in the subject or detail part (RFC 3463 §2).
const MAX_PART_DIGITS: usize = 3;

/// An enhanced status code, `class.subject.detail`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct EnhancedStatus {
    /// 2, 4 or 5.
    pub class: u8,
    /// Subject (0-999).
    pub subject: u16,
    /// Detail (0-999).
    pub detail: u16,
}

impl EnhancedStatus {
    /// Parses exactly one `x.y.z` word.
    pub fn parse(word: &str) -> Option<EnhancedStatus> {
        let mut parts = word.split('.');
        let (Some(c), Some(s), Some(d), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let class = match c {
            "2" => 2,
            "4" => 4,
            "5" => 5,
            _ => return None,
        };
        Some(EnhancedStatus {
            class,
            subject: number(s)?,
            detail: number(d)?,
        })
    }

    /// The code at the start of a reply's text (`"5.1.1 no such user"`),
    /// if its class matches the reply code's (`code` 0: any class).
    pub fn at_start(code: u16, text: &str) -> Option<EnhancedStatus> {
        let e = EnhancedStatus::parse(text.split(' ').next()?)?;
        (code == 0 || u16::from(e.class) == code / 100).then_some(e)
    }
}

fn number(p: &str) -> Option<u16> {
    if p.is_empty() || p.len() > MAX_PART_DIGITS || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse().ok()
}

impl fmt::Display for EnhancedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_rfc3463_codes() {
        let e = EnhancedStatus::parse("5.1.10").unwrap();
        assert_eq!((e.class, e.subject, e.detail), (5, 1, 10));
        assert_eq!(e.to_string(), "5.1.10");
        for bad in [
            "", "5", "5.1", "5.1.1.1", "3.1.1", "05.1.1", "5.1000.1", "5.1.", "5..1", "5.a.1",
            "+5.1.1", "5.1.1 ",
        ] {
            assert_eq!(EnhancedStatus::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn at_start_wants_the_reply_codes_class() {
        assert!(EnhancedStatus::at_start(550, "5.1.1 no such user").is_some());
        assert!(EnhancedStatus::at_start(450, "5.1.1 no such user").is_none());
        assert!(EnhancedStatus::at_start(0, "4.7.0 later").is_some());
        assert!(EnhancedStatus::at_start(550, "no such user").is_none());
    }
}
