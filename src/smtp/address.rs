//! Mailbox syntax (RFC 5321 §4.1.2, RFC 6531 for UTF-8) and the path length
//! limits of RFC 5321 §4.5.3.1, plus relay-domain matching.
//!
//! Owns address validation only (`AddrError`, the length limits). May call:
//! nothing (pure, std only). Must never: do I/O, or panic on any input.

use std::net::{Ipv4Addr, Ipv6Addr};

/// RFC 5321 §4.5.3.1.1: local-part is at most 64 octets.
pub const LOCAL_PART_MAX_OCTETS: usize = 64;
/// RFC 5321 §4.5.3.1.2: domain is at most 255 octets.
pub const DOMAIN_MAX_OCTETS: usize = 255;
/// RFC 5321 §4.5.3.1.3: a path, brackets included, is at most 256 octets.
pub const PATH_MAX_OCTETS: usize = 256;

/// Why an address was refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum AddrError {
    /// Not a mailbox.
    Syntax,
    /// Over one of the RFC 5321 length limits.
    TooLong,
    /// Non-ASCII without SMTPUTF8.
    NonAscii,
}

/// Index of the `>` closing a path that starts with `<` (quotes honoured).
pub fn path_end(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    if b.first() != Some(&b'<') {
        return None;
    }
    let mut in_quotes = false;
    let mut i = 1;
    while i < b.len() {
        match b[i] {
            b'\\' if in_quotes => i += 1,
            b'"' => in_quotes = !in_quotes,
            b'>' if !in_quotes => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// RFC 5322 atext, plus UTF-8 when allowed.
fn is_atext(c: char, utf8: bool) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || (utf8 && !c.is_ascii())
}

/// One RFC 5321 Atom (ASCII only).
pub fn is_atom(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| is_atext(c, false))
}

/// Validates the inside of a path: `[A-d-l ":"] Mailbox`, and returns the
/// mailbox with any source route dropped (RFC 5321 §4.1.2 says to ignore
/// it). `utf8` allows RFC 6531 UTF-8 in local-part and domain.
pub fn parse_mailbox(path: &str, utf8: bool) -> Result<&str, AddrError> {
    if path.len() + 2 > PATH_MAX_OCTETS {
        return Err(AddrError::TooLong);
    }
    if !utf8 && !path.is_ascii() {
        return Err(AddrError::NonAscii);
    }
    let mailbox = match path.strip_prefix('@') {
        Some(route) => {
            let (route, mailbox) = route.split_once(':').ok_or(AddrError::Syntax)?;
            for hop in route.split(',') {
                let hop = hop.strip_prefix('@').unwrap_or(hop);
                check_domain(hop, utf8)?;
            }
            mailbox
        }
        None => path,
    };
    let at = mailbox.rfind('@').ok_or(AddrError::Syntax)?;
    let (local, domain) = (&mailbox[..at], &mailbox[at + 1..]);
    if local.len() > LOCAL_PART_MAX_OCTETS {
        return Err(AddrError::TooLong);
    }
    check_local_part(local, utf8)?;
    check_domain(domain, utf8)?;
    Ok(mailbox)
}

fn check_local_part(local: &str, utf8: bool) -> Result<(), AddrError> {
    if let Some(inner) = local.strip_prefix('"') {
        let inner = inner.strip_suffix('"').ok_or(AddrError::Syntax)?;
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            let ok = match c {
                '\\' => chars.next().is_some_and(|q| (' '..='~').contains(&q)),
                '"' => false,
                ' '..='~' => true,
                _ => utf8 && !c.is_ascii(),
            };
            if !ok {
                return Err(AddrError::Syntax);
            }
        }
        return Ok(());
    }
    let dot_string_ok = local
        .split('.')
        .all(|atom| !atom.is_empty() && atom.chars().all(|c| is_atext(c, utf8)));
    if dot_string_ok {
        Ok(())
    } else {
        Err(AddrError::Syntax)
    }
}

/// A domain name or an address literal (`[IPv4]`, `[IPv6:...]`).
pub fn check_domain(domain: &str, utf8: bool) -> Result<(), AddrError> {
    if domain.len() > DOMAIN_MAX_OCTETS {
        return Err(AddrError::TooLong);
    }
    if let Some(lit) = domain.strip_prefix('[') {
        let lit = lit.strip_suffix(']').ok_or(AddrError::Syntax)?;
        let ok = match lit.get(..5) {
            Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => lit[5..].parse::<Ipv6Addr>().is_ok(),
            _ => lit.parse::<Ipv4Addr>().is_ok(),
        };
        return if ok { Ok(()) } else { Err(AddrError::Syntax) };
    }
    let label_ok = |l: &str| {
        let ldh = |c: char| c.is_ascii_alphanumeric() || c == '-' || (utf8 && !c.is_ascii());
        !l.is_empty() && !l.starts_with('-') && !l.ends_with('-') && l.chars().all(ldh)
    };
    if domain.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(AddrError::Syntax)
    }
}

/// The domain of a mailbox, lower-cased, without a trailing dot.
pub fn domain_of(mailbox: &str) -> String {
    let d = mailbox.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
    d.trim_end_matches('.').to_lowercase()
}

/// True when `domain` (lower-case) is listed: an entry `example.com`
/// matches exactly, `*.example.com` matches strict subdomains only.
pub fn domain_matches(domain: &str, relay_domains: &[String]) -> bool {
    relay_domains
        .iter()
        .any(|entry| match entry.strip_prefix("*.") {
            Some(parent) => domain
                .strip_suffix(parent)
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            None => domain == entry,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_mailboxes() {
        for a in [
            "a@b",
            "first.last@example.com",
            "\"quoted > str\"@example.com",
            "x@[192.0.2.1]",
            "x@[IPv6:2001:db8::1]",
            "o'neil+tag@sub-domain.example",
        ] {
            assert_eq!(parse_mailbox(a, false), Ok(a), "{a}");
        }
        assert_eq!(
            parse_mailbox("@r1,@r2:u@d.example", false),
            Ok("u@d.example")
        );
        assert_eq!(
            parse_mailbox("jörg@bücher.example", true),
            Ok("jörg@bücher.example")
        );
    }

    #[test]
    fn refuses_bad_mailboxes() {
        for a in [
            "",
            "a",
            "@b",
            "a@",
            "a..b@c",
            ".a@c",
            "a@-b.c",
            "a@b-.c",
            "a@b..c",
            "a b@c",
            "a@[1.2.3]",
            "a@[IPv6:zz]",
            "a@[foo]",
            "\"a@b",
            "a@b,c",
        ] {
            assert_eq!(parse_mailbox(a, false), Err(AddrError::Syntax), "{a:?}");
        }
        assert_eq!(
            parse_mailbox("jörg@x.example", false),
            Err(AddrError::NonAscii)
        );
    }

    #[test]
    fn enforces_length_limits() {
        let local64 = "l".repeat(64);
        assert!(parse_mailbox(&format!("{local64}@d.example"), false).is_ok());
        let local65 = "l".repeat(65);
        let addr = format!("{local65}@d.example");
        assert_eq!(parse_mailbox(&addr, false), Err(AddrError::TooLong));
        // 254 inside + 2 brackets = 256: allowed; one more is not.
        let long_domain = |n: usize| format!("a@{}", "d.".repeat(n / 2) + "x");
        let ok = long_domain(250);
        assert_eq!(ok.len(), 253);
        assert!(parse_mailbox(&ok, false).is_ok());
        let domain = "d".repeat(63) + "." + &"e".repeat(63) + "." + &"f".repeat(62);
        let path255 = format!("{}@{domain}", "l".repeat(64));
        assert_eq!(path255.len(), 255);
        assert_eq!(parse_mailbox(&path255, false), Err(AddrError::TooLong));
    }

    #[test]
    fn matches_relay_domains() {
        let list = vec!["example.com".to_string(), "*.wild.example".to_string()];
        assert!(domain_matches("example.com", &list));
        assert!(!domain_matches("sub.example.com", &list));
        assert!(domain_matches("a.wild.example", &list));
        assert!(domain_matches("a.b.wild.example", &list));
        assert!(!domain_matches("wild.example", &list));
        assert!(!domain_matches("evilwild.example", &list));
        assert_eq!(domain_of("U@Example.COM."), "example.com");
    }

    #[test]
    fn finds_path_end_outside_quotes() {
        assert_eq!(path_end("<a@b> X"), Some(4));
        assert_eq!(path_end("<\"a>\\\"\"@b>"), Some(9));
        assert_eq!(path_end("a@b"), None);
        assert_eq!(path_end("<a@b"), None);
    }
}
