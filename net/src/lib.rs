//! Network edges shared by the Fleetpulse binaries: listener limits (below) and the HTTP(S)
//! client under every ClickHouse connection ([`clickhouse_client`]).
//!
//! Listener limits are shared by the Fleetpulse servers (collector gRPC and HTTP, analyzer HTTP).
//!
//! Why: without them a peer that opens connections and never finishes a request holds memory
//! and file descriptors for as long as it likes (issue 14 measured 300 half-sent HTTP requests
//! held open for 45 s and more). Two tools:
//!
//! - [`ConnectionCap`]: at most N connections open per listener. A connection beyond the cap is
//!   accepted and closed at once (the peer sees a reset and retries with backoff) rather than
//!   left in the kernel backlog, so the refusal is visible and cheap. [`capped_incoming`] turns
//!   a `TcpListener` into the incoming stream tonic serves from.
//! - [`serve_http`]: serves an axum router over HTTP/1.1 or h2c (or TLS when given an acceptor)
//!   with a header-read timeout (a request whose headers are not complete within it has its
//!   connection closed; it also bounds how long an idle keep-alive connection waits for its
//!   next request) and a connection cap.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{Router, extract::ConnectInfo};
use futures::Stream;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto::Builder,
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::Connected;

mod clickhouse_client;
pub use clickhouse_client::{
    ClickHouseConnector, ClickHouseRoots, ClickHouseTlsError, clickhouse_client,
    clickhouse_connector, clickhouse_http_builder,
};

/// How long a failed `accept` (e.g. out of file descriptors) pauses the listener.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// At most one "connection refused at the cap" warning per this interval.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// A cap on the open connections of one listener; clones share the count.
#[derive(Clone)]
pub struct ConnectionCap {
    what: &'static str,
    max: usize,
    permits: Arc<Semaphore>,
    refused: Arc<AtomicU64>,
    started: Instant,
    last_warn_ms: Arc<AtomicU64>,
}

impl ConnectionCap {
    /// A cap of `max` connections (at least 1) for the listener named `what` in logs.
    pub fn new(what: &'static str, max: usize) -> Self {
        let max = max.max(1);
        Self {
            what,
            max,
            permits: Arc::new(Semaphore::new(max)),
            refused: Arc::new(AtomicU64::new(0)),
            started: Instant::now(),
            last_warn_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.max - self.permits.available_permits()
    }

    /// Connections refused at the cap since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Admits `io` when below the cap; otherwise drops (closes) it and returns None.
    pub fn admit<IO>(&self, io: IO, peer: Option<SocketAddr>) -> Option<Capped<IO>> {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => Some(Capped {
                io,
                _permit: permit,
            }),
            Err(_) => {
                let total = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
                let now_ms = self.started.elapsed().as_millis() as u64;
                let last = self.last_warn_ms.load(Ordering::Relaxed);
                if (last == 0 || now_ms.saturating_sub(last) >= WARN_EVERY.as_millis() as u64)
                    && self
                        .last_warn_ms
                        .compare_exchange(last, now_ms.max(1), Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    tracing::warn!(
                        listener = self.what,
                        max_connections = self.max,
                        refused_total = total,
                        peer = ?peer,
                        "connection refused: the listener is at its connection cap"
                    );
                }
                None
            }
        }
    }
}

/// A connection holding one permit of its [`ConnectionCap`] until it is dropped.
pub struct Capped<IO> {
    io: IO,
    _permit: OwnedSemaphorePermit,
}

impl<IO> Capped<IO> {
    pub fn get_ref(&self) -> &IO {
        &self.io
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Capped<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Capped<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<IO: Connected> Connected for Capped<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

/// Accepts the next connection below the cap; accept errors (EMFILE, ECONNABORTED) pause the
/// listener briefly instead of ending it.
async fn accept_capped(
    listener: &TcpListener,
    cap: &ConnectionCap,
) -> (Capped<TcpStream>, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                if let Some(conn) = cap.admit(stream, Some(peer)) {
                    let _ = conn.get_ref().set_nodelay(true);
                    return (conn, peer);
                }
            }
            Err(e) => {
                tracing::warn!(listener = cap.what, error = %e, "accept failed; pausing");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// The listener as a stream of capped connections for tonic's `serve_with_incoming*`. It never
/// yields an error (tonic would stop serving on one).
pub fn capped_incoming(
    listener: TcpListener,
    cap: ConnectionCap,
) -> impl Stream<Item = io::Result<Capped<TcpStream>>> + Send + 'static {
    futures::stream::unfold((listener, cap), |(listener, cap)| async move {
        let (conn, _) = accept_capped(&listener, &cap).await;
        Some((Ok(conn), (listener, cap)))
    })
}

/// Limits of an HTTP listener.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Open connections at most.
    pub max_connections: usize,
    /// Time allowed for a request's headers (and a TLS handshake) to arrive.
    pub header_timeout: Duration,
}

/// Serves `router` until `shutdown` resolves, then stops accepting and drains open connections
/// (30 s at most). Handlers see the peer address as `ConnectInfo<SocketAddr>`.
pub async fn serve_http(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    limits: HttpLimits,
    what: &'static str,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let cap = ConnectionCap::new(what, limits.max_connections);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder.http2().timer(TokioTimer::new());
    tokio::pin!(shutdown);
    loop {
        let (conn, peer) = tokio::select! {
            accepted = accept_capped(&listener, &cap) => accepted,
            () = &mut shutdown => break,
        };
        let service =
            TowerToHyperService::new(router.clone().layer(axum::Extension(ConnectInfo(peer))));
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let header_timeout = limits.header_timeout;
        tokio::spawn(async move {
            let result = match tls {
                None => {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(conn), service);
                    watcher.watch(conn.into_owned()).await
                }
                Some(acceptor) => {
                    let stream =
                        match tokio::time::timeout(header_timeout, acceptor.accept(conn)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watcher.watch(conn.into_owned()).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = what,
            "connections still open 30 s after shutdown; closing them"
        );
    }
    Ok(())
}

/// Raises this process's soft limit on open files to at least `want` (at most the hard limit;
/// raising the soft limit needs no privilege), so a server can hold as many connections as its
/// caps allow; child processes inherit it. Many systems start processes with a soft limit of
/// 1024 and a much higher hard limit. Returns the soft limit now in force.
pub fn raise_fd_limit(want: u64) -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur >= want {
        return Ok(limit.rlim_cur);
    }
    limit.rlim_cur = want.min(limit.rlim_max);
    // SAFETY: setrlimit only reads the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_admits_up_to_max_and_frees_on_drop() {
        let cap = ConnectionCap::new("test", 2);
        let a = cap.admit((), None).expect("first");
        let _b = cap.admit((), None).expect("second");
        assert!(cap.admit((), None).is_none(), "third refused");
        assert_eq!((cap.open(), cap.refused()), (2, 1));
        drop(a);
        assert!(cap.admit((), None).is_some(), "a slot freed");
    }
}
