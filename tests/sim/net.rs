//! The simulated network: in-memory byte pipes with virtual latency, and
//! remote SMTP servers that accept, defer (4xx), refuse (5xx), drop the
//! connection mid-transaction or hang, as the seed decides per command.
//! Every server writes what it saw into one shared log the invariants are
//! checked against.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use impulse::conn::{Conn, Dialer};
use impulse::runtime::sched::{self, LocalFuture};

use super::exec::Sim;

#[derive(Default)]
struct Pipe {
    buf: VecDeque<u8>,
    closed: bool,
    reader: Option<Waker>,
}

/// One end of a connection.
pub struct End {
    rx: Rc<RefCell<Pipe>>,
    tx: Rc<RefCell<Pipe>>,
}

fn pair() -> (End, End) {
    let (a, b) = (
        Rc::new(RefCell::new(Pipe::default())),
        Rc::new(RefCell::new(Pipe::default())),
    );
    (
        End {
            rx: a.clone(),
            tx: b.clone(),
        },
        End { rx: b, tx: a },
    )
}

fn close(p: &Rc<RefCell<Pipe>>) {
    let mut p = p.borrow_mut();
    p.closed = true;
    if let Some(w) = p.reader.take() {
        w.wake();
    }
}

impl Drop for End {
    fn drop(&mut self) {
        close(&self.tx);
        close(&self.rx);
    }
}

impl AsyncRead for End {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut p = self.rx.borrow_mut();
        if !p.buf.is_empty() {
            let n = out.len().min(p.buf.len());
            for (o, b) in out.iter_mut().zip(p.buf.drain(..n)) {
                *o = b;
            }
            return Poll::Ready(Ok(n));
        }
        if p.closed {
            return Poll::Ready(Ok(0));
        }
        p.reader = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for End {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut p = self.tx.borrow_mut();
        if p.closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        p.buf.extend(data);
        if let Some(w) = p.reader.take() {
            w.wake();
        }
        Poll::Ready(Ok(data.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        close(&self.tx);
        Poll::Ready(Ok(()))
    }
}

/// How a remote server treats what it is sent: the chance of each answer,
/// per command (the rest is acceptance).
#[derive(Clone, Copy, Debug)]
pub struct Behaviour {
    /// 4xx to a RCPT or at the end of DATA.
    pub defer: f64,
    /// 5xx to a RCPT or at the end of DATA.
    pub refuse: f64,
    /// Close the connection instead of answering.
    pub drop: f64,
    /// Never answer again (the client's timeout ends it).
    pub hang: f64,
}

impl Behaviour {
    /// Always 250.
    pub const ACCEPT: Behaviour = Behaviour {
        defer: 0.0,
        refuse: 0.0,
        drop: 0.0,
        hang: 0.0,
    };
}

/// What a remote server saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// MAIL FROM for this sender.
    Attempt { sender: String },
    /// The server answered a transaction with a failure or ended it
    /// without an answer (4xx, 5xx, drop, hang): the client learns of a
    /// deferral no earlier than this.
    Unfinished { sender: String },
    /// 250 after DATA for these recipients: the message is delivered.
    Accepted {
        sender: String,
        recipients: Vec<String>,
        body: Vec<u8>,
    },
}

/// The shared log: (virtual time, server, what).
pub type Log = Rc<RefCell<Vec<(Duration, SocketAddr, Seen)>>>;

/// The network: addresses with a server behind them.
pub struct SimNet {
    sim: Rc<Sim>,
    servers: HashMap<SocketAddr, Behaviour>,
    /// Everything every server saw.
    pub log: Log,
}

impl SimNet {
    /// A network with these servers.
    pub fn new(sim: Rc<Sim>, servers: HashMap<SocketAddr, Behaviour>) -> Rc<SimNet> {
        Rc::new(SimNet {
            sim,
            servers,
            log: Rc::default(),
        })
    }
}

/// Dials into a [`SimNet`].
pub struct SimDialer(pub Rc<SimNet>);

impl Dialer for SimDialer {
    fn dial(
        &self,
        _from: Option<std::net::IpAddr>,
        addr: SocketAddr,
        _limit: Duration,
    ) -> LocalFuture<io::Result<Conn>> {
        let net = self.0.clone();
        Box::pin(async move {
            let Some(b) = net.servers.get(&addr).copied() else {
                return Err(io::ErrorKind::ConnectionRefused.into());
            };
            let wait = Duration::from_micros(net.sim.rng().u64(100..=5000));
            sched::sleep(wait).await;
            let (client, server) = pair();
            sched::spawn(serve(net.clone(), addr, b, server)).detach();
            Ok(Conn::Stream(Box::new(client)))
        })
    }
}

enum Fate {
    Ok,
    Defer,
    Refuse,
    Drop,
    Hang,
}

fn fate(net: &SimNet, b: Behaviour) -> Fate {
    let x = net.sim.rng().f64();
    let mut edge = b.defer;
    if x < edge {
        return Fate::Defer;
    }
    edge += b.refuse;
    if x < edge {
        return Fate::Refuse;
    }
    edge += b.drop;
    if x < edge {
        return Fate::Drop;
    }
    edge += b.hang;
    if x < edge {
        return Fate::Hang;
    }
    Fate::Ok
}

struct Session {
    net: Rc<SimNet>,
    addr: SocketAddr,
    io: End,
    input: Vec<u8>,
}

impl Session {
    fn log(&self, seen: Seen) {
        let t = self.net.sim.elapsed();
        self.net.log.borrow_mut().push((t, self.addr, seen));
    }

    async fn say(&mut self, text: &str) -> io::Result<()> {
        let wait = Duration::from_micros(self.net.sim.rng().u64(50..=2000));
        sched::sleep(wait).await;
        self.io.write_all(text.as_bytes()).await
    }

    /// The next line without CRLF; `None` once the client is gone.
    async fn line(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(i) = self.input.windows(2).position(|w| w == b"\r\n") {
                let line = self.input[..i].to_vec();
                self.input.drain(..i + 2);
                return Some(line);
            }
            let mut buf = [0u8; 4096];
            match self.io.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.input.extend_from_slice(&buf[..n]),
            }
        }
    }
}

fn arg(line: &[u8]) -> String {
    let s = String::from_utf8_lossy(line);
    let start = s.find('<').map_or(0, |i| i + 1);
    let end = s[start..].find('>').map_or(s.len(), |i| start + i);
    s[start..end].to_string()
}

async fn hang() {
    futures_lite::future::pending::<()>().await;
}

async fn serve(net: Rc<SimNet>, addr: SocketAddr, b: Behaviour, io: End) {
    let mut s = Session {
        net,
        addr,
        io,
        input: Vec::new(),
    };
    let _ = run(&mut s, b).await;
}

/// One SMTP session; `Err` when the client went away.
async fn run(s: &mut Session, b: Behaviour) -> io::Result<()> {
    s.say("220 sim ESMTP\r\n").await?;
    let mut sender: Option<String> = None;
    let mut rcpts: Vec<String> = Vec::new();
    while let Some(line) = s.line().await {
        let upper = String::from_utf8_lossy(&line).to_ascii_uppercase();
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            s.say("250-sim\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n")
                .await?;
        } else if upper.starts_with("MAIL FROM") {
            let from = arg(&line);
            s.log(Seen::Attempt {
                sender: from.clone(),
            });
            sender = Some(from);
            rcpts.clear();
            s.say("250 2.1.0 ok\r\n").await?;
        } else if upper.starts_with("RCPT TO") {
            let who = arg(&line);
            match fate(&s.net, b) {
                Fate::Ok => {
                    rcpts.push(who);
                    s.say("250 2.1.5 ok\r\n").await?;
                }
                Fate::Defer => s.say("450 4.2.0 mailbox busy\r\n").await?,
                Fate::Refuse => s.say("550 5.1.1 no such user\r\n").await?,
                Fate::Drop => {
                    s.log(unfinished(&sender));
                    return Ok(());
                }
                Fate::Hang => {
                    s.log(unfinished(&sender));
                    hang().await;
                }
            }
        } else if upper == "DATA" {
            if rcpts.is_empty() {
                s.say("554 5.5.1 no valid recipients\r\n").await?;
                continue;
            }
            s.say("354 go ahead\r\n").await?;
            let mut body = Vec::new();
            loop {
                let Some(l) = s.line().await else {
                    return Ok(());
                };
                if l == b"." {
                    break;
                }
                let l = l.strip_prefix(b".").unwrap_or(&l);
                body.extend_from_slice(l);
                body.extend_from_slice(b"\r\n");
            }
            let from = sender.take().unwrap_or_default();
            match fate(&s.net, b) {
                Fate::Ok => {
                    s.log(Seen::Accepted {
                        sender: from,
                        recipients: std::mem::take(&mut rcpts),
                        body,
                    });
                    s.say("250 2.0.0 queued\r\n").await?;
                }
                Fate::Defer => {
                    s.log(Seen::Unfinished { sender: from });
                    s.say("451 4.3.0 try again later\r\n").await?;
                }
                Fate::Refuse => {
                    s.log(Seen::Unfinished { sender: from });
                    s.say("554 5.6.0 content refused\r\n").await?;
                }
                Fate::Drop => {
                    s.log(Seen::Unfinished { sender: from });
                    return Ok(());
                }
                Fate::Hang => {
                    s.log(Seen::Unfinished { sender: from });
                    hang().await;
                }
            }
        } else if upper == "RSET" {
            sender = None;
            rcpts.clear();
            s.say("250 2.0.0 ok\r\n").await?;
        } else if upper == "QUIT" {
            s.say("221 2.0.0 bye\r\n").await?;
            return Ok(());
        } else if upper == "NOOP" {
            s.say("250 2.0.0 ok\r\n").await?;
        } else {
            s.say("500 5.5.2 what?\r\n").await?;
        }
    }
    Ok(())
}

fn unfinished(sender: &Option<String>) -> Seen {
    Seen::Unfinished {
        sender: sender.clone().unwrap_or_default(),
    }
}
