//! What an outbound connection is pooled under: the source binding and
//! the remote host. The binding stage will pick one per message; until
//! then every connection uses the default.
//!
//! Owns `Binding` and `PoolKey`. May call: nothing (plain data). Must
//! never: do I/O or hold a connection.

use std::net::SocketAddr;
use std::rc::Rc;

/// The local side a connection is made from (Momentum's binding). Only
/// the default exists so far: the kernel picks the source address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Binding {
    /// No explicit source address.
    #[default]
    Default,
}

/// What an idle connection can be reused for: the same binding, remote
/// host name (TLS is verified against it) and address. A connection is
/// reused only under the same settings snapshot as well (see
/// `Pools::reclaim`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// Source binding.
    pub binding: Binding,
    /// Remote host name, or the IP literal of a static route.
    pub host: Rc<str>,
    /// Remote address and port.
    pub addr: SocketAddr,
}
