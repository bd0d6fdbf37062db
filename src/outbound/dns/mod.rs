//! Non-blocking MX and address resolution for one shard, with a TTL cache.
//!
//! Owns: DNS queries to the configured recursive servers (UDP, TCP when a
//! reply is truncated), RFC 5321 §5.1 MX selection (preference order,
//! random among equals, implicit MX, RFC 7505 null MX), the per-shard cache
//! (TTLs clamped by `min_dns_ttl`/`max_dns_ttl`, RFC 2308 negative caching)
//! and coalescing (one query in flight per name and type).
//!
//! Layout: `wire`, `mx` and `cache` are sans-IO (bytes, records and `now`
//! in; typed answers out). `transport` does the socket I/O with glommio;
//! `resolver` ties them together behind [`Resolver`].
//!
//! Must never block the shard: no `getaddrinfo`, no blocking sockets, no
//! `std::fs` (only [`ResolverConfig::load`], which runs at start-up).
//! May call: `config` (`DnsSettings`, in `conf`); nothing else in the crate.
//!
//! Outcome types: [`MxResult`] holds the answers that are facts about the
//! domain (hosts, null MX, no such domain: permanent or deliverable);
//! [`DnsError`] holds the ones that say nothing about it (timeouts,
//! SERVFAIL, REFUSED): transient, retry later. Static routes and gateways
//! can build an [`MxResult`] themselves, or use [`Resolver::resolve_host`].

mod cache;
mod conf;
mod mx;
mod resolver;
mod transport;
/// Public for the fuzz targets in `fuzz/`; not part of the library's API.
#[doc(hidden)]
pub mod wire;

#[cfg(test)]
mod tests;

use std::net::IpAddr;

pub use cache::{TtlCache, TtlPolicy, DEFAULT_MAX_NEGATIVE_TTL_SECS};
pub use conf::{ResolvConf, ResolverConfig, DEFAULT_ATTEMPTS, DEFAULT_TIMEOUT, RESOLV_CONF_PATH};
pub use mx::{order_mx, MxPlan, MAX_EXCHANGES};
pub use resolver::{Clock, DnsStats, Resolver};
pub use wire::{Answer, Data, MxRecord, QType, MAX_CNAME_CHAIN};

/// One mail exchanger with its addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MxHost {
    /// MX preference (0 for an implicit MX, a gateway or an address literal).
    pub preference: u16,
    /// Host name, lower-case, no trailing dot.
    pub name: String,
    /// IPv4 addresses (in the order received), then IPv6. Empty when the
    /// name has no A/AAAA records.
    pub addrs: Vec<IpAddr>,
}

/// Where mail for a domain goes, as far as DNS can tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MxResult {
    /// Exchanges in the order to try them. For a domain without MX records
    /// this is the implicit MX: the domain itself, preference 0. Hosts
    /// whose addresses could not be looked up (transient failure) are left
    /// out; hosts without any A/AAAA are kept with empty `addrs`.
    Hosts(Vec<MxHost>),
    /// RFC 7505 null MX: the domain accepts no mail (permanent, 5.1.10;
    /// Momentum: `550 5.4.4 [internal] NULL MX domain does not accept mail`).
    NullMx,
    /// NXDOMAIN: the domain does not exist (permanent, 5.1.2).
    NoSuchDomain,
}

impl MxResult {
    /// Every `(host, address)` in delivery order.
    pub fn addresses(&self) -> impl Iterator<Item = (&MxHost, IpAddr)> {
        let hosts: &[MxHost] = match self {
            MxResult::Hosts(h) => h,
            _ => &[],
        };
        hosts
            .iter()
            .flat_map(|h| h.addrs.iter().map(move |a| (h, *a)))
    }

    /// True when there is at least one address to connect to. `Hosts`
    /// without any is Momentum's `454 4.4.4 [internal] no MX or A for domain`.
    pub fn has_addresses(&self) -> bool {
        self.addresses().next().is_some()
    }
}

/// A lookup that failed for reasons that say nothing about the domain:
/// always transient (4.4.3).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// No server answered within the timeout, over every attempt.
    #[error("DNS timeout for {name} {qtype}: no nameserver answered")]
    Timeout {
        /// The name asked.
        name: String,
        /// The record type asked.
        qtype: &'static str,
    },
    /// Servers answered with an error code (SERVFAIL, REFUSED, ...) or
    /// unusable bytes.
    #[error("DNS failure for {name} {qtype}: {reason}")]
    ServerFailure {
        /// The name asked.
        name: String,
        /// The record type asked.
        qtype: &'static str,
        /// The response code or what was wrong with the reply.
        reason: String,
    },
    /// A socket could not be opened or used.
    #[error("DNS I/O error for {name} {qtype}: {reason}")]
    Io {
        /// The name asked.
        name: String,
        /// The record type asked.
        qtype: &'static str,
        /// The OS error.
        reason: String,
    },
    /// A CNAME chain longer than [`MAX_CNAME_CHAIN`] hops in total.
    #[error("DNS CNAME chain from {name} is too long")]
    CnameChain {
        /// Where the chain started.
        name: String,
    },
    /// The lookup this one was waiting on was cancelled before it finished.
    #[error("DNS lookup of {name} was abandoned")]
    Abandoned {
        /// The name asked.
        name: String,
    },
}
