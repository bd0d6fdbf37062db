//! Resolver settings: from the `Config` snapshot, falling back to
//! /etc/resolv.conf (`nameserver` lines, `options timeout:N attempts:N`) and
//! then to glibc's defaults.
//!
//! Parsing is pure. [`ResolverConfig::load`] reads /etc/resolv.conf with
//! `std::fs` and so runs at start-up or reload, never on a shard.
//! May call: `outbound::dns::cache` (the TTL policy), `config`
//! (`DnsSettings`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use super::cache::{TtlPolicy, DEFAULT_MAX_NEGATIVE_TTL_SECS};
use crate::config::DnsSettings;

/// Where the system resolver configuration lives.
pub const RESOLV_CONF_PATH: &str = "/etc/resolv.conf";
/// Port for `nameserver` lines, which carry no port.
pub const DNS_PORT: u16 = 53;
/// glibc's default per-try timeout (resolv.conf `timeout:`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// glibc's default rounds over the servers (resolv.conf `attempts:`).
pub const DEFAULT_ATTEMPTS: u32 = 2;
/// glibc's caps on `timeout:` (seconds) and `attempts:`.
const RESOLV_MAX_TIMEOUT_SECS: u64 = 30;
const RESOLV_MAX_ATTEMPTS: u32 = 5;
/// Default bound on cached answers per shard.
pub const DEFAULT_MAX_CACHE_ENTRIES: usize = 100_000;

/// What /etc/resolv.conf says, as far as we use it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` lines in order, port 53.
    pub nameservers: Vec<SocketAddr>,
    /// `options timeout:N`.
    pub timeout: Option<Duration>,
    /// `options attempts:N`.
    pub attempts: Option<u32>,
}

impl ResolvConf {
    /// Parses resolv.conf text; unknown or malformed lines are skipped, as
    /// glibc does.
    pub fn parse(text: &str) -> ResolvConf {
        let mut out = ResolvConf::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    if let Some(ip) = words.next().and_then(|w| w.parse::<IpAddr>().ok()) {
                        out.nameservers.push(SocketAddr::new(ip, DNS_PORT));
                    }
                }
                Some("options") => {
                    for w in words {
                        if let Some(n) = w.strip_prefix("timeout:").and_then(|n| n.parse().ok()) {
                            let secs = u64::min(n, RESOLV_MAX_TIMEOUT_SECS).max(1);
                            out.timeout = Some(Duration::from_secs(secs));
                        } else if let Some(n) =
                            w.strip_prefix("attempts:").and_then(|n| n.parse().ok())
                        {
                            out.attempts = Some(u32::min(n, RESOLV_MAX_ATTEMPTS).max(1));
                        }
                    }
                }
                _ => {}
            }
        }
        out
    }
}

/// Everything a shard's [`super::Resolver`] needs.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolverConfig {
    /// Recursive servers, tried in order within each attempt.
    pub nameservers: Vec<SocketAddr>,
    /// Wait for one reply (UDP), or one whole TCP exchange.
    pub timeout: Duration,
    /// Rounds over all servers before a query fails.
    pub attempts: u32,
    /// TTL clamping and negative-caching cap.
    pub ttl: TtlPolicy,
    /// Bound on cached answers (each of the two caches).
    pub max_cache_entries: usize,
    /// Seed for the order among equal-preference MXs; `None` = random.
    /// Query ids never come from it.
    pub shuffle_seed: Option<u64>,
}

impl ResolverConfig {
    /// Settings for `nameservers` with glibc's defaults elsewhere.
    pub fn with_nameservers(nameservers: Vec<SocketAddr>) -> ResolverConfig {
        ResolverConfig {
            nameservers,
            timeout: DEFAULT_TIMEOUT,
            attempts: DEFAULT_ATTEMPTS,
            ttl: TtlPolicy::default(),
            max_cache_entries: DEFAULT_MAX_CACHE_ENTRIES,
            shuffle_seed: None,
        }
    }

    /// Config values first, then resolv.conf, then glibc's defaults (which
    /// include 127.0.0.1 when no server is named anywhere).
    pub fn from_settings(s: &DnsSettings, resolv: &ResolvConf) -> ResolverConfig {
        let mut nameservers = s
            .nameservers
            .clone()
            .unwrap_or_else(|| resolv.nameservers.clone());
        if nameservers.is_empty() {
            nameservers.push(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DNS_PORT));
        }
        ResolverConfig {
            nameservers,
            timeout: s.timeout.or(resolv.timeout).unwrap_or(DEFAULT_TIMEOUT),
            attempts: s.attempts.or(resolv.attempts).unwrap_or(DEFAULT_ATTEMPTS),
            ttl: TtlPolicy {
                min_ttl_secs: s.min_ttl_secs,
                max_ttl_secs: s.max_ttl_secs,
                max_negative_ttl_secs: DEFAULT_MAX_NEGATIVE_TTL_SECS,
            },
            max_cache_entries: DEFAULT_MAX_CACHE_ENTRIES,
            shuffle_seed: None,
        }
    }

    /// [`from_settings`](Self::from_settings) with /etc/resolv.conf read
    /// from disk (blocking: start-up and reload only). A missing file counts
    /// as empty, as for glibc.
    pub fn load(s: &DnsSettings) -> ResolverConfig {
        Self::load_from(s, Path::new(RESOLV_CONF_PATH))
    }

    /// [`load`](Self::load) with another resolv.conf path.
    pub fn load_from(s: &DnsSettings, path: &Path) -> ResolverConfig {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        Self::from_settings(s, &ResolvConf::parse(&text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> DnsSettings {
        DnsSettings {
            nameservers: None,
            timeout: None,
            attempts: None,
            min_ttl_secs: 0,
            max_ttl_secs: u32::MAX,
        }
    }

    #[test]
    fn resolv_conf_lines_and_options() {
        let r = ResolvConf::parse(
            "# comment\nsearch example.com\nnameserver 192.0.2.1\nnameserver ::1 # v6\n\
             nameserver bogus\noptions ndots:2 timeout:3 attempts:9 rotate\n",
        );
        assert_eq!(
            r.nameservers,
            vec!["192.0.2.1:53".parse().unwrap(), "[::1]:53".parse().unwrap()]
        );
        assert_eq!(r.timeout, Some(Duration::from_secs(3)));
        assert_eq!(r.attempts, Some(RESOLV_MAX_ATTEMPTS));
    }

    #[test]
    fn config_wins_over_resolv_conf_which_wins_over_defaults() {
        let r = ResolvConf::parse("nameserver 192.0.2.1\noptions timeout:1\n");
        let c = ResolverConfig::from_settings(&settings(), &r);
        assert_eq!(c.nameservers, vec!["192.0.2.1:53".parse().unwrap()]);
        assert_eq!(
            (c.timeout, c.attempts),
            (Duration::from_secs(1), DEFAULT_ATTEMPTS)
        );
        let mut s = settings();
        s.nameservers = Some(vec!["127.0.0.1:5353".parse().unwrap()]);
        s.timeout = Some(Duration::from_millis(200));
        s.attempts = Some(4);
        s.min_ttl_secs = 7;
        let c = ResolverConfig::from_settings(&s, &r);
        assert_eq!(c.nameservers, vec!["127.0.0.1:5353".parse().unwrap()]);
        assert_eq!((c.timeout, c.attempts), (Duration::from_millis(200), 4));
        assert_eq!(c.ttl.min_ttl_secs, 7);
        let c = ResolverConfig::from_settings(&settings(), &ResolvConf::default());
        assert_eq!(c.nameservers, vec!["127.0.0.1:53".parse().unwrap()]);
    }
}
