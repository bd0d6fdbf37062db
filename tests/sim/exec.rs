//! A deterministic single-thread executor on a virtual clock, installed as
//! the stages' `runtime::sched::Scheduler`. Ready tasks run in an order
//! drawn from the seed; when none is ready the clock jumps to the next
//! timer. Nothing here reads the real clock, so a run is a function of its
//! seed.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant, SystemTime};

use impulse::runtime::sched::{LocalFuture, Scheduler};

/// Wall-clock time the simulated day starts at (2026-03-01 00:00 UTC), in
/// milliseconds since the Unix epoch.
pub const START_WALL_MS: u64 = 1_772_323_200_000;

struct ReadyQueue(Mutex<Vec<usize>>);

struct TaskWaker {
    id: usize,
    ready: Arc<ReadyQueue>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.ready.0.lock().unwrap().push(self.id);
    }
}

/// The executor and its clock.
pub struct Sim {
    tasks: RefCell<BTreeMap<usize, Option<LocalFuture<()>>>>,
    next_task: Cell<usize>,
    ready: Arc<ReadyQueue>,
    /// Deadline (ns), sequence → the sleeping future's waker.
    timers: RefCell<BTreeMap<(u64, u64), Option<Waker>>>,
    next_timer: Cell<u64>,
    now_ns: Cell<u64>,
    rng: RefCell<fastrand::Rng>,
    base: Instant,
    polls: Cell<u64>,
}

impl Sim {
    /// A new executor whose scheduling choices come from `seed`.
    pub fn new(seed: u64) -> Rc<Sim> {
        Rc::new(Sim {
            tasks: RefCell::new(BTreeMap::new()),
            next_task: Cell::new(0),
            ready: Arc::new(ReadyQueue(Mutex::new(Vec::new()))),
            timers: RefCell::new(BTreeMap::new()),
            next_timer: Cell::new(0),
            now_ns: Cell::new(0),
            rng: RefCell::new(fastrand::Rng::with_seed(seed)),
            base: Instant::now(),
            polls: Cell::new(0),
        })
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.now_ns.get())
    }

    /// Task polls so far.
    pub fn polls(&self) -> u64 {
        self.polls.get()
    }

    /// The seeded random source of the run (for the disk, the network and
    /// the scenario too: one stream keeps a run reproducible).
    pub fn rng(&self) -> std::cell::RefMut<'_, fastrand::Rng> {
        self.rng.borrow_mut()
    }

    fn add(&self, f: LocalFuture<()>) {
        let id = self.next_task.get();
        self.next_task.set(id + 1);
        self.tasks.borrow_mut().insert(id, Some(f));
        self.ready.0.lock().unwrap().push(id);
    }

    /// Runs until the clock reaches `until`, nothing can happen any more
    /// (no task ready, no timer), or `stop` says so after a poll.
    pub fn run_until(&self, until: Duration, stop: &dyn Fn() -> bool) -> Ran {
        let until_ns = until.as_nanos() as u64;
        loop {
            let mut batch = std::mem::take(&mut *self.ready.0.lock().unwrap());
            if batch.is_empty() {
                // Nothing ready: the clock moves to the next timer.
                let next = self.timers.borrow().keys().next().copied();
                let Some((at, seq)) = next else {
                    return Ran::Stalled;
                };
                if at > until_ns {
                    self.now_ns.set(until_ns);
                    return Ran::Reached;
                }
                self.now_ns.set(self.now_ns.get().max(at));
                if let Some(Some(w)) = self.timers.borrow_mut().remove(&(at, seq)) {
                    w.wake();
                }
                continue;
            }
            batch.sort_unstable();
            batch.dedup();
            self.rng.borrow_mut().shuffle(&mut batch);
            for (n, id) in batch.iter().enumerate() {
                self.poll_task(*id);
                if stop() {
                    // The rest of the batch stays ready (dropped by a crash).
                    self.ready.0.lock().unwrap().extend(&batch[n + 1..]);
                    return Ran::Stopped;
                }
            }
        }
    }

    fn poll_task(&self, id: usize) {
        let fut = match self.tasks.borrow_mut().get_mut(&id) {
            Some(slot) => slot.take(),
            None => return,
        };
        let Some(mut fut) = fut else {
            return; // being polled further up the stack cannot happen here
        };
        self.polls.set(self.polls.get() + 1);
        let waker = Waker::from(Arc::new(TaskWaker {
            id,
            ready: self.ready.clone(),
        }));
        let mut cx = Context::from_waker(&waker);
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(()) => {
                self.tasks.borrow_mut().remove(&id);
            }
            Poll::Pending => {
                if let Some(slot) = self.tasks.borrow_mut().get_mut(&id) {
                    *slot = Some(fut);
                }
            }
        }
    }

    /// A crash: every task and timer is dropped where it stands.
    pub fn kill_all(&self) {
        // Taken out first: dropping a task may wake or spawn others.
        loop {
            let tasks = std::mem::take(&mut *self.tasks.borrow_mut());
            let timers = std::mem::take(&mut *self.timers.borrow_mut());
            if tasks.is_empty() && timers.is_empty() {
                break;
            }
            drop(tasks);
            drop(timers);
        }
        self.ready.0.lock().unwrap().clear();
    }
}

/// Why [`Sim::run_until`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ran {
    /// The clock reached the time asked for.
    Reached,
    /// No task was ready and no timer set.
    Stalled,
    /// The stop condition held.
    Stopped,
}

/// The installed scheduler: a handle on the shared executor.
pub struct Handle(pub Rc<Sim>);

impl Scheduler for Handle {
    fn now(&self) -> Instant {
        self.0.base + self.0.elapsed()
    }

    fn wall(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(START_WALL_MS) + self.0.elapsed()
    }

    fn sleep(&self, d: Duration) -> LocalFuture<()> {
        let sim = self.0.clone();
        let at = sim.now_ns.get().saturating_add(d.as_nanos() as u64);
        let seq = sim.next_timer.get();
        sim.next_timer.set(seq + 1);
        Box::pin(SleepUntil {
            sim,
            key: (at, seq),
            armed: false,
        })
    }

    fn spawn(&self, task: LocalFuture<()>) {
        self.0.add(task);
    }
}

struct SleepUntil {
    sim: Rc<Sim>,
    key: (u64, u64),
    armed: bool,
}

impl Future for SleepUntil {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.sim.now_ns.get() >= self.key.0 {
            self.sim.timers.borrow_mut().remove(&self.key);
            return Poll::Ready(());
        }
        self.armed = true;
        self.sim
            .timers
            .borrow_mut()
            .insert(self.key, Some(cx.waker().clone()));
        Poll::Pending
    }
}

impl Drop for SleepUntil {
    fn drop(&mut self) {
        if self.armed {
            if let Ok(mut t) = self.sim.timers.try_borrow_mut() {
                t.remove(&self.key);
            }
        }
    }
}
