//! impulse-perf: the tools behind every performance claim of impulse.
//!
//! * `load` — the load generator (`impulse-load`): drives impulse's sans-IO
//!   SMTP client engine over glommio, one pinned executor per core.
//! * `sink` — the configurable receiving SMTP server (`impulse-sink`):
//!   drives impulse's sans-IO SMTP server engine, injects delays and
//!   failures per address or recipient domain, and measures end-to-end
//!   latency from the load generator's `X-Impulse-Sent` header.
//! * `hist`, `shards`, `net` — what both share: latency histograms,
//!   executors pinned per core, and plain/TLS connections.
//!
//! No second SMTP implementation lives here: the protocol is impulse's.

pub mod hist;
pub mod load;
pub mod net;
pub mod shards;
pub mod sink;

/// The header each generated message carries: send time, Unix microseconds.
pub const SENT_HEADER: &str = "X-Impulse-Sent";

/// Microseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
