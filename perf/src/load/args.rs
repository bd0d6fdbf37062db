//! The load generator's command line and the value syntaxes it accepts
//! (sizes, size distributions, domain distributions). Parsing only.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

/// impulse-load: sends SMTP load and measures the replies.
#[derive(Parser, Debug, Clone)]
#[command(name = "impulse-load", version, about)]
pub struct Args {
    /// Target HOST:PORT; repeat or separate by commas for several
    /// (connections are spread round-robin).
    #[arg(short = 't', long = "target", value_delimiter = ',', required = true)]
    pub targets: Vec<SocketAddr>,
    /// Concurrent connections (sessions), over all cores.
    #[arg(short = 'c', long, default_value_t = 20)]
    pub connections: usize,
    /// Total messages to send (default 10000 unless --duration is given).
    #[arg(short = 'm', long)]
    pub messages: Option<u64>,
    /// Run for this many seconds instead of (or as well as) a message count.
    #[arg(short = 'd', long)]
    pub duration: Option<f64>,
    /// Messages per connection before QUIT and reconnect; 0 = reuse forever.
    #[arg(long, default_value_t = 0)]
    pub per_connection: u64,
    /// Open loop at this many messages per second (total); 0 = closed loop.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Message size in octets, headers included: `4096`, `4k`, a uniform
    /// range `1k-50k`, or weighted sizes `4k:80,50k:20`.
    #[arg(short = 's', long, default_value = "4096", value_parser = SizeSpec::parse)]
    pub size: SizeSpec,
    /// Recipients per message.
    #[arg(short = 'r', long, default_value_t = 1)]
    pub rcpts: usize,
    /// Number of recipient domains.
    #[arg(long, default_value_t = 1)]
    pub domains: usize,
    /// How recipients spread over the domains: `uniform` or `zipf[:EXPONENT]`.
    #[arg(long, default_value = "uniform", value_parser = DomainDist::parse)]
    pub domain_dist: DomainDist,
    /// Domain names; `{n}` becomes the domain's number (1..=domains).
    #[arg(long, default_value = "d{n}.example")]
    pub domain_pattern: String,
    /// Distinct local parts per domain.
    #[arg(long, default_value_t = 1000)]
    pub users: usize,
    /// Envelope sender.
    #[arg(long, default_value = "load@impulse-load.example")]
    pub from: String,
    /// EHLO name.
    #[arg(long, default_value = "impulse-load.example")]
    pub ehlo: String,
    /// Do not use PIPELINING even when offered.
    #[arg(long)]
    pub no_pipelining: bool,
    /// STARTTLS: `off`, `opportunistic` or `required`.
    #[arg(long, default_value = "off", value_parser = ["off", "opportunistic", "required"])]
    pub starttls: String,
    /// Send content with BDAT when the server offers CHUNKING.
    #[arg(long)]
    pub chunking: bool,
    /// Seconds to wait for a connection or any reply before counting a timeout.
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
    /// Executors (one pinned per core); 0 = one per allowed CPU.
    #[arg(long, default_value_t = 0)]
    pub shards: usize,
    /// Print the final report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Exit 0 even when some messages were not accepted.
    #[arg(long)]
    pub allow_failures: bool,
    /// No progress line on stderr.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

impl Args {
    /// The message budget: the given count, unlimited with only a duration.
    pub fn message_budget(&self) -> Option<u64> {
        match (self.messages, self.duration) {
            (Some(n), _) => Some(n),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_MESSAGES),
        }
    }

    /// Per-reply timeout.
    pub fn reply_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout.max(0.001))
    }

    /// Checks what clap cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.connections == 0 {
            return Err("--connections must be at least 1".into());
        }
        if self.rcpts == 0 || self.domains == 0 || self.users == 0 {
            return Err("--rcpts, --domains and --users must be at least 1".into());
        }
        if !(self.rate >= 0.0 && self.rate.is_finite()) {
            return Err("--rate must be a non-negative number".into());
        }
        if self.duration.is_some_and(|d| !(d > 0.0 && d.is_finite())) {
            return Err("--duration must be a positive number of seconds".into());
        }
        if !(self.timeout > 0.0 && self.timeout.is_finite()) {
            return Err("--timeout must be a positive number of seconds".into());
        }
        Ok(())
    }
}

/// Messages sent when neither --messages nor --duration is given.
pub const DEFAULT_MESSAGES: u64 = 10_000;

/// Message sizes: fixed, uniform in a range, or weighted choices.
#[derive(Clone, Debug, PartialEq)]
pub enum SizeSpec {
    /// Always this many octets.
    Fixed(usize),
    /// Uniform in `[min, max]`.
    Uniform(usize, usize),
    /// `(size, weight)` pairs.
    Weighted(Vec<(usize, u32)>),
}

impl SizeSpec {
    /// Parses `4096`, `4k`, `1k-50k`, `4k:80,50k:20`.
    pub fn parse(s: &str) -> Result<SizeSpec, String> {
        if s.contains(':') {
            let mut choices = Vec::new();
            for part in s.split(',') {
                let (size, weight) = part
                    .split_once(':')
                    .ok_or_else(|| format!("{part:?}: expected SIZE:WEIGHT"))?;
                let weight: u32 = weight
                    .trim()
                    .parse()
                    .map_err(|_| format!("{weight:?}: weight must be a whole number"))?;
                choices.push((octets(size)?, weight));
            }
            if choices.iter().all(|c| c.1 == 0) {
                return Err("weights must not all be zero".into());
            }
            Ok(SizeSpec::Weighted(choices))
        } else if let Some((a, b)) = s.split_once('-') {
            let (a, b) = (octets(a)?, octets(b)?);
            if a > b {
                return Err(format!("{s:?}: range minimum above maximum"));
            }
            Ok(SizeSpec::Uniform(a, b))
        } else {
            Ok(SizeSpec::Fixed(octets(s)?))
        }
    }

    /// A size drawn from the spec.
    pub fn sample(&self, rng: &mut fastrand::Rng) -> usize {
        match self {
            SizeSpec::Fixed(n) => *n,
            SizeSpec::Uniform(a, b) => rng.usize(*a..=*b),
            SizeSpec::Weighted(choices) => {
                let total: u64 = choices.iter().map(|c| u64::from(c.1)).sum();
                let mut pick = rng.u64(0..total.max(1));
                for (size, w) in choices {
                    if pick < u64::from(*w) {
                        return *size;
                    }
                    pick -= u64::from(*w);
                }
                choices.last().map_or(0, |c| c.0)
            }
        }
    }
}

/// `4096`, `4k`, `4K`, `1m` → octets.
fn octets(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1024),
        Some((i, 'm' | 'M')) => (&t[..i], 1024 * 1024),
        _ => (t, 1),
    };
    num.parse::<usize>()
        .map(|n| n * mult)
        .map_err(|_| format!("{s:?}: expected a size such as 4096, 4k or 1m"))
}

/// How recipients spread over the domains.
#[derive(Clone, Debug, PartialEq)]
pub enum DomainDist {
    /// Every domain equally likely.
    Uniform,
    /// Domain k (1-based) has weight 1/k^exponent.
    Zipf(f64),
}

impl DomainDist {
    /// Parses `uniform`, `zipf` (exponent 1) or `zipf:1.2`.
    pub fn parse(s: &str) -> Result<DomainDist, String> {
        match s.split_once(':') {
            None if s == "uniform" => Ok(DomainDist::Uniform),
            None if s == "zipf" => Ok(DomainDist::Zipf(1.0)),
            Some(("zipf", e)) => match e.parse::<f64>() {
                Ok(x) if x >= 0.0 && x.is_finite() => Ok(DomainDist::Zipf(x)),
                _ => Err(format!("{e:?}: zipf exponent must be a number >= 0")),
            },
            _ => Err(format!("{s:?}: expected uniform, zipf or zipf:EXPONENT")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(SizeSpec::parse("4k"), Ok(SizeSpec::Fixed(4096)));
        assert_eq!(SizeSpec::parse("100"), Ok(SizeSpec::Fixed(100)));
        assert_eq!(SizeSpec::parse("1k-2k"), Ok(SizeSpec::Uniform(1024, 2048)));
        assert_eq!(
            SizeSpec::parse("4k:80,50k:20"),
            Ok(SizeSpec::Weighted(vec![(4096, 80), (51200, 20)]))
        );
        assert!(SizeSpec::parse("2k-1k").is_err());
        assert!(SizeSpec::parse("x").is_err());
        assert!(SizeSpec::parse("1k:0").is_err());
        let mut rng = fastrand::Rng::with_seed(1);
        let w = SizeSpec::parse("1:1,2:0").unwrap_or(SizeSpec::Fixed(0));
        assert!((0..100).all(|_| w.sample(&mut rng) == 1));
    }

    #[test]
    fn domain_dists_parse() {
        assert_eq!(DomainDist::parse("uniform"), Ok(DomainDist::Uniform));
        assert_eq!(DomainDist::parse("zipf"), Ok(DomainDist::Zipf(1.0)));
        assert_eq!(DomainDist::parse("zipf:1.5"), Ok(DomainDist::Zipf(1.5)));
        assert!(DomainDist::parse("zipf:-1").is_err());
        assert!(DomainDist::parse("pareto").is_err());
    }
}
