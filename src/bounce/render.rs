//! Composes the RFC 3464 `multipart/report` DSN: top-level header, the
//! human-readable part, `message/delivery-status`, and the original
//! (whole or headers only). Callers have already filtered the reports by
//! the NOTIFY rules.
//!
//! Owns the DSN layout. May call: `bounce::format`, the `bounce` types,
//! `crate::message`, `smtp::status`. Must never: do I/O or read a clock
//! (bytes and time in, bytes out), write a header field other than through
//! `push_field` (folded, controls removed), quote an original that 8BITMIME
//! cannot carry (headers, then nothing, instead), or use a MIME boundary
//! that occurs in a part.

use super::format::{
    has_8bit, header_section, is_mime_safe, one_line, push_field, push_paragraph, rfc5322_date,
    token, xtext_decode,
};
use super::{Action, DsnSettings, InlineOriginal, RecipientReport};
use crate::message::{DsnRet, Envelope};

/// Everything a DSN is made from.
pub struct Input<'a> {
    pub settings: &'a DsnSettings,
    pub original: &'a Envelope,
    pub content: &'a [u8],
    pub reports: &'a [&'a RecipientReport],
    pub now_ms: u64,
    pub unique_id: &'a str,
}

/// The DSN bytes and whether they need an 8BITMIME transport.
pub struct Rendered {
    pub bytes: Vec<u8>,
    pub eight_bit: bool,
}

/// The kind of notification, by its most serious report.
#[derive(Copy, Clone, PartialEq, Eq)]
enum Kind {
    Failure,
    Delay,
    Success,
}

impl Kind {
    fn of(reports: &[&RecipientReport]) -> Kind {
        if reports.iter().any(|r| r.action == Action::Failed) {
            Kind::Failure
        } else if reports.iter().any(|r| r.action == Action::Delayed) {
            Kind::Delay
        } else {
            Kind::Success
        }
    }

    fn of_action(action: Action) -> Kind {
        match action {
            Action::Failed => Kind::Failure,
            Action::Delayed => Kind::Delay,
            Action::Delivered | Action::Relayed | Action::Expanded => Kind::Success,
        }
    }

    /// Opens the human-readable paragraph for recipients of this kind.
    fn intro(self) -> &'static str {
        match self {
            Kind::Failure => {
                "Your message could not be delivered to the following recipients. \
                 This is a permanent error; the mail system will not try again."
            }
            Kind::Delay => {
                "Delivery of your message to the following recipients has been delayed. \
                 The mail system is still trying; you do not need to send the message again."
            }
            Kind::Success => {
                "Your message was delivered, or handed on to a system that will not \
                 report further, for the following recipients."
            }
        }
    }

    fn subject(self) -> &'static str {
        match self {
            Kind::Failure => "Undelivered Mail Returned to Sender",
            Kind::Delay => "Delayed Mail (still being retried)",
            Kind::Success => "Successful Mail Delivery Report",
        }
    }
}

/// The third part, decided from RET, `bounces_inline_original`, the kind
/// of DSN and what the original content allows.
enum Original<'a> {
    None,
    Headers(&'a [u8]),
    Full(&'a [u8]),
}

fn choose_original<'a>(input: &Input<'a>, kind: Kind) -> Original<'a> {
    // The sender's RET wins over the operator's default (RFC 3461 §4.3).
    let wanted = match input.original.ret {
        Some(DsnRet::Full) => InlineOriginal::All,
        Some(DsnRet::Hdrs) => InlineOriginal::Headers,
        None => input.settings.inline_original,
    };
    // The full content goes back only with failures (RFC 3461 §4.3).
    let wanted = match (wanted, kind) {
        (InlineOriginal::All, Kind::Delay | Kind::Success) => InlineOriginal::Headers,
        (w, _) => w,
    };
    let headers = header_section(input.content);
    match wanted {
        InlineOriginal::All if is_mime_safe(input.content) => Original::Full(input.content),
        // Content that 8BITMIME cannot carry (bare LF, NUL, long lines,
        // BINARYMIME) falls back to its headers.
        InlineOriginal::All | InlineOriginal::Headers if is_mime_safe(headers) => {
            Original::Headers(headers)
        }
        _ => Original::None,
    }
}

/// Renders the whole DSN.
pub fn render(input: &Input<'_>) -> Rendered {
    let kind = Kind::of(input.reports);
    let original = choose_original(input, kind);
    let text = human_text(input, &original);
    let status = delivery_status(input);
    let (orig_type, orig_desc, orig_bytes) = match original {
        Original::None => ("", "", &[][..]),
        Original::Headers(h) => ("text/rfc822-headers", "Original Message Headers", h),
        Original::Full(c) => ("message/rfc822", "Original Message", c),
    };
    let boundary = boundary(input.unique_id, &[&text, &status, orig_bytes]);
    let body_8bit = has_8bit(&text) || has_8bit(&status) || has_8bit(orig_bytes);

    let mut out = Vec::with_capacity(2048 + orig_bytes.len());
    top_header(&mut out, input, kind, &boundary, body_8bit);
    out.extend_from_slice(b"\r\nThis is a MIME-encapsulated message.\r\n");

    let charset = if has_8bit(&text) { "utf-8" } else { "us-ascii" };
    let text_type = format!("text/plain; charset={charset}");
    part(&mut out, &boundary, "Notification", &text_type, &text);
    part(
        &mut out,
        &boundary,
        "Delivery report",
        "message/delivery-status",
        &status,
    );
    if !orig_type.is_empty() {
        let mut body = orig_bytes.to_vec();
        if !body.ends_with(b"\r\n") {
            body.extend_from_slice(b"\r\n");
        }
        part(&mut out, &boundary, orig_desc, orig_type, &body);
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    // UTF-8 addresses (SMTPUTF8) can put 8-bit bytes in the header too.
    Rendered {
        eight_bit: has_8bit(&out),
        bytes: out,
    }
}

/// A boundary derived from `unique_id` that occurs in none of the parts.
fn boundary(unique_id: &str, parts: &[&[u8]]) -> String {
    let base = format!("=_impulse-dsn-{}", token(unique_id));
    let mut candidate = base.clone();
    let mut n = 0u32;
    while parts.iter().any(|p| contains(p, candidate.as_bytes())) {
        n += 1;
        candidate = format!("{base}-{n}");
    }
    candidate
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn top_header(out: &mut Vec<u8>, input: &Input<'_>, kind: Kind, boundary: &str, eight: bool) {
    let s = input.settings;
    let from = format!("Mail Delivery System <{}>", one_line(&s.mailerdaemon));
    push_field(out, "From", &from);
    push_field(
        out,
        "To",
        &format!("<{}>", one_line(&input.original.mail_from)),
    );
    push_field(out, "Subject", kind.subject());
    push_field(out, "Date", &rfc5322_date(input.now_ms));
    let msgid = format!("<{}@{}>", token(input.unique_id), one_line(&s.hostname));
    push_field(out, "Message-ID", &msgid);
    push_field(out, "Auto-Submitted", "auto-replied");
    push_field(out, "MIME-Version", "1.0");
    let ctype = format!("multipart/report; report-type=delivery-status; boundary=\"{boundary}\"");
    push_field(out, "Content-Type", &ctype);
    if eight {
        push_field(out, "Content-Transfer-Encoding", "8bit");
    }
}

fn part(out: &mut Vec<u8>, boundary: &str, desc: &str, ctype: &str, body: &[u8]) {
    out.extend_from_slice(format!("\r\n--{boundary}\r\n").as_bytes());
    push_field(out, "Content-Description", desc);
    push_field(out, "Content-Type", ctype);
    if has_8bit(body) {
        push_field(out, "Content-Transfer-Encoding", "8bit");
    }
    out.extend_from_slice(b"\r\n");
    // Each body ends with CRLF; the CRLF before the next delimiter
    // belongs to the delimiter (RFC 2046 §5.1.1).
    out.extend_from_slice(body);
}

/// The reply text without its `smtp; ` type prefix, for humans.
fn reply_text(diagnostic: &str) -> &str {
    match diagnostic.split_once(';') {
        Some((ty, rest)) if is_type_label(ty) => rest.trim_start(),
        _ => diagnostic,
    }
}

fn is_type_label(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn human_text(input: &Input<'_>, original: &Original<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    let host = &input.settings.hostname;
    push_paragraph(
        &mut out,
        "",
        "",
        &format!("This is the mail system at host {host}."),
    );
    for kind in [Kind::Failure, Kind::Delay, Kind::Success] {
        let members: Vec<_> = input
            .reports
            .iter()
            .filter(|r| Kind::of_action(r.action) == kind)
            .collect();
        if members.is_empty() {
            continue;
        }
        out.extend_from_slice(b"\r\n");
        push_paragraph(&mut out, "", "", kind.intro());
        for r in members {
            human_recipient(&mut out, r);
        }
    }
    out.extend_from_slice(b"\r\n");
    let attached = match original {
        Original::None => "The delivery report is attached.",
        Original::Headers(_) => "The delivery report and the headers of your message are attached.",
        Original::Full(_) => "The delivery report and your message are attached.",
    };
    push_paragraph(&mut out, "", "", attached);
    out
}

fn human_recipient(out: &mut Vec<u8>, r: &RecipientReport) {
    out.extend_from_slice(b"\r\n");
    push_paragraph(out, "  ", "    ", &format!("<{}>", r.recipient.address));
    let status = valid_status(r);
    push_paragraph(
        out,
        "    ",
        "      ",
        &format!("Status: {status} ({})", r.action.as_str()),
    );
    if let Some(mta) = &r.remote_mta {
        push_paragraph(out, "    ", "      ", &format!("Remote host: {mta}"));
    }
    if let Some(d) = &r.diagnostic {
        push_paragraph(out, "    ", "      ", &format!("Reply: {}", reply_text(d)));
    }
    if let (Action::Delayed, Some(until)) = (r.action, r.will_retry_until_ms) {
        let until = rfc5322_date(until);
        push_paragraph(out, "    ", "      ", &format!("Will retry until: {until}"));
    }
}

/// The report's status if it is `class.subject.detail`, else a generic one.
fn valid_status(r: &RecipientReport) -> &str {
    if crate::reply::status::EnhancedStatus::parse(&r.status).is_some() {
        &r.status
    } else {
        r.action.fallback_status()
    }
}

fn delivery_status(input: &Input<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    let host = &input.settings.hostname;
    push_field(&mut out, "Reporting-MTA", &format!("dns; {host}"));
    if let Some(envid) = &input.original.envid {
        push_field(&mut out, "Original-Envelope-Id", envid);
    }
    let arrival = rfc5322_date(input.original.received_at_ms);
    push_field(&mut out, "Arrival-Date", &arrival);
    for r in input.reports {
        out.extend_from_slice(b"\r\n");
        if let Some(orcpt) = &r.recipient.orcpt {
            push_field(&mut out, "Original-Recipient", &xtext_decode(orcpt));
        }
        let final_rcpt = format!("rfc822; {}", r.recipient.address);
        push_field(&mut out, "Final-Recipient", &final_rcpt);
        push_field(&mut out, "Action", r.action.as_str());
        push_field(&mut out, "Status", valid_status(r));
        if let Some(mta) = &r.remote_mta {
            let value = if mta.contains(';') {
                mta.clone()
            } else {
                format!("dns; {mta}")
            };
            push_field(&mut out, "Remote-MTA", &value);
        }
        if let Some(d) = &r.diagnostic {
            let value = match d.split_once(';') {
                Some((ty, _)) if is_type_label(ty) => d.clone(),
                _ => format!("smtp; {d}"),
            };
            push_field(&mut out, "Diagnostic-Code", &value);
        }
        if let Some(at) = r.last_attempt_ms {
            push_field(&mut out, "Last-Attempt-Date", &rfc5322_date(at));
        }
        if let (Action::Delayed, Some(until)) = (r.action, r.will_retry_until_ms) {
            push_field(&mut out, "Will-Retry-Until", &rfc5322_date(until));
        }
    }
    out
}
