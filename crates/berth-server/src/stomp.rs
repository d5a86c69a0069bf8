//! STOMP listener. The STOMP protocol is not implemented yet: the port is bound so the
//! address is reserved and reported, and every client gets a clear ERROR frame.

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const NOT_AVAILABLE: &[u8] =
    b"ERROR\ncontent-type:text/plain\nmessage:STOMP is not available in this Berth version\n\nUse the REST API.\0";

/// Answers every connection with an ERROR frame and closes it, until shutdown.
pub async fn refuse_all(listener: TcpListener, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((mut socket, _)) => {
                    tokio::spawn(async move {
                        let _ = socket.write_all(NOT_AVAILABLE).await;
                        let _ = socket.shutdown().await;
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "STOMP accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }
}
