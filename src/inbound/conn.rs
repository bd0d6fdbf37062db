//! A client connection that is plain TCP until STARTTLS, then TLS.

use std::io;
use std::sync::Arc;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use futures_rustls::server::TlsStream;
use futures_rustls::TlsAcceptor;
use glommio::net::TcpStream;

/// Plain or TLS; `Gone` only while a handshake owns the stream.
pub enum Conn {
    /// Before STARTTLS.
    Plain(TcpStream),
    /// After a completed handshake.
    Tls(Box<TlsStream<TcpStream>>),
    /// The handshake failed; nothing left to talk to.
    Gone,
}

impl Conn {
    /// Reads what is available into `buf`; 0 = closed by the peer.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf).await,
            Conn::Tls(s) => s.read(buf).await,
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
            Conn::Tls(s) => {
                s.write_all(data).await?;
                s.flush().await
            }
            Conn::Gone => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Runs the server side of a TLS handshake on a plain connection.
    pub async fn start_tls(&mut self, config: Arc<rustls::ServerConfig>) -> io::Result<()> {
        let Conn::Plain(stream) = std::mem::replace(self, Conn::Gone) else {
            return Err(io::Error::other(
                "STARTTLS on a connection that is not plain",
            ));
        };
        let tls = TlsAcceptor::from(config).accept(stream).await?;
        *self = Conn::Tls(Box::new(tls));
        Ok(())
    }

    /// Closes the connection (TLS close_notify where it applies).
    pub async fn close(&mut self) {
        match self {
            Conn::Plain(s) => {
                let _ = s.close().await;
            }
            Conn::Tls(s) => {
                let _ = s.close().await;
            }
            Conn::Gone => {}
        }
    }
}
