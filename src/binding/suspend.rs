//! Suspensions set at run time (`Bindings::suspend`; the console and the
//! HTTP API call it later): a binding, or a binding × domain, whose mail
//! waits. Kept in a file beside the spool so a restart keeps them.
//!
//! The file (`SUSPENDED_FILE` in the spool base) holds one suspension per
//! line: `binding` or `binding domain`; `#` starts a comment. It is
//! replaced whole (written to a temporary name, synced, renamed, the
//! directory synced) by the suspension owner, shard 0, on a blocking
//! thread.
//!
//! Owns the set and its file format. May call: config (binding names).
//! Must never: read or write the file on a shard thread.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The file's name in the spool base.
pub const SUSPENDED_FILE: &str = "suspended-bindings";
/// Longest file accepted (a line per suspension; far beyond any real set).
const MAX_FILE_OCTETS: u64 = 16 << 20;

/// A binding (`domain` `None`) or one domain from it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Suspension {
    /// The binding's name.
    pub binding: String,
    /// A destination domain (lower-case), or the whole binding.
    pub domain: Option<String>,
}

impl std::fmt::Display for Suspension {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.domain {
            None => write!(f, "binding {}", self.binding),
            Some(d) => write!(f, "binding {} domain {d}", self.binding),
        }
    }
}

/// The suspensions in force.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Suspended(BTreeSet<Suspension>);

impl Suspended {
    /// True when mail from `binding` to `domain` waits.
    pub fn holds(&self, binding: &str, domain: &str) -> bool {
        !self.0.is_empty()
            && (self.binding(binding)
                || self.0.contains(&Suspension {
                    binding: binding.to_string(),
                    domain: Some(domain.to_string()),
                }))
    }

    /// True when the whole binding is suspended.
    pub fn binding(&self, binding: &str) -> bool {
        !self.0.is_empty()
            && self.0.contains(&Suspension {
                binding: binding.to_string(),
                domain: None,
            })
    }

    /// Adds (`on`) or removes one; true when that changed the set.
    pub fn set(&mut self, s: Suspension, on: bool) -> bool {
        if on {
            self.0.insert(s)
        } else {
            self.0.remove(&s)
        }
    }

    /// The suspensions, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Suspension> {
        self.0.iter()
    }

    /// The file's text.
    pub fn to_text(&self) -> String {
        let mut out =
            String::from("# suspended bindings (impulse keeps this file; one per line)\n");
        for s in &self.0 {
            out.push_str(&s.binding);
            if let Some(d) = &s.domain {
                out.push(' ');
                out.push_str(d);
            }
            out.push('\n');
        }
        out
    }

    /// Parses the file's text; a bad line is an error naming it.
    pub fn parse(text: &str) -> Result<Suspended, String> {
        let mut set = Suspended::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let binding = words.next().unwrap_or_default();
            let domain = words.next();
            if words.next().is_some() || !crate::config::parse::valid_binding_name(binding) {
                return Err(format!(
                    "line {}: expected `binding` or `binding domain`, found {line:?}",
                    n + 1
                ));
            }
            set.set(
                Suspension {
                    binding: binding.to_string(),
                    domain: domain.map(str::to_ascii_lowercase),
                },
                true,
            );
        }
        Ok(set)
    }
}

/// The file's path under a spool base.
pub fn path(spoolbase: &Path) -> PathBuf {
    spoolbase.join(SUSPENDED_FILE)
}

/// Reads the file (at start-up, before any shard runs): none is an empty
/// set; one that cannot be read or parsed is an error that stops the
/// start, since sending mail that was meant to wait cannot be undone.
pub fn load(spoolbase: &Path) -> Result<Suspended, String> {
    let p = path(spoolbase);
    let text = match std::fs::metadata(&p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Suspended::default()),
        Err(e) => return Err(format!("{}: {e}", p.display())),
        Ok(m) if m.len() > MAX_FILE_OCTETS => {
            return Err(format!(
                "{}: larger than {MAX_FILE_OCTETS} octets",
                p.display()
            ))
        }
        Ok(_) => std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?,
    };
    Suspended::parse(&text).map_err(|e| format!("{}: {e}", p.display()))
}

/// Replaces the file with `text`, durably (blocking: call on a helper
/// thread).
pub fn store(spoolbase: &Path, text: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(spoolbase)?;
    let p = path(spoolbase);
    let tmp = spoolbase.join(format!("{SUSPENDED_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, &p)?;
    std::fs::File::open(spoolbase)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_round_trips_and_bad_lines_are_named() {
        let mut s = Suspended::default();
        assert!(s.set(
            Suspension {
                binding: "vip1".into(),
                domain: None
            },
            true
        ));
        s.set(
            Suspension {
                binding: "vip2".into(),
                domain: Some("gmail.test".into()),
            },
            true,
        );
        assert!(s.holds("vip1", "any.test"));
        assert!(s.holds("vip2", "gmail.test"));
        assert!(!s.holds("vip2", "yahoo.test"));
        assert!(!s.binding("vip2"));
        assert_eq!(Suspended::parse(&s.to_text()).unwrap(), s);
        let e = Suspended::parse("vip1\nvip2 a.test extra\n").unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");
        assert!(Suspended::parse("bad/name\n").is_err());
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), Suspended::default());
        store(dir.path(), &s.to_text()).unwrap();
        assert_eq!(load(dir.path()).unwrap(), s);
    }
}
