//! A plain stderr logger for operational messages (start-up, reload,
//! paniclog entries) until the Momentum-format logs exist.

use std::io::Write;

struct StderrLogger {
    level: log::LevelFilter,
}

impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= self.level
    }

    fn log(&self, r: &log::Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("main");
        // One write per line so lines from different shards never interleave.
        let line = format!(
            "{}.{:03} {} [{}] {}\n",
            now.as_secs(),
            now.subsec_millis(),
            r.level(),
            name,
            r.args()
        );
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
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
    if log::set_boxed_logger(Box::new(StderrLogger { level })).is_ok() {
        log::set_max_level(level);
    }
}
