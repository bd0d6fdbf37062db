//! impulse: a thread-per-core, shared-nothing mail transfer agent.
//!
//! Modules follow the data path: `inbound` drives `smtp::server` and hands
//! messages to `intake`, which writes through `spool`; `config` and
//! `runtime` frame every shard, `throttle` holds the delivery limits over
//! all shards, and `server` (the composition root) builds
//! and runs the shards; `message` and `reply` are the data types every
//! stage passes on. Owns the module tree only. May call: nothing.
//! Must never: hold code (module declarations only).

pub mod binding;
pub mod bounce;
pub mod config;
pub mod conn;
pub mod events;
pub mod inbound;
pub mod intake;
pub mod logs;
pub mod message;
pub mod outbound;
pub mod queue;
pub mod reply;
pub mod runtime;
pub mod server;
pub mod smtp;
pub mod spool;
pub mod throttle;
