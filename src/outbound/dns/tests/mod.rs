//! Resolver tests against [`server::TestDns`] on 127.0.0.1. No test sends
//! DNS traffic anywhere else.

mod resolver;
mod server;
mod wire;
