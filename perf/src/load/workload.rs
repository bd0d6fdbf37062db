//! What the load generator sends: envelopes (recipients drawn over the
//! domains, uniform or zipf) and message contents carrying the send
//! timestamp header. Pure: randomness comes in, bytes come out.

use impulse::message::{BodyType, Content, Recipient};
use impulse::smtp::client::Transaction;

use super::args::{Args, DomainDist, SizeSpec};
use crate::SENT_HEADER;

/// Length of a filler line, CRLF excluded (under the 78 of RFC 5322).
const FILLER_LINE_OCTETS: usize = 76;

/// Per-executor message factory.
pub struct Workload {
    from: String,
    domains: Vec<String>,
    /// Cumulative weights for zipf; empty for uniform.
    cdf: Vec<f64>,
    users: usize,
    rcpts: usize,
    size: SizeSpec,
    /// A body of filler lines, cut to length per message.
    filler: Vec<u8>,
    rng: fastrand::Rng,
    seq: u64,
    shard: usize,
}

impl Workload {
    /// A factory for one executor (seeded by its number: runs repeat).
    pub fn new(args: &Args, shard: usize) -> Self {
        let domains: Vec<String> = (1..=args.domains)
            .map(|n| args.domain_pattern.replace("{n}", &n.to_string()))
            .collect();
        let cdf = match args.domain_dist {
            DomainDist::Uniform => Vec::new(),
            DomainDist::Zipf(s) => zipf_cdf(domains.len(), s),
        };
        let largest = match &args.size {
            SizeSpec::Fixed(n) => *n,
            SizeSpec::Uniform(_, b) => *b,
            SizeSpec::Weighted(c) => c.iter().map(|x| x.0).max().unwrap_or(0),
        };
        Workload {
            from: args.from.clone(),
            domains,
            cdf,
            users: args.users,
            rcpts: args.rcpts,
            size: args.size.clone(),
            filler: filler(largest),
            rng: fastrand::Rng::with_seed(0x5EED_1A0D_u64.wrapping_add(shard as u64)),
            seq: 0,
            shard,
        }
    }

    /// The recipient domains, in order (domain 1 first).
    pub fn domains(&self) -> &[String] {
        &self.domains
    }

    /// Index of a domain drawn from the distribution.
    pub fn pick_domain(&mut self) -> usize {
        if self.cdf.is_empty() {
            return self.rng.usize(0..self.domains.len());
        }
        let x = self.rng.f64();
        self.cdf
            .partition_point(|c| *c < x)
            .min(self.domains.len() - 1)
    }

    /// The next transaction, stamped with `sent_micros`.
    pub fn next(&mut self, sent_micros: u64) -> Transaction {
        self.seq += 1;
        let recipients: Vec<Recipient> = (0..self.rcpts)
            .map(|_| {
                let d = self.pick_domain();
                let user = self.rng.usize(0..self.users);
                Recipient {
                    address: format!("u{user}@{}", self.domains[d]),
                    notify: None,
                    orcpt: None,
                }
            })
            .collect();
        let size = self.size.sample(&mut self.rng);
        let body = self.content(&recipients[0].address, size, sent_micros);
        Transaction {
            mail_from: self.from.clone(),
            ret: None,
            envid: None,
            body_type: BodyType::SevenBit,
            smtputf8: false,
            recipients,
            body,
        }
    }

    /// Headers (the timestamp first, so a sink finds it fast), a blank
    /// line, then filler up to `size` octets (never less than the headers).
    fn content(&self, to: &str, size: usize, sent_micros: u64) -> Content {
        let head = format!(
            "{SENT_HEADER}: {sent_micros}\r\nFrom: <{}>\r\nTo: <{to}>\r\n\
             Subject: impulse-load {}-{}\r\nMessage-ID: <{}.{}.{}@impulse-load>\r\n\r\n",
            self.from, self.shard, self.seq, sent_micros, self.shard, self.seq
        );
        let mut out = Vec::with_capacity(size.max(head.len()));
        out.extend_from_slice(head.as_bytes());
        let want = size.saturating_sub(out.len());
        let take = want.min(self.filler.len());
        out.extend_from_slice(&self.filler[..take]);
        end_on_crlf(&mut out);
        out.into()
    }
}

/// Makes `out` end on CRLF without leaving a bare CR or LF (a filler cut
/// mid-line), keeping its length but for one case; `out` holds a CRLF.
fn end_on_crlf(out: &mut Vec<u8>) {
    let n = out.len();
    let Some(last) = out.windows(2).rposition(|w| w == b"\r\n") else {
        return;
    };
    match n - (last + 2) {
        0 => {}
        // One octet after the last line end: no room for a line; drop it.
        1 => out.truncate(n - 1),
        _ => out[n - 2..].copy_from_slice(b"\r\n"),
    }
}

/// Filler: lines of letters, at least `octets` long.
fn filler(octets: usize) -> Vec<u8> {
    let mut line: Vec<u8> = (0..FILLER_LINE_OCTETS)
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    line.extend_from_slice(b"\r\n");
    line.iter()
        .copied()
        .cycle()
        .take(octets.div_ceil(line.len()) * line.len())
        .collect()
}

/// Cumulative zipf weights over `n` items, normalised to end at 1.
fn zipf_cdf(n: usize, exponent: f64) -> Vec<f64> {
    let weights: Vec<f64> = (1..=n).map(|k| 1.0 / (k as f64).powf(exponent)).collect();
    let total: f64 = weights.iter().sum();
    let mut acc = 0.0;
    weights
        .iter()
        .map(|w| {
            acc += w / total;
            acc
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> Args {
        let mut v = vec!["impulse-load", "-t", "127.0.0.1:25"];
        v.extend_from_slice(extra);
        Args::parse_from(v)
    }

    #[test]
    fn messages_have_the_size_the_timestamp_and_clean_lines() {
        for size in [0usize, 100, 4096, 51200, 4097] {
            let a = args(&["-s", &size.to_string(), "-r", "3", "--domains", "5"]);
            let mut w = Workload::new(&a, 0);
            let tx = w.next(1234567);
            assert_eq!(tx.recipients.len(), 3);
            let joined = tx.body.to_vec();
            let body = &joined[..];
            assert!(body.starts_with(b"X-Impulse-Sent: 1234567\r\n"));
            assert!(body.len() >= size.min(body.len()));
            if size >= 200 {
                assert!(body.len() == size || body.len() + 1 == size);
            }
            assert!(body.ends_with(b"\r\n"));
            // Every CR is followed by LF and every LF preceded by CR.
            for (i, &b) in body.iter().enumerate() {
                if b == b'\r' {
                    assert_eq!(body.get(i + 1), Some(&b'\n'));
                }
                if b == b'\n' {
                    assert_eq!(body[i - 1], b'\r');
                }
            }
        }
    }

    #[test]
    fn zipf_favours_the_first_domain() {
        let a = args(&["--domains", "10", "--domain-dist", "zipf:1"]);
        let mut w = Workload::new(&a, 0);
        let mut counts = [0u32; 10];
        for _ in 0..20_000 {
            counts[w.pick_domain()] += 1;
        }
        // Weight of domain 1 is 1/H(10) ≈ 34 %, of domain 10 about 3.4 %.
        assert!((6000..7700).contains(&counts[0]), "{counts:?}");
        assert!(counts[0] > 5 * counts[9], "{counts:?}");
        let u = args(&["--domains", "10"]);
        let mut w = Workload::new(&u, 0);
        let mut counts = [0u32; 10];
        for _ in 0..20_000 {
            counts[w.pick_domain()] += 1;
        }
        assert!(
            counts.iter().all(|c| (1700..2300).contains(c)),
            "{counts:?}"
        );
        assert_eq!(w.domains()[0], "d1.example");
    }
}
