//! One client connection: handshake, then a loop over inbound frames, subscription
//! events, heart-beats, the idle deadline and shutdown. Every protocol error is answered
//! with an ERROR frame before the connection closes.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::{sleep_until, Instant};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use super::command::Command;
use super::frame::{Frame, FrameCodec, FrameError, Inbound, Outbound};
use super::session::{error_frame, Connected, Reply, Session};
use super::subscription::Event;
use super::StompContext;

/// How long a new connection has to send CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

enum Step {
    Inbound(Option<Result<Inbound, FrameError>>),
    Event(Option<Event>),
    Beat,
    Idle,
    Shutdown,
}

/// Serves one connection until it ends.
pub async fn serve<S>(stream: S, peer: std::net::SocketAddr, ctx: &StompContext, shutdown: &CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut framed = Framed::new(stream, FrameCodec::new(ctx.limits));
    let first = tokio::time::timeout(CONNECT_TIMEOUT, async {
        loop {
            match framed.next().await {
                Some(Ok(Inbound::Heartbeat)) => continue,
                other => return other,
            }
        }
    })
    .await;
    let frame = match first {
        Ok(Some(Ok(Inbound::Frame(frame)))) => frame,
        Ok(Some(Err(e))) => return refuse(&mut framed, &e.to_string()).await,
        Ok(Some(Ok(Inbound::Heartbeat)) | None) => return,
        Err(_) => return refuse(&mut framed, "no CONNECT frame in time").await,
    };
    let Connected { mut session, frame, heartbeats, mut events } = match Session::connect(ctx, frame, peer).await {
        Ok(connected) => connected,
        Err(error) => {
            let _ = framed.send(Outbound::Frame(error)).await;
            return;
        }
    };
    framed.codec_mut().version = session.version();
    if framed.send(Outbound::Frame(frame)).await.is_err() {
        return session.close(events, true).await;
    }
    // A client that promised heart-beats gets twice its interval; one that did not, the idle timeout.
    let read_window = heartbeats.expect_every.map_or(ctx.idle_timeout, |every| every * 2);
    let mut read_deadline = Instant::now() + read_window;
    let mut beat = heartbeats.send_every.map(tokio::time::interval);
    let release = loop {
        let step = tokio::select! {
            inbound = framed.next() => Step::Inbound(inbound),
            event = events.recv() => Step::Event(event),
            _ = async { beat.as_mut().expect("checked").tick().await }, if beat.is_some() => Step::Beat,
            _ = sleep_until(read_deadline) => Step::Idle,
            _ = shutdown.cancelled() => Step::Shutdown,
        };
        let reply = match step {
            Step::Inbound(None) => break true,
            Step::Inbound(Some(Err(e))) => Reply::Close(vec![error_frame(&e.to_string(), None)]),
            Step::Inbound(Some(Ok(inbound))) => {
                read_deadline = Instant::now() + read_window;
                match inbound {
                    Inbound::Heartbeat => continue,
                    Inbound::Frame(frame) => handle(&mut session, frame).await,
                }
            }
            Step::Event(Some(event)) => session.on_event(event).await,
            Step::Event(None) => continue,
            Step::Beat => {
                if framed.send(Outbound::Heartbeat).await.is_err() {
                    break true;
                }
                continue;
            }
            Step::Idle => Reply::Close(vec![error_frame("no frame or heart-beat received in time; closing", None)]),
            Step::Shutdown => {
                // Leases handed out stay valid until their visibility ends.
                let _ = framed.send(Outbound::Frame(error_frame("the server is shutting down", None))).await;
                break false;
            }
        };
        let (frames, close) = match reply {
            Reply::Continue(frames) => (frames, false),
            Reply::Close(frames) => (frames, true),
        };
        let mut failed = false;
        for frame in frames {
            if framed.feed(Outbound::Frame(frame)).await.is_err() {
                failed = true;
                break;
            }
        }
        if failed || framed.flush().await.is_err() || close {
            break true;
        }
    };
    // A clean end: TLS sends close_notify, TCP a FIN, after the last frame.
    let _ = framed.into_inner().shutdown().await;
    session.close(events, release).await;
}

async fn handle(session: &mut Session, frame: Frame) -> Reply {
    let receipt = frame.get("receipt").map(str::to_owned);
    match Command::from_frame(frame, session.version()) {
        Ok(command) => session.handle(command).await,
        Err(message) => Reply::Close(vec![error_frame(&message, receipt.as_deref())]),
    }
}

async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(framed: &mut Framed<S, FrameCodec>, message: &str) {
    let _ = framed.send(Outbound::Frame(error_frame(message, None))).await;
}
