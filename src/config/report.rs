//! `impulse check-config`: the effective settings per scope, after
//! fallback, marking where each value came from; and the option list with
//! each option's scopes, reload class and default.
//!
//! Owns the report text only. May call: `config` (`Config`,
//! `default_value`), `config::options` (the registry), `config::parse`
//! (values). Must never do I/O: it returns a `String` for `main` to print,
//! and the CPU count comes in as a parameter.

use std::fmt::Write;

use super::options::{Scope, OPTIONS};
use super::parse::{Value, Values};
use super::{default_value, Config};

fn show(v: &Value) -> String {
    match v {
        Value::Bool(b) => b.to_string(),
        Value::Int(n) => n.to_string(),
        Value::Text(s) => format!("{s:?}"),
        Value::Path(p) => format!("{:?}", p.display().to_string()),
        Value::TextList(l) => format!("{l:?}"),
        Value::Cidrs(c) => format!("{:?}", c.iter().map(|n| n.to_string()).collect::<Vec<_>>()),
        Value::Addrs(a) => format!("{:?}", a.iter().map(|n| n.to_string()).collect::<Vec<_>>()),
        Value::Shards(None) => "\"auto\"".into(),
        Value::Shards(Some(n)) => n.to_string(),
        Value::Cpus(c) => format!("{c:?}"),
        Value::Rate { count, secs } => format!("\"{count}/{secs}\""),
        Value::Weights(w) => {
            let items: Vec<String> = w.iter().map(|(n, w)| format!("{n} = {w}")).collect();
            format!("{{ {} }}", items.join(", "))
        }
    }
}

/// Writes the options of `scope` resolved along `chain` (named scopes, most specific first).
fn section(out: &mut String, title: &str, scope: Scope, chain: &[(&str, &Values)]) {
    let _ = writeln!(out, "[{title}]");
    for def in OPTIONS.iter().filter(|d| d.scopes.contains(&scope)) {
        let found = chain
            .iter()
            .find_map(|(name, v)| v.get(def.name).map(|e| (show(&e.value), *name)));
        let (value, from) = match found {
            Some((v, from)) => (v, from.to_string()),
            None => match default_value(def) {
                Some(v) => (show(&v), "default".to_string()),
                None => continue,
            },
        };
        let _ = writeln!(out, "{} = {value}  # {from}", def.name);
    }
    out.push('\n');
}

impl Config {
    /// The effective settings per scope, as `check-config` prints them.
    pub fn effective_report(&self, available_cpus: usize) -> String {
        let mut out = String::new();
        let count = self.shard_count(available_cpus);
        let _ = writeln!(
            out,
            "# {}: valid; {count} shard(s) on this machine; hostname {:?}\n",
            self.source, self.hostname
        );
        let g = &self.raw.global;
        section(&mut out, "global", Scope::Global, &[("global", g)]);
        for l in &self.raw.listeners {
            section(
                &mut out,
                &format!("listener.{}", l.name),
                Scope::Listener,
                &[("listener", &l.values), ("global", g)],
            );
            for p in &l.peers {
                section(
                    &mut out,
                    &format!("listener.{}.peer.\"{}\"", l.name, p.net),
                    Scope::Peer,
                    &[("peer", &p.values), ("listener", &l.values), ("global", g)],
                );
            }
        }
        for (name, d) in &self.raw.domains {
            section(
                &mut out,
                &format!("domain.\"{name}\""),
                Scope::Domain,
                &[("domain", d), ("global", g)],
            );
        }
        let empty = Values::new();
        for gr in &self.raw.groups {
            let title = format!("binding_group.{}", gr.name);
            section(
                &mut out,
                &title,
                Scope::BindingGroup,
                &[("binding_group", &gr.values), ("global", g)],
            );
        }
        for b in &self.raw.bindings {
            let gname = self
                .bindings
                .slot(&b.name)
                .map(|s| self.bindings.get(s).group.clone());
            let gr = self
                .raw
                .groups
                .iter()
                .find(|x| gname.as_deref() == Some(x.name.as_str()));
            let gv = gr.map_or(&empty, |x| &x.values);
            let title = format!("binding.{}", b.name);
            section(
                &mut out,
                &title,
                Scope::Binding,
                &[("binding", &b.values), ("binding_group", gv), ("global", g)],
            );
            let none = std::collections::BTreeMap::new();
            let gd = gr.map_or(&none, |x| &x.domains);
            for (name, d) in &b.domains {
                section(
                    &mut out,
                    &format!("{title}.domain.\"{name}\""),
                    Scope::Domain,
                    &[
                        ("binding.domain", d),
                        ("binding_group.domain", gd.get(name).unwrap_or(&empty)),
                        ("binding", &b.values),
                        ("binding_group", gv),
                        ("domain", self.raw.domains.get(name).unwrap_or(&empty)),
                        ("global", g),
                    ],
                );
            }
        }
        for shard in 0..count {
            let _ = writeln!(out, "[shard.{shard}]  # effective");
            let _ = writeln!(
                out,
                "spool_dir = {:?}",
                self.spool_dir(shard).display().to_string()
            );
            for l in &self.listeners {
                let addrs: Vec<String> = self
                    .listen_addrs(shard, l)
                    .iter()
                    .map(|a| a.to_string())
                    .collect();
                let _ = writeln!(out, "listener.{}.listen = {addrs:?}", l.name);
                let _ = writeln!(
                    out,
                    "listener.{}.listener_sessions = {}",
                    l.name,
                    self.listener_sessions(shard, l)
                );
            }
            out.push('\n');
        }
        for n in self.unused_shard_overrides(count) {
            let _ = writeln!(out, "# note: [shard.{n}] is not used with {count} shard(s)");
        }
        out
    }
}

/// The option list, as `check-config --options` prints it: name, scopes,
/// when a reload applies it (live, new-sessions, restart), default, help.
pub fn options_help() -> String {
    let mut out = String::new();
    for d in OPTIONS {
        let scopes: Vec<_> = d.scopes.iter().map(|s| s.name()).collect();
        let _ = writeln!(
            out,
            "{:<32} {:<24} reload {:<12} default {:<28} {}",
            d.name,
            scopes.join(","),
            d.reload.name(),
            d.default.unwrap_or("(unset)"),
            d.help
        );
    }
    out
}
