//! Time limits of a server session, after Postfix's `smtpd_timeout` with
//! per-request deadlines and `smtpd_min_data_rate`: a request (a command
//! line, an AUTH response, a DATA body, a BDAT chunk) has a deadline set
//! when it starts, which input does not push back, except that content
//! earns `1 / min_data_rate` seconds per octet. Content that stops
//! altogether is cut `data_timeout` after its last octet, so a fast start
//! does not buy a long stall (with the octets held in memory). The whole
//! session has a cap of its own.
//!
//! Owns `TimeLimits` and the deadline bookkeeping; the driver arms the timer
//! and calls `expire`. May call: the session (`super`), `smtp::reply`. Must
//! never read a clock: the driver passes the time in.

use std::time::{Duration, Instant};

use super::{Phase, ServerSession};
use crate::reply::Reply;

/// Milliseconds per second, for the rate allowance.
const MILLIS_PER_SEC: u64 = 1000;

/// A session's time limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeLimits {
    /// A command line must be complete this long after the previous reply.
    pub command: Duration,
    /// Content must be complete this long after it started, plus the
    /// allowance its octets earned; and no wait for more may exceed it.
    pub data: Duration,
    /// Each content octet extends the content deadline by `1 / rate`
    /// seconds (0 = no allowance).
    pub min_data_rate_octets_per_sec: u64,
    /// Cap on the whole session from its start (zero = none).
    pub max_session: Duration,
}

/// Deadline bookkeeping of one session.
#[derive(Debug)]
pub(super) struct Timers {
    limits: TimeLimits,
    session_started: Instant,
    /// Start of the current request; `None` = one just began and is
    /// stamped by the next `deadline` call (when the driver waits).
    request_started: Option<Instant>,
    /// Content octets received in the current request.
    content_octets: u64,
    /// When content last arrived (stamped like `request_started`).
    last_content: Option<Instant>,
    /// Content arrived since the last stamp.
    content_pending: bool,
}

impl Timers {
    fn request_deadline(&self, start: Instant, in_content: bool) -> Instant {
        let l = &self.limits;
        if !in_content {
            return start + l.command;
        }
        let earned = match l.min_data_rate_octets_per_sec {
            0 => Duration::ZERO,
            rate => {
                Duration::from_millis(self.content_octets.saturating_mul(MILLIS_PER_SEC) / rate)
            }
        };
        let base = start + l.data;
        let overall = base.checked_add(earned).unwrap_or(base);
        if self.content_pending {
            return overall;
        }
        overall.min(self.last_content.unwrap_or(start) + l.data)
    }

    fn session_deadline(&self) -> Option<Instant> {
        (!self.limits.max_session.is_zero()).then(|| self.session_started + self.limits.max_session)
    }
}

impl ServerSession {
    /// Enforces `limits` from now on; the session started at `now`.
    pub fn start_timers(&mut self, limits: TimeLimits, now: Instant) {
        self.timers = Some(Timers {
            limits,
            session_started: now,
            request_started: None,
            content_octets: 0,
            last_content: None,
            content_pending: false,
        });
    }

    /// When `expire` must be called if no input comes first; `None` without
    /// limits or once closed. Call it when about to wait for input.
    pub fn deadline(&mut self, now: Instant) -> Option<Instant> {
        if matches!(self.phase, Phase::Closed) {
            return None;
        }
        let in_content = self.in_data();
        let t = self.timers.as_mut()?;
        let start = *t.request_started.get_or_insert(now);
        if std::mem::take(&mut t.content_pending) {
            t.last_content = Some(now);
        }
        let request = t.request_deadline(start, in_content);
        Some(t.session_deadline().map_or(request, |s| s.min(request)))
    }

    /// Closes with 421 4.4.2 when a deadline has passed at `now`; true if so.
    pub fn expire(&mut self, now: Instant) -> bool {
        if matches!(self.phase, Phase::Closed) {
            return true;
        }
        let in_content = self.in_data();
        let Some(t) = self.timers.as_ref() else {
            return false;
        };
        if t.session_deadline().is_some_and(|d| now >= d) {
            let text = format!(
                "{} session time limit reached, closing",
                self.settings.hostname
            );
            self.close_with(Reply::new(421, "4.4.2", text));
            return true;
        }
        match t.request_started {
            Some(start) if now >= t.request_deadline(start, in_content) => {
                self.timeout();
                true
            }
            _ => false,
        }
    }

    /// A request ended (a line was consumed, content finished, a pause was
    /// answered): the next one's deadline starts when the driver next waits.
    pub(super) fn request_done(&mut self) {
        if let Some(t) = self.timers.as_mut() {
            t.request_started = None;
            t.content_octets = 0;
            t.last_content = None;
            t.content_pending = false;
        }
    }

    /// Content octets consumed, for the rate allowance.
    pub(super) fn content_received(&mut self, octets: usize) {
        if let Some(t) = self.timers.as_mut() {
            t.content_octets = t.content_octets.saturating_add(octets as u64);
            t.content_pending |= octets > 0;
        }
    }
}
