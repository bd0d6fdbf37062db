//! A shard-local, one-shot broadcast: "stop now". Sessions wait on it
//! beside their reads so a stalled peer cannot hold shutdown up.
//!
//! Owns `Signal` with its `Wait` future, and `Notify`, a reusable wake-up
//! for one waiting task. May call: nothing in the crate (std only). Must
//! never: cross threads (`Rc` and `Cell`: one per shard), or keep the waker
//! of a dropped `Wait` (the waiter map does not grow with abandoned waits).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// One per shard; cheap to clone.
#[derive(Clone, Default)]
pub struct Signal {
    inner: Rc<Inner>,
}

#[derive(Default)]
struct Inner {
    fired: Cell<bool>,
    next_id: Cell<u64>,
    // Keyed so a dropped waiter takes its waker with it: no growth over time.
    wakers: RefCell<HashMap<u64, Waker>>,
}

impl Signal {
    /// Fires the signal and wakes every waiter.
    pub fn fire(&self) {
        self.inner.fired.set(true);
        let wakers: Vec<Waker> = self
            .inner
            .wakers
            .borrow_mut()
            .drain()
            .map(|(_, w)| w)
            .collect();
        for w in wakers {
            w.wake();
        }
    }

    /// True once fired.
    pub fn is_fired(&self) -> bool {
        self.inner.fired.get()
    }

    /// Resolves when the signal fires.
    pub fn wait(&self) -> Wait {
        let id = self.inner.next_id.get();
        self.inner.next_id.set(id + 1);
        Wait {
            inner: self.inner.clone(),
            id,
        }
    }
}

/// Future returned by [`Signal::wait`].
pub struct Wait {
    inner: Rc<Inner>,
    id: u64,
}

impl Drop for Wait {
    fn drop(&mut self) {
        self.inner.wakers.borrow_mut().remove(&self.id);
    }
}

impl Future for Wait {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.inner.fired.get() {
            return Poll::Ready(());
        }
        self.inner
            .wakers
            .borrow_mut()
            .insert(self.id, cx.waker().clone());
        Poll::Pending
    }
}

/// A reusable wake-up for one waiting task: `notify` before or during a
/// wait makes the next (or current) `notified` complete once.
#[derive(Default)]
pub struct Notify {
    pending: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Notify {
    /// Wakes the waiter (or the next one to wait).
    pub fn notify(&self) {
        self.pending.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Completes once a notification has arrived, consuming it.
    pub fn notified(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.pending.replace(false) {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
    }
}
