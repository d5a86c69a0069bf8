//! A deadline on writes that make no progress: a client that stops reading its answers
//! (a slow-read attack, or a hung peer) would otherwise hold its connection, and its slot
//! under the cap, for as long as it likes. Reads are bounded elsewhere (the head deadlines,
//! the request time limit).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// A stream whose writes fail with `TimedOut` after `limit` without progress.
pub(super) struct WriteDeadline<S> {
    stream: S,
    limit: Duration,
    /// Armed when a write first waits; disarmed by any progress.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteDeadline<S> {
    pub(super) fn new(stream: S, limit: Duration) -> Self {
        WriteDeadline { stream, limit, stalled: None }
    }

    /// Passes `polled` on; while it waits, fails once the stall lasts past the limit.
    fn watch<T>(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let limit = self.limit;
        let stalled = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading"))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.stream).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.stream).poll_shutdown(cx);
        self.watch(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(start_paused = true)]
    async fn a_write_the_peer_never_reads_fails_after_the_limit_and_progress_resets_it() {
        let (mut client, server) = tokio::io::duplex(8);
        let mut stream = WriteDeadline::new(server, Duration::from_secs(30));
        stream.write_all(b"12345678").await.unwrap(); // fills the pipe
        let writing = tokio::spawn(async move {
            let result = stream.write_all(b"more").await;
            (result, tokio::time::Instant::now())
        });
        let started = tokio::time::Instant::now();
        tokio::time::sleep(Duration::from_secs(20)).await;
        let mut buf = [0u8; 8];
        tokio::io::AsyncReadExt::read_exact(&mut client, &mut buf).await.unwrap(); // progress at 20 s
        let (result, _) = writing.await.unwrap();
        assert!(result.is_ok(), "a peer that reads in time is served");

        let (_client, server) = tokio::io::duplex(8);
        let mut stream = WriteDeadline::new(server, Duration::from_secs(30));
        let result = stream.write_all(b"123456789").await;
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(tokio::time::Instant::now() - started >= Duration::from_secs(50));
    }
}
