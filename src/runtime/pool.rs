//! Shard-local pools of byte buffers: fixed-size ones (`BufferPool`), so
//! that sessions moving into DATA reuse a read buffer instead of
//! allocating (and zeroing) a new one per message, and growable ones
//! (`VecPool`) for sessions' command input and replies.
//!
//! Owns the idle buffers only; a buffer taken is its holder's until it is
//! dropped (or given back), then it goes back (or is freed when the pool
//! already holds `max_idle`). May call: nothing but the allocator. Must never: hand one
//! buffer to two holders, hold more than `max_idle` idle buffers, or be
//! shared between shards (it is `Rc`, not `Send`).

use std::cell::{Cell, RefCell};
use std::ops::{Deref, DerefMut};
use std::rc::Rc;

/// Buffers of one size, for one shard.
pub struct BufferPool {
    size: usize,
    max_idle: usize,
    idle: RefCell<Vec<Box<[u8]>>>,
    created: Cell<u64>,
}

impl BufferPool {
    /// A pool of `size`-byte buffers keeping at most `max_idle` idle ones.
    pub fn new(size: usize, max_idle: usize) -> Rc<Self> {
        Rc::new(BufferPool {
            size,
            max_idle,
            idle: RefCell::new(Vec::new()),
            created: Cell::new(0),
        })
    }

    /// A buffer: an idle one if there is one, else a new one. Its contents
    /// are whatever the last holder left (callers read into it).
    pub fn take(self: &Rc<Self>) -> PoolBuf {
        let buf = self.idle.borrow_mut().pop().unwrap_or_else(|| {
            self.created.set(self.created.get() + 1);
            vec![0u8; self.size].into_boxed_slice()
        });
        PoolBuf {
            buf: Some(buf),
            pool: self.clone(),
        }
    }

    /// Buffers allocated so far (not reused ones).
    pub fn created(&self) -> u64 {
        self.created.get()
    }

    /// Idle buffers held now.
    pub fn idle(&self) -> usize {
        self.idle.borrow().len()
    }
}

/// A buffer from a [`BufferPool`]; goes back to it when dropped.
pub struct PoolBuf {
    buf: Option<Box<[u8]>>,
    pool: Rc<BufferPool>,
}

impl Deref for PoolBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.buf.as_deref().unwrap_or(&[])
    }
}

impl DerefMut for PoolBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.buf.as_deref_mut().unwrap_or(&mut [])
    }
}

impl Drop for PoolBuf {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            let mut idle = self.pool.idle.borrow_mut();
            if idle.len() < self.pool.max_idle {
                idle.push(buf);
            }
        }
    }
}

/// Growable byte buffers (a session's command input and replies), for one
/// shard: taken empty, given back when their holder is done.
pub struct VecPool {
    max_idle: usize,
    max_capacity: usize,
    idle: RefCell<Vec<Vec<u8>>>,
    created: Cell<u64>,
}

impl VecPool {
    /// A pool keeping at most `max_idle` idle buffers, none of more than
    /// `max_capacity` octets (a bigger one is freed when given back).
    pub fn new(max_idle: usize, max_capacity: usize) -> Rc<Self> {
        Rc::new(VecPool {
            max_idle,
            max_capacity,
            idle: RefCell::new(Vec::new()),
            created: Cell::new(0),
        })
    }

    /// An empty buffer: an idle one (its capacity kept) if there is one.
    pub fn take(&self) -> Vec<u8> {
        self.idle.borrow_mut().pop().unwrap_or_else(|| {
            self.created.set(self.created.get() + 1);
            Vec::new()
        })
    }

    /// Takes a buffer back (emptied), unless the pool is full or it grew
    /// past `max_capacity`.
    pub fn give(&self, mut buf: Vec<u8>) {
        let mut idle = self.idle.borrow_mut();
        if idle.len() < self.max_idle && buf.capacity() <= self.max_capacity {
            buf.clear();
            idle.push(buf);
        }
    }

    /// Buffers handed out that were not reused ones.
    pub fn created(&self) -> u64 {
        self.created.get()
    }

    /// Idle buffers held now.
    pub fn idle(&self) -> usize {
        self.idle.borrow().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_and_idle_ones_are_capped() {
        let pool = BufferPool::new(16, 1);
        let mut a = pool.take();
        a[0] = 7;
        assert_eq!(a.len(), 16);
        let b = pool.take();
        assert_eq!(pool.created(), 2);
        drop(a);
        drop(b);
        assert_eq!(pool.idle(), 1, "only max_idle are kept");
        let c = pool.take();
        assert_eq!(pool.created(), 2, "an idle buffer is reused");
        assert_eq!(c.len(), 16);
    }

    #[test]
    fn growable_buffers_come_back_empty_and_big_ones_are_freed() {
        let pool = VecPool::new(2, 64);
        let mut a = pool.take();
        a.extend_from_slice(b"EHLO x\r\n");
        let cap = a.capacity();
        pool.give(a);
        let b = pool.take();
        assert!(b.is_empty() && b.capacity() == cap, "reused, emptied");
        assert_eq!(pool.created(), 1);
        let mut big = pool.take();
        big.reserve(1000);
        pool.give(big);
        assert_eq!(pool.idle(), 0, "a buffer that grew too big is freed");
        pool.give(b);
        pool.give(Vec::new());
        pool.give(Vec::new());
        assert_eq!(pool.idle(), 2, "only max_idle are kept");
    }
}
