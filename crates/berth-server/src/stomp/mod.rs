//! STOMP 1.0/1.1/1.2, as OCI Queue speaks it, over the same engine as REST.
//!
//! - [`frame`]: the codec (pure; limits enforced before allocating).
//! - [`command`]: frames checked and typed before anything runs.
//! - [`session`]: per-connection state; returns frames, never writes to the socket.
//! - [`subscription`]: a subscription as a long-polling consumer with a prefetch window.
//! - [`pipeline`]: frames read ahead and carried out in order, writes together.
//! - [`connection`]: the socket loop. This module: the listener, its connection cap and TLS.

pub mod command;
pub mod connection;
pub mod frame;
pub mod pipeline;
pub mod session;
pub mod subscription;

use std::sync::Arc;
use std::time::Duration;

use berth_core::Engine;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accept::Acceptor;
use crate::auth::Authenticator;
use crate::login_throttle::LoginThrottle;
use crate::metrics::Metrics;

/// How long connections get to finish at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What every STOMP connection shares.
pub struct StompContext {
    /// The queue engine.
    pub engine: Arc<Engine>,
    /// Checks logins.
    pub auth: Arc<Authenticator>,
    /// Connections and frames are counted here.
    pub metrics: Arc<Metrics>,
    /// Inbound frame limits.
    pub limits: frame::Limits,
    /// Disconnect clients that send nothing for this long (without negotiated heart-beats).
    pub idle_timeout: Duration,
    /// Most open connections; further clients wait in the accept backlog.
    pub max_connections: usize,
    /// TLS, when configured.
    pub tls: Option<TlsAcceptor>,
    /// Failed logins per peer address.
    pub logins: Arc<LoginThrottle>,
}

/// Accepts connections until `shutdown`, then waits (bounded) for them to close.
pub async fn serve(listener: TcpListener, ctx: Arc<StompContext>, shutdown: CancellationToken) {
    let mut acceptor = Acceptor::new(listener, ctx.max_connections, "STOMP");
    let tracker = TaskTracker::new();
    while let Some(accepted) = acceptor.next(&shutdown).await {
        let (ctx, shutdown) = (ctx.clone(), shutdown.clone());
        tracker.spawn(async move {
            let peer = accepted.peer;
            if let Some((stream, _slot)) = accepted.stream(ctx.tls.as_ref(), "STOMP").await {
                connection::serve(stream, peer, &ctx, &shutdown).await;
            }
        });
    }
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait()).await.is_err() {
        tracing::warn!(open = tracker.len(), "STOMP connections still open after the drain deadline");
    }
}
