//! Outbound: takes a job (envelope, shared body, recipients) and a
//! connection slot in, and returns a typed result per recipient out. Owns
//! where a domain's mail goes (static routes, MX resolution and its
//! cache), the connection pools per (source binding, remote host) with
//! their idle expiry, and driving `smtp::client` over glommio TCP and
//! rustls with Momentum's timeouts and the domain's STARTTLS policy.
//!
//! May call: smtp (the client engine), conn, config (a domain's settings),
//! events (outbound connections opened and closed), message, runtime.
//! Must never: touch the spool or the queue (the queue's driver decides
//! what to send and when, and settles what comes back), limit connections
//! per domain, or block a shard: DNS and sockets are glommio I/O.

pub mod dns;
mod key;
mod pool;
mod route;
mod session;
mod slot;

pub use key::{Binding, PoolKey};
pub use pool::Pools;
pub use route::{Target, Unroutable};
pub use slot::Slot;
