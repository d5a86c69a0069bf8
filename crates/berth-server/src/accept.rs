//! Accepting connections under a cap, for HTTP and STOMP alike: the slot is taken before
//! `accept`, so that at the cap clients wait in the kernel's backlog instead of costing a
//! file descriptor each, and failed accepts (out of file descriptors, mostly) back off.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

/// A client's byte stream: plain TCP, or TLS over it.
pub type Stream = Either<TcpStream, TlsStream<TcpStream>>;

const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// A listener with its connection cap.
pub struct Acceptor {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    backoff: Duration,
    protocol: &'static str,
}

/// An accepted connection and the slot it holds until dropped.
pub struct Accepted {
    /// The connection.
    pub socket: TcpStream,
    /// The client's address.
    pub peer: SocketAddr,
    /// Frees a slot for the next client when dropped.
    pub slot: OwnedSemaphorePermit,
}

impl Acceptor {
    /// At most `max_connections` accepted connections alive at once; `protocol` names them in logs.
    pub fn new(listener: TcpListener, max_connections: usize, protocol: &'static str) -> Self {
        Acceptor { listener, slots: Arc::new(Semaphore::new(max_connections)), backoff: FIRST_BACKOFF, protocol }
    }

    /// The next connection, or `None` once `shutdown` fires.
    pub async fn next(&mut self, shutdown: &CancellationToken) -> Option<Accepted> {
        let slot = tokio::select! {
            slot = self.slots.clone().acquire_owned() => slot.expect("never closed"),
            _ = shutdown.cancelled() => return None,
        };
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((socket, peer)) => {
                        self.backoff = FIRST_BACKOFF;
                        let _ = socket.set_nodelay(true);
                        return Some(Accepted { socket, peer, slot });
                    }
                    Err(e) => {
                        tracing::warn!(
                            protocol = self.protocol,
                            error = %e,
                            backoff_ms = self.backoff.as_millis() as u64,
                            "accept failed"
                        );
                        tokio::time::sleep(self.backoff).await;
                        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                    }
                },
                _ = shutdown.cancelled() => return None,
            }
        }
    }
}

impl Accepted {
    /// The connection's stream, after the TLS handshake when `tls` is given; `None` when
    /// the handshake fails or takes longer than [`crate::tls::HANDSHAKE_TIMEOUT`].
    pub async fn stream(self, tls: Option<&TlsAcceptor>, protocol: &str) -> Option<(Stream, OwnedSemaphorePermit)> {
        let Some(tls) = tls else { return Some((Either::Left(self.socket), self.slot)) };
        let peer = self.peer;
        match tokio::time::timeout(crate::tls::HANDSHAKE_TIMEOUT, tls.accept(self.socket)).await {
            Ok(Ok(stream)) => Some((Either::Right(stream), self.slot)),
            Ok(Err(e)) => {
                tracing::debug!(%peer, protocol, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(%peer, protocol, "TLS handshake timed out");
                None
            }
        }
    }
}

/// Raises the soft limit of open files to the hard limit, so that the connection caps and
/// not the process's default 1,024 decide how many clients are served.
pub fn raise_open_files_limit(needed: u64) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < needed => tracing::warn!(
            limit,
            needed,
            "the open files limit is below the connection caps plus the store's files; \
             raise it (ulimit -n) or lower http_max_connections / stomp_max_connections"
        ),
        Ok(limit) => tracing::info!(limit, "open files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open files limit"),
    }
}
