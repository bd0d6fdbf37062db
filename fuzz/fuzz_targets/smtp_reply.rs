//! The client's reply parser on arbitrary server bytes: no panic, replies
//! within the line limits, and the same replies (up to and including the
//! first error) whether the bytes arrive in one read or split in two.
//!
//! Input layout: bytes 0-1 the split point, the rest the server's bytes.

#![no_main]

use impulse::smtp::client::{ReplyError, ReplyParser, MAX_REPLY_LINES, MAX_REPLY_LINE_OCTETS};
use impulse::smtp::reply::Reply;
use libfuzzer_sys::fuzz_target;

/// Every reply, then the error that ended parsing (if any).
fn parse(parts: &[&[u8]]) -> (Vec<Reply>, Option<ReplyError>) {
    let mut parser = ReplyParser::new();
    let mut replies = Vec::new();
    for part in parts {
        let mut input = *part;
        while !input.is_empty() {
            let before = input.len();
            match parser.next_reply(&mut input) {
                Ok(Some(reply)) => replies.push(reply),
                Ok(None) => assert!(input.is_empty(), "None consumes all input"),
                Err(e) => return (replies, Some(e)),
            }
            assert!(input.len() < before, "no progress");
        }
    }
    (replies, None)
}

fuzz_target!(|data: &[u8]| {
    let [s0, s1, input @ ..] = data else {
        return;
    };
    let at = usize::from(u16::from_le_bytes([*s0, *s1])) % (input.len() + 1);
    let whole = parse(&[input]);
    let (a, b) = input.split_at(at);
    assert_eq!(whole, parse(&[a, b]), "split at {at}");
    for reply in &whole.0 {
        assert!((200..=599).contains(&reply.code));
        assert!(!reply.lines.is_empty() && reply.lines.len() <= MAX_REPLY_LINES);
        if let Some(e) = &reply.enhanced {
            assert_eq!(u16::from(e.class), reply.code / 100);
        }
        // Text is sanitised: no control characters reach a log line.
        for line in &reply.lines {
            assert!(line.chars().all(|c| !c.is_control() || c == '\t'));
            assert!(line.chars().count() <= MAX_REPLY_LINE_OCTETS);
        }
        let _ = reply.text();
    }
});
