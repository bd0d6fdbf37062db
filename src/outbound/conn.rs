//! An outbound connection: plain TCP until STARTTLS, then TLS.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use futures_rustls::client::TlsStream;
use futures_rustls::TlsConnector;
use glommio::net::TcpStream;
use rustls_pki_types::ServerName;

/// Plain or TLS; `Gone` after a failed handshake.
pub enum ClientConn {
    /// Before STARTTLS.
    Plain(TcpStream),
    /// After the handshake.
    Tls(Box<TlsStream<TcpStream>>),
    /// Nothing left to talk to.
    Gone,
}

impl ClientConn {
    /// Connects within `limit`.
    pub async fn connect(addr: SocketAddr, limit: Duration) -> io::Result<ClientConn> {
        let stream = TcpStream::connect_timeout(addr, limit)
            .await
            .map_err(io::Error::from)?;
        let _ = stream.set_nodelay(true);
        Ok(ClientConn::Plain(stream))
    }

    /// Reads what is available; 0 = closed.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ClientConn::Plain(s) => s.read(buf).await,
            ClientConn::Tls(s) => s.read(buf).await,
            ClientConn::Gone => Ok(0),
        }
    }

    /// Writes and flushes.
    pub async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            ClientConn::Plain(s) => {
                s.write_all(data).await?;
                s.flush().await
            }
            ClientConn::Tls(s) => {
                s.write_all(data).await?;
                s.flush().await
            }
            ClientConn::Gone => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Client side of a TLS handshake; `name` is the MX host name (or IP).
    pub async fn start_tls(
        &mut self,
        config: Arc<rustls::ClientConfig>,
        name: &str,
    ) -> io::Result<()> {
        let ClientConn::Plain(stream) = std::mem::replace(self, ClientConn::Gone) else {
            return Err(io::Error::other(
                "STARTTLS on a connection that is not plain",
            ));
        };
        let server = ServerName::try_from(name.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let tls = TlsConnector::from(config).connect(server, stream).await?;
        *self = ClientConn::Tls(Box::new(tls));
        Ok(())
    }

    /// Closes the connection.
    pub async fn close(&mut self) {
        match self {
            ClientConn::Plain(s) => {
                let _ = s.close().await;
            }
            ClientConn::Tls(s) => {
                let _ = s.close().await;
            }
            ClientConn::Gone => {}
        }
        *self = ClientConn::Gone;
    }
}
