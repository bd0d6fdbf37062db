//! A TCP connection that is plain until STARTTLS and then TLS, client or
//! server side; shared by inbound sessions, outbound delivery and the perf
//! tools. Plus the timeout wrapper every socket wait goes through, and each
//! shard's own copies of the rustls configs.
//!
//! May call: glommio, rustls, libc (TCP_CORK, sendmsg), runtime (sleeps). Must never: know SMTP (the protocol engines
//! do), or share TLS session state between shards.

use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_lite::{future, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures_rustls::{TlsAcceptor, TlsConnector};
use glommio::net::TcpStream;
use rustls_pki_types::ServerName;

use crate::runtime::sched::LocalFuture;

/// A byte stream that is not a glommio socket (the simulation's network).
pub trait Stream: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Stream for T {}

/// Opens outbound connections: TCP on a shard ([`TcpDialer`]), in-memory
/// streams in the simulation.
pub trait Dialer {
    /// A connection to `addr` within `limit` (`TimedOut` after it), from
    /// the source address `from` if one is given.
    fn dial(
        &self,
        from: Option<IpAddr>,
        addr: SocketAddr,
        limit: Duration,
    ) -> LocalFuture<io::Result<Conn>>;
}

/// TCP through glommio.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpDialer;

impl Dialer for TcpDialer {
    fn dial(
        &self,
        from: Option<IpAddr>,
        addr: SocketAddr,
        limit: Duration,
    ) -> LocalFuture<io::Result<Conn>> {
        Box::pin(Conn::connect(from, addr, limit))
    }
}

/// Plain or TLS; `Gone` after a failed handshake or a close.
pub enum Conn {
    /// Before STARTTLS.
    Plain(TcpStream),
    /// Another kind of stream; it does not do STARTTLS.
    Stream(Box<dyn Stream>),
    /// Client side after STARTTLS.
    Client(Box<futures_rustls::client::TlsStream<TcpStream>>),
    /// Server side after STARTTLS.
    Server(Box<futures_rustls::server::TlsStream<TcpStream>>),
    /// Nothing left to talk to.
    Gone,
}

impl Conn {
    /// Connects within `limit`, from `from` when given (the socket is
    /// bound to it, any port, before connecting), with Nagle off (SMTP is
    /// request/reply). A source of the other address family than `addr`
    /// cannot reach it: `InvalidInput`, before any socket is made.
    pub async fn connect(
        from: Option<IpAddr>,
        addr: SocketAddr,
        limit: Duration,
    ) -> io::Result<Conn> {
        if let Some(ip) = from.filter(|ip| ip.is_ipv4() != addr.is_ipv4()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bind_address {ip} cannot reach {addr} (another address family)"),
            ));
        }
        let local = from.map(|ip| SocketAddr::new(ip, 0));
        let stream = TcpStream::connect_timeout_from(local, addr, limit)
            .await
            .map_err(io::Error::from)?;
        let _ = stream.set_nodelay(true);
        Ok(Conn::Plain(stream))
    }

    /// Reads what is available; 0 = closed by the peer.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf).await,
            Conn::Stream(s) => s.read(buf).await,
            Conn::Client(s) => s.read(buf).await,
            Conn::Server(s) => s.read(buf).await,
            Conn::Gone => Ok(0),
        }
    }

    /// Writes `parts` in order, then flushes once (no joining copy). With
    /// Nagle off each part would leave as its own segment: the socket is
    /// corked while there is more than one, so they leave as full ones.
    pub async fn write_all_parts<'a>(
        &mut self,
        parts: impl IntoIterator<Item = &'a [u8]>,
    ) -> io::Result<()> {
        let mut parts = parts.into_iter().filter(|p| !p.is_empty()).peekable();
        let Some(first) = parts.next() else {
            return self.flush().await;
        };
        // Plain TCP, several parts: try them all in one sendmsg first (one
        // syscall instead of cork, a send per part and uncork); whatever the
        // socket does not take at once goes the corked way below.
        let mut first = first;
        let mut skipped: Vec<&[u8]> = Vec::new();
        let plain = matches!(self, Conn::Plain(_));
        if let (Some(fd), true) = (self.raw_fd().filter(|_| plain), parts.peek().is_some()) {
            let mut batch = [first; VECTORED_PARTS];
            let mut n = 1;
            while n < VECTORED_PARTS {
                match parts.next() {
                    Some(p) => {
                        batch[n] = p;
                        n += 1;
                    }
                    None => break,
                }
            }
            let mut sent = send_now(fd, &batch[..n]);
            let mut at = 0;
            while at < n && sent >= batch[at].len() {
                sent -= batch[at].len();
                at += 1;
            }
            if at == n {
                // All of the batch went; the parts after it (if any) follow.
                match parts.next() {
                    Some(p) => first = p,
                    None => return Ok(()),
                }
            } else {
                // The unsent rest of this batch, then the parts after it.
                let part: &'a [u8] = batch[at];
                first = &part[sent..];
                skipped = batch[at + 1..n].to_vec();
            }
        }
        let mut parts = skipped.into_iter().chain(parts).peekable();
        let cork = parts.peek().is_some().then(|| self.raw_fd()).flatten();
        if let Some(fd) = cork {
            set_cork(fd, true);
        }
        let mut written = Ok(());
        for p in std::iter::once(first).chain(parts) {
            written = match self {
                Conn::Plain(s) => s.write_all(p).await,
                Conn::Stream(s) => s.write_all(p).await,
                Conn::Client(s) => s.write_all(p).await,
                Conn::Server(s) => s.write_all(p).await,
                Conn::Gone => Err(io::ErrorKind::NotConnected.into()),
            };
            if written.is_err() {
                break;
            }
        }
        if written.is_ok() {
            written = self.flush().await;
        }
        if let Some(fd) = cork {
            // Uncorking sends what is left at once.
            set_cork(fd, false);
        }
        written
    }

    async fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush().await,
            Conn::Stream(s) => s.flush().await,
            Conn::Client(s) => s.flush().await,
            Conn::Server(s) => s.flush().await,
            Conn::Gone => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// The TCP socket under the connection, if there is one.
    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        match self {
            Conn::Plain(s) => Some(s.as_raw_fd()),
            Conn::Client(s) => Some(s.get_ref().0.as_raw_fd()),
            Conn::Server(s) => Some(s.get_ref().0.as_raw_fd()),
            Conn::Stream(_) | Conn::Gone => None,
        }
    }

    /// Writes all of `data` and flushes it.
    pub async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.write_all_parts([data]).await
    }

    fn take_plain(&mut self) -> io::Result<TcpStream> {
        match std::mem::replace(self, Conn::Gone) {
            Conn::Plain(stream) => Ok(stream),
            other => {
                *self = other;
                Err(io::Error::other(
                    "STARTTLS on a connection that is not plain",
                ))
            }
        }
    }

    /// Client side of STARTTLS; `name` is the server's host name (or IP).
    pub async fn connect_tls(
        &mut self,
        config: Arc<rustls::ClientConfig>,
        name: &str,
    ) -> io::Result<()> {
        let server = ServerName::try_from(name.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let stream = self.take_plain()?;
        let tls = TlsConnector::from(config).connect(server, stream).await?;
        *self = Conn::Client(Box::new(tls));
        Ok(())
    }

    /// Server side of STARTTLS.
    pub async fn accept_tls(&mut self, config: Arc<rustls::ServerConfig>) -> io::Result<()> {
        let stream = self.take_plain()?;
        let tls = TlsAcceptor::from(config).accept(stream).await?;
        *self = Conn::Server(Box::new(tls));
        Ok(())
    }

    /// Closes (TLS close_notify where it applies); errors are moot here.
    pub async fn close(&mut self) {
        let _ = match self {
            Conn::Plain(s) => s.close().await,
            Conn::Stream(s) => s.close().await,
            Conn::Client(s) => s.close().await,
            Conn::Server(s) => s.close().await,
            Conn::Gone => Ok(()),
        };
        *self = Conn::Gone;
    }
}

/// TCP_CORK on or off; a failure only costs segment sizes.
/// Parts one `sendmsg` takes at most (more go the corked way).
const VECTORED_PARTS: usize = 16;

/// Sends `parts` in one non-blocking `sendmsg`: the octets the socket took
/// (0 when it took none or failed: the caller's ordinary writes then meet
/// the same condition and report it).
fn send_now(fd: std::os::fd::RawFd, parts: &[&[u8]]) -> usize {
    let mut iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; VECTORED_PARTS];
    for (v, p) in iov.iter_mut().zip(parts) {
        v.iov_base = p.as_ptr().cast_mut().cast();
        v.iov_len = p.len();
    }
    // SAFETY: msghdr is plain data; zeroed means no address, no control.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = parts.len().min(VECTORED_PARTS) as _;
    // SAFETY: every iovec points into a live slice (`parts`) for the call;
    // the kernel only reads them; `fd` is a socket this connection owns.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    usize::try_from(n).unwrap_or(0)
}

fn set_cork(fd: std::os::fd::RawFd, on: bool) {
    let v: libc::c_int = on.into();
    // SAFETY: setsockopt reads a c_int of the given size from a valid
    // pointer; `fd` is a socket this connection owns.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_CORK,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Runs `fut` for at most `limit`; `None` on timeout. A future that is
/// ready at once (a write the socket takes, a read of data already there)
/// never starts the timer: arming and cancelling one costs more than most
/// such operations.
pub async fn with_timeout<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    let mut fut = std::pin::pin!(fut);
    if let Some(done) = future::poll_once(fut.as_mut()).await {
        return Some(done);
    }
    future::or(async { Some(fut.await) }, async {
        crate::runtime::sched::sleep(limit).await;
        None
    })
    .await
}

/// TLS sessions each shard's copy of a config caches for resumption.
const TLS_SESSION_CACHE: usize = 1024;

/// A shard's own copies of the snapshot's rustls configs. The snapshot's
/// configs are shared by every shard, and with them rustls' session cache
/// and its lock; each copy here has session storage of its own, so a
/// handshake never touches another shard's state.
#[derive(Default)]
pub struct ShardTls {
    server: RefCell<Vec<(Arc<rustls::ServerConfig>, Arc<rustls::ServerConfig>)>>,
    client: RefCell<Vec<(Arc<rustls::ClientConfig>, Arc<rustls::ClientConfig>)>>,
}

impl ShardTls {
    /// This shard's copy of `shared` (made on first use).
    pub fn server(&self, shared: &Arc<rustls::ServerConfig>) -> Arc<rustls::ServerConfig> {
        local_copy(&self.server, shared, |c| {
            c.session_storage = rustls::server::ServerSessionMemoryCache::new(TLS_SESSION_CACHE);
        })
    }

    /// This shard's copy of `shared` (made on first use).
    pub fn client(&self, shared: &Arc<rustls::ClientConfig>) -> Arc<rustls::ClientConfig> {
        local_copy(&self.client, shared, |c| {
            c.resumption = rustls::client::Resumption::in_memory_sessions(TLS_SESSION_CACHE);
        })
    }

    /// Forgets copies of configs no snapshot uses any more (after a reload).
    pub fn prune(&self) {
        self.server
            .borrow_mut()
            .retain(|(shared, _)| Arc::strong_count(shared) > 1);
        self.client
            .borrow_mut()
            .retain(|(shared, _)| Arc::strong_count(shared) > 1);
    }
}

fn local_copy<C: Clone>(
    copies: &RefCell<Vec<(Arc<C>, Arc<C>)>>,
    shared: &Arc<C>,
    own_state: impl FnOnce(&mut C),
) -> Arc<C> {
    if let Some((_, mine)) = copies.borrow().iter().find(|(s, _)| Arc::ptr_eq(s, shared)) {
        return mine.clone();
    }
    let mut copy = (**shared).clone();
    own_state(&mut copy);
    let mine = Arc::new(copy);
    copies.borrow_mut().push((shared.clone(), mine.clone()));
    mine
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source address binds the socket (the peer sees it), one this host
    /// lacks is the bind's error, and one of the other family is refused
    /// before any socket is made.
    #[test]
    fn connect_from_a_source_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let to = listener.local_addr().unwrap();
        let limit = Duration::from_secs(30);
        glommio::LocalExecutor::default().run(async move {
            let from: IpAddr = "127.0.0.3".parse().unwrap();
            let _conn = Conn::connect(Some(from), to, limit)
                .await
                .expect("bound connect");
            let (_, peer) = listener.accept().unwrap();
            assert_eq!(peer.ip(), from);
            let absent: IpAddr = "192.0.2.1".parse().unwrap();
            let e = Conn::connect(Some(absent), to, limit)
                .await
                .err()
                .expect("not ours");
            assert!(e.to_string().contains("cannot bind to 192.0.2.1"), "{e}");
            let v6: IpAddr = "::1".parse().unwrap();
            let e = Conn::connect(Some(v6), to, limit)
                .await
                .err()
                .expect("other family");
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        });
    }

    /// `write_all_parts` on plain TCP: one sendmsg when the socket takes
    /// everything, and the rest in order when it takes only some (a small
    /// send buffer, a peer that reads late) or there are more parts than
    /// one sendmsg carries.
    #[test]
    fn parts_arrive_whole_and_in_order_however_much_one_send_takes() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let listener =
                    std::rc::Rc::new(glommio::net::TcpListener::bind("127.0.0.1:0").unwrap());
                let addr = listener.local_addr().unwrap();
                let cases: Vec<Vec<Vec<u8>>> = vec![
                    vec![
                        b"MAIL FROM:<a@x>\r\n".to_vec(),
                        b"RCPT TO:<b@y>\r\n".to_vec(),
                    ],
                    (0..40u8)
                        .map(|i| vec![b'a' + i % 26; 1 + usize::from(i) * 7])
                        .collect(),
                    (0..5u8).map(|i| vec![i; 3 << 20]).collect(),
                ];
                for parts in cases {
                    let want: Vec<u8> = parts.concat();
                    let reader = glommio::spawn_local({
                        let (want, listener) = (want.len(), listener.clone());
                        async move {
                            let mut s = listener.accept().await.unwrap();
                            // Read late, so that the sender's buffer fills.
                            glommio::timer::sleep(Duration::from_millis(20)).await;
                            let mut got = vec![0; want];
                            s.read_exact(&mut got).await.unwrap();
                            got
                        }
                    });
                    let stream = TcpStream::connect(addr).await.unwrap();
                    let mut conn = Conn::Plain(stream);
                    conn.write_all_parts(parts.iter().map(Vec::as_slice))
                        .await
                        .unwrap();
                    let got = reader.await;
                    assert!(
                        got == want,
                        "{} octets arrived whole and in order",
                        want.len()
                    );
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn each_shard_copy_has_its_own_session_state_and_is_reused() {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let shared = Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("protocols")
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        );
        let (a, b) = (ShardTls::default(), ShardTls::default());
        let (a1, a2, b1) = (a.client(&shared), a.client(&shared), b.client(&shared));
        assert!(Arc::ptr_eq(&a1, &a2), "one copy per shard");
        assert!(!Arc::ptr_eq(&a1, &b1));
        assert!(!Arc::ptr_eq(&a1, &shared));
        drop(shared);
        a.prune();
        assert_eq!(a.client.borrow().len(), 1, "shard b's copy still uses it");
        drop(b);
        a.prune();
        assert!(a.client.borrow().is_empty(), "unused copies are dropped");
    }
}
