//! A TCP connection that is plain until STARTTLS and then TLS, client or
//! server side; shared by inbound sessions, outbound delivery and the perf
//! tools. Plus the timeout wrapper every socket wait goes through.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use futures_rustls::{TlsAcceptor, TlsConnector};
use glommio::net::TcpStream;
use rustls_pki_types::ServerName;

/// Plain or TLS; `Gone` after a failed handshake or a close.
pub enum Conn {
    /// Before STARTTLS.
    Plain(TcpStream),
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
            Conn::Client(s) => s.read(buf).await,
            Conn::Server(s) => s.read(buf).await,
            Conn::Gone => Ok(0),
        }
    }

    /// Writes all of `data` and flushes it.
    pub async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Conn::Plain(s) => {
                s.write_all(data).await?;
                s.flush().await
            }
            Conn::Client(s) => {
                s.write_all(data).await?;
                s.flush().await
            }
            Conn::Server(s) => {
                s.write_all(data).await?;
                s.flush().await
            }
            Conn::Gone => Err(io::ErrorKind::NotConnected.into()),
        }
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
            Conn::Client(s) => s.close().await,
            Conn::Server(s) => s.close().await,
            Conn::Gone => Ok(()),
        };
        *self = Conn::Gone;
    }
}

/// Runs `fut` for at most `limit`; `None` on timeout.
pub async fn with_timeout<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    future::or(async { Some(fut.await) }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await
}
