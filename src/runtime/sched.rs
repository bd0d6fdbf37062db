//! What a shard's stages ask of time and tasks: the time now (monotonic
//! and wall clock), a sleep, a new task. On a shard these are glommio's
//! timers and executor and the system clocks; a test may install a
//! [`Scheduler`] on its thread instead (the deterministic simulation runs
//! intake, spool, queue manager and outbound on a virtual clock with it).
//!
//! Owns the thread-local choice between the two. May call: glommio, std.
//! Must never: be consulted for anything but time and tasks, or hold a
//! scheduler across threads (one per thread, like the executors).

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A boxed, thread-local future.
pub type LocalFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// Time and tasks for the stages of a shard, when not glommio's.
pub trait Scheduler {
    /// Monotonic time now.
    fn now(&self) -> Instant;
    /// Wall-clock time now.
    fn wall(&self) -> SystemTime;
    /// Resolves once `d` has passed on this scheduler's clock.
    fn sleep(&self, d: Duration) -> LocalFuture<()>;
    /// Runs `task` to completion beside the caller.
    fn spawn(&self, task: LocalFuture<()>);
}

thread_local! {
    static INSTALLED: RefCell<Option<Rc<dyn Scheduler>>> = const { RefCell::new(None) };
}

fn installed() -> Option<Rc<dyn Scheduler>> {
    INSTALLED.with(|s| s.borrow().clone())
}

/// Puts `s` in charge of time and tasks on this thread until the guard is
/// dropped.
pub fn install(s: Rc<dyn Scheduler>) -> Installed {
    INSTALLED.with(|cell| *cell.borrow_mut() = Some(s));
    Installed(())
}

/// Keeps a [`Scheduler`] installed; dropping it restores glommio's.
#[must_use = "the scheduler is uninstalled when this is dropped"]
pub struct Installed(());

impl Drop for Installed {
    fn drop(&mut self) {
        INSTALLED.with(|cell| cell.borrow_mut().take());
    }
}

/// Monotonic time now.
pub fn now() -> Instant {
    match installed() {
        Some(s) => s.now(),
        None => Instant::now(),
    }
}

/// Wall-clock time now.
pub fn wall() -> SystemTime {
    match installed() {
        Some(s) => s.wall(),
        None => SystemTime::now(),
    }
}

/// Milliseconds since the Unix epoch (0 before it).
pub fn wall_ms() -> u64 {
    wall()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Resolves once `d` has passed.
pub fn sleep(d: Duration) -> Sleep {
    match installed() {
        Some(s) => Sleep::Installed(s.sleep(d)),
        None => Sleep::Glommio(glommio::timer::Timer::new(d)),
    }
}

/// The future of [`sleep`].
pub enum Sleep {
    /// A glommio timer.
    Glommio(glommio::timer::Timer),
    /// The installed scheduler's sleep.
    Installed(LocalFuture<()>),
}

impl Future for Sleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.get_mut() {
            Sleep::Glommio(t) => Pin::new(t).poll(cx).map(|_| ()),
            Sleep::Installed(f) => f.as_mut().poll(cx),
        }
    }
}

/// Runs `fut` as a task of its own on this thread.
pub fn spawn<T: 'static>(fut: impl Future<Output = T> + 'static) -> Task<T> {
    let Some(s) = installed() else {
        return Task::Glommio(glommio::spawn_local(fut));
    };
    let slot = Rc::new(RefCell::new(Outcome {
        value: None,
        waker: None,
    }));
    let out = slot.clone();
    s.spawn(Box::pin(async move {
        let v = fut.await;
        let mut o = out.borrow_mut();
        o.value = Some(v);
        if let Some(w) = o.waker.take() {
            w.wake();
        }
    }));
    Task::Installed(slot)
}

/// Where an installed task leaves its value for the [`Task`] handle.
pub struct Outcome<T> {
    value: Option<T>,
    waker: Option<Waker>,
}

/// A spawned task: await it for its value, or detach it. Callers do one of
/// the two (a glommio task dropped without either is cancelled).
pub enum Task<T> {
    /// On glommio's executor.
    Glommio(glommio::Task<T>),
    /// On the installed scheduler.
    Installed(Rc<RefCell<Outcome<T>>>),
}

impl<T> Task<T> {
    /// Lets the task run on without anyone waiting for it.
    pub fn detach(self) {
        if let Task::Glommio(t) = self {
            t.detach();
        }
    }
}

impl<T> Future for Task<T> {
    type Output = T;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match self.get_mut() {
            Task::Glommio(t) => Pin::new(t).poll(cx),
            Task::Installed(slot) => {
                let mut o = slot.borrow_mut();
                match o.value.take() {
                    Some(v) => Poll::Ready(v),
                    None => {
                        o.waker = Some(cx.waker().clone());
                        Poll::Pending
                    }
                }
            }
        }
    }
}
