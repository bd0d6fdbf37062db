//! Reads a TOML document into per-scope option values, checking every key
//! against the registry in `options`. Collects every error (a TOML syntax
//! error stops at the first), each with file, line and column, the key path
//! when there is one, and a hint where one helps.
//!
//! Owns `Value`, `Entry`, `Values` and the `Raw*` scope tables. May call:
//! `config::options`, `config::ConfigError`; the `toml` and `ipnet` crates.
//! Must never: touch a file (it takes text and returns values or errors), or
//! accept a key the registry does not allow in its scope.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::PathBuf;

use ipnet::IpNet;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::options::{self, Kind, Scope};
use super::ConfigError;

/// A checked option value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Bool options.
    Bool(bool),
    /// Int and Size options.
    Int(u64),
    /// Text options.
    Text(String),
    /// Path options.
    Path(PathBuf),
    /// Lists of strings.
    TextList(Vec<String>),
    /// Lists of networks.
    Cidrs(Vec<IpNet>),
    /// Lists of socket addresses.
    Addrs(Vec<SocketAddr>),
    /// `None` = auto.
    Shards(Option<usize>),
    /// CPU numbers.
    Cpus(Vec<usize>),
    /// Names with weights, in the order written.
    Weights(Vec<(String, u32)>),
    /// A rate: `count` per `secs` seconds (count 0 = none).
    Rate {
        /// Events per period.
        count: u32,
        /// The period in seconds.
        secs: u32,
    },
}

/// One option as written: its value and the byte offset of its key.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The checked value.
    pub value: Value,
    /// Byte offset of the key in the file, for later error messages.
    pub at: usize,
}

/// The options written in one scope instance.
pub type Values = BTreeMap<&'static str, Entry>;

/// A `[listener.NAME.peer."CIDR"]` block.
#[derive(Clone, Debug)]
pub struct RawPeer {
    /// The network it applies to.
    pub net: IpNet,
    /// Its options.
    pub values: Values,
}

/// A `[listener.NAME]` block.
#[derive(Clone, Debug)]
pub struct RawListener {
    /// Listener name.
    pub name: String,
    /// Its options.
    pub values: Values,
    /// Peer blocks in file order.
    pub peers: Vec<RawPeer>,
}

/// A `[shard.N]` block.
#[derive(Clone, Debug, Default)]
pub struct RawShard {
    /// Its options.
    pub values: Values,
    /// `[shard.N.listener.NAME]` overrides.
    pub listeners: BTreeMap<String, Values>,
}

/// A `[binding.NAME]` or `[binding_group.NAME]` block.
#[derive(Clone, Debug)]
pub struct RawBinding {
    /// Its name (case-sensitive, as Momentum's).
    pub name: String,
    /// Byte offset of its header, for errors about the whole block.
    pub at: usize,
    /// Its options.
    pub values: Values,
    /// `[binding.NAME.domain."x"]`, keys lower-cased.
    pub domains: BTreeMap<String, Values>,
}

/// The whole file, checked.
#[derive(Clone, Debug, Default)]
pub struct RawConfig {
    /// `[global]`
    pub global: Values,
    /// `[listener.*]` in file order.
    pub listeners: Vec<RawListener>,
    /// `[domain."x"]`, keys lower-cased.
    pub domains: BTreeMap<String, Values>,
    /// `[shard.N]`
    pub shards: BTreeMap<usize, RawShard>,
    /// `[binding.*]` in file order (slots 1, 2, ...; `default` is 0).
    pub bindings: Vec<RawBinding>,
    /// `[binding_group.*]` in file order.
    pub groups: Vec<RawBinding>,
    /// `[backoff.*]` in file order.
    pub backoffs: Vec<RawBinding>,
}

struct Ctx<'a> {
    file: &'a str,
    src: &'a str,
    errors: Vec<ConfigError>,
}

impl Ctx<'_> {
    fn err(&mut self, span: Range<usize>, path: &str, message: String, hint: Option<String>) {
        let (line, column) = line_col(self.src, span.start);
        self.errors.push(ConfigError {
            file: self.file.to_string(),
            line,
            column,
            key_path: path.to_string(),
            message,
            hint,
        });
    }
}

/// 1-based line and column of a byte offset.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let before = &src[..offset.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Parses and checks a document. `file` names it in errors.
pub fn parse(file: &str, src: &str) -> Result<RawConfig, Vec<ConfigError>> {
    let doc = match DeTable::parse(src) {
        Ok(doc) => doc,
        Err(e) => {
            let (line, column) = line_col(src, e.span().map_or(0, |s| s.start));
            return Err(vec![ConfigError {
                file: file.to_string(),
                line,
                column,
                key_path: String::new(),
                message: format!("TOML syntax: {}", e.message().trim()),
                hint: Some("see https://toml.io for the syntax".into()),
            }]);
        }
    };
    let mut ctx = Ctx {
        file,
        src,
        errors: Vec::new(),
    };
    let mut raw = RawConfig::default();
    for (key, value) in doc.get_ref().iter() {
        let name = key.get_ref().as_ref();
        match name {
            "global" => {
                if let Some(t) = table(&mut ctx, value, "global") {
                    raw.global = scope_values(&mut ctx, t, Scope::Global, "global", &[]);
                }
            }
            "listener" => parse_listeners(&mut ctx, value, &mut raw),
            "domain" => parse_domains(&mut ctx, value, &mut raw),
            "shard" => parse_shards(&mut ctx, value, &mut raw),
            "binding" => raw.bindings = parse_bindings(&mut ctx, value, "binding", Scope::Binding),
            "binding_group" => {
                raw.groups = parse_bindings(&mut ctx, value, "binding_group", Scope::BindingGroup)
            }
            "backoff" => raw.backoffs = parse_bindings(&mut ctx, value, "backoff", Scope::Backoff),
            other => ctx.err(
                key.span(),
                other,
                format!("unknown section `{other}`"),
                Some("sections are [global], [listener.NAME], [listener.NAME.peer.\"CIDR\"], [domain.\"name\"], [binding.NAME], [binding_group.NAME] (each with its own [...domain.\"name\"]), [backoff.NAME] and [shard.N]; options go inside a section".into()),
            ),
        }
    }
    if ctx.errors.is_empty() {
        Ok(raw)
    } else {
        Err(ctx.errors)
    }
}

fn table<'a, 'i>(
    ctx: &mut Ctx,
    v: &'a Spanned<DeValue<'i>>,
    path: &str,
) -> Option<&'a DeTable<'i>> {
    match v.get_ref() {
        DeValue::Table(t) => Some(t),
        other => {
            ctx.err(
                v.span(),
                path,
                format!("expected a table, found {}", other.type_str()),
                Some(format!("write it as [{path}]")),
            );
            None
        }
    }
}

fn parse_listeners(ctx: &mut Ctx, v: &Spanned<DeValue>, raw: &mut RawConfig) {
    let Some(t) = table(ctx, v, "listener") else {
        return;
    };
    for (key, value) in t.iter() {
        let name = key.get_ref().to_string();
        let path = format!("listener.{name}");
        let Some(lt) = table(ctx, value, &path) else {
            continue;
        };
        let values = scope_values(ctx, lt, Scope::Listener, &path, &["peer"]);
        let mut peers = Vec::new();
        if let Some(pv) = lt.get("peer") {
            let ppath = format!("{path}.peer");
            if let Some(pt) = table(ctx, pv, &ppath) {
                for (pkey, pval) in pt.iter() {
                    let cidr = pkey.get_ref().as_ref();
                    let bpath = format!("{ppath}.\"{cidr}\"");
                    let Some(net) = parse_net(cidr) else {
                        ctx.err(pkey.span(), &bpath, format!("`{cidr}` is not a network"), Some("write a CIDR such as \"10.0.0.0/8\" or \"::1/128\", or a single address".into()));
                        continue;
                    };
                    if let Some(bt) = table(ctx, pval, &bpath) {
                        let values = scope_values(ctx, bt, Scope::Peer, &bpath, &[]);
                        peers.push(RawPeer { net, values });
                    }
                }
            }
        }
        raw.listeners.push(RawListener {
            name,
            values,
            peers,
        });
    }
}

fn parse_domains(ctx: &mut Ctx, v: &Spanned<DeValue>, raw: &mut RawConfig) {
    raw.domains = domain_tables(ctx, v, "domain", Scope::Domain);
}

/// The `[PREFIX."x"]` tables under `v`, each checked against `scope`.
fn domain_tables(
    ctx: &mut Ctx,
    v: &Spanned<DeValue>,
    prefix: &str,
    scope: Scope,
) -> BTreeMap<String, Values> {
    let mut out = BTreeMap::new();
    let Some(t) = table(ctx, v, prefix) else {
        return out;
    };
    for (key, value) in t.iter() {
        let name = key.get_ref().to_ascii_lowercase();
        let path = format!("{prefix}.\"{name}\"");
        if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == '@') {
            ctx.err(
                key.span(),
                &path,
                format!("`{name}` is not a domain name"),
                None,
            );
            continue;
        }
        if let Some(dt) = table(ctx, value, &path) {
            let values = scope_values(ctx, dt, scope, &path, &[]);
            out.insert(name, values);
        }
    }
    out
}

/// True for a binding or group name: letters, digits, `_`, `-` and `.`.
pub fn valid_binding_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// `[binding.NAME]` or `[binding_group.NAME]` blocks in file order, with
/// their `domain."x"` tables (checked as domain scopes).
fn parse_bindings(
    ctx: &mut Ctx,
    v: &Spanned<DeValue>,
    section: &str,
    scope: Scope,
) -> Vec<RawBinding> {
    let Some(t) = table(ctx, v, section) else {
        return Vec::new();
    };
    let mut items: Vec<_> = t.iter().collect();
    items.sort_by_key(|(k, _)| k.span().start);
    let mut out = Vec::new();
    for (key, value) in items {
        let name = key.get_ref().to_string();
        let path = format!("{section}.{name}");
        if !valid_binding_name(&name) {
            ctx.err(
                key.span(),
                &path,
                format!("`{name}` is not a valid {section} name"),
                Some("use letters, digits, `_`, `-` and `.` (at most 64)".into()),
            );
            continue;
        }
        let Some(bt) = table(ctx, value, &path) else {
            continue;
        };
        let nests: &[&str] = if scope == Scope::Backoff {
            &[]
        } else {
            &["domain"]
        };
        let values = scope_values(ctx, bt, scope, &path, nests);
        let domains = match bt.get("domain").filter(|_| !nests.is_empty()) {
            Some(dv) => domain_tables(ctx, dv, &format!("{path}.domain"), Scope::Domain),
            None => BTreeMap::new(),
        };
        out.push(RawBinding {
            name,
            at: key.span().start,
            values,
            domains,
        });
    }
    out
}

fn parse_shards(ctx: &mut Ctx, v: &Spanned<DeValue>, raw: &mut RawConfig) {
    let Some(t) = table(ctx, v, "shard") else {
        return;
    };
    for (key, value) in t.iter() {
        let k = key.get_ref().as_ref();
        let path = format!("shard.{k}");
        let Ok(n) = k.parse::<usize>() else {
            ctx.err(
                key.span(),
                &path,
                format!("`{k}` is not a shard number"),
                Some("write [shard.0], [shard.1], ... (shards count from 0)".into()),
            );
            continue;
        };
        let Some(st) = table(ctx, value, &path) else {
            continue;
        };
        let mut shard = RawShard {
            values: scope_values(ctx, st, Scope::Shard, &path, &["listener"]),
            ..Default::default()
        };
        if let Some(lv) = st.get("listener") {
            let lpath = format!("{path}.listener");
            if let Some(lt) = table(ctx, lv, &lpath) {
                for (lkey, lval) in lt.iter() {
                    let name = lkey.get_ref().to_string();
                    let p = format!("{lpath}.{name}");
                    if let Some(t) = table(ctx, lval, &p) {
                        shard
                            .listeners
                            .insert(name, scope_values(ctx, t, Scope::Shard, &p, &[]));
                    }
                }
            }
        }
        raw.shards.insert(n, shard);
    }
}

/// Checks every key of one scope table; `subtables` are keys handled by the caller.
fn scope_values(
    ctx: &mut Ctx,
    t: &DeTable,
    scope: Scope,
    path: &str,
    subtables: &[&str],
) -> Values {
    let mut out = Values::new();
    for (key, value) in t.iter() {
        let name = key.get_ref().as_ref();
        if subtables.contains(&name) {
            continue;
        }
        let kpath = format!("{path}.{name}");
        let Some(def) = options::find(name) else {
            let hint = match options::closest(name, scope) {
                Some(n) => format!("did you mean `{n}`?"),
                None => format!(
                    "`impulse check-config --options` lists the options of [{}]",
                    scope.name()
                ),
            };
            ctx.err(
                key.span(),
                &kpath,
                format!("unknown option `{name}`"),
                Some(hint),
            );
            continue;
        };
        if !def.scopes.contains(&scope) {
            let allowed: Vec<_> = def
                .scopes
                .iter()
                .map(|s| format!("[{}]", s.name()))
                .collect();
            ctx.err(
                key.span(),
                &kpath,
                format!("`{name}` cannot be set in [{}]", scope.name()),
                Some(format!("it belongs in {}", allowed.join(" or "))),
            );
            continue;
        }
        match convert(value.get_ref(), def.kind) {
            Ok(value) => {
                out.insert(
                    def.name,
                    Entry {
                        value,
                        at: key.span().start,
                    },
                );
            }
            Err((msg, span)) => {
                let span = span.unwrap_or_else(|| value.span());
                ctx.err(
                    span,
                    &kpath,
                    msg,
                    Some(format!("expected {}", def.kind.describe())),
                );
            }
        }
    }
    out
}

/// A message and, when narrower than the value, the span it points at.
pub type ConvError = (String, Option<Range<usize>>);

fn int_of(v: &DeValue) -> Result<i128, String> {
    match v {
        DeValue::Integer(i) => i128::from_str_radix(&i.as_str().replace('_', ""), i.radix())
            .map_err(|e| format!("bad integer: {e}")),
        other => Err(format!("wrong type: found {}", other.type_str())),
    }
}

fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        'k' | 'K' => (&s[..s.len() - 1], 1u64 << 10),
        'm' | 'M' => (&s[..s.len() - 1], 1 << 20),
        'g' | 'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}

/// Longest throttle period: a day.
const MAX_RATE_SECS: u32 = 86_400;

/// `N` (per second) or `"N/S"`.
fn parse_rate(v: &DeValue) -> Result<Value, String> {
    let (count, secs) = match v {
        DeValue::String(s) => {
            let bad = || {
                format!("`{s}` is not a rate: write \"N/S\" (N per S seconds) or N (per second)")
            };
            match s.split_once('/') {
                Some((n, p)) => (
                    n.trim().parse::<u64>().map_err(|_| bad())?,
                    p.trim().parse::<u64>().map_err(|_| bad())?,
                ),
                None => (s.trim().parse::<u64>().map_err(|_| bad())?, 1),
            }
        }
        other => (range_check(int_of(other)?, 0, u64::from(u32::MAX))?, 1),
    };
    if count > u64::from(u32::MAX) {
        return Err(format!("{count} per period is out of range"));
    }
    if secs == 0 || secs > u64::from(MAX_RATE_SECS) {
        return Err(format!(
            "a period of {secs} seconds is out of range (1 to {MAX_RATE_SECS})"
        ));
    }
    Ok(Value::Rate {
        count: count as u32,
        secs: secs as u32,
    })
}

/// Parses a CIDR or a bare address (taken as a host network).
pub fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

fn range_check(n: i128, min: u64, max: u64) -> Result<u64, String> {
    if n < min as i128 || n > max as i128 {
        Err(format!("value {n} is out of range"))
    } else {
        Ok(n as u64)
    }
}

fn list<'a, 'i>(v: &'a DeValue<'i>) -> Result<&'a [Spanned<DeValue<'i>>], ConvError> {
    match v {
        DeValue::Array(a) => Ok(a.as_ref()),
        other => Err((
            format!("wrong type: found {}, expected a list", other.type_str()),
            None,
        )),
    }
}

fn str_items<'a>(v: &'a DeValue) -> Result<Vec<(&'a str, Range<usize>)>, ConvError> {
    list(v)?
        .iter()
        .map(|item| match item.get_ref() {
            DeValue::String(s) => Ok((s.as_ref(), item.span())),
            other => Err((
                format!("wrong type in list: found {}", other.type_str()),
                Some(item.span()),
            )),
        })
        .collect()
}

/// Largest weight of a group member.
const MAX_WEIGHT: u64 = 1_000_000;

/// `{ a = 3, b = 1 }` (in the order written) or `["a", "b"]` (weight 1).
fn weights(v: &DeValue) -> Result<Value, ConvError> {
    let mut out = Vec::new();
    match v {
        DeValue::Table(t) => {
            let mut items: Vec<_> = t.iter().collect();
            items.sort_by_key(|(k, _)| k.span().start);
            for (k, w) in items {
                let w = int_of(w.get_ref())
                    .and_then(|n| range_check(n, 1, MAX_WEIGHT))
                    .map_err(|m| (m, Some(w.span())))?;
                out.push((k.get_ref().to_string(), w as u32));
            }
        }
        other => {
            for (name, _) in str_items(other)? {
                out.push((name.to_string(), 1));
            }
        }
    }
    if out.is_empty() {
        return Err(("a group needs at least one member".into(), None));
    }
    Ok(Value::Weights(out))
}

/// Checks one value against a kind.
pub fn convert(v: &DeValue, kind: Kind) -> Result<Value, ConvError> {
    let plain = |r: Result<Value, String>| r.map_err(|m| (m, None));
    match kind {
        Kind::Bool => match v {
            DeValue::Boolean(b) => Ok(Value::Bool(*b)),
            other => Err((format!("wrong type: found {}", other.type_str()), None)),
        },
        Kind::Int { min, max } => plain(
            int_of(v)
                .and_then(|n| range_check(n, min, max))
                .map(Value::Int),
        ),
        Kind::Size { min, max } => {
            let n = match v {
                DeValue::String(s) => parse_size(s)
                    .map(i128::from)
                    .ok_or_else(|| format!("`{s}` is not a size")),
                other => int_of(other),
            };
            plain(n.and_then(|n| range_check(n, min, max)).map(Value::Int))
        }
        Kind::Text | Kind::Path => match v {
            DeValue::String(s) if s.is_empty() => Err(("must not be empty".into(), None)),
            DeValue::String(s) if kind == Kind::Path => Ok(Value::Path(PathBuf::from(s.as_ref()))),
            DeValue::String(s) => Ok(Value::Text(s.to_string())),
            other => Err((format!("wrong type: found {}", other.type_str()), None)),
        },
        Kind::TextList => Ok(Value::TextList(
            str_items(v)?
                .into_iter()
                .map(|(s, _)| s.to_string())
                .collect(),
        )),
        Kind::CidrList => str_items(v)?
            .into_iter()
            .map(|(s, span)| {
                parse_net(s).ok_or_else(|| (format!("`{s}` is not a network"), Some(span)))
            })
            .collect::<Result<_, _>>()
            .map(Value::Cidrs),
        Kind::AddrList => {
            let addrs: Vec<SocketAddr> = str_items(v)?
                .into_iter()
                .map(|(s, span)| {
                    s.parse()
                        .map_err(|_| (format!("`{s}` is not an ip:port address"), Some(span)))
                })
                .collect::<Result<_, _>>()?;
            if addrs.is_empty() {
                return Err(("the list is empty".into(), None));
            }
            Ok(Value::Addrs(addrs))
        }
        Kind::Shards => match v {
            DeValue::String(s) if s.as_ref() == "auto" => Ok(Value::Shards(None)),
            DeValue::String(s) => Err((format!("`{s}` is not \"auto\""), None)),
            other => plain(
                int_of(other)
                    .and_then(|n| range_check(n, 1, 1024))
                    .map(|n| Value::Shards(Some(n as usize))),
            ),
        },
        Kind::Choice(words) => match v {
            DeValue::String(s) if words.contains(&s.as_ref()) => Ok(Value::Text(s.to_string())),
            DeValue::String(s) => Err((format!("`{s}` is not a valid choice"), None)),
            other => Err((format!("wrong type: found {}", other.type_str()), None)),
        },
        Kind::Rate => parse_rate(v).map_err(|m| (m, None)),
        Kind::Weights => weights(v),
        Kind::CpuList => list(v)?
            .iter()
            .map(|item| {
                int_of(item.get_ref())
                    .and_then(|n| range_check(n, 0, 4095))
                    .map(|n| n as usize)
                    .map_err(|m| (m, Some(item.span())))
            })
            .collect::<Result<_, _>>()
            .map(Value::Cpus),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errs(src: &str) -> Vec<ConfigError> {
        parse("t.toml", src).expect_err("should fail")
    }

    #[test]
    fn unknown_key_has_position_path_and_hint() {
        let e = &errs(
            "[global]\nshards = 2\n\n[listener.esmtp]\nlisten = [\"127.0.0.1:25\"]\nidle_tme = 5\n",
        )[0];
        assert_eq!((e.line, e.column), (6, 1));
        assert_eq!(e.key_path, "listener.esmtp.idle_tme");
        assert_eq!(e.hint.as_deref(), Some("did you mean `idle_time`?"));
    }

    #[test]
    fn wrong_type_and_range() {
        let e = errs("[global]\nidle_time = \"soon\"\nmax_errors_per_session = 0\n");
        assert_eq!(e.len(), 2);
        assert_eq!(
            (e[0].line, e[0].column, e[0].key_path.as_str()),
            (2, 13, "global.idle_time")
        );
        assert!(e[0].message.contains("wrong type"), "{}", e[0].message);
        assert!(e[1].message.contains("out of range"));
        assert_eq!(
            e[1].hint.as_deref(),
            Some("expected an integer from 1 to 100000")
        );
    }

    #[test]
    fn bad_addresses_point_at_the_item() {
        let e = errs("[listener.a]\nlisten = [\"127.0.0.1:25\", \"nonsense\"]\n[listener.a.peer.\"10.0.0.0/33\"]\ncan_relay = true\n");
        assert_eq!((e[0].line, e[0].column), (2, 27));
        assert!(e[0].message.contains("nonsense"));
        assert_eq!(e[1].key_path, "listener.a.peer.\"10.0.0.0/33\"");
    }

    #[test]
    fn option_in_wrong_scope() {
        let e = &errs("[listener.a]\nshards = 2\n")[0];
        assert!(e.message.contains("cannot be set in [listener]"));
        assert_eq!(e.hint.as_deref(), Some("it belongs in [global]"));
    }

    #[test]
    fn syntax_error_has_position() {
        let e = &errs("[global]\nshards = \n")[0];
        assert_eq!(e.line, 2);
        assert!(e.message.starts_with("TOML syntax"));
    }

    #[test]
    fn sizes_and_shards() {
        let raw = parse("t", "[global]\nmessage_size = \"2M\"\nshards = \"auto\"\n").unwrap();
        assert_eq!(raw.global["message_size"].value, Value::Int(2 << 20));
        assert_eq!(raw.global["shards"].value, Value::Shards(None));
        assert!(parse("t", "[global]\nshards = \"many\"\n").is_err());
    }
}
