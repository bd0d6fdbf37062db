//! Configuration: the TOML schema, scope fallback, validation with
//! file:line errors, and the defaults registry.
//!
//! Everything else reads a compiled, immutable [`Config`] snapshot. Loading
//! reads files (the config, TLS keys, password files) and so happens at
//! start-up or reload on the main thread, never on a shard.
//!
//! May call: nothing else in the crate; every stage reads config, so config
//! imports no stage (a stage's policy that config compiles, such as the
//! retry policy, is plain data here and its logic stays in the stage).
//! Must never: run on a shard's hot path, or accept an unknown key silently.

pub mod backoff;
pub mod binding;
pub mod delivery;
pub mod options;
pub mod parse;
pub mod reload;
pub mod report;
mod resources;
pub mod rule;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

pub use backoff::{BackoffAction, BackoffRule};
pub use binding::{Assign, BindingSettings, BindingTable, DefaultBinding, GroupSettings};
pub use delivery::{
    Delivery, DeliveryTable, Rate, RetryPolicy, Route, ScopeCap, Throttle, ThrottleScope, TlsMode,
};
use options::OptionDef;
use parse::{Entry, RawConfig, Value, Values};
pub use resources::{client_tls, Credentials, TlsMaterial};

/// The configuration embedded in the binary (`conf/impulse.toml`).
pub const EMBEDDED_DEFAULT: &str = include_str!("../../conf/impulse.toml");
/// How the embedded default is named in messages.
pub const EMBEDDED_NAME: &str = "<embedded conf/impulse.toml>";

/// One problem in a configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// File name as given.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Dotted key path, e.g. `listener.esmtp.idle_time`.
    pub key_path: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.key_path.is_empty() {
            write!(f, "{}: ", self.key_path)?;
        }
        write!(f, "{}", self.message)?;
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

/// All problems found in one load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Inbound session settings after peer → listener → global → default fallback.
#[derive(Clone, Debug, PartialEq)]
pub struct Inbound {
    /// Time a command line may take from the previous reply.
    pub idle_time: Duration,
    /// Time a DATA body or BDAT chunk may take (plus the rate allowance).
    pub data_timeout: Duration,
    /// Bytes/s that each extend the data deadline by 1/rate s (0 = none).
    pub min_data_rate: u64,
    /// Cap on a whole session (zero = none).
    pub max_session_time: Duration,
    /// Largest message in bytes (0 = no limit).
    pub message_size: u64,
    /// RCPTs per message.
    pub max_recipients_per_message: usize,
    /// Messages per session (0 = no limit).
    pub max_receptions_per_connection: u32,
    /// Error replies before disconnect.
    pub max_errors_per_session: u32,
    /// Longest command line incl. CRLF.
    pub max_command_line_octets: usize,
    /// Longest message line incl. CRLF.
    pub max_data_line_octets: usize,
    /// Concurrent sessions per client address per shard (0 = no limit).
    pub max_connections_per_ip: u32,
    /// MAIL needs HELO/EHLO first.
    pub require_ehlo: bool,
    /// Accept `MAIL FROM:<>`.
    pub allow_null_envelope_sender: bool,
    /// Reject undeclared 8-bit bodies.
    pub reject_8bit_without_8bitmime: bool,
    /// AUTH only after STARTTLS.
    pub auth_requires_tls: bool,
    /// Wait before the 535 of a session's first failed AUTH (doubling).
    pub auth_failure_delay: Duration,
    /// Cap on that wait.
    pub auth_failure_max_delay: Duration,
    /// Failed AUTHs per client address per shard per window (0 = no limit).
    pub auth_failures_per_ip: u32,
    /// The window `auth_failures_per_ip` counts over.
    pub auth_failure_window: Duration,
    /// Peer block's relay override.
    pub can_relay: Option<bool>,
}

/// A listener with everything its sessions need.
#[derive(Clone, Debug)]
pub struct Listener {
    /// Its name in `[listener.NAME]`.
    pub name: String,
    /// Addresses bound on every shard without its own override.
    pub listen: Vec<SocketAddr>,
    /// Sessions per shard on this listener.
    pub listener_sessions: u32,
    /// Networks allowed to relay (global ∪ listener).
    pub relay_hosts: Vec<IpNet>,
    /// Settings for clients matching no peer block.
    pub inbound: Inbound,
    /// Peer blocks, most specific network first.
    pub peers: Vec<(IpNet, Inbound)>,
    /// STARTTLS material, when configured.
    pub tls: Option<TlsMaterial>,
    /// AUTH credentials, when configured.
    pub credentials: Option<Arc<Credentials>>,
}

impl Listener {
    /// The settings for a client address and whether it may relay.
    pub fn for_peer(&self, ip: IpAddr) -> (&Inbound, bool) {
        let inbound = self
            .peers
            .iter()
            .find(|(net, _)| net.contains(&ip))
            .map_or(&self.inbound, |(_, i)| i);
        let relay = inbound
            .can_relay
            .unwrap_or_else(|| self.relay_hosts.iter().any(|n| n.contains(&ip)));
        (inbound, relay)
    }
}

/// Per-shard overrides from `[shard.N]`.
#[derive(Clone, Debug, Default)]
pub struct ShardOverride {
    /// This shard's spool directory.
    pub spool_dir: Option<PathBuf>,
    /// Sessions per listener on this shard.
    pub listener_sessions: Option<u32>,
    /// Listen addresses per listener name.
    pub listen: BTreeMap<String, Vec<SocketAddr>>,
}

/// Spool tuning.
#[derive(Clone, Debug, PartialEq)]
pub struct SpoolSettings {
    /// Segment file size.
    pub segment_size: u64,
    /// Bytes per group-commit batch.
    pub batch_max_bytes: usize,
    /// Longest wait before a sync.
    pub batch_max_delay: Duration,
    /// Time between compaction passes; zero disables compaction.
    pub compact_interval: Duration,
    /// Space held back for outcome records on a full disk.
    pub reserve_bytes: u64,
}

/// DNS settings for `outbound::dns`; unset values fall back to
/// /etc/resolv.conf and then to built-in defaults there.
#[derive(Clone, Debug, PartialEq)]
pub struct DnsSettings {
    /// `nameservers`; `None` = resolv.conf.
    pub nameservers: Option<Vec<SocketAddr>>,
    /// `dns_timeout_ms`; `None` = resolv.conf or the built-in default.
    pub timeout: Option<Duration>,
    /// `dns_attempts`; `None` = resolv.conf or the built-in default.
    pub attempts: Option<u32>,
    /// `min_dns_ttl` in seconds.
    pub min_ttl_secs: u32,
    /// `max_dns_ttl` in seconds.
    pub max_ttl_secs: u32,
}

/// One log file: where, and the permissions it is created with.
#[derive(Clone, Debug, PartialEq)]
pub struct LogPath {
    /// Absolute, or relative to the working directory at start-up.
    pub path: PathBuf,
    /// Mode of a new file.
    pub mode: u32,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Momentum 2.2's `@`-separated layouts.
    Momentum,
    /// One JSON object per line, the same fields named.
    Json,
}

/// ec_logger's and bounce_logger's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct LogSettings {
    /// R, D, T, P and M lines; `None` = off.
    pub mainlog: Option<LogPath>,
    /// Errors.
    pub paniclog: Option<LogPath>,
    /// Refusals.
    pub rejectlog: Option<LogPath>,
    /// Authentication.
    pub acctlog: Option<LogPath>,
    /// B lines.
    pub bouncelog: Option<LogPath>,
    /// Between M lines; zero = none.
    pub heartbeat: Duration,
    /// `log_receptions`.
    pub receptions: bool,
    /// `log_deliveries`.
    pub deliveries: bool,
    /// `log_transient_failures`.
    pub transient_failures: bool,
    /// `log_permanent_failures`.
    pub permanent_failures: bool,
    /// `log_rejections`.
    pub rejections: bool,
    /// `log_errors`.
    pub errors: bool,
    /// `log_inband_bounces`.
    pub inband_bounces: bool,
    /// `log_outofband_bounces`.
    pub outofband_bounces: bool,
    /// `log_format`.
    pub format: LogFormat,
    /// `log_buffer_size`.
    pub buffer_size: u64,
}

impl LogSettings {
    fn resolve(g: &[&Values]) -> LogSettings {
        let dir = match lookup("log_dir", g) {
            Some(Value::Path(p)) => p,
            _ => PathBuf::from("log"),
        };
        let file = |name: &str| match lookup(name, g) {
            Some(Value::Path(p)) if !p.as_os_str().is_empty() => Some(LogPath {
                path: dir.join(p),
                mode: int(&format!("{name}_mode"), g) as u32,
            }),
            _ => None,
        };
        LogSettings {
            mainlog: file("mainlog"),
            paniclog: file("paniclog"),
            rejectlog: file("rejectlog"),
            acctlog: file("acctlog"),
            bouncelog: file("bouncelog"),
            heartbeat: secs("heartbeat", g),
            receptions: flag("log_receptions", g),
            deliveries: flag("log_deliveries", g),
            transient_failures: flag("log_transient_failures", g),
            permanent_failures: flag("log_permanent_failures", g),
            rejections: flag("log_rejections", g),
            errors: flag("log_errors", g),
            inband_bounces: flag("log_inband_bounces", g),
            outofband_bounces: flag("log_outofband_bounces", g),
            format: match lookup("log_format", g) {
                Some(Value::Text(t)) if t == "json" => LogFormat::Json,
                _ => LogFormat::Momentum,
            },
            buffer_size: int("log_buffer_size", g),
        }
    }
}

/// The compiled, immutable configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// File it came from.
    pub source: String,
    /// Host name for banners and trace headers.
    pub hostname: String,
    /// `None` = one per available CPU.
    pub shards: Option<usize>,
    /// CPUs to pin to, in shard order.
    pub cpus: Option<Vec<usize>>,
    /// Spool root.
    pub spoolbase: PathBuf,
    /// Grace period on shutdown.
    pub shutdown_timeout: Duration,
    /// Spool tuning.
    pub spool: SpoolSettings,
    /// Domains accepted from anyone.
    pub relay_domains: Vec<String>,
    /// Per shard: content octets sessions may buffer before their 250.
    pub inbound_data_budget: u64,
    /// Per shard: received messages whose content stays in memory until
    /// their first attempt ends.
    pub max_resident_messages: u64,
    /// Per shard: their content octets, when set (else see
    /// [`Config::max_resident_size`]).
    pub max_resident_size: Option<u64>,
    /// DNS resolution settings.
    pub dns: DnsSettings,
    /// The Momentum-format logs.
    pub logs: LogSettings,
    /// Listeners in file order.
    pub listeners: Vec<Listener>,
    /// `[shard.N]` overrides.
    pub shard_overrides: BTreeMap<usize, ShardOverride>,
    /// Delivery settings per binding and destination domain.
    pub delivery: DeliveryTable,
    /// Bindings, groups and the rules that assign mail to them.
    pub bindings: BindingTable,
    /// Adaptive back-off rules, built-in ones first.
    pub backoff: Arc<[BackoffRule]>,
    raw: RawConfig,
}

/// The one fallback rule: the first scope in `chain` (most specific first)
/// that sets `name` wins, else the registry default. Every lookup uses it.
pub fn lookup(name: &str, chain: &[&Values]) -> Option<Value> {
    chain
        .iter()
        .find_map(|v| v.get(name).map(|e| e.value.clone()))
        .or_else(|| options::find(name).and_then(default_value))
}

/// The registry default of an option, as a checked value.
pub fn default_value(def: &OptionDef) -> Option<Value> {
    let lit = def.default?;
    let parsed = toml::de::DeValue::parse(lit).ok()?;
    parse::convert(parsed.get_ref(), def.kind).ok()
}

pub(crate) fn int(name: &str, chain: &[&Values]) -> u64 {
    match lookup(name, chain) {
        Some(Value::Int(n)) => n,
        other => unreachable!("registry gives {name} an integer default, got {other:?}"),
    }
}

pub(crate) fn flag(name: &str, chain: &[&Values]) -> bool {
    matches!(lookup(name, chain), Some(Value::Bool(true)))
}

pub(crate) fn secs(name: &str, chain: &[&Values]) -> Duration {
    Duration::from_secs(int(name, chain))
}

fn cidrs(name: &str, v: &Values) -> Vec<IpNet> {
    match v.get(name).map(|e| &e.value) {
        Some(Value::Cidrs(c)) => c.clone(),
        _ => Vec::new(),
    }
}

fn path_of(name: &str, chain: &[&Values]) -> Option<(PathBuf, usize)> {
    chain.iter().find_map(|v| match v.get(name) {
        Some(Entry {
            value: Value::Path(p),
            at,
        }) => Some((p.clone(), *at)),
        _ => None,
    })
}

impl Inbound {
    /// Resolves inbound settings along a scope chain, most specific first.
    pub fn resolve(chain: &[&Values]) -> Inbound {
        Inbound {
            idle_time: secs("idle_time", chain),
            data_timeout: secs("data_timeout", chain),
            min_data_rate: int("min_data_rate", chain),
            max_session_time: secs("max_session_time", chain),
            message_size: int("message_size", chain),
            max_recipients_per_message: int("max_recipients_per_message", chain) as usize,
            max_receptions_per_connection: int("max_receptions_per_connection", chain) as u32,
            max_errors_per_session: int("max_errors_per_session", chain) as u32,
            max_command_line_octets: int("max_command_line_octets", chain) as usize,
            max_data_line_octets: int("max_data_line_octets", chain) as usize,
            max_connections_per_ip: int("max_connections_per_ip", chain) as u32,
            require_ehlo: flag("require_ehlo", chain),
            allow_null_envelope_sender: flag("allow_null_envelope_sender", chain),
            reject_8bit_without_8bitmime: flag("reject_8bit_without_8bitmime", chain),
            auth_requires_tls: flag("auth_requires_tls", chain),
            auth_failure_delay: Duration::from_millis(int("auth_failure_delay_ms", chain)),
            auth_failure_max_delay: Duration::from_millis(int("auth_failure_max_delay_ms", chain)),
            auth_failures_per_ip: int("auth_failures_per_ip", chain) as u32,
            auth_failure_window: secs("auth_failure_window_secs", chain),
            can_relay: match chain.first().and_then(|v| v.get("can_relay")) {
                Some(Entry {
                    value: Value::Bool(b),
                    ..
                }) => Some(*b),
                _ => None,
            },
        }
    }
}

/// Host name from the system, for the default of `hostname`.
pub fn system_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for buf.len() bytes; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(s) if rc == 0 && !s.is_empty() => s.to_string(),
        _ => "localhost".to_string(),
    }
}

impl Config {
    /// Loads and compiles a file, or the embedded default when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigErrors> {
        match path {
            None => Config::from_str(EMBEDDED_NAME, EMBEDDED_DEFAULT, Path::new(".")),
            Some(p) => {
                let name = p.display().to_string();
                let src = std::fs::read_to_string(p).map_err(|e| {
                    ConfigErrors(vec![ConfigError {
                        file: name.clone(),
                        line: 0,
                        column: 0,
                        key_path: String::new(),
                        message: format!("cannot read the file: {e}"),
                        hint: Some("check the path and its permissions".into()),
                    }])
                })?;
                let base = p.parent().unwrap_or(Path::new("."));
                Config::from_str(&name, &src, base)
            }
        }
    }

    /// Compiles a document. Relative paths for TLS and password files are
    /// taken from `base` (the config file's directory).
    pub fn from_str(file: &str, src: &str, base: &Path) -> Result<Config, ConfigErrors> {
        let raw = parse::parse(file, src).map_err(ConfigErrors)?;
        let mut errors = Vec::new();
        let err_at = |at: usize, key_path: String, message: String, hint: Option<String>| {
            let (line, column) = parse::line_col(src, at);
            ConfigError {
                file: file.to_string(),
                line,
                column,
                key_path,
                message,
                hint,
            }
        };
        let g = [&raw.global];
        let shards = match lookup("shards", &g) {
            Some(Value::Shards(n)) => n,
            _ => None,
        };
        let cpus = match raw.global.get("cpus") {
            Some(Entry {
                value: Value::Cpus(c),
                at,
            }) => {
                if c.is_empty() {
                    errors.push(err_at(
                        *at,
                        "global.cpus".into(),
                        "the list is empty".into(),
                        Some("leave cpus out to use every available CPU".into()),
                    ));
                }
                if let Some(n) = shards.filter(|n| c.len() < *n) {
                    errors.push(err_at(
                        *at,
                        "global.cpus".into(),
                        format!("{} CPUs listed for {n} shards", c.len()),
                        Some("list one CPU per shard".into()),
                    ));
                }
                Some(c.clone())
            }
            _ => None,
        };
        let hostname = match lookup("hostname", &g) {
            Some(Value::Text(h)) => h,
            _ => system_hostname(),
        };
        let global_relay = cidrs("relay_hosts", &raw.global);
        let global_relay = if raw.global.contains_key("relay_hosts") {
            global_relay
        } else {
            match options::find("relay_hosts").and_then(default_value) {
                Some(Value::Cidrs(c)) => c,
                _ => Vec::new(),
            }
        };
        let mut listeners = Vec::new();
        for l in &raw.listeners {
            let chain = [&l.values, &raw.global];
            let listen = match l.values.get("listen") {
                Some(Entry {
                    value: Value::Addrs(a),
                    ..
                }) => a.clone(),
                _ => Vec::new(),
            };
            let overridden = raw
                .shards
                .values()
                .any(|s| s.listeners.contains_key(&l.name));
            if listen.is_empty() && !overridden {
                let (line, column) = find_header(src, &l.name);
                errors.push(ConfigError {
                    file: file.into(),
                    line,
                    column,
                    key_path: format!("listener.{}", l.name),
                    message: "no `listen` addresses".into(),
                    hint: Some("add listen = [\"127.0.0.1:25\"]".into()),
                });
            }
            let mut relay_hosts = global_relay.clone();
            relay_hosts.extend(cidrs("relay_hosts", &l.values));
            let mut peers: Vec<(IpNet, Inbound)> = l
                .peers
                .iter()
                .map(|p| {
                    (
                        p.net,
                        Inbound::resolve(&[&p.values, &l.values, &raw.global]),
                    )
                })
                .collect();
            // Most specific network first, so the first match is the best.
            peers.sort_by_key(|p| std::cmp::Reverse(p.0.prefix_len()));
            let tls = match (
                path_of("tls_certificate", &chain),
                path_of("tls_key", &chain),
            ) {
                (None, None) => None,
                (Some((cert, at)), Some((key, _))) => {
                    match TlsMaterial::load(&base.join(cert), &base.join(key)) {
                        Ok(t) => Some(t),
                        Err(e) => {
                            errors.push(err_at(
                                at,
                                format!("listener.{}.tls_certificate", l.name),
                                e,
                                Some("give a PEM certificate chain and its PEM private key".into()),
                            ));
                            None
                        }
                    }
                }
                (Some((_, at)), None) | (None, Some((_, at))) => {
                    errors.push(err_at(
                        at,
                        format!("listener.{}", l.name),
                        "tls_certificate and tls_key go together".into(),
                        Some("set both, or neither".into()),
                    ));
                    None
                }
            };
            let credentials = match path_of("auth_password_file", &chain) {
                None => None,
                Some((p, at)) => match Credentials::load(&base.join(p)) {
                    Ok(c) => Some(Arc::new(c)),
                    Err(e) => {
                        errors.push(err_at(at, format!("listener.{}.auth_password_file", l.name), e, Some("one `user:$6$...` (SHA512-CRYPT) line per user; make one with `openssl passwd -6`".into())));
                        None
                    }
                },
            };
            listeners.push(Listener {
                name: l.name.clone(),
                listen,
                listener_sessions: int("listener_sessions", &chain) as u32,
                relay_hosts,
                inbound: Inbound::resolve(&chain),
                peers,
                tls,
                credentials,
            });
        }
        if raw.listeners.is_empty() {
            errors.push(ConfigError {
                file: file.into(),
                line: 1,
                column: 1,
                key_path: "listener".into(),
                message: "no listeners are configured".into(),
                hint: Some(
                    "add a [listener.esmtp] section with listen = [\"127.0.0.1:25\"]".into(),
                ),
            });
        }
        let mut shard_overrides = BTreeMap::new();
        for (n, s) in &raw.shards {
            let mut o = ShardOverride {
                spool_dir: path_of("spool_dir", &[&s.values]).map(|(p, _)| p),
                listener_sessions: s
                    .values
                    .get("listener_sessions")
                    .and_then(|e| match e.value {
                        Value::Int(v) => Some(v as u32),
                        _ => None,
                    }),
                listen: BTreeMap::new(),
            };
            for (name, values) in &s.listeners {
                let at = values.values().map(|e| e.at).next().unwrap_or(0);
                if !raw.listeners.iter().any(|l| &l.name == name) {
                    errors.push(err_at(
                        at,
                        format!("shard.{n}.listener.{name}"),
                        format!("there is no [listener.{name}]"),
                        Some(
                            "shard overrides refer to listeners declared elsewhere in the file"
                                .into(),
                        ),
                    ));
                }
                for key in values.keys().filter(|k| **k != "listen") {
                    errors.push(err_at(
                        values[key].at,
                        format!("shard.{n}.listener.{name}.{key}"),
                        format!("`{key}` cannot be overridden per shard"),
                        Some("only `listen` can be set in [shard.N.listener.NAME]".into()),
                    ));
                }
                if let Some(Entry {
                    value: Value::Addrs(a),
                    ..
                }) = values.get("listen")
                {
                    o.listen.insert(name.clone(), a.clone());
                }
            }
            if let Some(e) = s.values.get("listen") {
                errors.push(err_at(
                    e.at,
                    format!("shard.{n}.listen"),
                    "per-shard listen addresses belong to a listener".into(),
                    Some(format!("write [shard.{n}.listener.NAME] listen = [...]")),
                ));
            }
            shard_overrides.insert(*n, o);
        }
        // Global only (bindings without their own fall back to it): checked once.
        let bind_address =
            delivery::bind_address(&raw.global).unwrap_or_else(|(at, key, message)| {
                errors.push(err_at(at, format!("global.{key}"), message, None));
                None
            });
        let bindings = binding::compile(&raw, bind_address).unwrap_or_else(|errs| {
            for (at, key, message) in errs {
                errors.push(err_at(at, key, message, None));
            }
            BindingTable::empty()
        });
        // The shipped rules are text in the binary: a fault there is a bug.
        let built_in = parse::parse("<built-in back-off rules>", backoff::BUILT_IN)
            .expect("the built-in back-off rules parse")
            .backoffs;
        let backoff: Arc<[BackoffRule]> = backoff::compile(&built_in, &raw.backoffs)
            .unwrap_or_else(|errs| {
                for (at, key, message) in errs {
                    errors.push(err_at(at, key, message, None));
                }
                Vec::new()
            })
            .into();
        let mut compile_delivery =
            |chain: &[&Values], scopes: &[ThrottleScope], scope: String| match delivery::compile(
                chain, scopes, &hostname, base,
            ) {
                Ok(d) => Some(d),
                Err((at, key, message)) => {
                    errors.push(err_at(at, format!("{scope}.{key}"), message, None));
                    None
                }
            };
        let default_delivery =
            compile_delivery(&[&raw.global], &[ThrottleScope::Global], "global".into());
        let mut domain_delivery = std::collections::HashMap::new();
        for (name, values) in &raw.domains {
            if let Some(d) = compile_delivery(
                &[values, &raw.global],
                &[
                    ThrottleScope::Domain(name.as_str().into()),
                    ThrottleScope::Global,
                ],
                format!("domain.\"{name}\""),
            ) {
                domain_delivery.insert(name.clone(), Arc::new(d));
            }
        }
        let mut own_delivery = Vec::new();
        for (i, b) in raw.bindings.iter().enumerate() {
            let gname = &bindings.get(i + 1).group;
            let group = raw.groups.iter().find(|g| *g.name == **gname);
            if !binding::has_delivery_values(b) && !group.is_some_and(binding::has_delivery_values)
            {
                continue;
            }
            let bs: Arc<str> = b.name.as_str().into();
            let gs: Option<Arc<str>> = group.map(|g| g.name.as_str().into());
            let mut names: std::collections::BTreeSet<&String> = raw.domains.keys().collect();
            names.extend(b.domains.keys());
            if let Some(g) = group {
                names.extend(g.domains.keys());
            }
            // Most specific first: binding::domain, group::domain, binding,
            // group, domain, global (reference §1.3).
            let chain_for = |d: Option<&String>| {
                let mut chain: Vec<&Values> = Vec::new();
                let mut scopes = Vec::new();
                if let Some(d) = d {
                    let ds: Arc<str> = d.as_str().into();
                    if let Some(v) = b.domains.get(d) {
                        chain.push(v);
                        scopes.push(ThrottleScope::BindingDomain(bs.clone(), ds.clone()));
                    }
                    if let (Some(g), Some(gs)) = (group, &gs) {
                        if let Some(v) = g.domains.get(d) {
                            chain.push(v);
                            scopes.push(ThrottleScope::GroupDomain(gs.clone(), ds.clone()));
                        }
                    }
                }
                chain.push(&b.values);
                scopes.push(ThrottleScope::Binding(bs.clone()));
                if let (Some(g), Some(gs)) = (group, &gs) {
                    chain.push(&g.values);
                    scopes.push(ThrottleScope::Group(gs.clone()));
                }
                if let Some(v) = d.and_then(|d| raw.domains.get(d)) {
                    chain.push(v);
                    scopes.push(ThrottleScope::Domain(
                        d.map(|d| d.as_str().into()).unwrap_or_default(),
                    ));
                }
                chain.push(&raw.global);
                scopes.push(ThrottleScope::Global);
                (chain, scopes)
            };
            let (chain, scopes) = chain_for(None);
            let Some(own_default) =
                compile_delivery(&chain, &scopes, format!("binding.{}", b.name))
            else {
                continue;
            };
            let mut own_domains = std::collections::HashMap::new();
            for d in names {
                let (chain, scopes) = chain_for(Some(d));
                if let Some(x) = compile_delivery(
                    &chain,
                    &scopes,
                    format!("binding.{}.domain.\"{d}\"", b.name),
                ) {
                    own_domains.insert(d.clone(), Arc::new(x));
                }
            }
            own_delivery.push((i + 1, own_default, own_domains));
        }
        let dns = DnsSettings {
            nameservers: match lookup("nameservers", &g) {
                Some(Value::Addrs(a)) => Some(a),
                _ => None,
            },
            timeout: match lookup("dns_timeout_ms", &g) {
                Some(Value::Int(ms)) => Some(Duration::from_millis(ms)),
                _ => None,
            },
            attempts: match lookup("dns_attempts", &g) {
                Some(Value::Int(n)) => Some(n as u32),
                _ => None,
            },
            min_ttl_secs: int("min_dns_ttl", &g) as u32,
            max_ttl_secs: int("max_dns_ttl", &g) as u32,
        };
        if dns.min_ttl_secs > dns.max_ttl_secs {
            let at = raw.global.get("min_dns_ttl").map_or(0, |e| e.at);
            errors.push(err_at(
                at,
                "global.min_dns_ttl".into(),
                format!(
                    "min_dns_ttl ({}) is above max_dns_ttl ({})",
                    dns.min_ttl_secs, dns.max_ttl_secs
                ),
                Some("the floor must not exceed the ceiling".into()),
            ));
        }
        let Some(default_delivery) = default_delivery.filter(|_| errors.is_empty()) else {
            return Err(ConfigErrors(errors));
        };
        let relay_domains = match lookup("relay_domains", &g) {
            Some(Value::TextList(d)) => d.into_iter().map(|d| d.to_ascii_lowercase()).collect(),
            _ => Vec::new(),
        };
        Ok(Config {
            source: file.to_string(),
            hostname,
            shards,
            cpus,
            spoolbase: path_of("spoolbase", &g)
                .map(|(p, _)| p)
                .unwrap_or_else(|| PathBuf::from("spool")),
            shutdown_timeout: secs("shutdown_timeout", &g),
            spool: SpoolSettings {
                segment_size: int("spool_segment_size", &g),
                batch_max_bytes: int("spool_batch_max_bytes", &g) as usize,
                batch_max_delay: Duration::from_micros(int("spool_batch_max_delay_us", &g)),
                compact_interval: secs("spool_compact_interval_secs", &g),
                reserve_bytes: int("spool_reserve_size", &g),
            },
            relay_domains,
            inbound_data_budget: int("inbound_data_budget", &g),
            max_resident_messages: int("max_resident_messages", &g),
            max_resident_size: match lookup("max_resident_size", &g) {
                Some(Value::Int(n)) => Some(n),
                _ => None,
            },
            dns,
            logs: LogSettings::resolve(&g),
            listeners,
            shard_overrides,
            delivery: {
                let mut t = DeliveryTable::new(default_delivery, domain_delivery);
                for (slot, d, domains) in own_delivery {
                    t.set_binding(slot, d, domains);
                }
                t
            },
            bindings,
            backoff,
            raw,
        })
    }

    /// Per shard: content octets of resident messages, given the machine's
    /// physical memory and CPUs: `max_resident_size`, else a quarter of
    /// the memory shared by the shards.
    pub fn resident_size_per_shard(&self, physical_memory: u64, available: usize) -> u64 {
        self.max_resident_size
            .unwrap_or(physical_memory / 4 / self.shard_count(available) as u64)
    }

    /// How many shards to run on a machine with `available` CPUs.
    pub fn shard_count(&self, available: usize) -> usize {
        self.shards
            .unwrap_or_else(|| self.cpus.as_ref().map_or(available, |c| c.len()))
            .max(1)
    }

    /// A shard's spool directory.
    pub fn spool_dir(&self, shard: usize) -> PathBuf {
        self.shard_overrides
            .get(&shard)
            .and_then(|o| o.spool_dir.clone())
            .unwrap_or_else(|| self.spoolbase.join(format!("shard-{shard}")))
    }

    /// The addresses a shard binds for a listener.
    pub fn listen_addrs(&self, shard: usize, listener: &Listener) -> Vec<SocketAddr> {
        self.shard_overrides
            .get(&shard)
            .and_then(|o| o.listen.get(&listener.name).cloned())
            .unwrap_or_else(|| listener.listen.clone())
    }

    /// Sessions per listener on a shard.
    pub fn listener_sessions(&self, shard: usize, listener: &Listener) -> u32 {
        self.shard_overrides
            .get(&shard)
            .and_then(|o| o.listener_sessions)
            .unwrap_or(listener.listener_sessions)
    }

    /// Shard numbers named in `[shard.N]` that a run with `count` shards does not have.
    pub fn unused_shard_overrides(&self, count: usize) -> Vec<usize> {
        self.shard_overrides
            .keys()
            .copied()
            .filter(|n| *n >= count)
            .collect()
    }
}

/// Line and column of a listener's section header, for errors about it.
fn find_header(src: &str, name: &str) -> (usize, usize) {
    let needle = format!("[listener.{name}]");
    src.find(&needle)
        .map_or((1, 1), |at| parse::line_col(src, at))
}

#[cfg(test)]
mod tests;
