//! Outbound: MX resolution cache, connection handling, and each shard's
//! delivery engine driving `smtp::client` over glommio TCP and rustls.
//!
//! May call: config (snapshot), queue, spool, smtp::client. Never blocks a
//! shard: DNS and sockets are glommio I/O.

pub mod delivery;
pub mod dns;
mod session;

pub use delivery::ShardDelivery;
