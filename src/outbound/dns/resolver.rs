//! [`Resolver`]: the per-shard front of the DNS module. Checks the cache,
//! coalesces concurrent lookups, asks `transport`, and assembles MX results.
//!
//! Single-threaded by design (`Rc`/`RefCell`, one per shard): a `RefCell`
//! borrow is never held across an `.await`. The clock is injected so the
//! cache follows the scheduler's (possibly simulated) time. May call:
//! `outbound::dns::{cache, conf, mx, transport, wire}` and the result
//! types of `outbound::dns`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::net::IpAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use hickory_proto::rr::Name;

use super::cache::TtlCache;
use super::conf::ResolverConfig;
use super::mx::{order_mx, MxPlan};
use super::transport;
use super::wire::{normalize, parse_name, Answer, Data, QType, MAX_CNAME_CHAIN};
use super::{DnsError, MxHost, MxResult};

/// Where the resolver reads the time.
pub type Clock = Rc<dyn Fn() -> Instant>;

/// An answer with how long it stays valid from now.
type Fresh = Result<(Rc<Answer>, Duration), DnsError>;
type Key = (String, QType);

/// Counters for the console's `dns_cache stats`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsStats {
    /// Datagrams sent (each try, each server).
    pub queries_sent: u64,
    /// Lookups answered from the record cache.
    pub cache_hits: u64,
    /// Lookups that waited on one already in flight.
    pub coalesced: u64,
}

/// One query in flight; every waiter gets a clone of its result.
#[derive(Default)]
struct Flight {
    result: RefCell<Option<Fresh>>,
    wakers: RefCell<Vec<Waker>>,
}

impl Flight {
    fn finish(&self, r: Fresh) {
        *self.result.borrow_mut() = Some(r);
        for w in self.wakers.borrow_mut().drain(..) {
            w.wake();
        }
    }

    async fn wait(&self) -> Fresh {
        poll_fn(|cx| match &*self.result.borrow() {
            Some(r) => Poll::Ready(r.clone()),
            None => {
                let mut wakers = self.wakers.borrow_mut();
                if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    wakers.push(cx.waker().clone());
                }
                Poll::Pending
            }
        })
        .await
    }
}

/// Ends a flight even when its leader's future is dropped mid-query, so
/// waiters never hang.
struct FlightGuard<'a> {
    resolver: &'a Resolver,
    key: Key,
    flight: Rc<Flight>,
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        self.resolver.state.borrow_mut().inflight.remove(&self.key);
        if self.flight.result.borrow().is_none() {
            self.flight.finish(Err(DnsError::Abandoned {
                name: self.key.0.clone(),
            }));
        }
    }
}

struct State {
    records: TtlCache<Key, Rc<Answer>>,
    results: TtlCache<String, Rc<MxResult>>,
    inflight: HashMap<Key, Rc<Flight>>,
    shuffle: fastrand::Rng,
    ids: fastrand::Rng,
}

/// A shard's resolver; share it with `Rc`.
pub struct Resolver {
    config: ResolverConfig,
    clock: Clock,
    state: RefCell<State>,
    stats: Cell<DnsStats>,
}

impl Resolver {
    /// A resolver on the real clock.
    pub fn new(config: ResolverConfig) -> Self {
        Self::with_clock(config, Rc::new(Instant::now))
    }

    /// A resolver whose cache reads time from `clock`.
    pub fn with_clock(config: ResolverConfig, clock: Clock) -> Self {
        let shuffle = config
            .shuffle_seed
            .map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed);
        let state = State {
            records: TtlCache::new(config.max_cache_entries),
            results: TtlCache::new(config.max_cache_entries),
            inflight: HashMap::new(),
            shuffle,
            // Query ids are never seeded: predictable ids invite spoofing.
            ids: fastrand::Rng::new(),
        };
        Resolver {
            config,
            clock,
            state: RefCell::new(state),
            stats: Cell::new(DnsStats::default()),
        }
    }

    /// The settings in force.
    pub fn config(&self) -> &ResolverConfig {
        &self.config
    }

    /// Counters since start.
    pub fn stats(&self) -> DnsStats {
        self.stats.get()
    }

    /// Drops expired entries (run every `dns_expire_interval`).
    pub fn purge_expired(&self) {
        let now = (self.clock)();
        let mut st = self.state.borrow_mut();
        st.records.purge(now);
        st.results.purge(now);
    }

    /// Forgets a domain's assembled MX result (`refresh domain`).
    pub fn forget(&self, domain: &str) {
        if let Some(name) = parse_name(domain) {
            self.state.borrow_mut().results.remove(&normalize(&name));
        }
    }

    fn bump(&self, f: impl FnOnce(&mut DnsStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    /// Where mail for `domain` goes: MX hosts with addresses (or the
    /// implicit MX), null MX, or no such domain; `Err` only for transient
    /// failures. An address literal (`[192.0.2.1]`, `[IPv6:2001:db8::1]`)
    /// yields that address. Results are cached for the smallest TTL involved.
    pub async fn resolve_mx(&self, domain: &str) -> Result<Rc<MxResult>, DnsError> {
        if let Some(ip) = address_literal(domain) {
            return Ok(Rc::new(single_host(domain, vec![ip])));
        }
        let Some(name) = parse_name(domain) else {
            return Ok(Rc::new(MxResult::NoSuchDomain));
        };
        let key = normalize(&name);
        if let Some(r) = self.state.borrow().results.get(&key, (self.clock)()) {
            self.bump(|s| s.cache_hits += 1);
            return Ok(r);
        }
        let (answer, mx_ttl) = self.lookup(&name, QType::Mx).await?;
        let plan = match &*answer {
            Answer::NxDomain { .. } => {
                return Ok(self.remember(key, MxResult::NoSuchDomain, Some(mx_ttl)));
            }
            Answer::Records {
                data: Data::Mx(records),
                ..
            } => order_mx(records, &mut self.state.borrow_mut().shuffle),
            // RFC 5321 §5.1: no MX records, so the domain is its own MX.
            _ => MxPlan::Exchanges(vec![(0, key.clone())]),
        };
        let exchanges = match plan {
            MxPlan::NullMx => return Ok(self.remember(key, MxResult::NullMx, Some(mx_ttl))),
            MxPlan::Exchanges(e) => e,
        };
        let lookups = exchanges.iter().map(|(_, host)| self.host_addrs(host));
        let found = join_all(lookups.collect()).await;
        let mut hosts = Vec::with_capacity(exchanges.len());
        let mut ttl = Some(mx_ttl);
        let mut first_error = None;
        for ((preference, name), result) in exchanges.into_iter().zip(found) {
            match result {
                Ok((addrs, host_ttl)) => {
                    ttl = ttl.zip(host_ttl).map(|(a, b)| a.min(b));
                    hosts.push(MxHost {
                        preference,
                        name,
                        addrs,
                    });
                }
                Err(e) => {
                    ttl = None;
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if hosts.is_empty() => Err(e),
            _ => Ok(self.remember(key, MxResult::Hosts(hosts), ttl)),
        }
    }

    /// A gateway or static route target: `name` itself (or an IP literal)
    /// as a single preference-0 host. NXDOMAIN for both A and AAAA gives
    /// `NoSuchDomain`. Not cached as a whole; its records are.
    pub async fn resolve_host(&self, name: &str) -> Result<Rc<MxResult>, DnsError> {
        if let Some(ip) = address_literal(name).or_else(|| name.parse().ok()) {
            return Ok(Rc::new(single_host(name, vec![ip])));
        }
        let Some(parsed) = parse_name(name) else {
            return Ok(Rc::new(MxResult::NoSuchDomain));
        };
        let key = normalize(&parsed);
        let (v4, v6) = futures_lite::future::zip(
            self.lookup(&parsed, QType::A),
            self.lookup(&parsed, QType::Aaaa),
        )
        .await;
        let nx = |r: &Result<(Rc<Answer>, Duration), DnsError>| matches!(r, Ok((a, _)) if matches!(**a, Answer::NxDomain { .. }));
        if nx(&v4) && nx(&v6) {
            return Ok(Rc::new(MxResult::NoSuchDomain));
        }
        let (addrs, _) = merge_addrs(v4, v6)?;
        Ok(Rc::new(single_host(&key, addrs)))
    }

    /// The A and AAAA addresses of `name` (IPv4 first); empty when it has
    /// none or does not exist.
    pub async fn lookup_ip(&self, name: &str) -> Result<Vec<IpAddr>, DnsError> {
        if let Ok(ip) = name.parse() {
            return Ok(vec![ip]);
        }
        Ok(self.host_addrs(name).await?.0)
    }

    /// Addresses of one host with the smallest remaining lifetime, or
    /// `None` for it when one family failed transiently (usable now, not
    /// cacheable as a whole).
    async fn host_addrs(&self, host: &str) -> Result<(Vec<IpAddr>, Option<Duration>), DnsError> {
        let Some(name) = parse_name(host) else {
            // Not a DNS name: no addresses, and no limit on caching the rest.
            return Ok((Vec::new(), Some(Duration::MAX)));
        };
        let (v4, v6) = futures_lite::future::zip(
            self.lookup(&name, QType::A),
            self.lookup(&name, QType::Aaaa),
        )
        .await;
        merge_addrs(v4, v6)
    }

    /// One record set, following CNAME chains the server left unfollowed.
    async fn lookup(&self, name: &Name, qtype: QType) -> Fresh {
        let mut current = name.clone();
        let mut ttl = Duration::MAX;
        for _ in 0..=MAX_CNAME_CHAIN {
            let (answer, t) = self.cached_query(&current, qtype).await?;
            ttl = ttl.min(t);
            let target = match &*answer {
                Answer::NoData {
                    cname: Some(target),
                    ..
                } => parse_name(target),
                _ => None,
            };
            match target {
                Some(next) if next != current => current = next,
                _ => return Ok((answer, ttl)),
            }
        }
        Err(DnsError::CnameChain {
            name: normalize(name),
        })
    }

    /// Cache, else join the flight in progress, else start one.
    async fn cached_query(&self, name: &Name, qtype: QType) -> Fresh {
        let key: Key = (normalize(name), qtype);
        let now = (self.clock)();
        let waiting = {
            let mut st = self.state.borrow_mut();
            if let Some(a) = st.records.get(&key, now) {
                let left = st.records.ttl(&key, now).unwrap_or_default();
                drop(st);
                self.bump(|s| s.cache_hits += 1);
                return Ok((a, left));
            }
            match st.inflight.get(&key) {
                Some(f) => Err(f.clone()),
                None => {
                    let flight = Rc::new(Flight::default());
                    st.inflight.insert(key.clone(), flight.clone());
                    Ok(flight)
                }
            }
        };
        let flight = match waiting {
            Err(other) => {
                self.bump(|s| s.coalesced += 1);
                return other.wait().await;
            }
            Ok(mine) => mine,
        };
        let guard = FlightGuard {
            resolver: self,
            key,
            flight,
        };
        let next_id = || self.state.borrow_mut().ids.u16(..);
        let on_send = || self.bump(|s| s.queries_sent += 1);
        let result = transport::query(&self.config, name, qtype, &next_id, &on_send)
            .await
            .map(|answer| {
                let life = match &answer {
                    Answer::Records { ttl, .. } => self.config.ttl.positive(*ttl),
                    Answer::NoData { ttl, .. } | Answer::NxDomain { ttl } => {
                        self.config.ttl.negative(*ttl)
                    }
                };
                let answer = Rc::new(answer);
                let now = (self.clock)();
                let mut st = self.state.borrow_mut();
                st.records
                    .insert(guard.key.clone(), answer.clone(), life, now);
                (answer, life)
            });
        guard.flight.finish(result.clone());
        result
    }

    fn remember(&self, key: String, r: MxResult, ttl: Option<Duration>) -> Rc<MxResult> {
        let r = Rc::new(r);
        if let Some(ttl) = ttl {
            let now = (self.clock)();
            self.state
                .borrow_mut()
                .results
                .insert(key, r.clone(), ttl, now);
        }
        r
    }
}

fn single_host(name: &str, addrs: Vec<IpAddr>) -> MxResult {
    MxResult::Hosts(vec![MxHost {
        preference: 0,
        name: name.to_string(),
        addrs,
    }])
}

/// `[192.0.2.1]` or `[IPv6:2001:db8::1]` (RFC 5321 §4.1.3).
fn address_literal(domain: &str) -> Option<IpAddr> {
    let inner = domain.strip_prefix('[')?.strip_suffix(']')?;
    match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => inner[5..].parse().ok(),
        _ => inner.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

/// IPv4 then IPv6; one family failing transiently still gives the other.
fn merge_addrs(v4: Fresh, v6: Fresh) -> Result<(Vec<IpAddr>, Option<Duration>), DnsError> {
    let addrs_of = |a: &Answer| match a {
        Answer::Records {
            data: Data::Addrs(v),
            ..
        } => v.clone(),
        _ => Vec::new(),
    };
    match (v4, v6) {
        (Ok((a, ta)), Ok((b, tb))) => {
            let mut addrs = addrs_of(&a);
            addrs.extend(addrs_of(&b));
            Ok((addrs, Some(ta.min(tb))))
        }
        (Ok((a, _)), Err(_)) | (Err(_), Ok((a, _))) => Ok((addrs_of(&a), None)),
        (Err(e), Err(_)) => Err(e),
    }
}

/// Polls every future until all are done; results in input order.
async fn join_all<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in futs.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *slot = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(out.iter_mut().filter_map(Option::take).collect())
        }
    })
    .await
}
