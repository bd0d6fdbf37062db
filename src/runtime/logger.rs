//! A plain stderr logger for operational messages (start-up, reload,
//! paniclog entries) until the Momentum-format logs exist.
//!
//! Shards never write to stderr themselves: a line goes into a bounded
//! channel and a logger thread writes it, so a slow or full stderr pipe
//! cannot stall a shard. When the channel is full the line is dropped and
//! counted, and the count is reported with the next line that gets through.
//! Owns the logger thread, its channel and `RepeatLimiter`. May call:
//! nothing in the crate. Must never: block a caller on a log line (lines
//! go in with `try_send` only).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::time::{Duration, Instant};

/// Lines that may wait for the logger thread.
const LOG_QUEUE_LINES: usize = 16 * 1024;

struct ChannelLogger {
    level: log::LevelFilter,
    tx: Option<SyncSender<String>>,
    dropped: AtomicU64,
}

/// Lines queued and not yet written, so exit can wait for them.
static PENDING: AtomicU64 = AtomicU64::new(0);

fn format_line(r: &log::Record) -> String {
    let now = time::OffsetDateTime::now_utc();
    let thread = std::thread::current();
    let stamp = now
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    format!(
        "{stamp} {} [{}] {}\n",
        r.level(),
        thread.name().unwrap_or("main"),
        r.args()
    )
}

impl log::Log for ChannelLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        // The executor's own diagnostics (e.g. io-poll probing on a file
        // system without it) are noise for an operator: debug level only.
        let level = if m.target().starts_with("glommio") {
            log::Level::Debug
        } else {
            m.level()
        };
        level <= self.level && m.level() <= self.level
    }

    fn log(&self, r: &log::Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let mut line = format_line(r);
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            line = format!("({dropped} log line(s) dropped: stderr was not keeping up)\n{line}");
        }
        PENDING.fetch_add(1, Ordering::SeqCst);
        let sent = self.tx.as_ref().is_some_and(|tx| tx.try_send(line).is_ok());
        if !sent {
            PENDING.fetch_sub(1, Ordering::SeqCst);
            self.dropped.fetch_add(dropped + 1, Ordering::Relaxed);
        }
    }

    fn flush(&self) {}
}

/// Installs the logger; `IMPULSE_LOG=debug|info|warn|error` sets the level (default info).
pub fn init() {
    let level = match std::env::var("IMPULSE_LOG").as_deref() {
        Ok("debug") => log::LevelFilter::Debug,
        Ok("trace") => log::LevelFilter::Trace,
        Ok("warn") => log::LevelFilter::Warn,
        Ok("error") => log::LevelFilter::Error,
        _ => log::LevelFilter::Info,
    };
    let (tx, rx) = sync_channel::<String>(LOG_QUEUE_LINES);
    let spawned = std::thread::Builder::new()
        .name("logger".into())
        .spawn(move || {
            for line in rx {
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
                PENDING.fetch_sub(1, Ordering::SeqCst);
            }
        });
    let tx = spawned.is_ok().then_some(tx);
    let logger = ChannelLogger {
        level,
        tx,
        dropped: AtomicU64::new(0),
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
}

/// Longest wait at exit for queued lines to be written.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// Waits (boundedly) until the logger thread has written what is queued.
pub fn drain() {
    let start = Instant::now();
    while PENDING.load(Ordering::SeqCst) > 0 && start.elapsed() < DRAIN_LIMIT {
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Keeps a repetitive operational line (the same kind of event for the
/// same key, e.g. a domain's deferrals) to one per interval: the first
/// line of an interval is written, the rest are counted and the count is
/// reported with the next line written. Never for accounting lines (one
/// per message outcome): those are the record, not noise. One per shard;
/// the clock is passed in.
pub struct RepeatLimiter<K> {
    interval: Duration,
    seen: std::collections::HashMap<K, (Instant, u64)>,
}

/// Most keys a limiter remembers; past it, intervals that ended are forgotten.
const REPEAT_LIMITER_MAX_KEYS: usize = 4096;

impl<K: std::hash::Hash + Eq + Clone> RepeatLimiter<K> {
    /// A limiter letting one line per `interval` through for each key.
    pub fn new(interval: Duration) -> Self {
        RepeatLimiter {
            interval,
            seen: std::collections::HashMap::new(),
        }
    }

    /// Should a line for `key` be written at `now`? `Some(n)`: write it, and
    /// say that `n` similar lines were held back before it; `None`: hold it
    /// back (it is counted).
    pub fn admit(&mut self, key: &K, now: Instant) -> Option<u64> {
        if let Some((since, held)) = self.seen.get_mut(key) {
            if now.duration_since(*since) < self.interval {
                *held += 1;
                return None;
            }
            let n = *held;
            *since = now;
            *held = 0;
            return Some(n);
        }
        if self.seen.len() >= REPEAT_LIMITER_MAX_KEYS {
            let interval = self.interval;
            self.seen
                .retain(|_, (since, held)| *held > 0 || now.duration_since(*since) < interval);
        }
        self.seen.insert(key.clone(), (now, 0));
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_key_per_interval_and_the_rest_counted() {
        let t0 = Instant::now();
        let mut l = RepeatLimiter::new(Duration::from_secs(10));
        assert_eq!(l.admit(&"a", t0), Some(0));
        for i in 1..100 {
            assert_eq!(l.admit(&"a", t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(l.admit(&"b", t0), Some(0), "keys are independent");
        assert_eq!(l.admit(&"a", t0 + Duration::from_secs(10)), Some(99));
        assert_eq!(l.admit(&"a", t0 + Duration::from_secs(11)), None);
    }
}
