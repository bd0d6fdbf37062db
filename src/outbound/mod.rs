//! outbound: MX resolution cache, connection pools, SMTP client driver.
//!
//! Owns everything between the queue handing over a message for a domain and
//! the remote server's replies. Runs on a shard: nothing here may block
//! (no blocking DNS, no `std::fs`, no blocking sockets).

pub mod dns;
