//! Delivery settings per destination domain (`[domain."x"]` → `[global]` →
//! default), compiled once per config load: routes, outbound TLS, limits,
//! Momentum's timeouts and the retry policy.
//!
//! Owns the compiled per-domain `Delivery` and the `RetryPolicy` data.
//! May call: the rest of config. Must never: import a pipeline stage (the
//! queue, which does the retry arithmetic, imports this, not the reverse).

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::parse::{Entry, Value, Values};
use super::resources::client_tls;
use super::{flag, int, lookup, secs};

/// Outbound STARTTLS policy (Momentum `tls`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// Never.
    No,
    /// When offered; a failed handshake defers.
    IfAvailable,
    /// Always; a server without STARTTLS defers.
    Required,
}

/// One static route hop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Host name or IP address.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl Route {
    /// The address when the host is an IP literal.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.host
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, self.port))
    }

    /// Parses `host`, `host:port`, `ip`, `ip:port` or `[ipv6]:port`.
    pub fn parse(s: &str, default_port: u16) -> Option<Route> {
        let s = s.trim();
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Some(Route {
                host: a.ip().to_string(),
                port: a.port(),
            });
        }
        if let Ok(ip) = s
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            return Some(Route {
                host: ip.to_string(),
                port: default_port,
            });
        }
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().ok().filter(|p| *p > 0)?),
            None => (s, default_port),
        };
        let valid = !host.is_empty()
            && host.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        valid.then(|| Route {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

/// Events per period: `count` per `per` (a throttle's rate).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rate {
    /// Events allowed per period (at least 1).
    pub count: u32,
    /// The period.
    pub per: Duration,
}

/// Whose counter a throttle is: Momentum shares a throttle by reference,
/// so every domain and binding that falls back to one scope's value
/// shares that scope's counter.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ThrottleScope {
    /// Set in `[global]`: one counter for every domain without its own.
    Global,
    /// Set in `[domain."x"]`: this domain's own counter.
    Domain(Arc<str>),
    /// Set in `[binding.b]`: one counter for the binding's mail.
    Binding(Arc<str>),
    /// Set in `[binding_group.g]`: one counter for the group's mail.
    Group(Arc<str>),
    /// Set in `[binding.b.domain."x"]`.
    BindingDomain(Arc<str>, Arc<str>),
    /// Set in `[binding_group.g.domain."x"]`.
    GroupDomain(Arc<str>, Arc<str>),
    /// A back-off's lowered rate on one binding × domain slot key.
    Backoff(Arc<str>),
}

/// `scope_max_outbound_connections`: a cap on one domain's connections
/// over all bindings (set in `[global]` or `[domain]`) or over one group's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeCap {
    /// The cap.
    pub limit: u32,
    /// The group it holds over; `None`: every binding.
    pub group: Option<Arc<str>>,
}

/// A rate throttle and the counter it is shared under.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Throttle {
    /// The rate.
    pub rate: Rate,
    /// The counter's scope.
    pub scope: ThrottleScope,
}

/// When to try again and when to give up, as configured. The arithmetic
/// over it (delays, expiry, the decision after a deferral) is the queue's:
/// `queue::policy`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay after the first transient failure; doubles per failure.
    pub retry_interval_ms: u64,
    /// Cap on the delay.
    pub max_retry_interval_ms: u64,
    /// Transient failures before a permanent one; `None` = until expiry.
    pub max_retries: Option<u32>,
    /// Lifetime of a message from reception.
    pub message_expiration_ms: u64,
}

impl Default for RetryPolicy {
    /// Momentum 2.2's defaults: 1200 s doubling to 43200 s, one day.
    fn default() -> Self {
        RetryPolicy {
            retry_interval_ms: 1_200_000,
            max_retry_interval_ms: 43_200_000,
            max_retries: None,
            message_expiration_ms: 86_400_000,
        }
    }
}

/// Everything the delivery stage needs for one destination domain.
#[derive(Clone)]
pub struct Delivery {
    /// Queue but do not deliver.
    pub suspend_delivery: bool,
    /// Static routes; empty = use the MX.
    pub routes: Vec<Route>,
    /// Port for MX hosts.
    pub remote_smtp_port: u16,
    /// EHLO name.
    pub ehlo_hostname: String,
    /// STARTTLS policy.
    pub tls: TlsMode,
    /// rustls client config (verification per `tls_verify`/`tls_ca`).
    pub tls_client: Arc<rustls::ClientConfig>,
    /// Concurrent connections per binding and domain, over all shards.
    pub max_outbound_connections: u32,
    /// A cap on the domain's connections over bindings, when set.
    pub scope_max_outbound_connections: Option<ScopeCap>,
    /// Concurrent connections of the whole server (a `[global]` value).
    pub server_max_outbound_connections: u32,
    /// `outbound_throttle_messages`: delivery attempts per period.
    pub throttle_messages: Option<Throttle>,
    /// `outbound_throttle_connections`: new connections per period.
    pub throttle_connections: Option<Throttle>,
    /// Messages per connection (0 = no limit).
    pub max_deliveries_per_connection: u32,
    /// RCPTs per transaction.
    pub max_recipients_per_batch: usize,
    /// Keep an idle connection this long.
    pub idle_timeout: Duration,
    /// connect() and banner.
    pub connect_timeout: Duration,
    /// EHLO and STARTTLS replies.
    pub ehlo_timeout: Duration,
    /// MAIL and 354 replies.
    pub mailfrom_timeout: Duration,
    /// RCPT replies.
    pub rcptto_timeout: Duration,
    /// Reply after the final dot.
    pub body_timeout: Duration,
    /// RSET and QUIT replies.
    pub rset_timeout: Duration,
    /// Retry and expiry.
    pub retry: RetryPolicy,
    /// Send DSNs for failures.
    pub generate_bounces: bool,
    /// DSN From: address.
    pub mailerdaemon: String,
    /// none | headers | all.
    pub bounces_inline_original: String,
    /// Send delay DSNs.
    pub generate_delay_dsn: bool,
    /// First delay DSN after this long.
    pub delay_dsn_retry_interval: Duration,
    /// Cap between delay DSNs.
    pub delay_dsn_max_retry_interval: Duration,
}

/// Every field but the rustls client config (which has no useful text form):
/// a reload test compares snapshots by this.
impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("suspend_delivery", &self.suspend_delivery)
            .field("routes", &self.routes)
            .field("remote_smtp_port", &self.remote_smtp_port)
            .field("ehlo_hostname", &self.ehlo_hostname)
            .field("tls", &self.tls)
            .field("max_outbound_connections", &self.max_outbound_connections)
            .field(
                "scope_max_outbound_connections",
                &self.scope_max_outbound_connections,
            )
            .field(
                "server_max_outbound_connections",
                &self.server_max_outbound_connections,
            )
            .field("throttle_messages", &self.throttle_messages)
            .field("throttle_connections", &self.throttle_connections)
            .field(
                "max_deliveries_per_connection",
                &self.max_deliveries_per_connection,
            )
            .field("max_recipients_per_batch", &self.max_recipients_per_batch)
            .field("idle_timeout", &self.idle_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("ehlo_timeout", &self.ehlo_timeout)
            .field("mailfrom_timeout", &self.mailfrom_timeout)
            .field("rcptto_timeout", &self.rcptto_timeout)
            .field("body_timeout", &self.body_timeout)
            .field("rset_timeout", &self.rset_timeout)
            .field("retry", &self.retry)
            .field("generate_bounces", &self.generate_bounces)
            .field("mailerdaemon", &self.mailerdaemon)
            .field("bounces_inline_original", &self.bounces_inline_original)
            .field("generate_delay_dsn", &self.generate_delay_dsn)
            .field("delay_dsn_retry_interval", &self.delay_dsn_retry_interval)
            .field(
                "delay_dsn_max_retry_interval",
                &self.delay_dsn_max_retry_interval,
            )
            .finish_non_exhaustive()
    }
}

/// A text option along `chain` (with its registry default).
pub(super) fn text(name: &str, chain: &[&Values]) -> Option<String> {
    match lookup(name, chain) {
        Some(Value::Text(t)) => Some(t),
        _ => None,
    }
}

/// `bind_address` of a scope: `*` (none) or an IP address this host has:
/// one that is not would fail every connection, so it fails the load
/// instead.
pub(super) fn bind_address(
    scope: &Values,
) -> Result<Option<IpAddr>, (usize, &'static str, String)> {
    let Some(Entry {
        value: Value::Text(t),
        at,
    }) = scope.get("bind_address")
    else {
        return Ok(None);
    };
    let t = t.trim();
    if t == "*" {
        return Ok(None);
    }
    let ip: IpAddr = t.parse().map_err(|_| {
        (
            *at,
            "bind_address",
            format!("`{t}` is not an IP address or \"*\""),
        )
    })?;
    // Binding a socket to it (any port) is the host's own answer.
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).map_err(|e| {
        (
            *at,
            "bind_address",
            format!("{ip} is not an address of this host: {e}"),
        )
    })?;
    Ok(Some(ip))
}

/// A rate option and the scope that set it (`scopes[i]` names
/// `chain[i]`). A rate of 0 is no throttle.
fn throttle(name: &str, chain: &[&Values], scopes: &[ThrottleScope]) -> Option<Throttle> {
    let (i, entry) = chain
        .iter()
        .enumerate()
        .find_map(|(i, v)| v.get(name).map(|e| (i, e)))?;
    let Value::Rate { count, secs } = entry.value else {
        return None;
    };
    (count > 0).then(|| Throttle {
        rate: Rate {
            count,
            per: Duration::from_secs(u64::from(secs)),
        },
        scope: scopes.get(i).cloned().unwrap_or(ThrottleScope::Global),
    })
}

/// `scope_max_outbound_connections` and whether a group's table set it.
fn scope_cap(chain: &[&Values], scopes: &[ThrottleScope]) -> Option<ScopeCap> {
    let (i, entry) = chain
        .iter()
        .enumerate()
        .find_map(|(i, v)| v.get("scope_max_outbound_connections").map(|e| (i, e)))?;
    let Value::Int(limit) = entry.value else {
        return None;
    };
    let group = match scopes.get(i) {
        Some(ThrottleScope::Group(g) | ThrottleScope::GroupDomain(g, _)) => Some(g.clone()),
        _ => None,
    };
    Some(ScopeCap {
        limit: limit as u32,
        group,
    })
}

/// Compiles one destination's settings along `chain` (most specific
/// first; `scopes[i]` names `chain[i]`, for the counters of its
/// throttles); errors are (byte offset, key, message).
pub fn compile(
    chain: &[&Values],
    scopes: &[ThrottleScope],
    hostname: &str,
    base: &Path,
) -> Result<Delivery, (usize, &'static str, String)> {
    let port = int("remote_smtp_port", chain) as u16;
    let mut routes = Vec::new();
    if let Some(Entry {
        value: Value::TextList(list),
        at,
    }) = chain.iter().find_map(|v| v.get("routes"))
    {
        for r in list {
            routes.push(Route::parse(r, port).ok_or((
                *at,
                "routes",
                format!("`{r}` is not a host, host:port or [ipv6]:port"),
            ))?);
        }
    }
    let tls = match text("tls", chain).as_deref() {
        Some("no") => TlsMode::No,
        Some("required") => TlsMode::Required,
        _ => TlsMode::IfAvailable,
    };
    let verify = text("tls_verify", chain).unwrap_or_else(|| "no".into());
    let ca = chain.iter().find_map(|v| match v.get("tls_ca") {
        Some(Entry {
            value: Value::Path(p),
            at,
        }) => Some((base.join(p), *at)),
        _ => None,
    });
    let tls_client = client_tls(&verify, ca.as_ref().map(|(p, _)| p.as_path()))
        .map_err(|e| (ca.map_or(0, |c| c.1), "tls_ca", e))?;
    let retries = int("max_retries", chain) as u32;
    Ok(Delivery {
        suspend_delivery: flag("suspend_delivery", chain),
        routes,
        remote_smtp_port: port,
        ehlo_hostname: text("ehlo_hostname", chain).unwrap_or_else(|| hostname.to_string()),
        tls,
        tls_client,
        max_outbound_connections: int("max_outbound_connections", chain) as u32,
        scope_max_outbound_connections: scope_cap(chain, scopes),
        server_max_outbound_connections: int("server_max_outbound_connections", chain) as u32,
        throttle_messages: throttle("outbound_throttle_messages", chain, scopes),
        throttle_connections: throttle("outbound_throttle_connections", chain, scopes),
        max_deliveries_per_connection: int("max_deliveries_per_connection", chain) as u32,
        max_recipients_per_batch: int("max_recipients_per_batch", chain) as usize,
        idle_timeout: secs("idle_timeout", chain),
        connect_timeout: secs("connect_timeout", chain),
        ehlo_timeout: secs("ehlo_timeout", chain),
        mailfrom_timeout: secs("mailfrom_timeout", chain),
        rcptto_timeout: secs("rcptto_timeout", chain),
        body_timeout: secs("body_timeout", chain),
        rset_timeout: secs("rset_timeout", chain),
        retry: RetryPolicy {
            retry_interval_ms: int("retry_interval", chain) * 1000,
            max_retry_interval_ms: int("max_retry_interval", chain) * 1000,
            max_retries: (retries > 0).then_some(retries),
            message_expiration_ms: int("message_expiration", chain) * 1000,
        },
        generate_bounces: flag("generate_bounces", chain),
        mailerdaemon: text("mailerdaemon", chain)
            .unwrap_or_else(|| format!("mailer-daemon@{hostname}")),
        bounces_inline_original: text("bounces_inline_original", chain)
            .unwrap_or_else(|| "headers".into()),
        generate_delay_dsn: flag("generate_delay_dsn", chain),
        delay_dsn_retry_interval: secs("delay_dsn_retry_interval", chain),
        delay_dsn_max_retry_interval: secs("delay_dsn_max_retry_interval", chain),
    })
}

/// One scope's settings: its default and its per-domain settings.
#[derive(Clone)]
struct Tables {
    default: Arc<Delivery>,
    domains: HashMap<String, Arc<Delivery>>,
}

impl Tables {
    fn get(&self, domain: &str) -> &Arc<Delivery> {
        self.domains.get(domain).unwrap_or(&self.default)
    }
}

/// Delivery settings for every configured domain plus the global default,
/// and for the bindings that have settings of their own.
#[derive(Clone)]
pub struct DeliveryTable {
    global: Tables,
    /// By binding slot; `None` where the binding uses the global tables.
    bindings: Vec<Option<Tables>>,
}

/// Domains in name order, so equal tables print alike.
impl fmt::Debug for DeliveryTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |t: &Tables| {
            let domains: std::collections::BTreeMap<_, _> = t.domains.iter().collect();
            format!("{:?} {domains:?}", t.default)
        };
        let bindings: Vec<_> = self.bindings.iter().map(|b| b.as_ref().map(show)).collect();
        f.debug_struct("DeliveryTable")
            .field("global", &show(&self.global))
            .field("bindings", &bindings)
            .finish()
    }
}

impl DeliveryTable {
    /// Builds the table; `domains` are the `[domain."x"]` scopes.
    pub fn new(default: Delivery, domains: HashMap<String, Arc<Delivery>>) -> DeliveryTable {
        DeliveryTable {
            global: Tables {
                default: Arc::new(default),
                domains,
            },
            bindings: Vec::new(),
        }
    }

    /// Gives the binding in `slot` its own settings.
    pub fn set_binding(
        &mut self,
        slot: usize,
        default: Delivery,
        domains: HashMap<String, Arc<Delivery>>,
    ) {
        if self.bindings.len() <= slot {
            self.bindings.resize(slot + 1, None);
        }
        self.bindings[slot] = Some(Tables {
            default: Arc::new(default),
            domains,
        });
    }

    /// The settings for a destination domain (lower-case) from the
    /// default binding.
    pub fn get(&self, domain: &str) -> &Arc<Delivery> {
        self.global.get(domain)
    }

    /// The settings for a destination domain from the binding in `slot`.
    pub fn for_binding(&self, slot: usize, domain: &str) -> &Arc<Delivery> {
        match self.bindings.get(slot) {
            Some(Some(t)) => t.get(domain),
            _ => self.global.get(domain),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse() {
        assert_eq!(
            Route::parse("127.0.0.1:2626", 25),
            Some(Route {
                host: "127.0.0.1".into(),
                port: 2626
            })
        );
        assert_eq!(
            Route::parse("[::1]:26", 25),
            Some(Route {
                host: "::1".into(),
                port: 26
            })
        );
        assert_eq!(
            Route::parse("::1", 25),
            Some(Route {
                host: "::1".into(),
                port: 25
            })
        );
        assert_eq!(
            Route::parse("Relay.Example.com", 25),
            Some(Route {
                host: "relay.example.com".into(),
                port: 25
            })
        );
        assert_eq!(
            Route::parse("relay.example.com:587", 25).map(|r| r.port),
            Some(587)
        );
        assert_eq!(Route::parse("bad host", 25), None);
        assert_eq!(Route::parse("h:0", 25), None);
        assert_eq!(Route::parse("h:x", 25), None);
    }
}
