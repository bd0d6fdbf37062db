//! A TCP connection that is plain until STARTTLS and then TLS, client or
//! server side; shared by inbound sessions, outbound delivery and the perf
//! tools. Plus the timeout wrapper every socket wait goes through, and each
//! shard's own copies of the rustls configs.
//!
//! May call: glommio, rustls, libc (TCP_CORK), runtime (sleeps). Must never: know SMTP (the protocol engines
//! do), or share TLS session state between shards.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
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
    /// A connection to `addr` within `limit` (`TimedOut` after it).
    fn dial(&self, addr: SocketAddr, limit: Duration) -> LocalFuture<io::Result<Conn>>;
}

/// TCP through glommio.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpDialer;

impl Dialer for TcpDialer {
    fn dial(&self, addr: SocketAddr, limit: Duration) -> LocalFuture<io::Result<Conn>> {
        Box::pin(Conn::connect(addr, limit))
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
    /// Connects within `limit`, with Nagle off (SMTP is request/reply).
    pub async fn connect(addr: SocketAddr, limit: Duration) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(addr, limit)
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

/// Runs `fut` for at most `limit`; `None` on timeout.
pub async fn with_timeout<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
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
