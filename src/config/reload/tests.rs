use std::path::Path;

use super::*;
use crate::config::default_value;
use crate::config::options::{Kind, OptionDef};
use crate::config::parse::Value;

fn load(text: &str) -> Config {
    Config::from_str("t.toml", text, Path::new("/")).expect("valid")
}

/// The compiled snapshot as text, without the written values: what the
/// shards read.
fn compiled(c: &Config) -> String {
    let mut c = c.clone();
    c.raw = RawConfig::default();
    c.source.clear();
    format!("{c:?}")
}

const PEER: &str = "10.0.0.0/8";
const DOMAIN: &str = "example.com";

/// A file with one instance of every scope: `(scope, option, TOML value)`
/// lines, each written in its scope's section.
#[derive(Clone)]
struct Doc(Vec<(Scope, &'static str, String)>);

impl Doc {
    fn base() -> Doc {
        Doc(vec![
            (Scope::Listener, "listen", "[\"127.0.0.1:2525\"]".into()),
            (Scope::BindingGroup, "members", "[\"vip\"]".into()),
            (Scope::Backoff, "match_code", "\"421\"".into()),
        ])
    }

    fn set(mut self, scope: Scope, name: &'static str, value: String) -> Doc {
        self.0.retain(|(s, n, _)| (*s, *n) != (scope, name));
        self.0.push((scope, name, value));
        self
    }

    fn render(&self) -> String {
        let mut out = String::new();
        for (header, want) in SECTIONS {
            out.push_str(header);
            out.push('\n');
            for (scope, name, value) in &self.0 {
                if section(*scope, name) == want {
                    out.push_str(&format!("{name} = {value}\n"));
                }
            }
        }
        out
    }
}

/// Section headers, in file order, with the section key `section` gives.
const SECTIONS: [(&str, &str); 9] = [
    ("[global]", "global"),
    ("[listener.esmtp]", "listener"),
    ("[listener.esmtp.peer.\"10.0.0.0/8\"]", "peer"),
    ("[domain.\"example.com\"]", "domain"),
    ("[binding.vip]", "binding"),
    ("[binding_group.pool]", "binding_group"),
    ("[backoff.slow]", "backoff"),
    ("[shard.0]", "shard"),
    ("[shard.0.listener.esmtp]", "shard-listener"),
];

/// Which section an option of `scope` is written in.
fn section(scope: Scope, name: &str) -> &'static str {
    match scope {
        // Per-shard addresses belong to a listener.
        Scope::Shard if name == "listen" => "shard-listener",
        other => other.name(),
    }
}

/// The key path `plan` must report for an option written in `scope`.
fn key_path(scope: Scope, name: &str) -> String {
    match scope {
        Scope::Global => name.to_string(),
        Scope::Listener => format!("listener.esmtp.{name}"),
        Scope::Peer => format!("listener.esmtp.peer.\"{PEER}\".{name}"),
        Scope::Domain => format!("domain.\"{DOMAIN}\".{name}"),
        Scope::Shard if name == "listen" => format!("shard.0.listener.esmtp.{name}"),
        Scope::Shard => format!("shard.0.{name}"),
        Scope::Binding => format!("binding.vip.{name}"),
        Scope::BindingGroup => format!("binding_group.pool.{name}"),
        Scope::Backoff => format!("backoff.slow.{name}"),
    }
}

/// A valid value other than the default (or than unset), from the kind.
fn other_value(def: &OptionDef) -> String {
    if def.name == "bind_address" {
        // Text that must be an address of this host (any 127/8 is on lo).
        return "\"127.0.0.2\"".into();
    }
    match def.name {
        "match_code" => return "\"45\"".into(),
        "match_status" => return "\"4.7.28\"".into(),
        "match_text" => return "\"try later\"".into(),
        "action" => return "\"pause\"".into(),
        _ => {}
    }
    if def.name == "regex_binding2" {
        return "[\"vip = mailfrom == 'x@changed.test'\"]".into();
    }
    let default = default_value(def);
    match def.kind {
        Kind::Bool => (default != Some(Value::Bool(true))).to_string(),
        Kind::Int { min, max } | Kind::Size { min, max } => {
            let d = match default {
                Some(Value::Int(n)) => n,
                _ => min,
            };
            if d < max { d + 1 } else { d - 1 }.to_string()
        }
        Kind::Text => "\"changed.test\"".into(),
        Kind::Path => "\"/changed\"".into(),
        Kind::TextList => "[\"changed.test\"]".into(),
        Kind::CidrList => "[\"192.0.2.0/24\"]".into(),
        Kind::AddrList => "[\"127.0.0.1:2626\"]".into(),
        Kind::Shards => "2".into(),
        Kind::CpuList => "[0]".into(),
        Kind::Rate => "\"600/60\"".into(),
        Kind::Weights => "{ vip = 2 }".into(),
        Kind::Choice(words) => {
            let d = match default {
                Some(Value::Text(t)) => t,
                _ => String::new(),
            };
            let w = words.iter().find(|w| **w != d).expect("another word");
            format!("\"{w}\"")
        }
    }
}

/// Files for the options that name them.
struct Fixtures {
    dir: tempfile::TempDir,
}

impl Fixtures {
    fn new() -> Fixtures {
        let dir = tempfile::tempdir().expect("tempdir");
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
        let (cert, key) = (ck.cert.pem(), ck.signing_key.serialize_pem());
        for (name, text) in [
            ("cert.pem", &cert),
            ("cert-copy.pem", &cert),
            ("key.pem", &key),
            ("key-copy.pem", &key),
        ] {
            std::fs::write(dir.path().join(name), text).expect("write");
        }
        std::fs::write(dir.path().join("users"), "alice:$6$salt$hash\n").expect("write");
        Fixtures { dir }
    }

    fn path(&self, name: &str) -> String {
        format!("{:?}", self.dir.path().join(name).display().to_string())
    }

    /// The two files an option is compared with, for the options that need
    /// real files or a companion option in the same scope; `None` = derive
    /// the value from the kind.
    fn case(&self, name: &'static str, scope: Scope, base: Doc) -> Option<(Doc, String)> {
        let both = |base: Doc| {
            base.set(scope, "tls_certificate", self.path("cert.pem"))
                .set(scope, "tls_key", self.path("key.pem"))
        };
        Some(match name {
            // Certificate and key go together: change one path to a copy.
            "tls_certificate" => (both(base), self.path("cert-copy.pem")),
            "tls_key" => (both(base), self.path("key-copy.pem")),
            "auth_password_file" => (base, self.path("users")),
            // A back-off's rate is read by the action that uses it.
            "backoff_rate" => (
                base.set(scope, "action", "\"rate\"".into()).set(
                    scope,
                    "backoff_rate",
                    "\"60/60\"".into(),
                ),
                "\"30/60\"".into(),
            ),
            // A CA bundle is read only when certificates are verified.
            "tls_ca" => (
                base.set(scope, "tls_verify", "\"ca\"".into()),
                self.path("cert.pem"),
            ),
            _ => return None,
        })
    }
}

/// Options whose compiled value has no comparable text form (rustls
/// configs, or a copy of the same certificate): `plan` and the kept
/// snapshot's written values are still checked for them.
const UNTRACED: [&str; 4] = ["tls_certificate", "tls_key", "tls_verify", "tls_ca"];

/// Where two snapshot texts first differ, with some context.
fn difference(a: &str, b: &str) -> String {
    let at = a
        .char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map_or(a.len().min(b.len()), |((i, _), _)| i);
    let from = a[..at].rfind(", ").unwrap_or(0);
    let near = |s: &str| s[from..].chars().take(80).collect::<String>();
    format!("`{}` vs `{}`", near(a), near(b))
}

/// The plan with just `name` in the list of `class`.
fn only(class: Reload, name: String) -> ReloadPlan {
    let mut p = ReloadPlan::default();
    p.push(class, name);
    p
}

/// One option changed in one scope: `plan` names it in its class's list
/// only; the change is kept in the snapshot unless it is restart-only, in
/// which case the running value is put back (compiled and as written, so
/// the next reload names it again).
fn check_one(def: &OptionDef, scope: Scope, fixtures: &Fixtures) {
    let path = key_path(scope, def.name);
    let (base, value) = fixtures
        .case(def.name, scope, Doc::base())
        .unwrap_or_else(|| (Doc::base(), other_value(def)));
    let changed = base.clone().set(scope, def.name, value);
    let running = load(&base.render());
    let mut new = load(&changed.render());
    let p = plan(&running, &new);
    assert_eq!(p, only(def.reload, path.clone()), "{path}");
    let traced = !UNTRACED.contains(&def.name);
    if traced {
        assert!(
            compiled(&running) != compiled(&new),
            "{path}: the test value must change the compiled config"
        );
    }
    keep_restart_only(&mut new, &running);
    let again = plan(&new, &load(&changed.render()));
    if def.reload == Reload::Restart {
        let (kept, was) = (compiled(&new), compiled(&running));
        assert!(
            kept == was,
            "{path}: keep_restart_only must restore the running value; the snapshot differs at {}",
            difference(&kept, &was)
        );
        assert!(plan(&running, &new).is_empty(), "{path}");
        assert_eq!(again, p, "{path}: the next reload names it again");
    } else {
        if traced {
            assert!(
                compiled(&new) != compiled(&running),
                "{path}: marked {:?} but the new value is not in the snapshot",
                def.reload
            );
        }
        assert_eq!(plan(&running, &new), p, "{path}: kept in the snapshot");
        assert!(again.is_empty(), "{path}: applied once");
    }
}

#[test]
fn every_option_is_compared_and_lands_in_its_class_in_every_scope() {
    let fixtures = Fixtures::new();
    let mut checked = 0;
    for def in OPTIONS {
        for scope in def.scopes {
            check_one(def, *scope, &fixtures);
            checked += 1;
        }
    }
    let scopes: usize = OPTIONS.iter().map(|d| d.scopes.len()).sum();
    assert_eq!(checked, scopes);
}

#[test]
fn nothing_changed_gives_empty_lists() {
    let text = "[global]\nspoolbase = \"/a\"\nretry_interval = 60\n\
                [listener.esmtp]\nlisten = [\"127.0.0.1:25\"]\n\
                [listener.esmtp.peer.\"10.0.0.0/8\"]\ncan_relay = true\n\
                [domain.\"example.com\"]\nroutes = [\"127.0.0.1:26\"]\n\
                [shard.0]\nspool_dir = \"/b\"\n";
    let p = plan(&load(text), &load(text));
    assert_eq!(p, ReloadPlan::default());
    assert!(p.is_empty());
    let embedded = Config::load(None).expect("embedded");
    assert!(plan(&embedded, &Config::load(None).expect("embedded")).is_empty());
    assert_eq!(
        p.describe("x.toml"),
        (
            Level::Info,
            "reload: configuration x.toml: no option changed".into()
        )
    );
}

#[test]
fn restart_only_changes_are_named_and_kept_at_their_running_values() {
    let running = load(
        "[global]\nspoolbase = \"/a\"\nhostname = \"one\"\n\
         [listener.esmtp]\nlisten = [\"127.0.0.1:25\"]\n",
    );
    let mut new = load(
        "[global]\nspoolbase = \"/b\"\nhostname = \"two\"\nspool_compact_interval_secs = 5\n\
         [shard.0]\nspool_dir = \"/c\"\n\
         [listener.esmtp]\nlisten = [\"127.0.0.1:26\"]\n",
    );
    let p = plan(&running, &new);
    assert_eq!(
        p.restart,
        vec!["spoolbase", "listener.esmtp.listen", "shard.0.spool_dir"]
    );
    assert_eq!(p.live, vec!["spool_compact_interval_secs"]);
    assert_eq!(p.new_sessions, vec!["hostname"]);
    keep_restart_only(&mut new, &running);
    assert!(plan(&running, &new).restart.is_empty());
    assert_eq!(new.hostname, "two", "other options are applied");
    assert_eq!(new.spool.compact_interval.as_secs(), 5);
    assert_eq!(new.spool_dir(0), running.spool_dir(0));
    assert_eq!(new.listeners[0].listen, running.listeners[0].listen);
}

#[test]
fn added_and_removed_listeners_need_a_restart_and_the_running_set_is_kept() {
    let running = load(
        "[listener.a]\nlisten = [\"127.0.0.1:25\"]\nidle_time = 7\n\
         [listener.b]\nlisten = [\"127.0.0.1:26\"]\n",
    );
    let file = "[listener.a]\nlisten = [\"127.0.0.1:25\"]\n\
                [listener.c]\nlisten = [\"127.0.0.1:27\"]\n";
    let mut new = load(file);
    let p = plan(&running, &new);
    assert_eq!(
        p.restart,
        vec!["listener.c (new listener)", "listener.b (removed listener)"]
    );
    assert_eq!(p.new_sessions, vec!["listener.a.idle_time"]);
    keep_restart_only(&mut new, &running);
    let names: Vec<&str> = new.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, vec!["a", "b"], "the listeners that have sockets");
    assert_eq!(new.listeners[0].inbound.idle_time.as_secs(), 300);
    assert_eq!(plan(&new, &load(file)).restart, p.restart, "named again");
}

#[test]
fn scoped_changes_are_named_by_their_key_path() {
    let running = load("[listener.esmtp]\nlisten = [\"127.0.0.1:25\"]\n");
    let new = load(
        "[listener.esmtp]\nlisten = [\"127.0.0.1:25\"]\n\
         [listener.esmtp.peer.\"192.0.2.0/24\"]\nmessage_size = 5\n\
         [domain.\"Example.com\"]\nretry_interval = 60\n\
         [shard.1]\nlistener_sessions = 3\n\
         [shard.1.listener.esmtp]\nlisten = [\"127.0.0.1:26\"]\n",
    );
    assert_eq!(
        plan(&running, &new),
        ReloadPlan {
            live: vec!["domain.\"example.com\".retry_interval".into()],
            new_sessions: vec![
                "listener.esmtp.peer.\"192.0.2.0/24\".message_size".into(),
                "shard.1.listener_sessions".into(),
            ],
            restart: vec!["shard.1.listener.esmtp.listen".into()],
        }
    );
}

#[test]
fn the_log_line_names_each_class_and_warns_for_a_restart() {
    let p = ReloadPlan {
        live: vec!["a".into(), "b".into()],
        new_sessions: vec!["c".into()],
        restart: vec!["d".into(), "e".into()],
    };
    assert_eq!(
        p.describe("x.toml"),
        (
            Level::Warn,
            "reload: configuration x.toml: applied live: a, b; applied to new sessions: c; \
             needs a restart (running values kept until then): d, e"
                .into()
        )
    );
    let p = ReloadPlan {
        new_sessions: vec!["c".into()],
        ..Default::default()
    };
    assert_eq!(
        p.describe("x.toml"),
        (
            Level::Info,
            "reload: configuration x.toml: applied to new sessions: c".into()
        )
    );
}

#[test]
fn the_registry_default_reserve_is_the_spool_constant() {
    let c = load("[global]\n[listener.esmtp]\nlisten = [\"127.0.0.1:25\"]\n");
    assert_eq!(c.spool.reserve_bytes, crate::spool::DEFAULT_RESERVE_BYTES);
}
