//! Command-line parsing for the ESMTP server: verb and arguments, MAIL/RCPT
//! paths, ESMTP parameters (RFC 1869, 1870, 3461, 6152, 6531) and xtext.
//!
//! Owns the `Command` type, the MAIL/RCPT parameter types and their syntax
//! errors. Works on one command line (CRLF already stripped, bare CR/LF/NUL
//! already refused by the caller). May call: `smtp::address`, `smtp::reply`,
//! `crate::message`. Must never: do I/O, look at session state, or panic on
//! a command line (slices are cut at ASCII delimiters or taken with `get`).

use super::address::{self, AddrError};
use super::reply::Reply;
use crate::message::{BodyType, DsnRet, Notify};

/// Longest decimal number accepted in SIZE= and BDAT (fits in u64).
pub const MAX_DECIMAL_DIGITS: usize = 20;
/// RFC 3461 §4.4: ENVID is at most 100 characters.
pub const ENVID_MAX_OCTETS: usize = 100;
/// RFC 3461 §4.2: ORCPT is at most 500 characters.
pub const ORCPT_MAX_OCTETS: usize = 500;

/// One parsed ESMTP parameter: upper-cased keyword and raw value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param<'a> {
    /// Keyword, upper-cased.
    pub keyword: String,
    /// Value after `=`, as sent.
    pub value: Option<&'a str>,
}

/// A syntactically valid command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// `HELO domain`.
    Helo(&'a str),
    /// `EHLO domain`.
    Ehlo(&'a str),
    /// `MAIL FROM:<path> params`; `path` is inside the brackets.
    Mail {
        path: &'a str,
        params: Vec<Param<'a>>,
    },
    /// `RCPT TO:<path> params`; `path` is inside the brackets.
    Rcpt {
        path: &'a str,
        params: Vec<Param<'a>>,
    },
    /// `DATA`.
    Data,
    /// `BDAT size [LAST]` (RFC 3030).
    Bdat { size: u64, last: bool },
    /// `RSET`.
    Rset,
    /// `NOOP [string]`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `VRFY string`.
    Vrfy,
    /// `HELP [string]`.
    Help,
    /// `STARTTLS` (RFC 3207).
    StartTls,
    /// `AUTH mechanism [initial-response]` (RFC 4954).
    Auth {
        mechanism: &'a str,
        initial: Option<&'a str>,
    },
}

/// Why a command line was refused before any state was looked at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Verb not known: 500 5.5.1.
    Unknown,
    /// Argument syntax: 501 5.5.4 with this text.
    Syntax(&'static str),
    /// The MAIL reverse-path is malformed: 501 5.1.7.
    BadSender(&'static str),
    /// The RCPT forward-path is malformed: 501 5.1.3.
    BadRecipient(&'static str),
}

impl ParseError {
    /// The reply this error earns.
    pub fn reply(&self) -> Reply {
        match self {
            ParseError::Unknown => Reply::new(500, "5.5.1", "command unrecognized"),
            ParseError::Syntax(t) => Reply::new(501, "5.5.4", *t),
            ParseError::BadSender(t) => Reply::new(501, "5.1.7", *t),
            ParseError::BadRecipient(t) => Reply::new(501, "5.1.3", *t),
        }
    }
}

/// Parses one command line (without its CRLF).
pub fn parse_command(line: &str) -> Result<Command<'_>, ParseError> {
    let (verb, rest) = match line.find(' ') {
        Some(i) => (&line[..i], line[i + 1..].trim_matches(' ')),
        None => (line, ""),
    };
    let no_args = |c: Command<'static>| {
        if rest.is_empty() {
            Ok(c)
        } else {
            Err(ParseError::Syntax("syntax error: no arguments allowed"))
        }
    };
    match verb.to_ascii_uppercase().as_str() {
        "HELO" => Ok(Command::Helo(parse_helo_arg(rest)?)),
        "EHLO" => Ok(Command::Ehlo(parse_helo_arg(rest)?)),
        "MAIL" => {
            let (path, params) = parse_path_and_params(rest, "FROM:", ParseError::BadSender)?;
            Ok(Command::Mail { path, params })
        }
        "RCPT" => {
            let (path, params) = parse_path_and_params(rest, "TO:", ParseError::BadRecipient)?;
            Ok(Command::Rcpt { path, params })
        }
        "DATA" => no_args(Command::Data),
        "RSET" => no_args(Command::Rset),
        "QUIT" => no_args(Command::Quit),
        "STARTTLS" => no_args(Command::StartTls),
        "NOOP" => Ok(Command::Noop),
        "HELP" => Ok(Command::Help),
        "VRFY" if rest.is_empty() => Err(ParseError::Syntax("syntax: VRFY address")),
        "VRFY" => Ok(Command::Vrfy),
        "BDAT" => parse_bdat(rest),
        "AUTH" => {
            let mut words = rest.split(' ').filter(|w| !w.is_empty());
            match (words.next(), words.next(), words.next()) {
                (Some(mechanism), initial, None) => Ok(Command::Auth { mechanism, initial }),
                _ => Err(ParseError::Syntax(
                    "syntax: AUTH mechanism [initial-response]",
                )),
            }
        }
        _ => Err(ParseError::Unknown),
    }
}

/// HELO/EHLO take one printable-ASCII token (extra words are ignored, as
/// many clients send them).
fn parse_helo_arg(rest: &str) -> Result<&str, ParseError> {
    let arg = rest.split(' ').next().unwrap_or("");
    if arg.is_empty() {
        return Err(ParseError::Syntax("syntax: EHLO/HELO hostname"));
    }
    if !arg.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ParseError::Syntax("invalid hostname"));
    }
    Ok(arg)
}

fn parse_bdat(rest: &str) -> Result<Command<'static>, ParseError> {
    const USAGE: &str = "syntax: BDAT size [LAST]";
    let mut words = rest.split(' ').filter(|w| !w.is_empty());
    // Unlike SIZE=, a chunk size is not a limit to compare but a count of
    // octets that follow: one that does not fit in 64 bits is refused,
    // never taken as "read forever".
    let size = words
        .next()
        .filter(|w| w.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|w| w.parse::<u64>().ok())
        .ok_or(ParseError::Syntax(USAGE))?;
    let last = match (words.next(), words.next()) {
        (None, _) => false,
        (Some(w), None) if w.eq_ignore_ascii_case("LAST") => true,
        _ => return Err(ParseError::Syntax(USAGE)),
    };
    Ok(Command::Bdat { size, last })
}

/// Digits only, at most `MAX_DECIMAL_DIGITS`; saturates at u64::MAX.
pub fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > MAX_DECIMAL_DIGITS || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse::<u64>().unwrap_or(u64::MAX))
}

/// Splits `FROM:<path> K=V ...`; path errors are wrapped by `bad_path`,
/// parameter syntax errors are `Syntax`.
fn parse_path_and_params<'a>(
    rest: &'a str,
    prefix: &str,
    bad_path: fn(&'static str) -> ParseError,
) -> Result<(&'a str, Vec<Param<'a>>), ParseError> {
    let head_ok = rest
        .get(..prefix.len())
        .is_some_and(|h| h.eq_ignore_ascii_case(prefix));
    if !head_ok {
        return Err(bad_path(if prefix == "TO:" {
            "syntax: RCPT TO:<address>"
        } else {
            "syntax: MAIL FROM:<address>"
        }));
    }
    // Tolerate "MAIL FROM: <a@b>": common, and unambiguous.
    let after = rest[prefix.len()..].trim_start_matches(' ');
    let end = address::path_end(after).ok_or(bad_path("path must be enclosed in <>"))?;
    let path = &after[1..end];
    let tail = &after[end + 1..];
    if !tail.is_empty() && !tail.starts_with(' ') {
        return Err(bad_path("garbage after path"));
    }
    let params = parse_params(tail).map_err(ParseError::Syntax)?;
    Ok((path, params))
}

/// Parses `KEY[=VALUE]` words separated by spaces (RFC 5321 §4.1.2).
pub fn parse_params(s: &str) -> Result<Vec<Param<'_>>, &'static str> {
    let mut out: Vec<Param<'_>> = Vec::new();
    for word in s.split(' ').filter(|w| !w.is_empty()) {
        let (key, value) = match word.find('=') {
            Some(i) => (&word[..i], Some(&word[i + 1..])),
            None => (word, None),
        };
        let key_ok = key
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !key_ok {
            return Err("malformed parameter");
        }
        // esmtp-value: no '=', no controls; UTF-8 allowed (RFC 6531).
        if let Some(v) = value {
            if v.is_empty() || v.chars().any(|c| c == '=' || c.is_control()) {
                return Err("malformed parameter value");
            }
        }
        let keyword = key.to_ascii_uppercase();
        if out.iter().any(|p| p.keyword == keyword) {
            return Err("duplicate parameter");
        }
        out.push(Param { keyword, value });
    }
    Ok(out)
}

/// Why a parameter was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParamError {
    /// Not a parameter we implement: 555 5.5.4.
    Unsupported,
    /// A known parameter with a bad value: 501 5.5.4.
    Invalid(&'static str),
}

impl ParamError {
    /// The reply this error earns.
    pub fn reply(&self) -> Reply {
        match self {
            ParamError::Unsupported => Reply::new(555, "5.5.4", "unsupported parameter"),
            ParamError::Invalid(t) => Reply::new(501, "5.5.4", *t),
        }
    }
}

/// MAIL FROM parameters understood by the server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailParams {
    /// SIZE= (RFC 1870).
    pub size: Option<u64>,
    /// BODY= (RFC 6152).
    pub body: BodyType,
    /// SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    /// RET= (RFC 3461).
    pub ret: Option<DsnRet>,
    /// ENVID=, xtext-decoded (RFC 3461).
    pub envid: Option<String>,
}

/// Interprets MAIL parameters. AUTH= (RFC 4954) is accepted and ignored.
pub fn mail_params(params: &[Param<'_>]) -> Result<MailParams, ParamError> {
    let mut mp = MailParams::default();
    for p in params {
        let v = p.value;
        match (p.keyword.as_str(), v) {
            ("SIZE", Some(v)) => {
                mp.size = Some(parse_decimal(v).ok_or(ParamError::Invalid("bad SIZE value"))?)
            }
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("7BIT") => mp.body = BodyType::SevenBit,
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("8BITMIME") => {
                mp.body = BodyType::EightBitMime
            }
            ("BODY", _) => return Err(ParamError::Invalid("unsupported BODY type")),
            ("SMTPUTF8", None) => mp.smtputf8 = true,
            ("RET", Some(v)) if v.eq_ignore_ascii_case("FULL") => mp.ret = Some(DsnRet::Full),
            ("RET", Some(v)) if v.eq_ignore_ascii_case("HDRS") => mp.ret = Some(DsnRet::Hdrs),
            ("RET", _) => return Err(ParamError::Invalid("RET must be FULL or HDRS")),
            ("ENVID", Some(v)) => {
                let id = xtext_decode(v).ok_or(ParamError::Invalid("bad ENVID xtext"))?;
                if id.len() > ENVID_MAX_OCTETS || id.chars().any(|c| !(' '..='~').contains(&c)) {
                    return Err(ParamError::Invalid("bad ENVID value"));
                }
                mp.envid = Some(id);
            }
            ("AUTH", Some(_)) => {}
            ("SIZE" | "SMTPUTF8" | "ENVID" | "AUTH", _) => {
                return Err(ParamError::Invalid("malformed parameter value"))
            }
            _ => return Err(ParamError::Unsupported),
        }
    }
    Ok(mp)
}

/// RCPT TO parameters understood by the server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RcptParams {
    /// NOTIFY= (RFC 3461).
    pub notify: Option<Notify>,
    /// ORCPT= as sent (`addr-type;xtext`).
    pub orcpt: Option<String>,
}

/// Interprets RCPT parameters.
pub fn rcpt_params(params: &[Param<'_>]) -> Result<RcptParams, ParamError> {
    let mut rp = RcptParams::default();
    for p in params {
        match (p.keyword.as_str(), p.value) {
            ("NOTIFY", Some(v)) => rp.notify = Some(parse_notify(v)?),
            ("ORCPT", Some(v)) => {
                validate_orcpt(v)?;
                rp.orcpt = Some(v.to_string());
            }
            ("NOTIFY" | "ORCPT", None) => {
                return Err(ParamError::Invalid("malformed parameter value"))
            }
            _ => return Err(ParamError::Unsupported),
        }
    }
    Ok(rp)
}

fn parse_notify(v: &str) -> Result<Notify, ParamError> {
    let mut n = Notify::default();
    for item in v.split(',') {
        match item.to_ascii_uppercase().as_str() {
            "NEVER" => n.never = true,
            "SUCCESS" => n.success = true,
            "FAILURE" => n.failure = true,
            "DELAY" => n.delay = true,
            _ => return Err(ParamError::Invalid("bad NOTIFY value")),
        }
    }
    if n.never && (n.success || n.failure || n.delay) {
        return Err(ParamError::Invalid("NOTIFY=NEVER cannot be combined"));
    }
    Ok(n)
}

/// `addr-type ";" xtext` (RFC 3461 §4.2); UTF-8 forms (RFC 6533) pass if
/// they contain no controls.
fn validate_orcpt(v: &str) -> Result<(), ParamError> {
    let bad = ParamError::Invalid("bad ORCPT value");
    if v.len() > ORCPT_MAX_OCTETS {
        return Err(bad);
    }
    let (kind, addr) = v.split_once(';').ok_or(bad.clone())?;
    if !address::is_atom(kind) || addr.is_empty() {
        return Err(bad);
    }
    if addr.is_ascii() && xtext_decode(addr).is_none() {
        return Err(bad);
    }
    Ok(())
}

/// Decodes RFC 3461 xtext (`+XX` hex escapes, printable ASCII otherwise).
/// Returns `None` for malformed input or a result that is not UTF-8.
pub fn xtext_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                let hex = s.get(i + 1..i + 3)?;
                if !hex
                    .bytes()
                    .all(|h| h.is_ascii_digit() || (b'A'..=b'F').contains(&h))
                {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            c @ 33..=126 if c != b'=' => {
                out.push(c);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// Maps an address error to the reply for MAIL (`sender`) or RCPT.
pub fn address_reply(err: AddrError, sender: bool) -> Reply {
    let enh = if sender { "5.1.7" } else { "5.1.3" };
    match err {
        AddrError::Syntax => Reply::new(501, enh, "bad address syntax"),
        AddrError::TooLong => Reply::new(501, enh, "address too long"),
        AddrError::NonAscii => Reply::new(553, "5.6.7", "non-ASCII address requires SMTPUTF8"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_xtext() {
        assert_eq!(xtext_decode("a+2Bb+3D").as_deref(), Some("a+b="));
        assert_eq!(xtext_decode(""), Some(String::new()));
        for bad in ["+2b", "+2", "a=b", "a b", "+ZZ"] {
            assert_eq!(xtext_decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn parses_commands() {
        assert_eq!(
            parse_command("bdat 10 last"),
            Ok(Command::Bdat {
                size: 10,
                last: true
            })
        );
        assert_eq!(
            parse_command("BDAT 10 NOW"),
            Err(ParseError::Syntax("syntax: BDAT size [LAST]"))
        );
        assert!(parse_command("BDAT 123456789012345678901").is_err());
        let auth = parse_command("AUTH plain  =");
        assert_eq!(
            auth,
            Ok(Command::Auth {
                mechanism: "plain",
                initial: Some("=")
            })
        );
        let Ok(Command::Mail { path, params }) =
            parse_command("MAIL FROM:<\"a b\"@c> size=5 SMTPUTF8")
        else {
            panic!("MAIL not parsed");
        };
        assert_eq!(path, "\"a b\"@c");
        assert_eq!(
            params[0],
            Param {
                keyword: "SIZE".into(),
                value: Some("5")
            }
        );
        assert_eq!(
            params[1],
            Param {
                keyword: "SMTPUTF8".into(),
                value: None
            }
        );
        assert_eq!(parse_command("XYZZY"), Err(ParseError::Unknown));
    }

    #[test]
    fn parses_rcpt_params() {
        let params = parse_params("NOTIFY=failure,delay ORCPT=rfc822;a+40b").unwrap_or_default();
        let rp = rcpt_params(&params);
        let notify = Notify {
            failure: true,
            delay: true,
            ..Notify::default()
        };
        assert_eq!(rp.as_ref().map(|r| r.notify), Ok(Some(notify)));
        assert_eq!(parse_params("=x"), Err("malformed parameter"));
        assert_eq!(parse_params("A=b=c"), Err("malformed parameter value"));
        assert_eq!(parse_params("A=1 a=2"), Err("duplicate parameter"));
    }
}
