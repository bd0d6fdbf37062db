//! The sink's receiver behaviour, from a small TOML file: defaults, then
//! overrides per listening address and per recipient domain. Parsing and
//! lookup only; the session applies what this returns.
//!
//! ```toml
//! [default]
//! rcpt_4xx = 0.01              # fraction of RCPTs refused with 451
//! [address."127.0.0.3"]        # connection-level: per listening IP
//! max_connections = 10         # concurrent; 421 beyond
//! starttls = false
//! [domain."d2.example"]        # per recipient domain (RCPT, and DATA by
//! data_5xx = 0.5               # the first recipient's domain)
//! rcpt_delay_ms = 20
//! ```

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

/// One scope's settings; unset fields fall back to the wider scope.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// Delay before the 220 greeting.
    pub banner_delay_ms: Option<u64>,
    /// Delay before each RCPT reply.
    pub rcpt_delay_ms: Option<u64>,
    /// Delay before the reply to the final dot / last BDAT.
    pub data_delay_ms: Option<u64>,
    /// Fraction (0..=1) of RCPTs refused with 451 4.7.1.
    pub rcpt_4xx: Option<f64>,
    /// Fraction of RCPTs refused with 550 5.1.1.
    pub rcpt_5xx: Option<f64>,
    /// Fraction of messages refused after the content with 451 4.3.0.
    pub data_4xx: Option<f64>,
    /// Fraction of messages refused after the content with 554 5.6.0.
    pub data_5xx: Option<f64>,
    /// First RCPT of each (client IP, recipient) gets 451 4.7.1.
    pub greylist: Option<bool>,
    /// Concurrent connections per listening address; 0 = unlimited.
    pub max_connections: Option<u32>,
    /// Messages per connection (then 421); 0 = unlimited.
    pub max_messages_per_connection: Option<u32>,
    /// Offer STARTTLS (self-signed certificate).
    pub starttls: Option<bool>,
}

impl Rules {
    /// `self` where set, else `wider`.
    fn over(&self, wider: &Rules) -> Rules {
        macro_rules! pick {
            ($($f:ident),*) => { Rules { $($f: self.$f.or(wider.$f)),* } };
        }
        pick!(
            banner_delay_ms,
            rcpt_delay_ms,
            data_delay_ms,
            rcpt_4xx,
            rcpt_5xx,
            data_4xx,
            data_5xx,
            greylist,
            max_connections,
            max_messages_per_connection,
            starttls
        )
    }

    fn check(&self, scope: &str) -> Result<(), String> {
        for (name, v) in [
            ("rcpt_4xx", self.rcpt_4xx),
            ("rcpt_5xx", self.rcpt_5xx),
            ("data_4xx", self.data_4xx),
            ("data_5xx", self.data_5xx),
        ] {
            if v.is_some_and(|x| !(0.0..=1.0).contains(&x)) {
                return Err(format!(
                    "{scope}: {name} must be a fraction between 0 and 1"
                ));
            }
        }
        Ok(())
    }
}

/// Settings that apply to one RCPT or one message, all resolved.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Effective {
    /// See [`Rules`].
    pub rcpt_delay: Duration,
    /// See [`Rules`].
    pub data_delay: Duration,
    /// See [`Rules`].
    pub rcpt_4xx: f64,
    /// See [`Rules`].
    pub rcpt_5xx: f64,
    /// See [`Rules`].
    pub data_4xx: f64,
    /// See [`Rules`].
    pub data_5xx: f64,
    /// See [`Rules`].
    pub greylist: bool,
}

impl Effective {
    fn of(r: &Rules) -> Effective {
        Effective {
            rcpt_delay: Duration::from_millis(r.rcpt_delay_ms.unwrap_or(0)),
            data_delay: Duration::from_millis(r.data_delay_ms.unwrap_or(0)),
            rcpt_4xx: r.rcpt_4xx.unwrap_or(0.0),
            rcpt_5xx: r.rcpt_5xx.unwrap_or(0.0),
            data_4xx: r.data_4xx.unwrap_or(0.0),
            data_5xx: r.data_5xx.unwrap_or(0.0),
            greylist: r.greylist.unwrap_or(false),
        }
    }

    /// True when RCPTs need the driver (delay, failures, greylisting).
    pub fn touches_rcpt(&self) -> bool {
        !self.rcpt_delay.is_zero() || self.rcpt_4xx > 0.0 || self.rcpt_5xx > 0.0 || self.greylist
    }
}

/// The whole file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Behaviour {
    /// Applies everywhere.
    #[serde(default)]
    pub default: Rules,
    /// Per listening IP address.
    #[serde(default)]
    pub address: HashMap<IpAddr, Rules>,
    /// Per recipient domain (lower case).
    #[serde(default)]
    pub domain: HashMap<String, Rules>,
}

impl Behaviour {
    /// Parses and checks a TOML text.
    pub fn parse(text: &str) -> Result<Behaviour, String> {
        let mut b: Behaviour = toml::from_str(text).map_err(|e| e.to_string())?;
        b.default.check("[default]")?;
        for (a, r) in &b.address {
            r.check(&format!("[address.\"{a}\"]"))?;
        }
        for (d, r) in &b.domain {
            r.check(&format!("[domain.\"{d}\"]"))?;
        }
        b.domain = b
            .domain
            .into_iter()
            .map(|(d, r)| (d.to_ascii_lowercase(), r))
            .collect();
        Ok(b)
    }

    /// Connection-level rules for a listening address (address, then default).
    pub fn for_address(&self, local: IpAddr) -> Rules {
        match self.address.get(&local) {
            Some(r) => r.over(&self.default),
            None => self.default.clone(),
        }
    }

    /// What applies to a recipient in `domain` arriving at `local`.
    pub fn for_domain(&self, local: IpAddr, domain: &str) -> Effective {
        let conn = self.for_address(local);
        match self.domain.get(domain) {
            Some(r) => Effective::of(&r.over(&conn)),
            None => Effective::of(&conn),
        }
    }

    /// True if any RCPT anywhere may need the driver.
    pub fn touches_rcpt(&self) -> bool {
        let scopes = std::iter::once(&self.default)
            .chain(self.address.values())
            .chain(self.domain.values());
        scopes.into_iter().any(|r| {
            r.rcpt_delay_ms.is_some_and(|d| d > 0)
                || r.rcpt_4xx.is_some_and(|x| x > 0.0)
                || r.rcpt_5xx.is_some_and(|x| x > 0.0)
                || r.greylist == Some(true)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_fall_back() {
        let b = Behaviour::parse(
            r#"
            [default]
            rcpt_4xx = 0.1
            starttls = true
            [address."127.0.0.3"]
            max_connections = 5
            starttls = false
            rcpt_delay_ms = 7
            [domain."D2.example"]
            data_5xx = 1.0
            rcpt_4xx = 0.0
            "#,
        )
        .unwrap_or_default();
        let a3: IpAddr = [127, 0, 0, 3].into();
        let a2: IpAddr = [127, 0, 0, 2].into();
        assert_eq!(b.for_address(a3).max_connections, Some(5));
        assert_eq!(b.for_address(a3).starttls, Some(false));
        assert_eq!(b.for_address(a2).starttls, Some(true));
        let e = b.for_domain(a3, "d2.example");
        assert_eq!((e.rcpt_4xx, e.data_5xx), (0.0, 1.0));
        assert_eq!(e.rcpt_delay, Duration::from_millis(7));
        assert_eq!(b.for_domain(a2, "other.example").rcpt_4xx, 0.1);
        assert!(b.touches_rcpt());
    }

    #[test]
    fn bad_files_are_errors() {
        assert!(Behaviour::parse("[default]\nrcpt_4xx = 1.5\n").is_err());
        assert!(Behaviour::parse("[default]\nrcpt_4x = 0.5\n").is_err());
        assert!(Behaviour::parse("[domain.\"x\"]\ngreylist = \"yes\"\n").is_err());
        assert!(!Behaviour::parse("")
            .map(|b| b.touches_rcpt())
            .unwrap_or(true));
    }
}
