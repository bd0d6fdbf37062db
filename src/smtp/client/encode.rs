//! Wire encoding of client commands and message content: MAIL/RCPT with
//! their ESMTP parameters, DATA dot-stuffing, BDAT framing. Content goes
//! out by reference (`Output` runs of the shared body): only the octets
//! stuffing adds (a dot, a CRLF for a bare line end, the terminator) are
//! written.
//!
//! Owns byte layouts only; the session decides what to send. May call:
//! `crate::message`, the client's `extensions`, `output` and
//! `transaction`. Must never: do I/O, copy content, send DATA content with
//! a bare CR or LF, an unstuffed leading dot or no final CRLF, or change
//! BDAT content. It does not itself
//! refuse control characters in addresses: the caller checks `has_control`
//! (`ClientSession::submit`).

use crate::message::{BodyType, Content, DsnRet, Notify, Recipient};

use super::extensions::Extensions;
use super::output::Output;
use super::transaction::Transaction;

/// What the MAIL command may say, decided from the server's extensions.
#[derive(Copy, Clone, Debug)]
pub(super) struct MailParams {
    /// Add `SIZE=` (server advertised SIZE).
    pub size: bool,
    /// Value of `BODY=`, if one is sent.
    pub body: Option<&'static str>,
    /// Add `SMTPUTF8`.
    pub smtputf8: bool,
    /// Add RET/ENVID, and NOTIFY/ORCPT on RCPT (server advertised DSN).
    pub dsn: bool,
}

impl MailParams {
    /// Parameters for `tx` given what the server offers. The caller has
    /// already failed transactions whose requirements are not offered.
    pub fn new(tx: &Transaction, ext: &Extensions) -> Self {
        let body = match tx.body_type {
            BodyType::SevenBit => None,
            BodyType::EightBitMime if ext.eight_bit_mime => Some("8BITMIME"),
            // Checked by the caller to be all 7-bit: no parameter needed.
            BodyType::EightBitMime => None,
            BodyType::BinaryMime => Some("BINARYMIME"),
        };
        MailParams {
            size: ext.size.is_some(),
            body,
            smtputf8: tx.smtputf8 && ext.smtputf8,
            dsn: ext.dsn,
        }
    }
}

/// `MAIL FROM:<...> [params]\r\n`.
pub(super) fn mail_command(tx: &Transaction, params: MailParams, out: &mut Vec<u8>) {
    out.extend_from_slice(b"MAIL FROM:<");
    out.extend_from_slice(tx.mail_from.as_bytes());
    out.push(b'>');
    if params.size {
        out.extend_from_slice(format!(" SIZE={}", tx.body.len()).as_bytes());
    }
    if let Some(body) = params.body {
        out.extend_from_slice(b" BODY=");
        out.extend_from_slice(body.as_bytes());
    }
    if params.smtputf8 {
        out.extend_from_slice(b" SMTPUTF8");
    }
    if params.dsn {
        match tx.ret {
            Some(DsnRet::Full) => out.extend_from_slice(b" RET=FULL"),
            Some(DsnRet::Hdrs) => out.extend_from_slice(b" RET=HDRS"),
            None => {}
        }
        if let Some(envid) = &tx.envid {
            out.extend_from_slice(b" ENVID=");
            xtext(envid.as_bytes(), out);
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// `RCPT TO:<...> [NOTIFY=...] [ORCPT=...]\r\n`.
pub(super) fn rcpt_command(rcpt: &Recipient, dsn: bool, out: &mut Vec<u8>) {
    out.extend_from_slice(b"RCPT TO:<");
    out.extend_from_slice(rcpt.address.as_bytes());
    out.push(b'>');
    if dsn {
        if let Some(notify) = rcpt.notify.as_ref().and_then(notify_value) {
            out.extend_from_slice(b" NOTIFY=");
            out.extend_from_slice(notify.as_bytes());
        }
        if let Some(orcpt) = &rcpt.orcpt {
            out.extend_from_slice(b" ORCPT=");
            out.extend_from_slice(orcpt.as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// The NOTIFY value, or `None` when the flags say nothing.
fn notify_value(n: &Notify) -> Option<String> {
    if n.never {
        return Some("NEVER".to_string());
    }
    let words: Vec<&str> = [
        (n.success, "SUCCESS"),
        (n.failure, "FAILURE"),
        (n.delay, "DELAY"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, w)| *w)
    .collect();
    (!words.is_empty()).then(|| words.join(","))
}

/// RFC 3461 xtext: `+XX` for `+`, `=`, and anything outside `!`..`~`.
fn xtext(raw: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in raw {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'+', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
        }
    }
}

/// True when any octet has the high bit set.
pub(super) fn has_eight_bit(content: &Content) -> bool {
    content.parts().iter().any(|p| !p.is_ascii())
}

/// True when `s` holds a control character (CR, LF, NUL...) and so could
/// break or smuggle a command line.
pub(super) fn has_control(s: &str) -> bool {
    s.bytes().any(|b| b < 0x20 || b == 0x7f)
}

/// The message content after a 354: line ends made CRLF (a bare CR or LF
/// would let a receiver that ends lines differently see an early end of
/// data — "SMTP smuggling"), every line starting with `.` gets another
/// `.`, a missing final CRLF is added, then the `.\r\n` terminator. The
/// content's octets go out as runs between the places stuffing changes.
pub(super) fn data_body(content: &Content, out: &mut Output) {
    let mut at_line_start = true;
    // A CR that ended the previous part: its LF may start the next one.
    let mut pending_cr = false;
    for (part, p) in content.parts().into_iter().enumerate() {
        let mut i = 0;
        if pending_cr {
            out.extend_from_slice(b"\r\n");
            i = usize::from(p.first() == Some(&b'\n'));
            pending_cr = false;
            at_line_start = true;
        }
        let mut run = i;
        while i < p.len() {
            if at_line_start && p[i] == b'.' {
                out.push_shared(content, part, run..i);
                out.extend_from_slice(b".");
                run = i;
            }
            let Some(k) = memchr::memchr2(b'\r', b'\n', &p[i..]) else {
                i = p.len();
                at_line_start = false;
                break;
            };
            let end = i + k;
            if p[end] == b'\r' && p.get(end + 1) == Some(&b'\n') {
                i = end + 2; // a proper line end: the run goes on
            } else if p[end] == b'\r' && end + 1 == p.len() {
                out.push_shared(content, part, run..end);
                pending_cr = true;
                i = p.len();
                run = i;
            } else {
                // A bare CR or LF becomes CRLF.
                out.push_shared(content, part, run..end);
                out.extend_from_slice(b"\r\n");
                i = end + 1;
                run = i;
            }
            at_line_start = true;
        }
        out.push_shared(content, part, run..i);
    }
    if pending_cr || !at_line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
}

/// One BDAT chunk: `BDAT n[ LAST]\r\n` then `range` of the content as it
/// is (BDAT needs no stuffing and carries binary content unchanged).
pub(super) fn bdat_chunk(
    content: &Content,
    range: std::ops::Range<usize>,
    last: bool,
    out: &mut Output,
) {
    let tail = if last { " LAST" } else { "" };
    out.extend_from_slice(format!("BDAT {}{tail}\r\n", range.len()).as_bytes());
    let mut base = 0;
    for (part, p) in content.parts().into_iter().enumerate() {
        let (from, to) = (range.start.max(base), range.end.min(base + p.len()));
        if from < to {
            out.push_shared(content, part, from - base..to - base);
        }
        base += p.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(body: &[u8]) -> Vec<u8> {
        let mut out = Output::default();
        data_body(&Content::from(body.to_vec()), &mut out);
        out.into_vec()
    }

    /// The same content split into a head and a body at every point.
    fn data_split(body: &[u8]) -> Vec<Vec<u8>> {
        (0..=body.len())
            .map(|at| {
                let mut out = Output::default();
                let c = Content::new(body[..at].to_vec(), body[at..].to_vec());
                data_body(&c, &mut out);
                out.into_vec()
            })
            .collect()
    }

    #[test]
    fn stuffing_does_not_depend_on_where_the_parts_meet() {
        for body in [
            &b".\r\n"[..],
            b"a\r\n.\r\nb\r\n",
            b"a\n.\nb",
            b"a\r.\rb\r\n",
            b"x\r\n.",
            b"\r\n\r\n..x\r",
        ] {
            for out in data_split(body) {
                assert_eq!(out, data(body), "{body:?}");
            }
        }
    }

    #[test]
    fn plain_content_goes_out_by_reference() {
        let c = Content::new(b"Received: x\r\n".to_vec(), b"a\r\n.b\r\nc\r\n".to_vec());
        let mut out = Output::default();
        data_body(&c, &mut out);
        let slices: Vec<&[u8]> = out.slices().collect();
        assert_eq!(
            slices,
            [
                &b"Received: x\r\n"[..],
                b"a\r\n",
                b".",
                b".b\r\nc\r\n",
                b".\r\n"
            ]
        );
        assert_eq!(slices[0].as_ptr(), c.head().as_ptr());
        let mut out = Output::default();
        bdat_chunk(&c, 10..16, true, &mut out);
        assert_eq!(out.into_vec(), b"BDAT 6 LAST\r\nx\r\na\r\n");
    }

    #[test]
    fn dot_stuffing_is_exact() {
        assert_eq!(data(b""), b".\r\n");
        assert_eq!(data(b".\r\n"), b"..\r\n.\r\n");
        assert_eq!(data(b"..x\r\n"), b"...x\r\n.\r\n");
        assert_eq!(data(b"a\r\n.\r\nb\r\n"), b"a\r\n..\r\nb\r\n.\r\n");
        assert_eq!(data(b"no crlf"), b"no crlf\r\n.\r\n");
        assert_eq!(data(b"x\r\n."), b"x\r\n..\r\n.\r\n");
        assert_eq!(data(b"a.b\r\n"), b"a.b\r\n.\r\n");
    }

    #[test]
    fn bare_line_ends_become_crlf() {
        assert_eq!(data(b"a\n.\nb"), b"a\r\n..\r\nb\r\n.\r\n");
        assert_eq!(data(b"a\r.\rb\r\n"), b"a\r\n..\r\nb\r\n.\r\n");
        assert_eq!(data(b"\r\n\r\n"), b"\r\n\r\n.\r\n");
    }

    #[test]
    fn xtext_escapes() {
        let mut out = Vec::new();
        xtext(b"a+b=c d\xff", &mut out);
        assert_eq!(out, b"a+2Bb+3Dc+20d+FF");
    }

    #[test]
    fn notify_words() {
        let n = Notify {
            success: true,
            delay: true,
            ..Notify::default()
        };
        assert_eq!(notify_value(&n).as_deref(), Some("SUCCESS,DELAY"));
        assert_eq!(notify_value(&Notify::default()), None);
    }
}
