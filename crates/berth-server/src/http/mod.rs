//! The HTTP listener: accepts connections under a cap, optionally speaks TLS, serves the
//! router over HTTP/1.1 with deadlines for request heads and for stalled writes, and
//! drains at shutdown.
//!
//! What a request does is the router's business ([`crate::rest`]); this module only
//! decides which connections get served and for how long.

mod request_head;
mod write_deadline;

use std::time::Duration;

use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::accept::{Acceptor, Stream};

/// Most header lines hyper parses; the router answers more than [`crate::rest::MAX_HEADERS`]
/// in OCI's shape, so hyper's own bare 431 is only for requests far past that.
const HYPER_MAX_HEADERS: usize = 4 * crate::rest::MAX_HEADERS;

/// How the listener treats connections.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most open connections; further clients wait in the kernel's accept backlog.
    pub max_connections: usize,
    /// How long a connection may wait, without a byte, for its next request.
    pub idle_timeout: Duration,
    /// How long a request head may take from its first byte to its last.
    pub header_timeout: Duration,
}

/// Serves `router` on `listener` until `shutdown`; then closes idle connections, lets open
/// requests finish and returns once every connection has closed.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let mut acceptor = Acceptor::new(listener, limits.max_connections, "HTTP");
    let graceful = GracefulShutdown::new();
    while let Some(accepted) = acceptor.next(&shutdown).await {
        let (router, tls, limits, watcher) = (router.clone(), tls.clone(), limits.clone(), graceful.watcher());
        tokio::spawn(async move {
            let peer = accepted.peer;
            if let Some((stream, _slot)) = accepted.stream(tls.as_ref(), "HTTP").await {
                serve_connection(stream, peer, router, &limits, watcher).await;
            }
        });
    }
    let open = graceful.count();
    if open > 0 {
        tracing::info!(open, "waiting for HTTP connections to finish");
    }
    graceful.shutdown().await;
}

/// Serves one connection until the client closes it, a deadline passes, or shutdown.
async fn serve_connection(
    stream: Stream,
    peer: std::net::SocketAddr,
    router: axum::Router,
    limits: &Limits,
    watcher: hyper_util::server::graceful::Watcher,
) {
    // A client that stops reading gets as long as an idle one.
    let stream = write_deadline::WriteDeadline::new(stream, limits.idle_timeout);
    let (stream, timer, arrivals) = request_head::watch(stream, limits.idle_timeout, limits.header_timeout);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        arrivals.request_arrived();
        // For handlers that need it (the console's login throttle).
        request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
        // The router is always ready (axum), so it is called without poll_ready.
        tower::Service::call(&mut router.clone(), request)
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(timer)
        // The timer decides the deadline; any value turns hyper's head timeout on.
        .header_read_timeout(limits.idle_timeout)
        .max_headers(HYPER_MAX_HEADERS)
        .serve_connection(TokioIo::new(stream), service);
    if let Err(e) = watcher.watch(connection).await {
        // Deadlines, resets and malformed requests: the client's doing, not a server fault.
        tracing::debug!(error = %e, "HTTP connection ended");
    }
}
