//! What a reload changes in a running server: every option whose value as
//! written differs between the running snapshot and the new file, sorted
//! by the registry's reload class (`options::Reload`), and the new snapshot
//! with every restart-only value put back to what runs. Values are compared
//! as written, per scope: writing out a default counts as a change, and a
//! file renewed under the same path (a certificate) does not.
//!
//! Pure comparison of two compiled snapshots and the parsed values they
//! keep; no I/O, no logging (the caller logs [`ReloadPlan::describe`]).
//! May call: the registry and the parsed values. Must never: classify an
//! option other than by its registry mark, or let a new snapshot carry a
//! restart-only value the running server does not use (the snapshot would
//! lie about what runs, and the next reload would not name the option).

use std::collections::{BTreeMap, BTreeSet};

use log::Level;

use super::options::{Reload, Scope, OPTIONS};
use super::parse::{RawBinding, RawConfig, RawPeer, RawShard, Values};
use super::{Config, ShardOverride};

/// Every option a reload changes, by when it takes effect, each named by
/// its key path in the file (`idle_time`, `listener.esmtp.listen`,
/// `domain."example.com".retry_interval`, `shard.0.spool_dir`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadPlan {
    /// Used from the running server's next decision on.
    pub live: Vec<String>,
    /// Used by inbound sessions that start after the reload.
    pub new_sessions: Vec<String>,
    /// Need a restart; the running values are kept until then. Also a
    /// listener added or removed (its sockets are bound at start-up).
    pub restart: Vec<String>,
}

impl ReloadPlan {
    /// True when no option changed.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty() && self.new_sessions.is_empty() && self.restart.is_empty()
    }

    fn push(&mut self, class: Reload, name: String) {
        match class {
            Reload::Live => self.live.push(name),
            Reload::NewSessions => self.new_sessions.push(name),
            Reload::Restart => self.restart.push(name),
        }
    }

    /// The reload's log line for the configuration called `name`, and its
    /// level: a warning when something waits for a restart.
    pub fn describe(&self, name: &str) -> (Level, String) {
        if self.is_empty() {
            return (
                Level::Info,
                format!("reload: configuration {name}: no option changed"),
            );
        }
        let groups = [
            ("applied live", &self.live),
            ("applied to new sessions", &self.new_sessions),
            (
                "needs a restart (running values kept until then)",
                &self.restart,
            ),
        ];
        let parts: Vec<String> = groups
            .iter()
            .filter(|(_, names)| !names.is_empty())
            .map(|(what, names)| format!("{what}: {}", names.join(", ")))
            .collect();
        let level = if self.restart.is_empty() {
            Level::Info
        } else {
            Level::Warn
        };
        (
            level,
            format!("reload: configuration {name}: {}", parts.join("; ")),
        )
    }
}

/// Adds every option of `scope` whose value differs between `running` and
/// `new` (one scope instance; `None` = the instance is not in that file).
fn compare(
    plan: &mut ReloadPlan,
    prefix: &str,
    scope: Scope,
    running: Option<&Values>,
    new: Option<&Values>,
) {
    for def in OPTIONS.iter().filter(|d| d.scopes.contains(&scope)) {
        let was = running.and_then(|v| v.get(def.name)).map(|e| &e.value);
        let is = new.and_then(|v| v.get(def.name)).map(|e| &e.value);
        if was != is {
            plan.push(def.reload, format!("{prefix}{}", def.name));
        }
    }
}

/// Keys present in either map, in order.
fn union<'a, K: Ord, V>(a: &'a BTreeMap<K, V>, b: &'a BTreeMap<K, V>) -> BTreeSet<&'a K> {
    a.keys().chain(b.keys()).collect()
}

/// The values of the peer block for `net`, if there is one.
fn peer(peers: &[RawPeer], net: ipnet::IpNet) -> Option<&Values> {
    peers.iter().find(|p| p.net == net).map(|p| &p.values)
}

/// Every changed option between the running snapshot and a new one, in
/// file order (global, listeners and their peers, domains, shards).
pub fn plan(running: &Config, new: &Config) -> ReloadPlan {
    let (r, n) = (&running.raw, &new.raw);
    let mut plan = ReloadPlan::default();
    let global = (Some(&r.global), Some(&n.global));
    compare(&mut plan, "", Scope::Global, global.0, global.1);
    compare_listeners(&mut plan, r, n);
    for d in union(&r.domains, &n.domains) {
        let prefix = format!("domain.\"{d}\".");
        let (a, b) = (r.domains.get(d), n.domains.get(d));
        compare(&mut plan, &prefix, Scope::Domain, a, b);
    }
    compare_bindings(
        &mut plan,
        "binding",
        Scope::Binding,
        &r.bindings,
        &n.bindings,
    );
    compare_bindings(
        &mut plan,
        "binding_group",
        Scope::BindingGroup,
        &r.groups,
        &n.groups,
    );
    compare_bindings(
        &mut plan,
        "backoff",
        Scope::Backoff,
        &r.backoffs,
        &n.backoffs,
    );
    compare_shards(&mut plan, r, n);
    plan
}

/// `[binding.*]` or `[binding_group.*]` blocks and the domains inside
/// them, by name (all of their options apply live).
fn compare_bindings(
    plan: &mut ReloadPlan,
    section: &str,
    scope: Scope,
    r: &[RawBinding],
    n: &[RawBinding],
) {
    let names: BTreeSet<&str> = r.iter().chain(n).map(|b| b.name.as_str()).collect();
    let empty = BTreeMap::new();
    for name in names {
        let (a, b) = (
            r.iter().find(|x| x.name == name),
            n.iter().find(|x| x.name == name),
        );
        let prefix = format!("{section}.{name}.");
        compare(
            plan,
            &prefix,
            scope,
            a.map(|x| &x.values),
            b.map(|x| &x.values),
        );
        let (da, db) = (
            a.map_or(&empty, |x| &x.domains),
            b.map_or(&empty, |x| &x.domains),
        );
        for d in union(da, db) {
            let prefix = format!("{section}.{name}.domain.\"{d}\".");
            compare(plan, &prefix, Scope::Domain, da.get(d), db.get(d));
        }
    }
}

/// Listeners and their peer blocks; a listener added or removed is one
/// restart entry, not a list of its options.
fn compare_listeners(plan: &mut ReloadPlan, r: &RawConfig, n: &RawConfig) {
    for l in &n.listeners {
        let Some(o) = r.listeners.iter().find(|o| o.name == l.name) else {
            plan.restart
                .push(format!("listener.{} (new listener)", l.name));
            continue;
        };
        let prefix = format!("listener.{}.", l.name);
        let (a, b) = (Some(&o.values), Some(&l.values));
        compare(plan, &prefix, Scope::Listener, a, b);
        let nets: BTreeSet<_> = o.peers.iter().chain(&l.peers).map(|p| p.net).collect();
        for net in nets {
            let (a, b) = (peer(&o.peers, net), peer(&l.peers, net));
            let prefix = format!("{prefix}peer.\"{net}\".");
            compare(plan, &prefix, Scope::Peer, a, b);
        }
    }
    for o in &r.listeners {
        if !n.listeners.iter().any(|l| l.name == o.name) {
            plan.restart
                .push(format!("listener.{} (removed listener)", o.name));
        }
    }
}

/// `[shard.N]` blocks and their `[shard.N.listener.NAME]` overrides.
fn compare_shards(plan: &mut ReloadPlan, r: &RawConfig, n: &RawConfig) {
    let empty = BTreeMap::new();
    for s in union(&r.shards, &n.shards) {
        let (a, b) = (r.shards.get(s), n.shards.get(s));
        let prefix = format!("shard.{s}.");
        let (va, vb) = (a.map(|x| &x.values), b.map(|x| &x.values));
        compare(plan, &prefix, Scope::Shard, va, vb);
        let la = a.map_or(&empty, |x| &x.listeners);
        let lb = b.map_or(&empty, |x| &x.listeners);
        for l in union(la, lb) {
            let prefix = format!("{prefix}listener.{l}.");
            compare(plan, &prefix, Scope::Shard, la.get(l), lb.get(l));
        }
    }
}

/// Puts the running values of every restart-only option into `new`, both
/// the compiled fields and the values as written, so the snapshot the
/// shards read is what actually runs and the next reload names the same
/// options again. The listener set is restart-only too: a listener the
/// running server does not have is dropped (it has no socket), and one it
/// still has is kept with its running settings (its sockets still serve).
///
/// The compiled fields are named here by hand, the written values come
/// from the registry; the reload tests check, option by option, that the
/// two agree with each option's mark.
pub fn keep_restart_only(new: &mut Config, running: &Config) {
    new.shards = running.shards;
    new.cpus = running.cpus.clone();
    new.spoolbase = running.spoolbase.clone();
    let live_interval = new.spool.compact_interval;
    new.spool = running.spool.clone();
    new.spool.compact_interval = live_interval;
    new.dns = running.dns.clone();
    new.logs = running.logs.clone();
    new.listeners
        .retain(|l| running.listeners.iter().any(|o| o.name == l.name));
    for o in &running.listeners {
        match new.listeners.iter_mut().find(|l| l.name == o.name) {
            Some(l) => l.listen = o.listen.clone(),
            None => new.listeners.push(o.clone()),
        }
    }
    for (n, o) in &mut new.shard_overrides {
        let r = running.shard_overrides.get(n);
        o.spool_dir = r.and_then(|r| r.spool_dir.clone());
        o.listen = r.map(|r| r.listen.clone()).unwrap_or_default();
    }
    for (n, r) in &running.shard_overrides {
        new.shard_overrides
            .entry(*n)
            .or_insert_with(|| ShardOverride {
                spool_dir: r.spool_dir.clone(),
                listener_sessions: None,
                listen: r.listen.clone(),
            });
    }
    keep_written(&mut new.raw, &running.raw);
}

/// The written-values half of [`keep_restart_only`], driven by the registry.
fn keep_written(new: &mut RawConfig, running: &RawConfig) {
    keep_values(&mut new.global, &running.global, Scope::Global);
    new.listeners
        .retain(|l| running.listeners.iter().any(|o| o.name == l.name));
    for o in &running.listeners {
        let Some(l) = new.listeners.iter_mut().find(|l| l.name == o.name) else {
            new.listeners.push(o.clone());
            continue;
        };
        keep_values(&mut l.values, &o.values, Scope::Listener);
        for p in &mut l.peers {
            let r = o.peers.iter().find(|r| r.net == p.net);
            keep_values(
                &mut p.values,
                r.map_or(&Values::new(), |r| &r.values),
                Scope::Peer,
            );
        }
        let gone: Vec<&RawPeer> = o
            .peers
            .iter()
            .filter(|r| !l.peers.iter().any(|p| p.net == r.net))
            .collect();
        for r in gone {
            let mut values = Values::new();
            keep_values(&mut values, &r.values, Scope::Peer);
            if !values.is_empty() {
                l.peers.push(RawPeer { net: r.net, values });
            }
        }
    }
    keep_map(&mut new.domains, &running.domains, Scope::Domain);
    let shards: Vec<usize> = union(&running.shards, &new.shards)
        .into_iter()
        .copied()
        .collect();
    let empty = RawShard::default();
    for n in shards {
        let r = running.shards.get(&n).unwrap_or(&empty);
        let s = new.shards.entry(n).or_default();
        keep_values(&mut s.values, &r.values, Scope::Shard);
        keep_map(&mut s.listeners, &r.listeners, Scope::Shard);
    }
}

/// Gives each restart-only option of `scope` in `new` its running value
/// (or none, when the running file does not set it there).
fn keep_values(new: &mut Values, running: &Values, scope: Scope) {
    let restart_only = OPTIONS
        .iter()
        .filter(|d| d.reload == Reload::Restart && d.scopes.contains(&scope));
    for def in restart_only {
        match running.get(def.name) {
            Some(e) => new.insert(def.name, e.clone()),
            None => new.remove(def.name),
        };
    }
}

/// [`keep_values`] for every instance of a keyed scope in either file.
fn keep_map(new: &mut BTreeMap<String, Values>, running: &BTreeMap<String, Values>, scope: Scope) {
    for (k, v) in new.iter_mut() {
        keep_values(v, running.get(k).unwrap_or(&Values::new()), scope);
    }
    for (k, r) in running {
        if !new.contains_key(k) {
            let mut values = Values::new();
            keep_values(&mut values, r, scope);
            if !values.is_empty() {
                new.insert(k.clone(), values);
            }
        }
    }
}

#[cfg(test)]
mod tests;
