//! Sans-IO SMTP protocol engines: command and reply parsing, DATA/BDAT
//! decoding, and the ESMTP server session state machine.
//!
//! Owns the protocol rules; may call nothing outside `crate::message`.
//! Never does I/O: no sockets, no clock, no disk, no async. Bytes go in,
//! replies and `Step`s come out, so every rule is testable byte-for-byte.

pub mod address;
pub mod command;
pub mod data;
pub mod reply;
pub mod server;
pub mod trace;

#[cfg(test)]
mod tests;

pub use reply::Reply;
pub use server::{ServerSession, ServerSettings, Step};
pub use trace::received_header;
