//! A next hop for tests that records the `X-Token:` header of every
//! message it accepts, and can be switched down (421 at the greeting).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running token sink.
pub struct TokenSink {
    pub port: u16,
    up: Arc<AtomicBool>,
    tokens: Arc<Mutex<Vec<String>>>,
    refused: Arc<AtomicU64>,
    /// When the first and the latest connection were turned away.
    refusals: Arc<Mutex<Option<(Instant, Instant)>>>,
}

impl TokenSink {
    /// Starts a sink on 127.0.0.1, up or down.
    pub fn start(up: bool) -> TokenSink {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind sink");
        let port = l.local_addr().expect("addr").port();
        let up = Arc::new(AtomicBool::new(up));
        let tokens = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(AtomicU64::new(0));
        let refusals = Arc::new(Mutex::new(None));
        let (u, t, r, rs) = (
            up.clone(),
            tokens.clone(),
            refused.clone(),
            refusals.clone(),
        );
        std::thread::spawn(move || {
            for stream in l.incoming().flatten() {
                let (u, t, r, rs) = (u.clone(), t.clone(), r.clone(), rs.clone());
                std::thread::spawn(move || {
                    if session(stream, &u, &t, &r) {
                        let now = Instant::now();
                        let mut span = rs.lock().unwrap();
                        *span = Some(span.map_or((now, now), |(first, _)| (first, now)));
                    }
                });
            }
        });
        TokenSink {
            port,
            up,
            tokens,
            refused,
            refusals,
        }
    }

    /// Switches the sink up (accepting) or down (421 at the greeting).
    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }

    /// Connections turned away while down.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    /// Time from the first to the latest connection turned away.
    pub fn refusing_for(&self) -> Duration {
        self.refusals
            .lock()
            .unwrap()
            .map_or(Duration::ZERO, |(first, last)| last - first)
    }

    /// Every token received so far, in arrival order (repeats included).
    pub fn tokens(&self) -> Vec<String> {
        self.tokens.lock().unwrap().clone()
    }
}

fn session(
    stream: std::net::TcpStream,
    up: &AtomicBool,
    tokens: &Mutex<Vec<String>>,
    refused: &AtomicU64,
) -> bool {
    let mut w = stream.try_clone().expect("clone");
    let mut r = BufReader::new(stream);
    if !up.load(Ordering::SeqCst) {
        refused.fetch_add(1, Ordering::SeqCst);
        let _ = w.write_all(b"421 4.3.2 sink down\r\n");
        return true;
    }
    let _ = w.write_all(b"220 sink ESMTP\r\n");
    let (mut line, mut in_data, mut token) = (String::new(), false, None);
    while r.read_line(&mut line).unwrap_or(0) > 0 {
        let cmd = line.trim_end().to_string();
        line.clear();
        if in_data {
            if cmd == "." {
                in_data = false;
                if let Some(t) = token.take() {
                    tokens.lock().unwrap().push(t);
                }
                let _ = w.write_all(b"250 2.0.0 ok\r\n");
            } else if let Some(t) = cmd.strip_prefix("X-Token: ") {
                token.get_or_insert_with(|| t.to_string());
            }
            continue;
        }
        let up_cmd = cmd.to_ascii_uppercase();
        let reply: &[u8] = if up_cmd.starts_with("EHLO") {
            b"250-sink\r\n250 PIPELINING\r\n"
        } else if up_cmd == "DATA" {
            in_data = true;
            b"354 go\r\n"
        } else if up_cmd == "QUIT" {
            let _ = w.write_all(b"221 bye\r\n");
            return false;
        } else {
            b"250 ok\r\n"
        };
        if w.write_all(reply).is_err() {
            return false;
        }
    }
    false
}
