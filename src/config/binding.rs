//! Bindings (Momentum's MultiVIP), compiled: `[binding.NAME]` source
//! addresses, `[binding_group.NAME]` members and weights, the assignment
//! rules (`match_domain`, `regex_binding2`, `default_binding`), and which
//! bindings have delivery settings of their own.
//!
//! Owns `BindingTable` and its parts. May call: the rest of config (the
//! rule parser, values, `delivery::bind_address`). Must never: assign a
//! message (the binding stage does, with this table), or do I/O beyond the
//! bind check of an address.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use super::delivery::bind_address;
use super::parse::{Entry, RawBinding, RawConfig, Value, Values};
use super::rule::{Rule, RuleTarget};

/// The binding every message without another one uses (slot 0).
pub const DEFAULT_BINDING: &str = "default";
/// The group a binding belongs to when no `[binding_group]` lists it.
pub const DEFAULT_GROUP: &str = "default";

/// One binding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindingSettings {
    /// Its name (`default` for slot 0).
    pub name: Arc<str>,
    /// The group it is a member of (`default` when none lists it).
    pub group: Arc<str>,
    /// Source address of its connections (`None`: the kernel picks).
    pub bind_address: Option<IpAddr>,
    /// Its own cap on concurrent connections over all shards, when set
    /// in its table.
    pub server_max_outbound_connections: Option<u32>,
    /// Held by config (`suspend_delivery` in its table, or
    /// `default_binding = "suspended"` for `default`): groups skip it.
    pub suspended: bool,
}

/// One binding group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupSettings {
    /// Its name.
    pub name: Arc<str>,
    /// Member slots with their weights, in the order written.
    pub members: Vec<(usize, u32)>,
    /// A cap on the concurrent connections of all its members, when set.
    pub server_max_outbound_connections: Option<u32>,
    /// Mail of a suspended member moves to the others (`rebind_suspended`)
    /// instead of waiting.
    pub rebind_suspended: bool,
}

/// What an assignment rule gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Assign {
    /// This binding.
    Binding(usize),
    /// One of these bindings, in turn.
    Each(Vec<usize>),
    /// A member of this group, chosen by its owner shard.
    Group(usize),
}

/// `default_binding`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultBinding {
    /// Mail without another binding is sent from `default`.
    Normal,
    /// It is accepted and held.
    Suspended,
    /// It is refused with 451 4.4.4.
    None,
}

/// The compiled bindings.
#[derive(Clone, Debug)]
pub struct BindingTable {
    /// By slot: `default` first, then the declared ones in file order.
    pub bindings: Vec<BindingSettings>,
    /// Declared groups in file order.
    pub groups: Vec<GroupSettings>,
    /// `match_domain`: envelope sender domain (lower-case) to slot.
    pub by_sender_domain: HashMap<String, usize>,
    /// `regex_binding2`, in order.
    pub rules: Vec<(Rule, Assign)>,
    /// What happens to mail nothing else assigns.
    pub default_binding: DefaultBinding,
}

/// An error: byte offset, key path, message.
pub type BindingError = (usize, String, String);

impl BindingTable {
    /// Only `default`, sending from wherever the kernel picks (what a
    /// config that fails to load stands in with while errors are gathered).
    pub fn empty() -> BindingTable {
        BindingTable {
            bindings: vec![BindingSettings {
                name: DEFAULT_BINDING.into(),
                group: DEFAULT_GROUP.into(),
                bind_address: None,
                server_max_outbound_connections: None,
                suspended: false,
            }],
            groups: Vec::new(),
            by_sender_domain: HashMap::new(),
            rules: Vec::new(),
            default_binding: DefaultBinding::Normal,
        }
    }

    /// The slot of a binding name.
    pub fn slot(&self, name: &str) -> Option<usize> {
        self.bindings.iter().position(|b| &*b.name == name)
    }

    /// The index of a group name.
    pub fn group(&self, name: &str) -> Option<usize> {
        self.groups.iter().position(|g| &*g.name == name)
    }

    /// The binding in a slot (`default` for one out of range).
    pub fn get(&self, slot: usize) -> &BindingSettings {
        self.bindings.get(slot).unwrap_or(&self.bindings[0])
    }

    /// True when some rule reads a header field.
    pub fn rules_read_headers(&self) -> bool {
        self.rules.iter().any(|(r, _)| r.reads_headers())
    }
}

/// Options of a binding or group table that are about the binding itself,
/// not delivery to a domain: setting only these gives it no delivery
/// settings of its own.
const BINDING_ONLY: &[&str] = &[
    "bind_address",
    "match_domain",
    "members",
    "server_max_outbound_connections",
    "rebind_suspended",
];

/// True when `b` sets a delivery option (so its mail needs settings of
/// its own), in its table or a domain inside it.
pub fn has_delivery_values(b: &RawBinding) -> bool {
    !b.domains.is_empty() || b.values.keys().any(|k| !BINDING_ONLY.contains(k))
}

fn count(v: &Values, name: &str) -> Option<u32> {
    match v.get(name) {
        Some(Entry {
            value: Value::Int(n),
            ..
        }) => Some(*n as u32),
        _ => None,
    }
}

/// Compiles the bindings; `global_bind` is the checked global
/// `bind_address`, which a binding without its own uses.
pub fn compile(
    raw: &RawConfig,
    global_bind: Option<IpAddr>,
) -> Result<BindingTable, Vec<BindingError>> {
    let mut errors = Vec::new();
    let default_binding = match raw.global.get("default_binding").map(|e| &e.value) {
        Some(Value::Text(t)) if t == "suspended" => DefaultBinding::Suspended,
        Some(Value::Text(t)) if t == "none" => DefaultBinding::None,
        _ => DefaultBinding::Normal,
    };
    let mut bindings = vec![BindingSettings {
        name: DEFAULT_BINDING.into(),
        group: DEFAULT_GROUP.into(),
        bind_address: global_bind,
        server_max_outbound_connections: None,
        suspended: default_binding == DefaultBinding::Suspended,
    }];
    for b in &raw.bindings {
        let path = format!("binding.{}", b.name);
        if b.name == DEFAULT_BINDING {
            errors.push((
                b.at,
                path.clone(),
                "`default` is the built-in binding; give yours another name".into(),
            ));
        }
        let mut addr = global_bind;
        if b.values.contains_key("bind_address") {
            match bind_address(&b.values) {
                Ok(a) => addr = a,
                Err((at, key, m)) => errors.push((at, format!("{path}.{key}"), m)),
            }
        }
        bindings.push(BindingSettings {
            name: b.name.as_str().into(),
            group: DEFAULT_GROUP.into(),
            bind_address: addr,
            server_max_outbound_connections: count(&b.values, "server_max_outbound_connections"),
            suspended: matches!(
                b.values.get("suspend_delivery").map(|e| &e.value),
                Some(Value::Bool(true))
            ),
        });
    }
    let slots: HashMap<Arc<str>, usize> = bindings
        .iter()
        .enumerate()
        .map(|(i, b)| (b.name.clone(), i))
        .collect();
    let slot = |name: &str| slots.get(name).copied();
    let mut groups = Vec::new();
    let mut member_of: HashMap<usize, String> = HashMap::new();
    for g in &raw.groups {
        let path = format!("binding_group.{}", g.name);
        let mut members = Vec::new();
        match g.values.get("members") {
            Some(Entry {
                value: Value::Weights(w),
                at,
            }) => {
                for (name, weight) in w {
                    match slot(name) {
                        None => errors.push((
                            *at,
                            format!("{path}.members"),
                            format!("there is no [binding.{name}]"),
                        )),
                        Some(s) => match member_of.get(&s) {
                            Some(other) => errors.push((
                                *at,
                                format!("{path}.members"),
                                format!(
                                    "binding {name} is already a member of [binding_group.{other}]"
                                ),
                            )),
                            None => {
                                member_of.insert(s, g.name.clone());
                                members.push((s, *weight));
                            }
                        },
                    }
                }
            }
            _ => errors.push((g.at, path.clone(), "a group needs `members`".into())),
        }
        if groups.iter().any(|x: &GroupSettings| *x.name == *g.name) {
            errors.push((g.at, path, "the group is declared twice".into()));
            continue;
        }
        groups.push(GroupSettings {
            name: g.name.as_str().into(),
            members,
            server_max_outbound_connections: count(&g.values, "server_max_outbound_connections"),
            rebind_suspended: super::flag("rebind_suspended", &[&g.values]),
        });
    }
    for (s, g) in &member_of {
        bindings[*s].group = g.as_str().into();
        // A member without its own source address takes its group's.
        let raw_group = raw.groups.iter().find(|x| x.name == *g);
        let own = raw.bindings[*s - 1].values.contains_key("bind_address");
        if let Some(rg) = raw_group.filter(|rg| !own && rg.values.contains_key("bind_address")) {
            match bind_address(&rg.values) {
                Ok(a) => bindings[*s].bind_address = a,
                Err((at, key, m)) => errors.push((at, format!("binding_group.{g}.{key}"), m)),
            }
        }
    }
    let mut by_sender_domain = HashMap::new();
    for (i, b) in raw.bindings.iter().enumerate() {
        if let Some(Entry {
            value: Value::TextList(list),
            at,
        }) = b.values.get("match_domain")
        {
            for d in list {
                let d = d.trim().to_ascii_lowercase();
                if let Some(prev) = by_sender_domain.insert(d.clone(), i + 1) {
                    errors.push((
                        *at,
                        format!("binding.{}.match_domain", b.name),
                        format!(
                            "{d} is matched by [binding.{}] already",
                            bindings[prev].name
                        ),
                    ));
                }
            }
        }
    }
    let mut rules = Vec::new();
    if let Some(Entry {
        value: Value::TextList(list),
        at,
    }) = raw.global.get("regex_binding2")
    {
        for (n, text) in list.iter().enumerate() {
            let key = "global.regex_binding2".to_string();
            let rule = match Rule::parse(text) {
                Ok(r) => r,
                Err(e) => {
                    errors.push((*at, key, format!("rule {}: {e}", n + 1)));
                    continue;
                }
            };
            let assign = match &rule.target {
                RuleTarget::Group(g) => match groups.iter().position(|x| *x.name == **g) {
                    Some(i) => Assign::Group(i),
                    None => {
                        errors.push((
                            *at,
                            key,
                            format!("rule {}: there is no [binding_group.{g}]", n + 1),
                        ));
                        continue;
                    }
                },
                RuleTarget::Bindings(names) => {
                    let slots: Option<Vec<usize>> = names.iter().map(|b| slot(b)).collect();
                    match slots {
                        Some(s) if s.len() == 1 => Assign::Binding(s[0]),
                        Some(s) => Assign::Each(s),
                        None => {
                            let unknown: BTreeSet<_> =
                                names.iter().filter(|b| slot(b).is_none()).collect();
                            errors.push((
                                *at,
                                key,
                                format!("rule {}: there is no binding {unknown:?}", n + 1),
                            ));
                            continue;
                        }
                    }
                }
            };
            rules.push((rule, assign));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(BindingTable {
        bindings,
        groups,
        by_sender_domain,
        rules,
        default_binding,
    })
}
