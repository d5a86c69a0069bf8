//! What happens while a connection waits for a request head.
//!
//! Deadlines: `idle` while no byte of the head has come (a new or kept-alive connection),
//! `header` from its first byte (slow senders). hyper's HTTP/1 server has one header-read
//! timeout, started when it begins waiting for a head, so on its own it cannot tell an idle
//! keep-alive connection from a slowloris. It asks its [`Timer`] for a sleep exactly then,
//! and for nothing else (hyper 1.x, server side): [`HeadTimer`] gives it a sleep whose
//! deadline moves from `idle` to `header` once [`Watched`] sees the first byte arrive.
//!
//! Answers to heads hyper cannot parse: hyper writes those itself (a bare status line, no
//! body, no `opc-request-id`) while it still waits for a head, the only time it writes
//! then; [`Watched`] replaces them with OCI's error shape.

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
    /// When hyper began waiting for a head; `None` once a request has one.
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

/// Wraps a connection's stream; returns it, the timer that watches it, and the handle that
/// tells it a request has arrived.
pub(super) fn watch<S>(stream: S, idle: Duration, header: Duration) -> (Watched<S>, HeadTimer, Arrivals) {
    let wait = SharedWait::default();
    let watched = Watched { stream, wait: wait.clone(), replacing: None, unflushed: false };
    (watched, HeadTimer { wait: wait.clone(), idle, header }, Arrivals(wait))
}

/// Told by the service of each request it gets: hyper has parsed its head.
#[derive(Clone)]
pub(super) struct Arrivals(SharedWait);

impl Arrivals {
    pub(super) fn request_arrived(&self) {
        *lock(&self.0) = Wait::default();
    }
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

/// A stream that notes when the first byte of an awaited head arrives, and puts OCI's
/// error shape on hyper's own answers to heads it cannot parse.
pub(super) struct Watched<S> {
    stream: S,
    wait: SharedWait,
    /// Our answer in place of hyper's, and how much of it is written.
    replacing: Option<(Vec<u8>, usize)>,
    /// Bytes of a request's own answer written and not yet flushed: hyper may already wait
    /// for the next head while those go out, and they are never replaced.
    unflushed: bool,
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

impl<S: AsyncWrite + Unpin> Watched<S> {
    /// Whether hyper writes its own answer: a 4xx head, written while it waits for a request
    /// head with everything before flushed (it writes then only for that).
    fn hyper_answers(&mut self, head: &[u8]) -> bool {
        if self.replacing.is_none()
            && !self.unflushed
            && head.starts_with(b"HTTP/1.1 4")
            && lock(&self.wait).since.is_some()
        {
            self.replacing = Some((oci_answer(head), 0));
        }
        self.replacing.is_some()
    }

    /// Writes what is left of our answer; ready once all of it is written.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((answer, written)) = &mut self.replacing {
            if *written == answer.len() {
                break;
            }
            match Pin::new(&mut self.stream).poll_write(cx, &answer[*written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.hyper_answers(buf) {
            // hyper's bytes are dropped: ours stand for them.
            return self.poll_replacement(cx).map_ok(|()| buf.len());
        }
        self.unflushed = true;
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_replacement(cx))?;
        let flushed = std::task::ready!(Pin::new(&mut self.stream).poll_flush(cx));
        self.unflushed = flushed.is_err();
        Poll::Ready(flushed)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_replacement(cx))?;
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let head = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &b[..]);
        if self.hyper_answers(head) {
            let total = bufs.iter().map(|b| b.len()).sum();
            return self.poll_replacement(cx).map_ok(|()| total);
        }
        self.unflushed = true;
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// OCI's answer for hyper's `HTTP/1.1 <status> ...` head: the same status, OCI's body and
/// an `opc-request-id`, and the connection closes (as hyper closes it).
fn oci_answer(hyper_head: &[u8]) -> Vec<u8> {
    use crate::rest::error::ApiError;
    let status = hyper_head.get(9..12).and_then(|s| std::str::from_utf8(s).ok()).unwrap_or("400");
    let error = match status {
        "431" => ApiError::TooManyHeaders,
        "414" => ApiError::UriTooLong,
        _ => ApiError::MalformedHttp,
    };
    let body = error.body().to_string();
    let status = error.status();
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nopc-request-id: {}\r\n\
         date: {}\r\nconnection: close\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
        crate::rest::request_id::new_id().to_str().unwrap_or_default(),
        httpdate::fmt_http_date(std::time::SystemTime::now()),
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_idle_wait_gets_the_idle_deadline_and_the_first_byte_shortens_it() {
        let (client, server) = tokio::io::duplex(64);
        let (mut watched, timer, _) = watch(server, Duration::from_secs(60), Duration::from_secs(5));
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
        let (mut watched, timer, _) = watch(server, Duration::from_secs(60), Duration::from_secs(5));
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

    #[tokio::test]
    async fn hyper_answering_a_head_it_cannot_parse_is_given_oci_shape_and_later_answers_pass() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(4096);
        let (mut watched, timer, _arrivals) = watch(server, Duration::from_secs(60), Duration::from_secs(5));
        let _waiting = timer.sleep_until(std::time::Instant::now());
        watched.write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n").await.unwrap();
        watched.flush().await.unwrap();
        drop(watched);
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
        assert!(answer.contains("\r\nopc-request-id: "), "{answer}");
        assert!(answer.contains(r#""code":"RequestHeaderFieldsTooLarge""#), "{answer}");

        let (mut client, server) = tokio::io::duplex(4096);
        let (mut watched, timer, arrivals) = watch(server, Duration::from_secs(60), Duration::from_secs(5));
        let _waiting = timer.sleep_until(std::time::Instant::now());
        arrivals.request_arrived();
        watched.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        drop(watched);
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert_eq!(answer, "HTTP/1.1 200 OK\r\n\r\n", "a request's own answer is not touched");

        // An answer still being flushed when hyper begins the next wait is not replaced.
        let (mut client, server) = tokio::io::duplex(4096);
        let (mut watched, timer, arrivals) = watch(server, Duration::from_secs(60), Duration::from_secs(5));
        arrivals.request_arrived();
        watched.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 3\r\n\r\n").await.unwrap();
        let _next = timer.sleep_until(std::time::Instant::now());
        watched.write_all(b"abc").await.unwrap();
        drop(watched);
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert_eq!(answer, "HTTP/1.1 404 Not Found\r\ncontent-length: 3\r\n\r\nabc");
    }
}
