//! Where a domain's mail goes: the hosts to try, in order — the domain's
//! static routes, else its MX hosts (null MX and NXDOMAIN are permanent,
//! DNS trouble and hosts without addresses transient).
//!
//! Owns `Target` and `Unroutable`. May call: the shard's DNS resolver,
//! config (the domain's settings), smtp (the reply type). Must never: open
//! a connection (the pool does) or decide what becomes of a message (the
//! queue does).

use std::net::SocketAddr;
use std::rc::Rc;

use super::dns::{MxResult, Resolver};
use crate::config::Delivery;
use crate::reply::Reply;

/// Why a domain cannot be delivered to right now; the reply to record for
/// each of its recipients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unroutable {
    /// Null MX, no such domain: fail.
    Permanent(Rc<Reply>),
    /// DNS trouble, no addresses, no host answered: try later.
    Transient(Rc<Reply>),
}

/// One host to try: the name (for TLS and logs) and its address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Host name, or the IP literal of a static route.
    pub host: Rc<str>,
    /// Address and port.
    pub addr: SocketAddr,
}

/// One of our own replies, to share among a domain's recipients.
fn reply(code: u16, enhanced: (u8, u16, u16), text: &str) -> Rc<Reply> {
    Rc::new(Reply::internal(code, enhanced, text))
}

/// The hosts to try for `domain`, in order: static routes, else the MX.
pub async fn targets(
    resolver: &Resolver,
    domain: &str,
    d: &Delivery,
) -> Result<Vec<Target>, Unroutable> {
    let mut out = Vec::new();
    if !d.routes.is_empty() {
        let mut last = None;
        for r in &d.routes {
            if let Some(addr) = r.addr() {
                out.push(Target {
                    host: Rc::from(r.host.as_str()),
                    addr,
                });
                continue;
            }
            match resolver.resolve_host(&r.host).await {
                Ok(res) => out.extend(res.addresses().map(|(h, ip)| Target {
                    host: Rc::from(h.name.as_str()),
                    addr: SocketAddr::new(ip, r.port),
                })),
                Err(e) => last = Some(e),
            }
        }
        if out.is_empty() {
            let why = last.map_or("no address for the configured routes".to_string(), |e| {
                e.to_string()
            });
            return Err(Unroutable::Transient(reply(451, (4, 4, 3), &why)));
        }
        return Ok(out);
    }
    match resolver.resolve_mx(domain).await {
        Err(e) => Err(Unroutable::Transient(reply(451, (4, 4, 3), &e.to_string()))),
        Ok(res) => match &*res {
            MxResult::NullMx => Err(Unroutable::Permanent(reply(
                550,
                (5, 1, 10),
                "NULL MX domain does not accept mail",
            ))),
            MxResult::NoSuchDomain => Err(Unroutable::Permanent(reply(
                550,
                (5, 1, 2),
                &format!("domain {domain} does not exist"),
            ))),
            hosts => {
                out.extend(hosts.addresses().map(|(h, ip)| Target {
                    host: Rc::from(h.name.as_str()),
                    addr: SocketAddr::new(ip, d.remote_smtp_port),
                }));
                if out.is_empty() {
                    return Err(Unroutable::Transient(reply(
                        454,
                        (4, 4, 4),
                        "no MX or A for domain",
                    )));
                }
                Ok(out)
            }
        },
    }
}
