//! Typed requests between threads: a shard's inbox, the shard-to-shard
//! mesh, and the helpers "ask the owner shard of key K" and "ask every
//! shard and gather".
//!
//! Owns the channels only (bounded flume channels, whose futures a glommio
//! executor can await and whose senders work from any thread, the main
//! thread included). The request and answer types belong to whoever
//! builds a mesh (the composition root's control requests, later the
//! throttle and binding services), so this module imports no stage.
//! Must never: block a shard thread (shards use the async calls; the
//! blocking ones are for the main thread), grow without bound (every
//! channel is bounded: a full inbox is back-pressure on the sender), or
//! let an unanswered request hang its asker (a request dropped without an
//! answer resolves as [`AskError::Dropped`]).

use std::hash::{Hash, Hasher};
use std::time::Duration;

/// A request and the way back to whoever asked.
pub struct Request<Q, A> {
    /// What is asked.
    pub body: Q,
    reply: Option<flume::Sender<A>>,
}

impl<Q, A> Request<Q, A> {
    /// Sends the answer. An asker that stopped waiting is not an error.
    pub fn answer(self, answer: A) {
        self.split().1.send(answer);
    }

    /// Takes the body and a handle to answer with later.
    pub fn split(self) -> (Q, Reply<A>) {
        (self.body, Reply(self.reply))
    }
}

/// The way back for a request whose body was taken (see [`Request::split`]).
pub struct Reply<A>(Option<flume::Sender<A>>);

impl<A> Reply<A> {
    /// Sends the answer (see [`Request::answer`]).
    pub fn send(self, answer: A) {
        if let Some(tx) = self.0 {
            let _ = tx.try_send(answer);
        }
    }
}

/// Why an ask got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AskError {
    /// The receiving side is gone (its shard stopped).
    #[error("the shard is not running")]
    Closed,
    /// The receiver dropped the request without answering.
    #[error("the request was dropped without an answer")]
    Dropped,
    /// No answer within the time allowed.
    #[error("no answer in time")]
    Timeout,
}

/// The sending side of one inbox; cheap to clone, usable from any thread.
pub struct Address<Q, A> {
    tx: flume::Sender<Request<Q, A>>,
}

impl<Q, A> Clone for Address<Q, A> {
    fn clone(&self) -> Self {
        Address {
            tx: self.tx.clone(),
        }
    }
}

impl<Q, A> Address<Q, A> {
    /// Sends `body` and waits for the answer (async: shards).
    pub async fn ask(&self, body: Q) -> Result<A, AskError> {
        let (reply, rx) = flume::bounded(1);
        let req = Request {
            body,
            reply: Some(reply),
        };
        self.tx
            .send_async(req)
            .await
            .map_err(|_| AskError::Closed)?;
        rx.recv_async().await.map_err(|_| AskError::Dropped)
    }

    /// Sends `body` without waiting for an answer (async: shards).
    pub async fn tell(&self, body: Q) -> Result<(), AskError> {
        let req = Request { body, reply: None };
        self.tx.send_async(req).await.map_err(|_| AskError::Closed)
    }

    /// Sends `body` and waits up to `timeout` in all for the answer. Blocks
    /// the calling thread: for the main thread only, never a shard.
    pub fn ask_blocking(&self, body: Q, timeout: Duration) -> Result<A, AskError> {
        let deadline = std::time::Instant::now() + timeout;
        let (reply, rx) = flume::bounded(1);
        self.send_blocking(body, Some(reply), timeout)?;
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        rx.recv_timeout(left).map_err(|e| match e {
            flume::RecvTimeoutError::Timeout => AskError::Timeout,
            flume::RecvTimeoutError::Disconnected => AskError::Dropped,
        })
    }

    /// Sends `body` without an answer, waiting up to `timeout` for room in
    /// the inbox. Blocks: main thread only.
    pub fn tell_blocking(&self, body: Q, timeout: Duration) -> Result<(), AskError> {
        self.send_blocking(body, None, timeout)
    }

    fn send_blocking(
        &self,
        body: Q,
        reply: Option<flume::Sender<A>>,
        timeout: Duration,
    ) -> Result<(), AskError> {
        self.tx
            .send_timeout(Request { body, reply }, timeout)
            .map_err(|e| match e {
                flume::SendTimeoutError::Timeout(_) => AskError::Timeout,
                flume::SendTimeoutError::Disconnected(_) => AskError::Closed,
            })
    }
}

/// The receiving side of one inbox.
pub struct Inbox<Q, A> {
    rx: flume::Receiver<Request<Q, A>>,
}

impl<Q, A> Inbox<Q, A> {
    /// The next request; `None` once every [`Address`] is gone.
    pub async fn recv(&self) -> Option<Request<Q, A>> {
        self.rx.recv_async().await.ok()
    }

    /// The next request if one is waiting.
    pub fn try_recv(&self) -> Option<Request<Q, A>> {
        self.rx.try_recv().ok()
    }
}

/// A bounded inbox: `capacity` requests may wait before senders wait.
pub fn inbox<Q, A>(capacity: usize) -> (Address<Q, A>, Inbox<Q, A>) {
    let (tx, rx) = flume::bounded(capacity.max(1));
    (Address { tx }, Inbox { rx })
}

/// Every shard's address and every shard's inbox, by shard number.
pub type Inboxes<Q, A> = (Vec<Address<Q, A>>, Vec<Inbox<Q, A>>);

/// One inbox per shard: `addresses[n]` reaches shard n's `inboxes[n]`.
pub fn inboxes<Q, A>(shards: usize, capacity: usize) -> Inboxes<Q, A> {
    (0..shards).map(|_| inbox(capacity)).unzip()
}

/// A shard's view of every shard's inbox for one kind of request.
pub struct Mesh<Q, A> {
    me: usize,
    peers: Vec<Address<Q, A>>,
}

impl<Q, A> Clone for Mesh<Q, A> {
    fn clone(&self) -> Self {
        Mesh {
            me: self.me,
            peers: self.peers.clone(),
        }
    }
}

/// What [`Mesh::ask_all`] gathered.
#[derive(Debug)]
pub struct Gathered<A> {
    /// Shard n's answer at index n; `None` where none came.
    pub answers: Vec<Option<A>>,
}

impl<A> Gathered<A> {
    /// True when some shard did not answer: any total is then a lower bound.
    pub fn partial(&self) -> bool {
        self.answers.iter().any(Option::is_none)
    }

    /// The shards that did not answer.
    pub fn missing(&self) -> Vec<usize> {
        (0..self.answers.len())
            .filter(|n| self.answers[*n].is_none())
            .collect()
    }
}

impl<Q, A> Mesh<Q, A> {
    /// Shard `me`'s view of `peers` (every shard, itself included).
    pub fn new(me: usize, peers: Vec<Address<Q, A>>) -> Self {
        assert!(me < peers.len(), "shard {me} of {}", peers.len());
        Mesh { me, peers }
    }

    /// This shard's number.
    pub fn me(&self) -> usize {
        self.me
    }

    /// How many shards the mesh joins.
    pub fn shards(&self) -> usize {
        self.peers.len()
    }

    /// The shard that owns `key`: the same for every shard and every run
    /// of one build with one shard count.
    pub fn owner<K: Hash + ?Sized>(&self, key: &K) -> usize {
        owner_of(key, self.peers.len())
    }

    /// Shard `n`'s address.
    pub fn peer(&self, n: usize) -> &Address<Q, A> {
        &self.peers[n]
    }

    /// Asks the owner shard of `key`.
    pub async fn ask_owner<K: Hash + ?Sized>(&self, key: &K, body: Q) -> Result<A, AskError> {
        self.peers[self.owner(key)].ask(body).await
    }

    /// Asks every shard (`body(n)` for shard n) at once and gathers the
    /// answers that arrive within `timeout`; the rest are `None`, and the
    /// result says it is partial. A shard asking itself must keep serving
    /// its inbox while it waits (ask from a task of its own).
    pub async fn ask_all(&self, mut body: impl FnMut(usize) -> Q, timeout: Duration) -> Gathered<A>
    where
        Q: 'static,
        A: 'static,
    {
        let n = self.peers.len();
        let mut waits = Vec::with_capacity(n);
        for (i, peer) in self.peers.iter().enumerate() {
            let (reply, rx) = flume::bounded(1);
            let req = Request {
                body: body(i),
                reply: Some(reply),
            };
            // A full inbox counts as no answer rather than a wait past the deadline.
            waits.push(peer.tx.try_send(req).ok().map(|_| rx));
        }
        let mut answers: Vec<Option<A>> = (0..n).map(|_| None).collect();
        let deadline = std::time::Instant::now() + timeout;
        for (i, rx) in waits.into_iter().enumerate() {
            let Some(rx) = rx else { continue };
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let recv = async { rx.recv_async().await.ok() };
            let timer = async {
                glommio::timer::sleep(left).await;
                None
            };
            answers[i] = futures_lite::future::or(recv, timer).await;
        }
        Gathered { answers }
    }
}

/// The owner of `key` among `shards`: a fixed-key hash, so every shard
/// computes the same owner.
pub fn owner_of<K: Hash + ?Sized>(key: &K, shards: usize) -> usize {
    let mut h = std::hash::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % shards.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_is_stable_and_spread() {
        assert_eq!(owner_of("example.com", 4), owner_of("example.com", 4));
        let mut seen = [0usize; 4];
        for i in 0..1000 {
            seen[owner_of(&format!("d{i}.example"), 4)] += 1;
        }
        assert!(seen.iter().all(|&c| c > 150), "{seen:?}");
        assert_eq!(owner_of("x", 1), 0);
    }

    #[test]
    fn blocking_ask_answers_times_out_and_reports_a_drop() {
        let (addr, inbox) = inbox::<u32, u32>(2);
        let t = std::thread::spawn(move || {
            let r = inbox.rx.recv().expect("request");
            let v = r.body;
            r.answer(v * 2);
            let r = inbox.rx.recv().expect("request");
            drop(r);
            // The third is never answered in time.
            let r = inbox.rx.recv().expect("request");
            std::thread::sleep(Duration::from_millis(300));
            drop(r);
        });
        assert_eq!(addr.ask_blocking(21, Duration::from_secs(10)), Ok(42));
        assert_eq!(
            addr.ask_blocking(1, Duration::from_secs(10)),
            Err(AskError::Dropped)
        );
        assert_eq!(
            addr.ask_blocking(1, Duration::from_millis(50)),
            Err(AskError::Timeout)
        );
        t.join().unwrap();
        assert_eq!(
            addr.ask_blocking(1, Duration::from_millis(50)),
            Err(AskError::Closed)
        );
    }

    #[test]
    fn ask_all_gathers_across_executors_and_marks_a_silent_shard_partial() {
        use glommio::LocalExecutorBuilder;
        let (addrs, mut inboxes) = inboxes::<usize, usize>(3, 4);
        // Shard 2 never answers: its inbox is held but not served.
        let silent = inboxes.pop().unwrap();
        let servers: Vec<_> = inboxes
            .into_iter()
            .enumerate()
            .map(|(n, inbox)| {
                LocalExecutorBuilder::default()
                    .spawn(move || async move {
                        while let Some(r) = inbox.recv().await {
                            let q = r.body;
                            r.answer(q * 10 + n);
                        }
                    })
                    .unwrap()
            })
            .collect();
        let mesh = Mesh::new(0, addrs);
        let asker = LocalExecutorBuilder::default()
            .spawn(move || async move {
                let g = mesh.ask_all(|n| n + 1, Duration::from_millis(200)).await;
                let owner = mesh.owner("k");
                let direct = if owner < 2 {
                    Some(mesh.ask_owner("k", 7).await.unwrap())
                } else {
                    None
                };
                let (partial, missing) = (g.partial(), g.missing());
                (g.answers, partial, missing, owner, direct)
            })
            .unwrap();
        let (answers, partial, missing, owner, direct) = asker.join().unwrap();
        assert_eq!(answers, vec![Some(10), Some(21), None]);
        assert!(partial);
        assert_eq!(missing, vec![2]);
        if let Some(d) = direct {
            assert_eq!(d, 70 + owner);
        }
        drop(silent);
        for s in servers {
            s.join().unwrap();
        }
    }
}
