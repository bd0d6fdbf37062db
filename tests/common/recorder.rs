//! A next hop that records what impulse does to it: when each connection
//! opened and closed and from which address, when each message arrived,
//! and the most connections open at once. Its replies after the final dot
//! can be scripted per message (a delay, a 4xx) to make connections stay
//! busy or to play a rate-limiting receiver.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What happened, when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// A connection from this address opened.
    Open(IpAddr),
    /// A connection closed.
    Close,
    /// A message was accepted (250 after the dot), from this address.
    Accepted(IpAddr),
    /// A message was refused after the dot with this reply.
    Refused(String),
}

/// The reply after the final dot of the `n`th message (from 0): the wait
/// before it, and the reply line (with CRLF).
pub type Script = dyn Fn(u64) -> (Duration, String) + Send + Sync;

/// The connections open, their peak, and every change of their number.
#[derive(Default)]
struct Gauge {
    open: AtomicU32,
    peak: AtomicU32,
    levels: Mutex<Vec<(Instant, u32)>>,
}

impl Gauge {
    fn up(&self) {
        let mut levels = self.levels.lock().unwrap();
        let now = self.open.fetch_add(1, SeqCst) + 1;
        self.peak.fetch_max(now, SeqCst);
        levels.push((Instant::now(), now));
    }

    fn down(&self) {
        let mut levels = self.levels.lock().unwrap();
        let now = self.open.fetch_sub(1, SeqCst) - 1;
        levels.push((Instant::now(), now));
    }
}

/// A recording next hop on 127.0.0.1.
pub struct Recorder {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<(Instant, Seen)>>>,
    gauge: Arc<Gauge>,
}

impl Recorder {
    /// Every message gets 250 after `delay`.
    pub fn start(delay: Duration) -> Recorder {
        Recorder::scripted(Arc::new(move |_| (delay, "250 2.0.0 ok\r\n".into())))
    }

    /// Replies after the dot as `script` says.
    pub fn scripted(script: Arc<Script>) -> Recorder {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let log: Arc<Mutex<Vec<(Instant, Seen)>>> = Arc::default();
        let gauge = Arc::new(Gauge::default());
        let count = Arc::new(AtomicU64::new(0));
        let (log2, gauge2) = (log.clone(), gauge.clone());
        std::thread::spawn(move || {
            for stream in l.incoming().flatten() {
                let ip = stream.peer_addr().map(|a| a.ip()).expect("peer");
                gauge2.up();
                log2.lock().unwrap().push((Instant::now(), Seen::Open(ip)));
                let (log, open, script, count) =
                    (log2.clone(), gauge2.clone(), script.clone(), count.clone());
                std::thread::spawn(move || {
                    let mut w = stream.try_clone().expect("clone");
                    let mut r = BufReader::new(stream);
                    // Counted closed at QUIT (before the 221), or before the
                    // socket closes: impulse frees the slot only once it has
                    // the 221 or sees the close, so a connection it opens on
                    // that slot is never counted with this one.
                    let quit = session(&mut r, &mut w, ip, &log, &*script, &count, &open);
                    if !quit {
                        open.down();
                    }
                    drop((r, w));
                    log.lock().unwrap().push((Instant::now(), Seen::Close));
                });
            }
        });
        Recorder { addr, log, gauge }
    }

    /// The most connections open at once so far.
    pub fn peak(&self) -> u32 {
        self.gauge.peak.load(SeqCst)
    }

    /// Starts counting the peak again from the connections open now.
    pub fn reset_peak(&self) {
        let g = &self.gauge;
        g.peak.store(g.open.load(SeqCst), SeqCst);
    }

    /// Connections open now.
    pub fn open_now(&self) -> u32 {
        self.gauge.open.load(SeqCst)
    }

    /// The number of connections open after each change, in order.
    pub fn levels(&self) -> Vec<(Instant, u32)> {
        self.gauge.levels.lock().unwrap().clone()
    }

    /// Everything seen so far, in order.
    pub fn seen(&self) -> Vec<(Instant, Seen)> {
        self.log.lock().unwrap().clone()
    }

    /// Times of the accepted messages.
    pub fn accepted(&self) -> Vec<Instant> {
        self.times(|s| matches!(s, Seen::Accepted(_)))
    }

    /// Accepted messages per source address.
    pub fn sources(&self) -> std::collections::BTreeMap<IpAddr, usize> {
        let mut out = std::collections::BTreeMap::new();
        for (_, s) in self.seen() {
            if let Seen::Accepted(ip) = s {
                *out.entry(ip).or_insert(0) += 1;
            }
        }
        out
    }

    /// Times at which connections opened.
    pub fn opened(&self) -> Vec<Instant> {
        self.times(|s| matches!(s, Seen::Open(_)))
    }

    fn times(&self, f: impl Fn(&Seen) -> bool) -> Vec<Instant> {
        self.seen()
            .into_iter()
            .filter(|(_, s)| f(s))
            .map(|(t, _)| t)
            .collect()
    }
}

fn session(
    r: &mut BufReader<std::net::TcpStream>,
    w: &mut std::net::TcpStream,
    ip: IpAddr,
    log: &Mutex<Vec<(Instant, Seen)>>,
    script: &Script,
    count: &AtomicU64,
    open: &Gauge,
) -> bool {
    if w.write_all(b"220 recorder ESMTP\r\n").is_err() {
        return false;
    }
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return false;
        }
        let up = line.trim_end().to_ascii_uppercase();
        let reply: String = if up.starts_with("EHLO") || up.starts_with("HELO") {
            "250 recorder\r\n".into()
        } else if up == "DATA" {
            if w.write_all(b"354 go\r\n").is_err() {
                return false;
            }
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    return false;
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
            }
            let (delay, reply) = script(count.fetch_add(1, SeqCst));
            std::thread::sleep(delay);
            let seen = if reply.starts_with('2') {
                Seen::Accepted(ip)
            } else {
                Seen::Refused(reply.trim_end().to_string())
            };
            log.lock().unwrap().push((Instant::now(), seen));
            reply
        } else if up == "QUIT" {
            open.down();
            let _ = w.write_all(b"221 bye\r\n");
            return true;
        } else if up.starts_with("MAIL") || up.starts_with("RCPT") || up == "RSET" || up == "NOOP" {
            "250 ok\r\n".into()
        } else {
            "500 what\r\n".into()
        };
        if w.write_all(reply.as_bytes()).is_err() {
            return false;
        }
    }
}

/// The most events of `times` in any window of length `window` (each
/// window starting at an event).
pub fn most_in_window(times: &[Instant], window: Duration) -> usize {
    let mut t = times.to_vec();
    t.sort();
    let mut most = 0;
    let mut end = 0;
    for start in 0..t.len() {
        while end < t.len() && t[end] < t[start] + window {
            end += 1;
        }
        most = most.max(end - start);
    }
    most
}
