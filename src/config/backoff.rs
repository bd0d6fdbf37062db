//! Adaptive back-off rules, compiled: `[backoff.NAME]` tables and the
//! built-in rules for the published signals of the big receivers. A rule
//! matches a receiver's reply (code, enhanced status, text) for some or
//! all domains and says what to do for a while on that binding × domain.
//!
//! Owns `BackoffRule`, `BackoffAction` and the built-in set. May call: the
//! rest of config, the `regex` crate. Must never: act on a rule (the
//! throttle stage does).

use std::sync::Arc;
use std::time::Duration;

use regex::Regex;

use super::delivery::{text, Rate};
use super::parse::{Entry, RawBinding, Value};
use super::{flag, int, secs};

/// What a rule does while it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackoffAction {
    /// At most this many connections, over all shards.
    Connections(u32),
    /// At most this message rate, over all shards.
    Rate(Rate),
    /// No connections; then back step by step.
    Pause,
    /// No deliveries until the hold ends; then straight back.
    Suspend,
    /// Queued mail fails with the receiver's reply.
    Fail,
}

/// One rule.
#[derive(Clone, Debug)]
pub struct BackoffRule {
    /// Its name (in events).
    pub name: Arc<str>,
    /// Reply code prefix (`"421"`, `"45"`), if the rule tests it.
    pub code: Option<String>,
    /// Enhanced status prefix (`"4.7.28"`, `"4.7"`), if it tests it.
    pub status: Option<String>,
    /// Reply text (case-insensitive regex), if it tests it.
    pub text: Option<Regex>,
    /// Destination domains (exact, or `.example.com` for subdomains);
    /// empty for all.
    pub domains: Vec<String>,
    /// What it does.
    pub action: BackoffAction,
    /// How long it holds after the last matching reply.
    pub duration: Duration,
    /// Quiet time before each recovery step.
    pub recover_after: Duration,
    /// Steps back to the configured limits.
    pub steps: u32,
}

impl PartialEq for BackoffRule {
    fn eq(&self, o: &Self) -> bool {
        self.name == o.name
            && self.code == o.code
            && self.status == o.status
            && self.text.as_ref().map(Regex::as_str) == o.text.as_ref().map(Regex::as_str)
            && self.domains == o.domains
            && self.action == o.action
            && self.duration == o.duration
            && self.recover_after == o.recover_after
            && self.steps == o.steps
    }
}

impl BackoffRule {
    /// True when a reply (`code`, `status` as `"4.7.28"` or empty, the
    /// text of its lines) from `domain` matches.
    pub fn matches(&self, code: u16, status: &str, text: &str, domain: &str) -> bool {
        let domain_ok = self.domains.is_empty()
            || self.domains.iter().any(|d| match d.strip_prefix('.') {
                Some(suffix) => domain.ends_with(&format!(".{suffix}")),
                None => d == domain,
            });
        domain_ok
            && self
                .code
                .as_ref()
                .is_none_or(|c| code.to_string().starts_with(c.as_str()))
            && self
                .status
                .as_ref()
                .is_none_or(|s| status == s || status.starts_with(&format!("{s}.")))
            && self.text.as_ref().is_none_or(|re| re.is_match(text))
    }
}

/// The rules shipped with impulse, as TOML (each can be changed or
/// switched off with a `[backoff.NAME]` table of the same name).
pub const BUILT_IN: &str = r#"
# Gmail: "421 4.7.0 ... Try again later, closing connection."
[backoff.gmail-try-again-later]
match_code = "421"
match_status = "4.7.0"
match_text = "try again later"
action = "rate"
backoff_rate = "60/60"
duration = 600
recover_after = 300
recovery_steps = 4

# Gmail: "421 4.7.28 ... unusual rate of unsolicited mail" (rate limited).
[backoff.gmail-4-7-28]
match_status = "4.7.28"
action = "connections"
backoff_connections = 2
duration = 900
recover_after = 300
recovery_steps = 4

# Yahoo: "421 4.7.0 [TS01] Messages from x temporarily deferred ..."
[backoff.yahoo-ts01]
match_code = "4"
match_text = "\\[TS01\\]"
action = "rate"
backoff_rate = "30/60"
duration = 1800
recover_after = 600
recovery_steps = 4

# Yahoo: "421 4.7.0 [TSS04] Messages from x temporarily deferred due to
# unexpected volume or user complaints" (pause, then back slowly).
[backoff.yahoo-tss04]
match_code = "4"
match_text = "\\[TSS04\\]"
action = "pause"
duration = 900
recover_after = 600
recovery_steps = 4
"#;

/// Compiles one `[backoff.NAME]` table; errors are (offset, key, message).
pub fn compile_rule(b: &RawBinding) -> Result<Option<BackoffRule>, (usize, String, String)> {
    let v = &b.values;
    let path = format!("backoff.{}", b.name);
    // One scope, with the registry's defaults (config's one fallback rule).
    let chain = [v];
    if !flag("enabled", &chain) {
        return Ok(None);
    }
    let code = text("match_code", &chain);
    if let (Some(c), Some(e)) = (&code, v.get("match_code")) {
        if c.len() > 3 || !c.bytes().all(|b| b.is_ascii_digit()) || !c.starts_with(['2', '4', '5'])
        {
            return Err((
                e.at,
                format!("{path}.match_code"),
                format!("`{c}` is not a reply code or its first digits (\"421\", \"45\")"),
            ));
        }
    }
    let status = text("match_status", &chain);
    if let (Some(s), Some(e)) = (&status, v.get("match_status")) {
        let ok = s.split('.').count() <= 3
            && s.split('.')
                .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()));
        if !ok {
            return Err((
                e.at,
                format!("{path}.match_status"),
                format!("`{s}` is not an enhanced status or its first parts (\"4.7.28\", \"4.7\")"),
            ));
        }
    }
    let re = match (text("match_text", &chain), v.get("match_text")) {
        (Some(t), Some(e)) => Some(
            regex::RegexBuilder::new(&t)
                .case_insensitive(true)
                .size_limit(1 << 20)
                .build()
                .map_err(|err| {
                    (
                        e.at,
                        format!("{path}.match_text"),
                        format!("bad regex: {err}"),
                    )
                })?,
        ),
        _ => None,
    };
    if code.is_none() && status.is_none() && re.is_none() {
        return Err((
            b.at,
            path,
            "a rule needs match_code, match_status or match_text".into(),
        ));
    }
    let action = match text("action", &chain).as_deref() {
        Some("connections") | None => {
            BackoffAction::Connections(int("backoff_connections", &chain) as u32)
        }
        Some("rate") => match v.get("backoff_rate") {
            Some(Entry {
                value: Value::Rate { count, secs },
                ..
            }) if *count > 0 => BackoffAction::Rate(Rate {
                count: *count,
                per: Duration::from_secs(u64::from(*secs)),
            }),
            _ => {
                return Err((
                    v.get("action").map_or(b.at, |e| e.at),
                    format!("{path}.backoff_rate"),
                    "action \"rate\" needs backoff_rate (\"60/60\")".into(),
                ))
            }
        },
        Some("pause") => BackoffAction::Pause,
        Some("suspend") => BackoffAction::Suspend,
        Some(_) => BackoffAction::Fail,
    };
    let domains = match v.get("domains").map(|e| &e.value) {
        Some(Value::TextList(d)) => d.iter().map(|d| d.trim().to_ascii_lowercase()).collect(),
        _ => Vec::new(),
    };
    Ok(Some(BackoffRule {
        name: b.name.as_str().into(),
        code,
        status,
        text: re,
        domains,
        action,
        duration: secs("duration", &chain),
        recover_after: secs("recover_after", &chain),
        steps: int("recovery_steps", &chain).max(1) as u32,
    }))
}

/// The rules in force: the built-in ones (unless a table of the same name
/// replaces or disables one), then the configured ones, in file order.
pub fn compile(
    built_in: &[RawBinding],
    configured: &[RawBinding],
) -> Result<Vec<BackoffRule>, Vec<(usize, String, String)>> {
    let mut rules = Vec::new();
    let mut errors = Vec::new();
    let own = |name: &str| configured.iter().any(|c| c.name == name);
    for b in built_in.iter().filter(|b| !own(&b.name)).chain(configured) {
        match compile_rule(b) {
            Ok(Some(r)) => rules.push(r),
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(rules)
    } else {
        Err(errors)
    }
}
