//! STOMP 1.0/1.1/1.2, as OCI Queue speaks it, over the same engine as REST.
//!
//! - [`frame`]: the codec (pure; limits enforced before allocating).
//! - [`command`]: frames checked and typed before anything runs.
//! - [`session`]: per-connection state; returns frames, never writes to the socket.
//! - [`subscription`]: a subscription as a long-polling consumer with a prefetch window.
//! - [`connection`]: the socket loop. This module: the listener, its connection cap and TLS.

pub mod command;
pub mod connection;
pub mod frame;
pub mod login_throttle;
pub mod session;
pub mod subscription;

use std::sync::Arc;
use std::time::Duration;

use berth_core::Engine;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long connections get to finish at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What every STOMP connection shares.
pub struct StompContext {
    /// The queue engine.
    pub engine: Arc<Engine>,
    /// Inbound frame limits.
    pub limits: frame::Limits,
    /// Disconnect clients that send nothing for this long (without negotiated heart-beats).
    pub idle_timeout: Duration,
    /// Most open connections; further clients wait in the accept backlog.
    pub max_connections: usize,
    /// TLS, when configured.
    pub tls: Option<TlsAcceptor>,
    /// Failed logins per peer address.
    pub logins: login_throttle::LoginThrottle,
}

/// Accepts connections until `shutdown`, then waits (bounded) for them to close.
pub async fn serve(listener: TcpListener, ctx: Arc<StompContext>, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(ctx.max_connections));
    let tracker = TaskTracker::new();
    let mut backoff = Duration::from_millis(10);
    loop {
        // Take a slot before accepting: at the cap, clients queue in the kernel backlog.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("never closed"),
            _ = shutdown.cancelled() => break,
        };
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "STOMP accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        backoff = Duration::from_millis(10);
        let (ctx, shutdown) = (ctx.clone(), shutdown.clone());
        tracker.spawn(async move {
            let _slot = slot;
            let _ = socket.set_nodelay(true);
            match &ctx.tls {
                None => connection::serve(socket, peer, &ctx, &shutdown).await,
                Some(tls) => match tokio::time::timeout(crate::tls::HANDSHAKE_TIMEOUT, tls.accept(socket)).await {
                    Ok(Ok(stream)) => connection::serve(stream, peer, &ctx, &shutdown).await,
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "STOMP TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "STOMP TLS handshake timed out"),
                },
            }
        });
    }
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait()).await.is_err() {
        tracing::warn!(open = tracker.len(), "STOMP connections still open after the drain deadline");
    }
}
