//! Inbound: each shard's listening sockets (SO_REUSEPORT), connection
//! limits, and the sessions that drive `smtp::server` over glommio TCP and
//! rustls, handing each received message to intake.
//!
//! May call: config (snapshot), smtp::server, conn, intake, events,
//! runtime (buffer pools, the AUTH mesh). Must
//! never: block the shard (all socket I/O is glommio's), write to the
//! spool itself, or answer 250 to a message intake has not confirmed.

mod auth_limit;
mod session;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

use glommio::net::TcpListener;

pub use auth_limit::{AuthAnswer, AuthAsk, AuthInbox, AuthMesh};

use crate::config::Config;
use crate::conn::ShardTls;
use crate::events::{Direction, Event, Events};
use crate::intake::Intake;
use crate::runtime::pool::{BufferPool, VecPool};
use crate::runtime::shutdown::Signal;
use crate::runtime::Current;
use crate::smtp::budget::ContentBudget;

/// One shard's inbound side.
pub struct ShardInbound {
    shard: usize,
    config: Rc<Current<Config>>,
    tls: Rc<ShardTls>,
    events: Rc<Events>,
    intake: Rc<Intake>,
    /// Fired to stop the accept loops.
    stop_accepting: Signal,
    /// Fired at shutdown: idle sessions end with 421 at their next pause.
    closing: Signal,
    /// Fired at the shutdown deadline: every session ends with 421 now.
    force: Signal,
    active: Cell<u32>,
    /// Message content all sessions of this shard may hold before their 250.
    data_budget: ContentBudget,
    /// Read buffers for sessions receiving content.
    data_buffers: Rc<BufferPool>,
    /// Read buffers for sessions waiting for commands.
    command_buffers: Rc<BufferPool>,
    /// Sessions' command-input and reply buffers.
    line_buffers: Rc<VecPool>,
    per_listener: RefCell<HashMap<String, u32>>,
    per_ip: RefCell<HashMap<IpAddr, u32>>,
    /// Failed AUTHs per client address, counted by each address's owner
    /// shard (see `auth_limit`).
    auth: AuthMesh,
}

/// Read size while receiving message content.
const DATA_READ_OCTETS: usize = 64 * 1024;
/// Idle DATA read buffers a shard keeps for the next messages (4 MiB).
const DATA_BUFFERS_IDLE: usize = 64;
/// Idle command read buffers a shard keeps for the next sessions (256 KiB).
const COMMAND_BUFFERS_IDLE: usize = 256;
/// Idle input/reply buffers a shard keeps (two per session).
const LINE_BUFFERS_IDLE: usize = 512;
/// Largest input/reply buffer kept for reuse; a bigger one (a long AUTH
/// line, pipelined commands) is freed.
const LINE_BUFFER_MAX_OCTETS: usize = crate::smtp::server::IDLE_INPUT_CAPACITY_OCTETS;

/// Releases a session's slots when it ends, however it ends.
struct SessionSlot {
    state: Rc<ShardInbound>,
    listener: String,
    ip: IpAddr,
    peer: Option<SocketAddr>,
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.state.events.emit(Event::ConnectionClosed {
            direction: Direction::Inbound,
            peer: self.peer,
        });
        self.state.active.set(self.state.active.get() - 1);
        decrement(&mut self.state.per_listener.borrow_mut(), &self.listener);
        decrement(&mut self.state.per_ip.borrow_mut(), &self.ip);
    }
}

fn decrement<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u32>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl ShardInbound {
    /// Binds every listener's addresses for this shard and starts accepting.
    /// Returns the bound addresses (with real ports when 0 was configured).
    pub fn start(
        shard: usize,
        config: Rc<Current<Config>>,
        tls: Rc<ShardTls>,
        events: Rc<Events>,
        intake: Rc<Intake>,
        (auth, auth_inbox): (AuthMesh, AuthInbox),
    ) -> Result<(Rc<Self>, Vec<SocketAddr>), String> {
        let snapshot = config.get();
        let state = Rc::new(ShardInbound {
            shard,
            config,
            tls,
            events,
            intake,
            stop_accepting: Signal::default(),
            closing: Signal::default(),
            force: Signal::default(),
            active: Cell::new(0),
            data_budget: ContentBudget::new(snapshot.inbound_data_budget),
            data_buffers: BufferPool::new(DATA_READ_OCTETS, DATA_BUFFERS_IDLE),
            command_buffers: BufferPool::new(session::COMMAND_READ_OCTETS, COMMAND_BUFFERS_IDLE),
            line_buffers: VecPool::new(LINE_BUFFERS_IDLE, LINE_BUFFER_MAX_OCTETS),
            per_listener: RefCell::new(HashMap::new()),
            per_ip: RefCell::new(HashMap::new()),
            auth,
        });
        glommio::spawn_local(auth_limit::serve(auth_inbox)).detach();
        let mut bound = Vec::new();
        for l in &snapshot.listeners {
            for addr in snapshot.listen_addrs(shard, l) {
                let sock = TcpListener::bind(addr)
                    .map_err(|e| format!("listener {}: cannot bind {addr}: {e}", l.name))?;
                bound.push(sock.local_addr().unwrap_or(addr));
                let (st, name) = (state.clone(), l.name.clone());
                glommio::spawn_local(accept_loop(st, sock, name)).detach();
            }
        }
        Ok((state, bound))
    }

    /// Sessions currently open on this shard.
    pub fn active_sessions(&self) -> u32 {
        self.active.get()
    }

    /// Stops accepting and asks idle sessions to end.
    pub fn begin_shutdown(&self) {
        self.stop_accepting.fire();
        self.closing.fire();
    }

    /// Ends every remaining session with 421.
    pub fn force_close(&self) {
        self.force.fire();
    }

    /// Counts a new session against the limits; `None` = over a limit.
    fn admit(
        self: &Rc<Self>,
        listener: &str,
        peer: Option<SocketAddr>,
        max_listener: u32,
        max_ip: u32,
    ) -> Option<SessionSlot> {
        let ip = peer.map_or(IpAddr::from([0, 0, 0, 0]), |p| p.ip());
        let on_listener = self
            .per_listener
            .borrow()
            .get(listener)
            .copied()
            .unwrap_or(0);
        let from_ip = self.per_ip.borrow().get(&ip).copied().unwrap_or(0);
        if (max_listener > 0 && on_listener >= max_listener) || (max_ip > 0 && from_ip >= max_ip) {
            return None;
        }
        self.active.set(self.active.get() + 1);
        *self
            .per_listener
            .borrow_mut()
            .entry(listener.to_string())
            .or_insert(0) += 1;
        *self.per_ip.borrow_mut().entry(ip).or_insert(0) += 1;
        self.events.emit(Event::ConnectionOpened {
            direction: Direction::Inbound,
            peer,
        });
        Some(SessionSlot {
            state: self.clone(),
            listener: listener.to_string(),
            ip,
            peer,
        })
    }
}

/// Pause after a failed accept (EMFILE and friends) instead of spinning.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);
/// At most one accept-failure log line per this interval per socket.
const ACCEPT_ERROR_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

async fn accept_loop(state: Rc<ShardInbound>, sock: TcpListener, listener: String) {
    let mut last_log: Option<std::time::Instant> = None;
    let mut failures = 0u64;
    loop {
        let accepted = futures_lite::future::or(async { Some(sock.accept().await) }, async {
            state.stop_accepting.wait().await;
            None
        })
        .await;
        match accepted {
            None => break,
            Some(Ok(stream)) => {
                glommio::spawn_local(session::run(state.clone(), stream, listener.clone()))
                    .detach();
            }
            Some(Err(e)) => {
                failures += 1;
                if last_log.is_none_or(|t| t.elapsed() >= ACCEPT_ERROR_LOG_INTERVAL) {
                    log::warn!(
                        "shard {}: accept on {listener}: {e} ({failures} failure(s) so far)",
                        state.shard
                    );
                    last_log = Some(std::time::Instant::now());
                }
                glommio::timer::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}
