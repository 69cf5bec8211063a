//! Serving an axum `Router` over HTTP/1.1 within bounds that a local client cannot push past
//! (the emulator and the daemon's admin listener both use it; the emulator adds its
//! per-connection handle through `wrap`).
//!
//! It lives in the emulator crate, public, because that is the one crate both servers reach:
//! the daemon depends on the emulator (embedded mode), and the emulator must not depend on
//! the daemon. One copy, rather than one per crate, keeps the two servers' limits behaving
//! alike.
//!
//! - At most `max_connections` connections are open at once. When one more arrives, the
//!   oldest is asked to close: at once if it is between requests (or has sent nothing), after
//!   its current request and response otherwise. A client that opens hundreds of idle
//!   connections therefore only pushes out its own older ones; it never takes the process's
//!   file descriptors, and a newcomer is served as soon as its turn to be accepted comes.
//! - A request's headers must arrive within `header_read_timeout` of the connection opening
//!   or of the previous response on it: the same timer closes idle keep-alive connections.
//! - Request and response bodies have no timeout: a slow multi-GiB upload is never cut here.
//!
//! It knows nothing of the routes it serves, and must not look at requests beyond inserting
//! the per-connection extension.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::HttpService;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};

/// How much a server lets its clients hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once (at least 1).
    pub max_connections: usize,
    /// Time allowed for a request's headers, counted from the connection's opening or from the
    /// previous response; also how long an idle keep-alive connection stays open.
    pub header_read_timeout: Duration,
}

/// The open connections, oldest first (ids increase with each accept), with the signal that
/// asks each one to close.
#[derive(Default)]
struct Connections {
    open: Mutex<BTreeMap<u64, Arc<Notify>>>,
    /// Rung by a connection asked to close that could not close at once (a request in flight):
    /// the accept loop then asks the next oldest.
    busy: Notify,
}

impl Connections {
    fn add(&self, id: u64) -> Arc<Notify> {
        let close = Arc::new(Notify::new());
        self.open
            .lock()
            .expect("connection table")
            .insert(id, close.clone());
        close
    }

    fn remove(&self, id: u64) {
        self.open.lock().expect("connection table").remove(&id);
    }

    /// Asks the oldest connection not asked yet to close; false if every one was asked.
    fn close_oldest(&self) -> bool {
        let oldest = self.open.lock().expect("connection table").pop_first();
        match oldest {
            Some((_, close)) => {
                close.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then stops accepting, lets every
/// request in flight finish and returns. `wrap` turns each accepted stream into the IO to
/// serve and a value inserted into the extensions of each of its requests.
pub async fn serve<Io, Ext, W, S>(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    wrap: W,
    shutdown: S,
) where
    Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    Ext: Clone + Send + Sync + 'static,
    W: Fn(TcpStream, SocketAddr) -> (Io, Ext),
    S: Future<Output = ()>,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = Arc::new(Connections::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection task holds a receiver: `closed()` resolves once all have ended.
    let (done_tx, done_rx) = watch::channel(());
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let mut shutdown = pin!(shutdown);
    let mut last_accept_warning: Option<Instant> = None;
    for id in 0u64.. {
        let Some((stream, remote)) =
            next_connection(&listener, shutdown.as_mut(), &mut last_accept_warning).await
        else {
            break;
        };
        let permit = tokio::select! {
            permit = room(&permits, &connections) => permit,
            () = &mut shutdown => break,
        };
        let (io, ext) = wrap(stream, remote);
        let close = connections.add(id);
        let service = hyper::service::service_fn({
            let router = router.clone();
            move |req: hyper::Request<Incoming>| {
                let mut req = req;
                req.extensions_mut().insert(ext.clone());
                let mut router = router.clone();
                async move { tower_service::Service::call(&mut router, req).await }
            }
        });
        let conn = builder.serve_connection(TokioIo::new(io), service);
        let connections = connections.clone();
        let stop = stop_rx.clone();
        let slot = (permit, done_rx.clone());
        tokio::spawn(async move {
            let _slot = slot;
            drive(conn, &close, stop, &connections.busy).await;
            connections.remove(id);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(done_rx);
    done_tx.closed().await;
}

/// Serves one connection to its end. Asked to `close` (by the accept loop, to make room) or
/// stopped (at shutdown), it ends gracefully: at once if idle, after the request in flight
/// otherwise, in which case `busy` tells the accept loop to ask the next oldest.
async fn drive<Io, Svc>(
    conn: http1::Connection<Io, Svc>,
    close: &Notify,
    mut stop: watch::Receiver<bool>,
    busy: &Notify,
) where
    Io: hyper::rt::Read + hyper::rt::Write + Unpin,
    Svc: HttpService<Incoming>,
    Svc::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    Svc::ResBody: hyper::body::Body + 'static,
    <Svc::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut conn = pin!(conn);
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = close.notified(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
                // Idle or untouched: it ends on this very poll. Otherwise a request is in
                // flight and finishes first; the accept loop asks the next oldest.
                if futures::poll!(conn.as_mut()).is_ready() {
                    return;
                }
                busy.notify_one();
            }
            // Sent once, at shutdown (after this receiver was cloned).
            _ = stop.changed(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// The next connection, or `None` once `shutdown` completes. An accept that fails (out of
/// descriptors, EMFILE, or a connection reset before it was accepted) leaves the waiting
/// connection queued: it is tried again shortly, with a warning at most every 10 s.
async fn next_connection<S: Future<Output = ()>>(
    listener: &TcpListener,
    mut shutdown: std::pin::Pin<&mut S>,
    last_warning: &mut Option<Instant>,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.as_mut() => return None,
        };
        match accepted {
            Ok(pair) => return Some(pair),
            Err(e) => {
                if last_warning.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!(addr = ?listener.local_addr().ok(), error = %e, "cannot accept a connection; retrying");
                    *last_warning = Some(Instant::now());
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                    () = shutdown.as_mut() => return None,
                }
            }
        }
    }
}

/// A slot for one more connection: asks the oldest ones to close until one frees its slot.
async fn room(permits: &Arc<Semaphore>, connections: &Connections) -> OwnedSemaphorePermit {
    loop {
        if let Ok(permit) = permits.clone().try_acquire_owned() {
            return permit;
        }
        let asked = connections.close_oldest();
        tokio::select! {
            permit = permits.clone().acquire_owned() => {
                return permit.expect("the semaphore is never closed");
            }
            () = connections.busy.notified(), if asked => {}
        }
    }
}
