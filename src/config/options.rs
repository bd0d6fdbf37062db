//! The defaults registry: every configuration option, the scopes it may
//! appear in, its type, range, built-in default and when a reload makes a
//! changed value take effect.
//!
//! Pure data. `parse` checks files against it; `resolve` falls back to the
//! defaults here; `reload` classifies changes by it; `check-config` prints
//! from it. May call: nothing in the crate. Must never: mark an option by
//! intent rather than by where the running server reads its compiled value.

/// Where an option may be written.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// `[global]`
    Global,
    /// `[listener.NAME]`
    Listener,
    /// `[listener.NAME.peer."CIDR"]`
    Peer,
    /// `[domain."name"]`
    Domain,
    /// `[shard.N]`
    Shard,
    /// `[binding.NAME]` (and `[binding.NAME.domain."x"]`)
    Binding,
    /// `[binding_group.NAME]` (and `[binding_group.NAME.domain."x"]`)
    BindingGroup,
    /// `[backoff.NAME]`
    Backoff,
}

impl Scope {
    /// The scope's name as written in messages.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Global => "global",
            Scope::Listener => "listener",
            Scope::Peer => "peer",
            Scope::Domain => "domain",
            Scope::Shard => "shard",
            Scope::Binding => "binding",
            Scope::BindingGroup => "binding_group",
            Scope::Backoff => "backoff",
        }
    }
}

/// The type of an option's value, with its allowed range.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// true/false.
    Bool,
    /// A whole number in `min..=max`.
    Int { min: u64, max: u64 },
    /// A byte count: an integer or a string with K, M or G suffix.
    Size { min: u64, max: u64 },
    /// Free text.
    Text,
    /// A filesystem path.
    Path,
    /// A list of strings.
    TextList,
    /// A list of IP networks (`10.0.0.0/8`, `::1/128`, or a bare address).
    CidrList,
    /// A list of `ip:port` socket addresses.
    AddrList,
    /// `"auto"` or a number of shards.
    Shards,
    /// A list of CPU numbers.
    CpuList,
    /// One of a fixed set of words.
    Choice(&'static [&'static str]),
    /// A rate: `N` per second, or `"N/S"` (N per S seconds); 0 = none.
    Rate,
    /// Names with weights: `{ a = 3, b = 1 }`, or a list of names (weight 1).
    Weights,
}

impl Kind {
    /// How the value is written, for hints.
    pub fn describe(self) -> String {
        match self {
            Kind::Bool => "true or false".into(),
            Kind::Int { min, max } => format!("an integer from {min} to {max}"),
            Kind::Size { min, max } => {
                format!(
                    "a size in bytes from {min} to {max} (an integer, or a string like \"10M\")"
                )
            }
            Kind::Text => "a string".into(),
            Kind::Path => "a path (string)".into(),
            Kind::TextList => "a list of strings".into(),
            Kind::CidrList => "a list of networks, e.g. [\"127.0.0.0/8\", \"::1/128\"]".into(),
            Kind::AddrList => "a list of addresses, e.g. [\"127.0.0.1:25\", \"[::1]:25\"]".into(),
            Kind::Shards => "\"auto\" or a number of shards from 1 to 1024".into(),
            Kind::CpuList => "a list of CPU numbers, e.g. [0, 1]".into(),
            Kind::Rate => {
                "a rate: N per second, or \"N/S\" for N per S seconds (e.g. \"600/60\"); 0 = none"
                    .into()
            }
            Kind::Weights => {
                "names with weights, { vip1 = 3, vip2 = 1 }, or a list of names".into()
            }
            Kind::Choice(words) => format!(
                "one of {}",
                words
                    .iter()
                    .map(|w| format!("\"{w}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// When a changed value takes effect after a reload (SIGHUP). Each mark
/// says where the running server reads the option's compiled value from
/// the current snapshot (`Control::config`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Reload {
    /// The running server uses the new value from its next decision on.
    /// What "next decision" means, by reader:
    /// * the delivery scheduler reads `suspend_delivery` and
    ///   `max_outbound_connections` on each pass (on new work, else at
    ///   least every 500 ms) before it opens connections for a domain;
    ///   connections already open are not stopped when delivery is
    ///   suspended, they run until they close; when the limit falls, the
    ///   domain's owner shard lowers each shard's target at its next sync
    ///   (100 ms) and connections over it close after their current
    ///   message;
    /// * every other delivery option (routes, ports, EHLO name, outbound
    ///   TLS, timeouts, per-connection and per-batch limits, the retry and
    ///   expiry policy, DSN options) is taken by each outbound connection
    ///   when it opens and kept until it closes (when its domain's queue
    ///   has been empty for `idle_timeout`, or after
    ///   `max_deliveries_per_connection` messages), so it is live for new
    ///   connections; retry times already given to queued messages stand;
    /// * spool compaction reads `spool_compact_interval_secs` before each
    ///   pass (every 50 ms it checks whether one is due);
    /// * `shutdown_timeout` is read when a shutdown begins.
    Live,
    /// Inbound sessions read it when they start (admission, banner and
    /// session limits); sessions already open keep the old value. Notes:
    /// `inbound_data_budget` is one budget per shard: each new session sets
    /// its limit, which open sessions of that shard then share; `hostname`
    /// also names DSNs (read per DSN) and is the default of `ehlo_hostname`
    /// and `mailerdaemon` (per outbound connection); the files named by
    /// `tls_certificate`, `tls_key` and `auth_password_file` are read
    /// again at every reload, even when the paths did not change.
    NewSessions,
    /// Read once at start-up: shard layout and CPUs, spool directories and
    /// the tuning the spools were opened with, bound addresses, and the DNS
    /// resolver (built per shard at start, with /etc/resolv.conf). A reload
    /// keeps the running value until a restart.
    Restart,
}

impl Reload {
    /// The class as `check-config --options` prints it.
    pub fn name(self) -> &'static str {
        match self {
            Reload::Live => "live",
            Reload::NewSessions => "new-sessions",
            Reload::Restart => "restart",
        }
    }
}

/// One option of the registry.
#[derive(Debug)]
pub struct OptionDef {
    /// Name as written in the file (Momentum's where Momentum has one).
    pub name: &'static str,
    /// Scopes it may be written in; lookups fall back through them.
    pub scopes: &'static [Scope],
    /// Type and range.
    pub kind: Kind,
    /// Built-in default as a TOML literal; `None` = unset.
    pub default: Option<&'static str>,
    /// When a reload makes a changed value take effect.
    pub reload: Reload,
    /// One line for `check-config` and the README.
    pub help: &'static str,
}

use Reload::{Live, NewSessions, Restart};
use Scope::{
    Backoff as BO, Binding as B, BindingGroup as BG, Domain as D, Global as G, Listener as L,
    Peer as P, Shard as S,
};

/// Delivery options: Momentum's `*` scope (a domain, a binding, a group,
/// a domain inside either, and the global value they fall back to).
const DELIVERY: &[Scope] = &[G, D, B, BG];

const SECS: Kind = Kind::Int {
    min: 1,
    max: 86_400 * 30,
};
const COUNT: Kind = Kind::Int {
    min: 0,
    max: u32::MAX as u64,
};

/// Every option impulse knows.
pub const OPTIONS: &[OptionDef] = &[
    // --- process and shards (global) ---
    OptionDef { name: "hostname", scopes: &[G], kind: Kind::Text, default: None, reload: NewSessions, help: "name in the banner, EHLO and Received: (default: the system host name)" },
    OptionDef { name: "shards", scopes: &[G], kind: Kind::Shards, default: Some("\"auto\""), reload: Restart, help: "executors (one per CPU core with \"auto\")" },
    OptionDef { name: "cpus", scopes: &[G], kind: Kind::CpuList, default: None, reload: Restart, help: "CPUs to pin shards to, in shard order (default: all available)" },
    OptionDef { name: "spoolbase", scopes: &[G], kind: Kind::Path, default: Some("\"spool\""), reload: Restart, help: "spool root; shard N uses spoolbase/shard-N unless [shard.N] spool_dir is set" },
    OptionDef { name: "spool_dir", scopes: &[S], kind: Kind::Path, default: None, reload: Restart, help: "this shard's spool directory (put shards on different disks)" },
    OptionDef { name: "shutdown_timeout", scopes: &[G], kind: SECS, default: Some("30"), reload: Live, help: "seconds sessions may finish after SIGTERM before they get 421" },
    OptionDef { name: "spool_segment_size", scopes: &[G], kind: Kind::Size { min: 1 << 20, max: 1 << 40 }, default: Some("\"64M\""), reload: Restart, help: "spool segment file size" },
    OptionDef { name: "spool_batch_max_bytes", scopes: &[G], kind: Kind::Size { min: 4096, max: 1 << 30 }, default: Some("\"1M\""), reload: Restart, help: "group commit: bytes per write+sync" },
    OptionDef { name: "spool_batch_max_delay_us", scopes: &[G], kind: Kind::Int { min: 0, max: 1_000_000 }, default: Some("200"), reload: Restart, help: "group commit: longest wait for more appends before a sync (microseconds)" },
    OptionDef { name: "spool_reserve_size", scopes: &[G], kind: Kind::Size { min: 0, max: 1 << 40 }, default: Some("\"16M\""), reload: Restart, help: "disk space each shard holds back so outcomes, DSNs and a new segment can be written when the disk is full; while it is in use new mail gets 452 4.3.1" },
    OptionDef { name: "spool_compact_interval_secs", scopes: &[G], kind: Kind::Int { min: 0, max: 86_400 }, default: Some("30"), reload: Live, help: "seconds between spool compaction passes (delete dead segments, copy live messages out of sparse ones); 0 disables" },
    OptionDef { name: "relay_domains", scopes: &[G], kind: Kind::TextList, default: Some("[]"), reload: NewSessions, help: "domains accepted from anyone (\"*.example.com\" = subdomains only)" },
    // --- inbound: peer -> listener -> global ---
    OptionDef { name: "relay_hosts", scopes: &[G, L], kind: Kind::CidrList, default: Some("[\"127.0.0.0/8\", \"::1/128\"]"), reload: NewSessions, help: "client networks that may relay to any domain (global and listener lists are merged)" },
    OptionDef { name: "can_relay", scopes: &[P], kind: Kind::Bool, default: None, reload: NewSessions, help: "clients in this network may (true) or may not (false) relay, overriding relay_hosts" },
    OptionDef { name: "listen", scopes: &[L, S], kind: Kind::AddrList, default: None, reload: Restart, help: "addresses this listener binds on every shard (SO_REUSEPORT)" },
    OptionDef { name: "listener_sessions", scopes: &[G, L, S], kind: COUNT, default: Some("10000"), reload: NewSessions, help: "concurrent sessions per listener per shard; beyond it 421 4.7.0" },
    OptionDef { name: "max_connections_per_ip", scopes: &[G, L, P], kind: COUNT, default: Some("500"), reload: NewSessions, help: "concurrent sessions from one client address per shard (0 = no limit); beyond it 421 4.7.0" },
    OptionDef { name: "idle_time", scopes: &[G, L, P], kind: SECS, default: Some("300"), reload: NewSessions, help: "seconds a command line may take from the previous reply (each byte does not restart it) before 421 4.4.2" },
    OptionDef { name: "data_timeout", scopes: &[G, L, P], kind: SECS, default: Some("600"), reload: NewSessions, help: "seconds a DATA body or BDAT chunk may take, plus what min_data_rate allows (and at most this long without any content), before 421 4.4.2" },
    OptionDef { name: "min_data_rate", scopes: &[G, L, P], kind: Kind::Int { min: 0, max: 1 << 30 }, default: Some("500"), reload: NewSessions, help: "bytes/s: each content byte received extends the data_timeout deadline by 1/min_data_rate s (0 = no extension)" },
    OptionDef { name: "max_session_time", scopes: &[G, L, P], kind: Kind::Int { min: 0, max: 86_400 * 30 }, default: Some("3600"), reload: NewSessions, help: "seconds a session may last in all, then 421 4.4.2 (0 = no limit)" },
    OptionDef { name: "inbound_data_budget", scopes: &[G], kind: Kind::Size { min: 1 << 20, max: 1 << 40 }, default: Some("\"256M\""), reload: NewSessions, help: "per shard: message content sessions may hold in memory before its 250; beyond it MAIL gets 452 4.3.1 and a message that does not fit is read to its end and refused with 452 4.3.1" },
    OptionDef { name: "max_resident_messages", scopes: &[G], kind: COUNT, default: Some("16384"), reload: Live, help: "per shard: received messages whose content stays in memory from their 250 until their first delivery attempt ends, so that attempt (and a DSN) reads nothing back from the spool (Momentum's max_resident_messages, here per shard); beyond it, or max_resident_size, content is read back when due (0 = none kept)" },
    OptionDef { name: "max_resident_size", scopes: &[G], kind: Kind::Size { min: 0, max: 1 << 40 }, default: None, reload: Live, help: "per shard: content octets those messages may hold (default: a quarter of physical memory shared by the shards)" },
    OptionDef { name: "message_size", scopes: &[G, L, P], kind: Kind::Size { min: 0, max: 1 << 34 }, default: Some("\"10M\""), reload: NewSessions, help: "largest message accepted (0 = no limit); 552 5.3.4 beyond it" },
    OptionDef { name: "max_recipients_per_message", scopes: &[G, L, P], kind: Kind::Int { min: 1, max: 1_000_000 }, default: Some("1000"), reload: NewSessions, help: "RCPTs per message; 452 4.5.3 beyond it" },
    OptionDef { name: "max_receptions_per_connection", scopes: &[G, L, P], kind: COUNT, default: Some("0"), reload: NewSessions, help: "messages per session, then 421 (0 = no limit)" },
    OptionDef { name: "max_errors_per_session", scopes: &[G, L, P], kind: Kind::Int { min: 1, max: 100_000 }, default: Some("20"), reload: NewSessions, help: "error replies before 421 4.7.0 and disconnect" },
    OptionDef { name: "max_command_line_octets", scopes: &[G, L, P], kind: Kind::Int { min: 512, max: 65_536 }, default: Some("2048"), reload: NewSessions, help: "longest command line incl. CRLF; 500 5.5.2 beyond it" },
    OptionDef { name: "max_data_line_octets", scopes: &[G, L, P], kind: Kind::Int { min: 1000, max: 1 << 24 }, default: Some("1000"), reload: NewSessions, help: "longest message line incl. CRLF (RFC 5322: 1000); 550 5.6.0 beyond it" },
    OptionDef { name: "require_ehlo", scopes: &[G, L, P], kind: Kind::Bool, default: Some("false"), reload: NewSessions, help: "MAIL needs HELO/EHLO first" },
    OptionDef { name: "allow_null_envelope_sender", scopes: &[G, L, P], kind: Kind::Bool, default: Some("true"), reload: NewSessions, help: "accept MAIL FROM:<>" },
    OptionDef { name: "reject_8bit_without_8bitmime", scopes: &[G, L, P], kind: Kind::Bool, default: Some("false"), reload: NewSessions, help: "reject 8-bit bodies sent without BODY=8BITMIME (554 5.6.1)" },
    OptionDef { name: "tls_certificate", scopes: &[G, L], kind: Kind::Path, default: None, reload: NewSessions, help: "PEM certificate chain for STARTTLS" },
    OptionDef { name: "tls_key", scopes: &[G, L], kind: Kind::Path, default: None, reload: NewSessions, help: "PEM private key for STARTTLS" },
    OptionDef { name: "auth_password_file", scopes: &[G, L], kind: Kind::Path, default: None, reload: NewSessions, help: "user:{SHA512-CRYPT}$6$... lines for AUTH PLAIN/LOGIN" },
    OptionDef { name: "auth_requires_tls", scopes: &[G, L, P], kind: Kind::Bool, default: Some("true"), reload: NewSessions, help: "offer AUTH only after STARTTLS" },
    OptionDef { name: "auth_failure_delay_ms", scopes: &[G, L, P], kind: Kind::Int { min: 0, max: 60_000 }, default: Some("1000"), reload: NewSessions, help: "wait before the 535 of a session's first failed AUTH, doubling with each further failure (0 = no wait)" },
    OptionDef { name: "auth_failure_max_delay_ms", scopes: &[G, L, P], kind: Kind::Int { min: 0, max: 600_000 }, default: Some("16000"), reload: NewSessions, help: "cap on the wait before a failed AUTH's 535" },
    OptionDef { name: "auth_failures_per_ip", scopes: &[G, L, P], kind: COUNT, default: Some("20"), reload: NewSessions, help: "failed AUTHs from one client address within auth_failure_window_secs, counted host-wide by the address's owner shard; beyond it AUTH gets 421 4.7.0 (0 = no limit)" },
    OptionDef { name: "auth_failure_window_secs", scopes: &[G, L, P], kind: SECS, default: Some("600"), reload: NewSessions, help: "seconds over which auth_failures_per_ip counts, from an address's first failure" },
    // --- delivery (domain -> global); read by the queue and outbound stages ---
    OptionDef { name: "retry_interval", scopes: DELIVERY, kind: SECS, default: Some("1200"), reload: Live, help: "base retry delay in seconds, doubling per attempt" },
    OptionDef { name: "max_retry_interval", scopes: DELIVERY, kind: SECS, default: Some("43200"), reload: Live, help: "cap on the retry delay in seconds" },
    OptionDef { name: "message_expiration", scopes: DELIVERY, kind: SECS, default: Some("86400"), reload: Live, help: "seconds before an undelivered message fails (4.4.7)" },
    OptionDef { name: "max_outbound_connections", scopes: DELIVERY, kind: Kind::Int { min: 1, max: 100_000 }, default: Some("32"), reload: Live, help: "concurrent outbound connections per domain, over all shards (the domain's owner shard leases them out)" },
    OptionDef { name: "server_max_outbound_connections", scopes: &[G, B, BG], kind: Kind::Int { min: 1, max: 1_000_000 }, default: Some("20000"), reload: Live, help: "concurrent outbound connections of the whole server, over all shards and domains (its owner shard leases them out)" },
    OptionDef { name: "scope_max_outbound_connections", scopes: &[G, D, BG], kind: Kind::Int { min: 1, max: 100_000 }, default: None, reload: Live, help: "concurrent outbound connections to a domain over all bindings (set in [global] or [domain]) or over a group's bindings (set in [binding_group]), over all shards; max_outbound_connections caps each binding" },
    OptionDef { name: "outbound_throttle_messages", scopes: DELIVERY, kind: Kind::Rate, default: None, reload: Live, help: "delivery attempts per period (\"600/60\"), over all shards; set in [global] it is one counter that every domain without its own shares" },
    OptionDef { name: "outbound_throttle_connections", scopes: DELIVERY, kind: Kind::Rate, default: None, reload: Live, help: "new outbound connections per period (\"30/60\"), over all shards; shared like outbound_throttle_messages" },
    OptionDef { name: "max_retries", scopes: DELIVERY, kind: Kind::Int { min: 0, max: 100_000 }, default: Some("0"), reload: Live, help: "deferrals before a permanent failure (0 = until message_expiration)" },
    OptionDef { name: "suspend_delivery", scopes: DELIVERY, kind: Kind::Bool, default: Some("false"), reload: Live, help: "accept and queue mail but make no delivery attempts" },
    OptionDef { name: "routes", scopes: DELIVERY, kind: Kind::TextList, default: None, reload: Live, help: "send to these hosts (\"host\", \"host:port\", \"[ipv6]:port\") in order instead of the MX" },
    OptionDef { name: "remote_smtp_port", scopes: DELIVERY, kind: Kind::Int { min: 1, max: 65_535 }, default: Some("25"), reload: Live, help: "destination port for MX hosts and routes without a port" },
    OptionDef { name: "bind_address", scopes: &[G, B, BG], kind: Kind::Text, default: Some("\"*\""), reload: Live, help: "source IP address of outbound connections (\"*\" = the kernel picks); must be an address of this host; a binding or group without one uses the global value" },
    OptionDef { name: "ehlo_hostname", scopes: DELIVERY, kind: Kind::Text, default: None, reload: Live, help: "name sent in EHLO (default: hostname)" },
    OptionDef { name: "tls", scopes: DELIVERY, kind: Kind::Choice(&["no", "ifavailable", "required"]), default: Some("\"ifavailable\""), reload: Live, help: "outbound STARTTLS: opportunistic, required, or off" },
    OptionDef { name: "tls_verify", scopes: DELIVERY, kind: Kind::Choice(&["no", "ca", "host"]), default: Some("\"no\""), reload: Live, help: "outbound certificate check: none, signed by a trusted CA, or CA and host name" },
    OptionDef { name: "tls_ca", scopes: DELIVERY, kind: Kind::Path, default: None, reload: Live, help: "PEM CA bundle trusted in addition to the system roots" },
    OptionDef { name: "max_deliveries_per_connection", scopes: DELIVERY, kind: COUNT, default: Some("0"), reload: Live, help: "messages per outbound connection, then QUIT (0 = no limit)" },
    OptionDef { name: "max_recipients_per_batch", scopes: DELIVERY, kind: Kind::Int { min: 1, max: 100_000 }, default: Some("100"), reload: Live, help: "RCPTs per outbound transaction" },
    OptionDef { name: "idle_timeout", scopes: DELIVERY, kind: SECS, default: Some("5"), reload: Live, help: "seconds an idle outbound connection is kept for more mail" },
    OptionDef { name: "connect_timeout", scopes: DELIVERY, kind: SECS, default: Some("300"), reload: Live, help: "seconds to wait for connect() and the banner" },
    OptionDef { name: "ehlo_timeout", scopes: DELIVERY, kind: SECS, default: Some("300"), reload: Live, help: "seconds to wait for the EHLO and STARTTLS replies" },
    OptionDef { name: "mailfrom_timeout", scopes: DELIVERY, kind: SECS, default: Some("300"), reload: Live, help: "seconds to wait for the MAIL and DATA (354) replies" },
    OptionDef { name: "rcptto_timeout", scopes: DELIVERY, kind: SECS, default: Some("300"), reload: Live, help: "seconds to wait for a RCPT reply" },
    OptionDef { name: "body_timeout", scopes: DELIVERY, kind: SECS, default: Some("600"), reload: Live, help: "seconds to wait for the reply after the final dot" },
    OptionDef { name: "rset_timeout", scopes: DELIVERY, kind: SECS, default: Some("30"), reload: Live, help: "seconds to wait for the RSET and QUIT replies" },
    OptionDef { name: "generate_bounces", scopes: DELIVERY, kind: Kind::Bool, default: Some("true"), reload: Live, help: "send DSNs for failures after acceptance" },
    OptionDef { name: "mailerdaemon", scopes: DELIVERY, kind: Kind::Text, default: None, reload: Live, help: "From: of DSNs (default mailer-daemon@hostname)" },
    OptionDef { name: "bounces_inline_original", scopes: DELIVERY, kind: Kind::Choice(&["none", "headers", "all"]), default: Some("\"headers\""), reload: Live, help: "how much of the original a DSN carries (RET= can ask for less)" },
    OptionDef { name: "generate_delay_dsn", scopes: DELIVERY, kind: Kind::Bool, default: Some("false"), reload: Live, help: "send delay DSNs while a message keeps being deferred" },
    OptionDef { name: "delay_dsn_retry_interval", scopes: DELIVERY, kind: SECS, default: Some("3600"), reload: Live, help: "first delay DSN after this many seconds, then doubling" },
    OptionDef { name: "delay_dsn_max_retry_interval", scopes: DELIVERY, kind: SECS, default: Some("43200"), reload: Live, help: "cap on the interval between delay DSNs" },
    // --- bindings (MultiVIP); read by the binding stage ---
    OptionDef { name: "match_domain", scopes: &[B], kind: Kind::TextList, default: None, reload: Live, help: "envelope sender domains whose mail this binding sends (exact match, first in assignment order)" },
    OptionDef { name: "members", scopes: &[BG], kind: Kind::Weights, default: None, reload: Live, help: "the group's bindings with their weights ({ vip1 = 3, vip2 = 1 }, or [\"vip1\", \"vip2\"] for equal weights); the group's owner shard picks members for all shards by weight, skipping suspended ones" },
    OptionDef { name: "rebind_suspended", scopes: &[BG], kind: Kind::Bool, default: Some("false"), reload: Live, help: "mail of a suspended member (or member x domain) moves to the group's other members by weight when it is due, recorded in the spool; otherwise it waits for the resume" },
    OptionDef { name: "default_binding", scopes: &[G], kind: Kind::Choice(&["normal", "suspended", "none"]), default: Some("\"normal\""), reload: Live, help: "mail no rule assigns to a binding uses `default`: normal, suspended (accepted and held) or none (refused with 451 4.4.4)" },
    OptionDef { name: "regex_binding2", scopes: &[G], kind: Kind::TextList, default: None, reload: Live, help: "assignment rules in order, first match wins: \"vip1[,vip2] = field =~ 'regex' AND field == 'text'\" or \"group:NAME = ...\"; fields mailfrom, rcptto, header:Name, recv_ip, recv_port, sender_ip" },
    // --- adaptive back-off rules; read by the throttle stage ---
    OptionDef { name: "match_code", scopes: &[BO], kind: Kind::Text, default: None, reload: Live, help: "the reply code or its first digits (\"421\", \"45\") the rule matches" },
    OptionDef { name: "match_status", scopes: &[BO], kind: Kind::Text, default: None, reload: Live, help: "the enhanced status or its first parts (\"4.7.28\", \"4.7\") the rule matches" },
    OptionDef { name: "match_text", scopes: &[BO], kind: Kind::Text, default: None, reload: Live, help: "a regex (case-insensitive) the reply's text must match" },
    OptionDef { name: "domains", scopes: &[BO], kind: Kind::TextList, default: None, reload: Live, help: "destination domains the rule is for (\".example.com\" = subdomains); all when unset" },
    OptionDef { name: "action", scopes: &[BO], kind: Kind::Choice(&["connections", "rate", "pause", "suspend", "fail"]), default: Some("\"connections\""), reload: Live, help: "on that binding x domain, over all shards: lower the connections (backoff_connections), lower the message rate (backoff_rate), pause (no connections, then back step by step), suspend (no deliveries until the hold ends), or fail the queued mail with the reply" },
    OptionDef { name: "backoff_connections", scopes: &[BO], kind: Kind::Int { min: 1, max: 100_000 }, default: Some("1"), reload: Live, help: "connections allowed while an action \"connections\" holds" },
    OptionDef { name: "backoff_rate", scopes: &[BO], kind: Kind::Rate, default: None, reload: Live, help: "message rate (\"60/60\") while an action \"rate\" holds" },
    OptionDef { name: "duration", scopes: &[BO], kind: SECS, default: Some("600"), reload: Live, help: "seconds the action holds after the last matching reply" },
    OptionDef { name: "recover_after", scopes: &[BO], kind: SECS, default: Some("300"), reload: Live, help: "seconds without a matching reply before each recovery step" },
    OptionDef { name: "recovery_steps", scopes: &[BO], kind: Kind::Int { min: 1, max: 100 }, default: Some("4"), reload: Live, help: "steps from the action back to the configured limits" },
    OptionDef { name: "enabled", scopes: &[BO], kind: Kind::Bool, default: Some("true"), reload: Live, help: "false switches the rule off (a built-in one too)" },
    // --- logs (global); read by logs (ec_logger and bounce_logger's options) ---
    OptionDef { name: "log_dir", scopes: &[G], kind: Kind::Path, default: Some("\"log\""), reload: Restart, help: "directory of the log files named by a relative path" },
    OptionDef { name: "mainlog", scopes: &[G], kind: Kind::Path, default: Some("\"mainlog.ec\""), reload: Restart, help: "receptions, deliveries and failures (R, D, T, P lines); relative to log_dir; \"\" = off" },
    OptionDef { name: "mainlog_mode", scopes: &[G], kind: Kind::Int { min: 0, max: 0o777 }, default: Some("0o644"), reload: Restart, help: "permissions of a new mainlog file (write 0o644)" },
    OptionDef { name: "paniclog", scopes: &[G], kind: Kind::Path, default: Some("\"paniclog.ec\""), reload: Restart, help: "errors an operator must look at; relative to log_dir; \"\" = off" },
    OptionDef { name: "paniclog_mode", scopes: &[G], kind: Kind::Int { min: 0, max: 0o777 }, default: Some("0o644"), reload: Restart, help: "permissions of a new paniclog file (write 0o644)" },
    OptionDef { name: "rejectlog", scopes: &[G], kind: Kind::Path, default: Some("\"rejectlog.ec\""), reload: Restart, help: "refused commands and connections; relative to log_dir; \"\" = off" },
    OptionDef { name: "rejectlog_mode", scopes: &[G], kind: Kind::Int { min: 0, max: 0o777 }, default: Some("0o644"), reload: Restart, help: "permissions of a new rejectlog file (write 0o644)" },
    OptionDef { name: "acctlog", scopes: &[G], kind: Kind::Path, default: Some("\"acctlog.ec\""), reload: Restart, help: "authentication; relative to log_dir; \"\" = off" },
    OptionDef { name: "acctlog_mode", scopes: &[G], kind: Kind::Int { min: 0, max: 0o777 }, default: Some("0o644"), reload: Restart, help: "permissions of a new acctlog file (write 0o644)" },
    OptionDef { name: "bouncelog", scopes: &[G], kind: Kind::Path, default: Some("\"bouncelog.ec\""), reload: Restart, help: "failures with their bounce class (B lines); relative to log_dir; \"\" = off" },
    OptionDef { name: "bouncelog_mode", scopes: &[G], kind: Kind::Int { min: 0, max: 0o777 }, default: Some("0o644"), reload: Restart, help: "permissions of a new bouncelog file (write 0o644)" },
    OptionDef { name: "heartbeat", scopes: &[G], kind: Kind::Int { min: 0, max: 86_400 }, default: Some("60"), reload: Restart, help: "seconds between M lines in mainlog and bouncelog; 0 = none" },
    OptionDef { name: "log_receptions", scopes: &[G], kind: Kind::Bool, default: Some("true"), reload: Restart, help: "write R lines" },
    OptionDef { name: "log_deliveries", scopes: &[G], kind: Kind::Bool, default: Some("true"), reload: Restart, help: "write D lines" },
    OptionDef { name: "log_transient_failures", scopes: &[G], kind: Kind::Bool, default: Some("true"), reload: Restart, help: "write T lines" },
    OptionDef { name: "log_permanent_failures", scopes: &[G], kind: Kind::Bool, default: Some("true"), reload: Restart, help: "write P lines" },
    OptionDef { name: "log_rejections", scopes: &[G], kind: Kind::Bool, default: Some("true"), reload: Restart, help: "write rejectlog lines" },
    OptionDef { name: "log_errors", scopes: &[G], kind: Kind::Bool, default: Some("true"), reload: Restart, help: "write paniclog lines" },
    OptionDef { name: "log_inband_bounces", scopes: &[G], kind: Kind::Bool, default: Some("true"), reload: Restart, help: "write bouncelog lines for failures in a delivery attempt" },
    OptionDef { name: "log_outofband_bounces", scopes: &[G], kind: Kind::Bool, default: Some("true"), reload: Restart, help: "write bouncelog lines for bounces that come back later (stage 21)" },
    OptionDef { name: "log_format", scopes: &[G], kind: Kind::Choice(&["momentum", "json"]), default: Some("\"momentum\""), reload: Restart, help: "Momentum 2.2 line layouts, or one JSON object per line with the same fields named" },
    OptionDef { name: "log_buffer_size", scopes: &[G], kind: Kind::Size { min: 65_536, max: 1 << 30 }, default: Some("\"4M\""), reload: Restart, help: "per shard and log: octets of lines waiting for the disk before new mail waits for them" },
    // --- DNS (global); read by outbound::dns ---
    OptionDef { name: "nameservers", scopes: &[G], kind: Kind::AddrList, default: None, reload: Restart, help: "recursive DNS servers as ip:port, tried in order (default: nameserver lines of /etc/resolv.conf)" },
    OptionDef { name: "dns_timeout_ms", scopes: &[G], kind: Kind::Int { min: 10, max: 60_000 }, default: None, reload: Restart, help: "wait for one DNS reply before trying the next server (default: resolv.conf timeout, else 5000)" },
    OptionDef { name: "dns_attempts", scopes: &[G], kind: Kind::Int { min: 1, max: 10 }, default: None, reload: Restart, help: "rounds over all nameservers per query (default: resolv.conf attempts, else 2)" },
    OptionDef { name: "min_dns_ttl", scopes: &[G], kind: COUNT, default: Some("0"), reload: Restart, help: "floor on DNS TTLs in seconds, positive and negative answers" },
    OptionDef { name: "max_dns_ttl", scopes: &[G], kind: COUNT, default: Some("4294967295"), reload: Restart, help: "ceiling on DNS TTLs in seconds, positive and negative answers" },
];

/// Looks an option up by name.
pub fn find(name: &str) -> Option<&'static OptionDef> {
    OPTIONS.iter().find(|o| o.name == name)
}

/// The closest known option name, for "did you mean" hints.
pub fn closest(name: &str, scope: Scope) -> Option<&'static str> {
    OPTIONS
        .iter()
        .filter(|o| o.scopes.contains(&scope))
        .map(|o| (strsim::jaro_winkler(name, o.name), o.name))
        .filter(|(score, _)| *score > 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        for (i, a) in OPTIONS.iter().enumerate() {
            assert!(
                OPTIONS[i + 1..].iter().all(|b| b.name != a.name),
                "{}",
                a.name
            );
        }
    }

    #[test]
    fn hints_find_typos() {
        assert_eq!(closest("idle_tme", Scope::Listener), Some("idle_time"));
        assert_eq!(closest("zzzz", Scope::Listener), None);
    }
}
