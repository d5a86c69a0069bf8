//! How long a connection may wait for a request head: `idle` while no byte of it has come
//! (a new or kept-alive connection), `header` from its first byte (slow senders).
//!
//! hyper's HTTP/1 server has one header-read timeout, started when it begins waiting for a
//! head, so on its own it cannot tell an idle keep-alive connection from a slowloris. It
//! asks its [`Timer`] for a sleep exactly then, and for nothing else (hyper 1.x, server
//! side): [`HeadTimer`] gives it a sleep whose deadline moves from `idle` to `header` once
//! [`Watched`] sees the first byte arrive.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::rt::{Sleep, Timer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
// tokio's clock, not std's, so that tests can pause it.
use tokio::time::Instant;

/// One connection's current wait for a request head.
#[derive(Default)]
struct Wait {
    since: Option<Instant>,
    first_byte: Option<Instant>,
}

type SharedWait = Arc<Mutex<Wait>>;

fn lock(wait: &Mutex<Wait>) -> std::sync::MutexGuard<'_, Wait> {
    wait.lock().unwrap_or_else(|e| e.into_inner())
}

/// hyper's timer for one connection.
#[derive(Clone)]
pub(super) struct HeadTimer {
    wait: SharedWait,
    idle: Duration,
    header: Duration,
}

/// Wraps a connection's stream and builds the timer that watches it.
pub(super) fn watch<S>(stream: S, idle: Duration, header: Duration) -> (Watched<S>, HeadTimer) {
    let wait = SharedWait::default();
    (Watched { stream, wait: wait.clone() }, HeadTimer { wait, idle, header })
}

impl HeadTimer {
    fn deadline(&self) -> Instant {
        let wait = lock(&self.wait);
        match (wait.first_byte, wait.since) {
            (Some(first), _) => first + self.header,
            (None, Some(since)) => since + self.idle,
            (None, None) => Instant::now() + self.idle,
        }
    }
}

impl Timer for HeadTimer {
    fn sleep(&self, _duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(std::time::Instant::now())
    }

    /// hyper calls this when it starts waiting for a head; its own deadline is ignored.
    fn sleep_until(&self, _deadline: std::time::Instant) -> Pin<Box<dyn Sleep>> {
        *lock(&self.wait) = Wait { since: Some(Instant::now()), first_byte: None };
        let sleep = Box::pin(tokio::time::sleep_until(self.deadline()));
        Box::pin(HeadSleep { timer: self.clone(), sleep })
    }
}

/// Fires at the wait's deadline as it stands each time hyper polls it (after every read).
struct HeadSleep {
    timer: HeadTimer,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl std::future::Future for HeadSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = self.timer.deadline();
        if self.sleep.deadline() != deadline {
            self.sleep.as_mut().reset(deadline);
        }
        self.sleep.as_mut().poll(cx)
    }
}

impl Sleep for HeadSleep {}

/// A stream that notes when the first byte of an awaited head arrives.
pub(super) struct Watched<S> {
    stream: S,
    wait: SharedWait,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            let mut wait = lock(&self.wait);
            if wait.since.is_some() && wait.first_byte.is_none() {
                wait.first_byte = Some(Instant::now());
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_idle_wait_gets_the_idle_deadline_and_the_first_byte_shortens_it() {
        let (client, server) = tokio::io::duplex(64);
        let (mut watched, timer) = watch(server, Duration::from_secs(60), Duration::from_secs(5));
        let start = Instant::now();
        let mut sleep = timer.sleep_until(std::time::Instant::now());
        assert!(timer.deadline() >= start + Duration::from_secs(60));
        assert!(futures_util::poll!(sleep.as_mut()).is_pending());

        tokio::time::advance(Duration::from_secs(30)).await;
        let mut client = client;
        tokio::io::AsyncWriteExt::write_all(&mut client, b"GET").await.unwrap();
        let mut buf = [0u8; 8];
        tokio::io::AsyncReadExt::read(&mut watched, &mut buf).await.unwrap();
        let first_byte = Instant::now();
        assert_eq!(timer.deadline(), first_byte + Duration::from_secs(5));

        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(futures_util::poll!(sleep.as_mut()).is_pending(), "4 s after the first byte");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(futures_util::poll!(sleep.as_mut()).is_ready(), "past the header deadline");
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_wait_forgets_the_bytes_of_the_last_request() {
        let (mut client, server) = tokio::io::duplex(64);
        let (mut watched, timer) = watch(server, Duration::from_secs(60), Duration::from_secs(5));
        let _first = timer.sleep_until(std::time::Instant::now());
        tokio::io::AsyncWriteExt::write_all(&mut client, b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        tokio::io::AsyncReadExt::read(&mut watched, &mut buf).await.unwrap();
        tokio::time::advance(Duration::from_secs(10)).await;
        let mut next = timer.sleep_until(std::time::Instant::now());
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(futures_util::poll!(next.as_mut()).is_pending(), "idle, not a slow head");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(futures_util::poll!(next.as_mut()).is_ready());
    }
}
