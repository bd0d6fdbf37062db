//! Bounce classification: a remote reply (or our own `[internal]` reply)
//! to one of Momentum's bounce classes (reference §6).
//!
//! Owns `BounceClass` (codes, names) and the rule tables. May call:
//! `smtp::status` (the enhanced-code parser), `smtp::reply` (the reply
//! type). Must never: do I/O, or leave
//! a reply without a class. Pure and table-driven. Order of the rules:
//! 1. 2xx/3xx replies are not bounces: `Undetermined`.
//! 2. An enhanced status code with a specific meaning (`SPECIFIC`), taken
//!    from `enhanced` or, failing that, from the start of `text`.
//! 3. Reply-text patterns (`PATTERNS`, case-insensitive substrings, first
//!    match wins), for codes such as 5.7.1 or 5.0.0 that say little.
//! 4. The enhanced code's subject alone (`by_subject`).
//! 5. The reply code: 4xx `SoftBounce`, 5xx `GenericBounce`.
//!
//! A 4xx reply is transient whatever it says: it keeps a specific class
//! only for DNS failure, mailbox full and too large, and is a
//! `SoftBounce` otherwise.

use std::fmt;

use crate::reply::status::EnhancedStatus;
use crate::reply::Reply;

/// Momentum's bounce classes, with their numeric codes.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum BounceClass {
    /// 1: response text not recognised.
    Undetermined,
    /// 10: no such user.
    InvalidRecipient,
    /// 20: temporary failure.
    SoftBounce,
    /// 21: bounced on DNS.
    DnsFailure,
    /// 22: over quota.
    MailboxFull,
    /// 23: message too big.
    TooLarge,
    /// 24: expired undelivered.
    Timeout,
    /// 25: failed by local policy or config.
    AdminFailure,
    /// 30: recipient could not be determined.
    GenericBounceNoRcpt,
    /// 40: unspecified reason.
    GenericBounce,
    /// 50: receiver blocked it.
    MailBlock,
    /// 51: sender judged a spam source.
    SpamBlock,
    /// 52: content judged spam.
    SpamContent,
    /// 53: attachment blocked.
    ProhibitedAttachment,
    /// 54: relaying refused.
    RelayDenied,
    /// 60: vacation or auto-reply.
    AutoReply,
    /// 70: delivery delayed.
    TransientFailure,
    /// 80: subscribe request.
    Subscribe,
    /// 90: unsubscribe request.
    Unsubscribe,
    /// 100: challenge/response probe.
    ChallengeResponse,
}

use BounceClass::*;

/// Every class, in code order.
pub const ALL_CLASSES: [BounceClass; 20] = [
    Undetermined,
    InvalidRecipient,
    SoftBounce,
    DnsFailure,
    MailboxFull,
    TooLarge,
    Timeout,
    AdminFailure,
    GenericBounceNoRcpt,
    GenericBounce,
    MailBlock,
    SpamBlock,
    SpamContent,
    ProhibitedAttachment,
    RelayDenied,
    AutoReply,
    TransientFailure,
    Subscribe,
    Unsubscribe,
    ChallengeResponse,
];

impl BounceClass {
    /// The numeric code (as logged in the bouncelog).
    pub fn code(self) -> u16 {
        match self {
            Undetermined => 1,
            InvalidRecipient => 10,
            SoftBounce => 20,
            DnsFailure => 21,
            MailboxFull => 22,
            TooLarge => 23,
            Timeout => 24,
            AdminFailure => 25,
            GenericBounceNoRcpt => 30,
            GenericBounce => 40,
            MailBlock => 50,
            SpamBlock => 51,
            SpamContent => 52,
            ProhibitedAttachment => 53,
            RelayDenied => 54,
            AutoReply => 60,
            TransientFailure => 70,
            Subscribe => 80,
            Unsubscribe => 90,
            ChallengeResponse => 100,
        }
    }

    /// The class name as Momentum prints it.
    pub fn name(self) -> &'static str {
        match self {
            Undetermined => "Undetermined",
            InvalidRecipient => "Invalid Recipient",
            SoftBounce => "Soft Bounce",
            DnsFailure => "DNS Failure",
            MailboxFull => "Mailbox Full",
            TooLarge => "Too Large",
            Timeout => "Timeout",
            AdminFailure => "Admin Failure",
            GenericBounceNoRcpt => "Generic Bounce: No RCPT",
            GenericBounce => "Generic Bounce",
            MailBlock => "Mail Block",
            SpamBlock => "Spam Block",
            SpamContent => "Spam Content",
            ProhibitedAttachment => "Prohibited Attachment",
            RelayDenied => "Relay Denied",
            AutoReply => "Auto-Reply",
            TransientFailure => "Transient Failure",
            Subscribe => "Subscribe",
            Unsubscribe => "Unsubscribe",
            ChallengeResponse => "Challenge-Response",
        }
    }

    /// The class with this numeric code.
    pub fn from_code(code: u16) -> Option<BounceClass> {
        ALL_CLASSES.into_iter().find(|c| c.code() == code)
    }
}

impl fmt::Display for BounceClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Enhanced codes (`subject.detail`, any class) with a specific meaning.
const SPECIFIC: &[((u16, u16), BounceClass)] = &[
    ((1, 1), InvalidRecipient), // bad destination mailbox address
    ((1, 2), DnsFailure),       // bad destination system address
    ((1, 3), InvalidRecipient), // bad destination mailbox address syntax
    ((1, 6), InvalidRecipient), // destination mailbox has moved
    ((1, 10), DnsFailure),      // null MX (RFC 7505)
    ((2, 1), InvalidRecipient), // mailbox disabled
    ((2, 2), MailboxFull),      // mailbox full
    ((2, 3), TooLarge),         // message length exceeds administrative limit
    ((3, 4), TooLarge),         // message too big for system
    ((4, 3), DnsFailure),       // directory server failure
    ((4, 4), DnsFailure),       // unable to route
    ((4, 7), Timeout),          // delivery time expired
    ((7, 1), MailBlock),        // delivery not authorized (after patterns)
];

/// Codes in `SPECIFIC` that say too little to beat a text pattern.
const WEAK: &[(u16, u16)] = &[(7, 1)];

/// Reply-text patterns, lower case, first match wins.
const PATTERNS: &[(&str, BounceClass)] = &[
    ("manually purged", AdminFailure),
    ("manually failed", AdminFailure),
    ("blackholed", AdminFailure),
    ("discarded by policy", AdminFailure),
    ("exceeded max time", Timeout),
    ("exceeded max retries", Timeout),
    ("message expired", Timeout),
    ("mailbox full", MailboxFull),
    ("mailbox is full", MailboxFull),
    ("over quota", MailboxFull),
    ("quota exceeded", MailboxFull),
    ("too large", TooLarge),
    ("too big", TooLarge),
    ("size limit", TooLarge),
    ("user unknown", InvalidRecipient),
    ("unknown user", InvalidRecipient),
    ("no such user", InvalidRecipient),
    ("unknown recipient", InvalidRecipient),
    ("no such recipient", InvalidRecipient),
    ("invalid recipient", InvalidRecipient),
    ("mailbox not found", InvalidRecipient),
    ("mailbox unavailable", InvalidRecipient),
    ("does not exist", InvalidRecipient),
    ("domain lookup failed", DnsFailure),
    ("no mx or a", DnsFailure),
    ("null mx", DnsFailure),
    ("host not found", DnsFailure),
    ("domain not found", DnsFailure),
    ("unroutable", DnsFailure),
    ("unrouteable", DnsFailure),
    ("relay access denied", RelayDenied),
    ("relaying denied", RelayDenied),
    ("relay not permitted", RelayDenied),
    ("unable to relay", RelayDenied),
    ("not permitted to relay", RelayDenied),
    ("attachment", ProhibitedAttachment),
    ("virus", ProhibitedAttachment),
    ("spam content", SpamContent),
    ("content rejected", SpamContent),
    ("looks like spam", SpamContent),
    ("message content", SpamContent),
    ("blacklist", SpamBlock),
    ("blocklist", SpamBlock),
    ("spamhaus", SpamBlock),
    ("spamcop", SpamBlock),
    ("dnsbl", SpamBlock),
    ("reputation", SpamBlock),
    ("spam", SpamBlock),
    ("blocked", MailBlock),
    ("access denied", MailBlock),
    ("not authorized", MailBlock),
    ("out of office", AutoReply),
    ("auto-reply", AutoReply),
    ("autoreply", AutoReply),
    ("vacation", AutoReply),
    ("challenge", ChallengeResponse),
    ("unsubscribe", Unsubscribe),
    ("subscribe", Subscribe),
];

/// Classes a 4xx reply may keep; any other becomes `SoftBounce`.
const TRANSIENT_KEEPS: &[BounceClass] = &[DnsFailure, MailboxFull, TooLarge];

/// Classifies a reply (remote, or ours): its code, enhanced code and text.
pub fn classify_reply(reply: &Reply) -> BounceClass {
    classify(reply.code, reply.enhanced, &reply.text())
}

/// Classifies one reply: `reply_code` (e.g. 550), the enhanced status code
/// if known (e.g. 5.1.1; failing that, one at the start of `text` counts),
/// and the reply text.
pub fn classify(reply_code: u16, enhanced: Option<EnhancedStatus>, text: &str) -> BounceClass {
    if (200..400).contains(&reply_code) {
        return Undetermined;
    }
    let code = enhanced
        .map(parts)
        .or_else(|| text.split_whitespace().next().and_then(parse_enhanced));
    let found = rules(code, text);
    let transient = (400..500).contains(&reply_code)
        || (reply_code == 0 && code.is_some_and(|(class, _, _)| class == 4));
    match found {
        Some(c) if transient && !TRANSIENT_KEEPS.contains(&c) => SoftBounce,
        Some(c) => c,
        None if transient => SoftBounce,
        None if (500..600).contains(&reply_code) => GenericBounce,
        None if code.is_some_and(|(class, _, _)| class == 5) => GenericBounce,
        None => Undetermined,
    }
}

/// Rules 2–4 of the module comment.
fn rules(code: Option<(u16, u16, u16)>, text: &str) -> Option<BounceClass> {
    let sd = code.map(|(_, s, d)| (s, d));
    let specific = sd.and_then(|k| SPECIFIC.iter().find(|(c, _)| *c == k).map(|(_, v)| *v));
    if let (Some(c), Some(k)) = (specific, sd) {
        if !WEAK.contains(&k) {
            return Some(c);
        }
    }
    let lower = text.to_ascii_lowercase();
    if let Some((_, c)) = PATTERNS.iter().find(|(p, _)| lower.contains(p)) {
        return Some(*c);
    }
    specific.or_else(|| code.and_then(|(_, s, _)| by_subject(s)))
}

/// Rule 4: the meaning of an enhanced code's subject (RFC 3463 §3).
fn by_subject(subject: u16) -> Option<BounceClass> {
    match subject {
        1 => Some(InvalidRecipient),
        7 => Some(MailBlock),
        2..=6 => Some(GenericBounce),
        _ => None,
    }
}

/// `class.subject.detail` with class 2, 4 or 5 and up to 3 digits each.
fn parse_enhanced(s: &str) -> Option<(u16, u16, u16)> {
    EnhancedStatus::parse(s).map(parts)
}

/// The three parts of an enhanced code, as the rule tables use them.
fn parts(e: EnhancedStatus) -> (u16, u16, u16) {
    (u16::from(e.class), e.subject, e.detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_classified_by_code_enhanced_code_and_text() {
        assert_eq!(
            classify_reply(&Reply::new(550, "5.1.1", "no such user")),
            InvalidRecipient
        );
        assert_eq!(
            classify_reply(&Reply::internal(451, (4, 4, 1), "connect failed")),
            SoftBounce
        );
        // Without an enhanced code (the client keeps one of the wrong class
        // in the text), the text decides.
        assert_eq!(
            classify_reply(&Reply::plain(550, "5.2.2 mailbox full")),
            MailboxFull
        );
        // Every line's text counts.
        let multi = Reply {
            code: 550,
            enhanced: EnhancedStatus::parse("5.7.1"),
            lines: vec!["Message rejected:".into(), "listed at Spamhaus".into()],
        };
        assert_eq!(classify_reply(&multi), SpamBlock);
    }

    #[test]
    fn codes_and_names_round_trip() {
        for c in ALL_CLASSES {
            assert_eq!(BounceClass::from_code(c.code()), Some(c));
        }
        assert_eq!(BounceClass::from_code(99), None);
        assert_eq!(InvalidRecipient.code(), 10);
        assert_eq!(RelayDenied.to_string(), "Relay Denied");
        assert_eq!(ChallengeResponse.code(), 100);
    }

    #[test]
    fn classification_table() {
        // (reply code, enhanced, text, expected)
        let cases: &[(u16, Option<&str>, &str, BounceClass)] = &[
            (250, Some("2.0.0"), "ok", Undetermined),
            (550, Some("5.1.1"), "user unknown", InvalidRecipient),
            (
                550,
                None,
                "5.1.1 <a@b>: Recipient address rejected",
                InvalidRecipient,
            ),
            (550, Some("5.1.1"), "spam detected", InvalidRecipient),
            (550, None, "No such user here", InvalidRecipient),
            (550, Some("5.1.2"), "host unknown", DnsFailure),
            (
                550,
                Some("5.1.10"),
                "Recipient address has null MX",
                DnsFailure,
            ),
            (552, Some("5.2.2"), "mailbox full", MailboxFull),
            (452, Some("4.2.2"), "mailbox full", MailboxFull),
            (552, Some("5.3.4"), "message size limit exceeded", TooLarge),
            (552, None, "Message too large", TooLarge),
            (
                554,
                Some("5.4.4"),
                "[internal] Domain Lookup Failed",
                DnsFailure,
            ),
            (
                454,
                Some("4.4.4"),
                "[internal] no MX or A for domain",
                DnsFailure,
            ),
            (
                554,
                Some("5.4.7"),
                "[internal] exceeded max time without delivery",
                Timeout,
            ),
            (
                554,
                Some("5.7.0"),
                "[internal] Message manually purged",
                AdminFailure,
            ),
            (554, Some("5.7.0"), "[internal] Blackholed", AdminFailure),
            (550, Some("5.7.1"), "relaying denied", RelayDenied),
            (554, Some("5.7.1"), "Relay access denied", RelayDenied),
            (
                554,
                Some("5.7.1"),
                "Service unavailable; listed at Spamhaus",
                SpamBlock,
            ),
            (
                550,
                Some("5.7.1"),
                "Message rejected as spam content",
                SpamContent,
            ),
            (
                552,
                Some("5.7.0"),
                "Prohibited attachment type",
                ProhibitedAttachment,
            ),
            (550, Some("5.7.1"), "Delivery not authorized", MailBlock),
            (550, Some("5.7.1"), "go away", MailBlock),
            (550, Some("5.7.26"), "DMARC policy violation", MailBlock),
            (
                451,
                Some("4.7.1"),
                "Greylisted, please try again",
                SoftBounce,
            ),
            (421, Some("4.7.0"), "Temporarily deferred: spam", SoftBounce),
            (
                450,
                Some("4.4.1"),
                "[internal] Connection Timed Out",
                SoftBounce,
            ),
            (451, None, "try later", SoftBounce),
            (550, Some("5.0.0"), "out of office until Monday", AutoReply),
            (550, None, "Please unsubscribe me", Unsubscribe),
            (
                550,
                None,
                "challenge: verify your message",
                ChallengeResponse,
            ),
            (554, Some("5.6.0"), "bad content encoding", GenericBounce),
            (554, None, "something odd", GenericBounce),
            (0, None, "something odd", Undetermined),
            (0, Some("5.1.1"), "", InvalidRecipient),
            (0, Some("4.2.2"), "", MailboxFull),
            (550, Some("9.9.9"), "bogus enhanced code", GenericBounce),
        ];
        for (i, (code, enh, text, want)) in cases.iter().enumerate() {
            assert_eq!(
                classify(*code, enh.and_then(EnhancedStatus::parse), text),
                *want,
                "case {i}: {code} {enh:?} {text:?}"
            );
        }
    }

    #[test]
    fn enhanced_parsing() {
        assert_eq!(parse_enhanced("5.1.1"), Some((5, 1, 1)));
        assert_eq!(parse_enhanced("4.7.26"), Some((4, 7, 26)));
        assert_eq!(parse_enhanced("3.1.1"), None);
        assert_eq!(parse_enhanced("5.1"), None);
        assert_eq!(parse_enhanced("5.1.1.1"), None);
        assert_eq!(parse_enhanced("5.1.x"), None);
        assert_eq!(parse_enhanced("5.1.1234"), None);
    }
}
