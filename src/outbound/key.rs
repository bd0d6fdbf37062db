//! What an outbound connection is pooled under: the source binding (the
//! binding stage picks one per message) and the remote host.
//!
//! Owns `Binding` and `PoolKey`. May call: message (the binding id). Must
//! never: do I/O or hold a connection.

use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

use crate::message::BindingId;

/// The local side a connection is made from (Momentum's binding).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Binding {
    /// Which binding.
    pub id: BindingId,
    /// Its source address (`None`: the kernel picks).
    pub from: Option<IpAddr>,
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
