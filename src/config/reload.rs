//! What a reload may change in a running server, and what only a restart
//! can: the options read once at start-up (shard layout, spool files and
//! tuning the spool was opened with, bound addresses, DNS resolver set-up).
//!
//! Pure comparison of two compiled snapshots; no I/O. Must never: let a
//! new snapshot carry a restart-only value the running server does not
//! use (the snapshot would lie about what runs: "half-applied").

use super::Config;

/// The restart-only options whose value differs between `running` and
/// `new`, named as in the file.
pub fn restart_only_changes(running: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |changed: bool, name: String| {
        if changed {
            out.push(name);
        }
    };
    check(running.shards != new.shards, "shards".into());
    check(running.cpus != new.cpus, "cpus".into());
    check(running.spoolbase != new.spoolbase, "spoolbase".into());
    let (a, b) = (&running.spool, &new.spool);
    check(
        a.segment_size != b.segment_size,
        "spool_segment_size".into(),
    );
    check(
        a.batch_max_bytes != b.batch_max_bytes,
        "spool_batch_max_bytes".into(),
    );
    check(
        a.batch_max_delay != b.batch_max_delay,
        "spool_batch_max_delay_us".into(),
    );
    check(
        a.reserve_bytes != b.reserve_bytes,
        "spool_reserve_size".into(),
    );
    let (a, b) = (&running.dns, &new.dns);
    check(a.nameservers != b.nameservers, "nameservers".into());
    check(a.timeout != b.timeout, "dns_timeout_ms".into());
    check(a.attempts != b.attempts, "dns_attempts".into());
    check(a.min_ttl_secs != b.min_ttl_secs, "min_dns_ttl".into());
    check(a.max_ttl_secs != b.max_ttl_secs, "max_dns_ttl".into());
    for l in &new.listeners {
        match running.listeners.iter().find(|o| o.name == l.name) {
            Some(o) => check(o.listen != l.listen, format!("listener.{}.listen", l.name)),
            None => check(true, format!("listener.{} (new listener)", l.name)),
        }
    }
    for o in &running.listeners {
        let gone = !new.listeners.iter().any(|l| l.name == o.name);
        check(gone, format!("listener.{} (removed listener)", o.name));
    }
    let shards: std::collections::BTreeSet<usize> = running
        .shard_overrides
        .keys()
        .chain(new.shard_overrides.keys())
        .copied()
        .collect();
    for n in shards {
        let (a, b) = (running.shard_overrides.get(&n), new.shard_overrides.get(&n));
        let dir = |o: Option<&super::ShardOverride>| o.and_then(|o| o.spool_dir.clone());
        check(dir(a) != dir(b), format!("shard.{n}.spool_dir"));
        let listen = |o: Option<&super::ShardOverride>| o.map(|o| o.listen.clone());
        check(
            listen(a).unwrap_or_default() != listen(b).unwrap_or_default(),
            format!("shard.{n}.listener.*.listen"),
        );
    }
    out
}

/// Puts the running values of every restart-only option into `new`, so the
/// snapshot the shards read is what actually runs. A listener the running
/// server does not have keeps its addresses (it has no socket to use them).
pub fn keep_restart_only(new: &mut Config, running: &Config) {
    new.shards = running.shards;
    new.cpus = running.cpus.clone();
    new.spoolbase = running.spoolbase.clone();
    let live_interval = new.spool.compact_interval;
    new.spool = running.spool.clone();
    new.spool.compact_interval = live_interval;
    new.dns = running.dns.clone();
    for l in &mut new.listeners {
        if let Some(o) = running.listeners.iter().find(|o| o.name == l.name) {
            l.listen = o.listen.clone();
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
            .or_insert_with(|| super::ShardOverride {
                spool_dir: r.spool_dir.clone(),
                listener_sessions: None,
                listen: r.listen.clone(),
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn load(text: &str) -> Config {
        Config::from_str("t.toml", text, Path::new("/")).expect("valid")
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
        let changed = restart_only_changes(&running, &new);
        assert_eq!(
            changed,
            vec!["spoolbase", "listener.esmtp.listen", "shard.0.spool_dir"]
        );
        keep_restart_only(&mut new, &running);
        assert!(restart_only_changes(&running, &new).is_empty());
        assert_eq!(new.hostname, "two", "live options are applied");
        assert_eq!(new.spool.compact_interval.as_secs(), 5);
        assert_eq!(new.spool_dir(0), running.spool_dir(0));
    }

    #[test]
    fn live_only_changes_need_no_restart() {
        let l = "[listener.esmtp]\nlisten = [\"127.0.0.1:25\"]\n";
        let running = load(&format!("[global]\nmessage_size = 1000\n{l}"));
        let new = load(&format!(
            "[global]\nmessage_size = 2000\nretry_interval = 60\n{l}"
        ));
        assert!(restart_only_changes(&running, &new).is_empty());
    }

    #[test]
    fn the_registry_default_reserve_is_the_spool_constant() {
        let c = load("[global]\n[listener.esmtp]\nlisten = [\"127.0.0.1:25\"]\n");
        assert_eq!(c.spool.reserve_bytes, crate::spool::DEFAULT_RESERVE_BYTES);
    }
}
