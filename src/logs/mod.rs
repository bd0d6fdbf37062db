//! Momentum-format logs: ec_logger's mainlog, paniclog and rejectlog and
//! bounce_logger's bouncelog (reference §5.1), with the connection stage
//! numbers of §6, fed by the shard's event stream. (Named `logs`: `log`
//! is the logging facade's crate.)
//!
//! `mainlog` and `other` turn one record into one line (sans-IO); `file`
//! writes a shard's lines to one file; [`Logs`] is the shard's subscriber
//! that turns events into lines for each file, and the barrier the intake
//! and the queue wait on: a reception's R line is written before its 250,
//! and a result's D, T or P (and B) line before the spool records the
//! result. So after a crash (kill -9) no line is missing for mail the
//! server acknowledged or settled; a line may repeat (a settled-but-not-yet
//! recorded result is attempted again after the restart). The lines reach
//! the kernel, not the platter: a power cut can lose the last ones, as it
//! can for any log that is not synced.
//!
//! Owns the record types, their formatting and the shard's log files. May
//! call: events, config (the settings), smtp (stages, phases), bounce
//! (classes), runtime (clock, signals). Must never: do I/O inside `offer`,
//! drop an accounting line, or let a field's text end a line or shift
//! the fields after it.

pub mod file;
pub mod mainlog;
pub mod other;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use crate::config::{LogFormat, LogPath, LogSettings};
use crate::events::{Event, Events, Level, Subscriber, Subsystem, Taken, Try};
use crate::runtime::sched;
use crate::runtime::shutdown::Signal;
use file::LogFile;
use mainlog::{Attempt, Failure, Reception};

/// A shard's logs.
pub struct Logs {
    settings: LogSettings,
    shard: usize,
    main: Option<Rc<LogFile>>,
    panic: Option<Rc<LogFile>>,
    reject: Option<Rc<LogFile>>,
    bounce: Option<Rc<LogFile>>,
    /// Scratch for one event's lines.
    line: RefCell<String>,
    stopping: Signal,
    tasks: RefCell<Vec<glommio::task::JoinHandle<()>>>,
    /// Receptions that waited for the logs to catch up.
    waits: Cell<u64>,
    /// Receptions refused because the logs did not catch up in time.
    refusals: Cell<u64>,
}

/// What a shard's logs report in its counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Receptions that waited for the logs (back-pressure).
    pub waits: u64,
    /// Receptions refused (451) because the logs stayed behind.
    pub refusals: u64,
    /// Failed opens and writes of log files.
    pub write_errors: u64,
}

impl Logs {
    /// The logs `settings` name, for shard `shard` (files open when
    /// [`Logs::start`] runs their flushers).
    pub fn new(shard: usize, settings: &LogSettings) -> Rc<Logs> {
        let open = |name, p: &Option<LogPath>| {
            p.as_ref().map(|p| {
                let path = std::path::absolute(&p.path).unwrap_or_else(|_| p.path.clone());
                LogFile::new(name, path, p.mode)
            })
        };
        Rc::new(Logs {
            settings: settings.clone(),
            shard,
            main: open("mainlog", &settings.mainlog),
            panic: open("paniclog", &settings.paniclog),
            reject: open("rejectlog", &settings.rejectlog),
            bounce: open("bouncelog", &settings.bouncelog),
            line: RefCell::new(String::with_capacity(512)),
            stopping: Signal::default(),
            tasks: RefCell::new(Vec::new()),
            waits: Cell::new(0),
            refusals: Cell::new(0),
        })
    }

    /// Logs that write nothing (tools and tests that run a shard's
    /// stages without files).
    pub fn off(shard: usize) -> Rc<Logs> {
        let mut settings = crate::config::Config::load(None)
            .map(|c| c.logs)
            .expect("the embedded configuration compiles");
        settings.mainlog = None;
        settings.paniclog = None;
        settings.rejectlog = None;
        settings.acctlog = None;
        settings.bouncelog = None;
        Logs::new(shard, &settings)
    }

    fn files(&self) -> impl Iterator<Item = &Rc<LogFile>> {
        [&self.main, &self.panic, &self.reject, &self.bounce]
            .into_iter()
            .flatten()
    }

    /// The files whose lines are accounting (R, D, T, P, B).
    fn accounting(&self) -> impl Iterator<Item = &Rc<LogFile>> {
        [&self.main, &self.bounce].into_iter().flatten()
    }

    /// Creates the log directories and starts a flusher per file (and on
    /// shard 0 the heartbeat). Errors are for the start-up report.
    pub fn start(self: &Rc<Self>, events: Rc<Events>) -> Result<(), String> {
        for f in self.files() {
            if let Some(dir) = f.path().parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("{} directory {}: {e}", f.name, dir.display()))?;
            }
        }
        let mut tasks = self.tasks.borrow_mut();
        for f in self.files() {
            tasks.push(
                glommio::spawn_local(f.clone().run(events.clone(), self.stopping.clone())).detach(),
            );
        }
        if self.shard == 0 && !self.settings.heartbeat.is_zero() {
            let me = self.clone();
            glommio::spawn_local(async move { me.heartbeat().await }).detach();
        }
        Ok(())
    }

    async fn heartbeat(&self) {
        loop {
            let stop = futures_lite::future::or(
                async {
                    sched::sleep(self.settings.heartbeat).await;
                    false
                },
                async {
                    self.stopping.wait().await;
                    true
                },
            );
            if stop.await {
                return;
            }
            let mut line = String::new();
            mainlog::heartbeat(&mut line, self.settings.format, now());
            for f in self.accounting() {
                f.push(&line);
            }
        }
    }

    /// Completes once every line taken so far is written (the barrier
    /// before a 250 and before a result is recorded).
    pub async fn written(&self) {
        for f in self.accounting() {
            f.written_to(f.mark()).await;
        }
    }

    /// True at once while the accounting logs are within their bound;
    /// else waits for them to catch up (reception slows: back-pressure),
    /// false when they did not within `limit`.
    pub async fn room(&self, events: &Events, limit: Duration) -> bool {
        let bound = self.settings.buffer_size;
        let full = || self.accounting().find(|f| f.backlog() >= bound).cloned();
        let Some(first) = full() else {
            return true;
        };
        self.waits.set(self.waits.get() + 1);
        if self.waits.get().is_power_of_two() {
            events.report(
                Level::Warning,
                Subsystem::Log,
                &format!(
                    "{} {} is {} octet(s) behind (bound {bound}): reception waits for it ({} wait(s) so far)",
                    first.name,
                    first.path().display(),
                    first.backlog(),
                    self.waits.get()
                ),
            );
        }
        let caught_up = futures_lite::future::or(
            async {
                while let Some(f) = full() {
                    f.progressed().await;
                }
                true
            },
            async {
                sched::sleep(limit).await;
                false
            },
        )
        .await;
        if !caught_up {
            self.refusals.set(self.refusals.get() + 1);
        }
        caught_up
    }

    /// Closes every file and opens its path again (log rotation).
    pub fn reopen(&self) {
        for f in self.files() {
            f.reopen();
        }
    }

    /// Writes what is left and closes the files; gives up after `limit`
    /// (a stalled disk must not hold the shutdown up forever).
    pub async fn close(&self, limit: Duration) {
        self.stopping.fire();
        let tasks = std::mem::take(&mut *self.tasks.borrow_mut());
        let left = self.files().map(|f| f.backlog()).sum::<u64>();
        let done = futures_lite::future::or(
            async {
                for t in tasks {
                    t.await;
                }
                true
            },
            async {
                sched::sleep(limit).await;
                false
            },
        )
        .await;
        if !done {
            log::error!(
                "paniclog: shard {}: [ERROR] LOG1: the logs did not take their last {left} octet(s) within {}s",
                self.shard,
                limit.as_secs()
            );
        }
    }

    /// Its counters.
    pub fn stats(&self) -> LogStats {
        LogStats {
            waits: self.waits.get(),
            refusals: self.refusals.get(),
            write_errors: self.files().map(|f| f.errors.get()).sum(),
        }
    }

    fn attempt<'a>(&self, t: &Try<'a>, id: &'a str, domain: &'a str, now_ms: u64) -> Attempt<'a> {
        Attempt {
            time: now_ms / 1000,
            id,
            domain,
            size: t.octets,
            source: t.source,
            retries: t.retries,
            secs_in_queue: now_ms.saturating_sub(t.received_at_ms) as f64 / 1000.0,
            remote: t.remote,
        }
    }
}

fn now() -> u64 {
    sched::wall_ms() / 1000
}

impl Subscriber for Logs {
    fn name(&self) -> &'static str {
        "logs"
    }

    fn offer(&self, event: &Event<'_>) -> Taken {
        let s = &self.settings;
        let format = s.format;
        let mut line = self.line.borrow_mut();
        line.clear();
        let target = match event {
            Event::Reception {
                source,
                id,
                sender,
                recipients,
                octets,
                peer,
                protocol,
            } if s.receptions => {
                let id = id.to_string();
                for r in recipients.iter() {
                    mainlog::reception(
                        &mut line,
                        format,
                        &Reception {
                            time: now(),
                            id: &id,
                            recipient: &r.address,
                            sender,
                            peer: peer.map(|p| p.ip()),
                            size: *octets,
                            protocol: *protocol,
                            source: *source,
                        },
                    );
                }
                &self.main
            }
            Event::Delivery { attempt, .. } if s.deliveries => {
                let id = attempt.id.to_string();
                let domain = mainlog::split(attempt.recipient).1;
                let a = self.attempt(attempt, &id, domain, sched::wall_ms());
                mainlog::delivery(&mut line, format, &a);
                &self.main
            }
            Event::TransientFailure { attempt, reply, .. } if s.transient_failures => {
                let id = attempt.id.to_string();
                let domain = mainlog::split(attempt.recipient).1;
                let a = self.attempt(attempt, &id, domain, sched::wall_ms());
                let response = reply.to_string();
                let f = Failure {
                    stage: attempt.stage,
                    response: &response,
                };
                mainlog::failure(&mut line, format, &a, &f, false);
                &self.main
            }
            Event::PermanentFailure {
                attempt,
                reply,
                class,
            } => {
                let id = attempt.id.to_string();
                let domain = mainlog::split(attempt.recipient).1;
                let a = self.attempt(attempt, &id, domain, sched::wall_ms());
                let response = reply.to_string();
                let f = Failure {
                    stage: attempt.stage,
                    response: &response,
                };
                if s.permanent_failures {
                    mainlog::failure(&mut line, format, &a, &f, true);
                    if let Some(m) = &self.main {
                        m.push(&line);
                    }
                    line.clear();
                }
                if s.inband_bounces {
                    mainlog::bounce(
                        &mut line,
                        format,
                        &a,
                        &f,
                        (attempt.recipient, attempt.sender),
                        *class,
                    );
                }
                &self.bounce
            }
            Event::Rejection {
                phase,
                code,
                reply,
                peer,
                local,
            } if s.rejections => {
                other::rejection(
                    &mut line,
                    format,
                    &other::Refusal {
                        time: now(),
                        peer: *peer,
                        local: *local,
                        phase: *phase,
                        code: *code,
                        text: reply,
                    },
                );
                &self.reject
            }
            Event::Panic {
                level,
                subsystem,
                what,
            } if s.errors => {
                other::panic(&mut line, format, now(), *level, *subsystem, what);
                &self.panic
            }
            _ => &None,
        };
        if let Some(f) = target {
            f.push(&line);
        }
        Taken::Yes
    }
}

/// Lines for a log that no shard writes (the main thread's paniclog
/// lines: a reload or shutdown a shard did not take). Written with one
/// blocking O_APPEND write: the main thread is not a shard.
pub fn append_blocking(
    path: &LogPath,
    format: LogFormat,
    level: Level,
    subsystem: Subsystem,
    what: &str,
) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut line = String::new();
    other::panic(&mut line, format, now(), level, subsystem, what);
    let written = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(path.mode)
        .open(&path.path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        log::error!("paniclog {}: cannot write: {e}", path.path.display());
    }
}
