//! Sans-IO SMTP protocol engines: command and reply parsing, DATA/BDAT
//! decoding, and the ESMTP server and client session state machines.
//!
//! Owns the protocol rules; may call nothing outside `crate::message`.
//! Never does I/O: no sockets, no clock, no disk, no async. Bytes go in,
//! replies and `Step`s come out, so every rule is testable byte-for-byte.
//!
//! Choices the RFCs leave open, made here:
//! * Lines end only at CRLF. A command line holding a bare CR or LF gets
//!   `500 5.5.2`; a DATA body holding one is read to the real CRLF.CRLF and
//!   refused with `550 5.6.0`. BDAT content is binary: no such checks.
//! * Address errors: malformed or over-long paths get `501 5.1.7` (MAIL) or
//!   `501 5.1.3` (RCPT); non-ASCII without SMTPUTF8 gets `553 5.6.7`.
//!   Parameter syntax and bad values get `501 5.5.4`, unknown parameters
//!   (or any parameter after HELO) `555 5.5.4`. Paths need angle brackets;
//!   a space after `FROM:`/`TO:` is tolerated.
//! * `RCPT TO:<postmaster>` becomes `postmaster@{hostname}` and then faces
//!   the same relay check as any address: list the hostname in
//!   `relay_domains` to accept it. Never an open relay by default.
//! * Every 4xx/5xx answer to the client counts towards
//!   `max_errors_per_session`, except `452 4.5.3` (too many recipients: a
//!   large pipelined batch is not misbehaviour), `452 4.3.1` (the shard's
//!   content budget is spent) and server-side store failures. The
//!   reception limit answers the next MAIL with 421.
//! * An over-long command line is answered (`500 5.5.2`) as soon as it
//!   passes the limit, not when its CRLF finally comes; the rest of it is
//!   dropped unread. A BDAT size that does not fit in 64 bits is a syntax
//!   error (`501 5.5.4`), never a chunk.
//! * A BDAT refused for sequencing still consumes its chunk; a BDAT that
//!   crosses the size limit gets `552 5.3.4` and ends the transaction.
//! * The greeting, HELO/EHLO replies, 334 and 354 carry no enhanced status
//!   code (RFC 2034 §3); every other reply does.

pub mod address;
pub mod budget;
pub mod client;
pub mod command;
pub mod data;
pub mod server;
pub mod trace;

/// The reply type and enhanced status codes live below every stage (in
/// `crate::reply`); these are their SMTP-side names.
pub use crate::reply::{self, status};

#[cfg(test)]
mod tests;

pub use reply::Reply;
pub use server::{ServerSession, ServerSettings, Step};
pub use trace::received_header;
