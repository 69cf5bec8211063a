//! TCP connections that can be cut from inside a request (the `connection_reset`
//! fault): once killed, the socket answers every read and write with an error, so hyper drops
//! the connection without sending a response, and the close is a TCP reset.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// What the server makes of each accepted connection: a stream that can be cut, and the
/// handle to cut it, given to handlers as `ConnectInfo<ConnHandle>`.
pub fn wrap(stream: TcpStream, remote: SocketAddr) -> (KillableStream, ConnectInfo<ConnHandle>) {
    let _ = stream.set_nodelay(true);
    let kill = Arc::new(AtomicBool::new(false));
    let handle = ConnHandle {
        kill: kill.clone(),
        remote,
    };
    (
        KillableStream {
            inner: stream,
            kill,
            lingered: false,
        },
        ConnectInfo(handle),
    )
}

pub struct KillableStream {
    inner: TcpStream,
    kill: Arc<AtomicBool>,
    lingered: bool,
}

impl KillableStream {
    fn check(&mut self) -> io::Result<()> {
        if self.kill.load(Ordering::Acquire) {
            if !self.lingered {
                self.lingered = true;
                // Linger 0: closing sends RST instead of FIN, like a crashed peer.
                #[allow(deprecated)]
                let _ = self.inner.set_linger(Some(Duration::ZERO));
            }
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "connection reset by fault injection",
            ));
        }
        Ok(())
    }
}

impl AsyncRead for KillableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Err(e) = self.check() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Err(e) = self.check() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Err(e) = self.check() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Err(e) = self.check() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Per-connection handle, available to handlers as `ConnectInfo<ConnHandle>`.
#[derive(Clone, Debug)]
pub struct ConnHandle {
    kill: Arc<AtomicBool>,
    pub remote: SocketAddr,
}

impl ConnHandle {
    /// Cuts the connection: no response will be sent.
    pub fn reset(&self) {
        self.kill.store(true, Ordering::Release);
    }
}
