//! One client connection: handshake, then a loop over inbound frames, finished writes,
//! subscription events, heart-beats, the idle deadline and shutdown. Frames are carried
//! out in the order read (see [`super::pipeline`]); every protocol error is answered with
//! an ERROR frame, after the frames before it, and the connection closes.

use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::{sleep_until, Instant};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use super::command::Command;
use super::frame::{FrameCodec, FrameError, Inbound, Outbound};
use super::pipeline::{Backlog, Item, Next};
use super::session::{error_frame, Connected, Reply, Session};
use super::subscription::Event;
use super::StompContext;

/// How long a new connection has to send CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most subscription events answered with one flush.
const EVENTS_PER_FLUSH: usize = 64;

enum Step {
    Inbound(Option<Result<Inbound, FrameError>>),
    Written(Reply),
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
    let _counted = ctx.metrics.stomp_connection();
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
    // Frames read ahead, and the writes on their way to disk (one run at a time, in order).
    let mut backlog = Backlog::default();
    let mut writing: Option<BoxFuture<'static, Reply>> = None;
    // Cleared at the client's end or at a frame that ends the connection: nothing more is read.
    let mut reading = true;
    // Cleared when a send fails: frames the client wrote before it went still run (until
    // reading finds the end), their answers are dropped.
    let mut answering = true;
    let release = loop {
        if writing.is_none() {
            let reply = match backlog.take_next() {
                Some(Next::Writes(writes)) => {
                    writing = Some(session.start_writes(writes));
                    None
                }
                Some(Next::Item(Item::Command(command))) => Some(session.handle(command).await),
                Some(Next::Item(Item::Refuse { message, receipt })) => {
                    Some(Reply::Close(vec![error_frame(&message, receipt.as_deref())]))
                }
                Some(Next::Item(Item::End)) => break true,
                None => None,
            };
            if let Some(reply) = reply {
                match answer(&mut framed, reply, &mut answering).await {
                    Flow::Go => continue,
                    Flow::Close => break true,
                }
            }
        }
        let idle = writing.is_none() && backlog.is_empty();
        let step = tokio::select! {
            inbound = framed.next(), if reading && backlog.has_room() => Step::Inbound(inbound),
            reply = async { writing.as_mut().expect("checked").await }, if writing.is_some() => Step::Written(reply),
            event = events.recv() => Step::Event(event),
            _ = async { beat.as_mut().expect("checked").tick().await }, if beat.is_some() && answering => Step::Beat,
            _ = sleep_until(read_deadline), if idle && reading => Step::Idle,
            _ = shutdown.cancelled() => Step::Shutdown,
        };
        let mut release = true;
        let reply = match step {
            Step::Inbound(inbound) => {
                read_deadline = Instant::now() + read_window;
                let (item, size) = match inbound {
                    None => (Item::End, 0),
                    Some(Err(e)) => (Item::Refuse { message: e.to_string(), receipt: None }, 0),
                    Some(Ok(Inbound::Heartbeat)) => continue,
                    Some(Ok(Inbound::Frame(frame))) => {
                        ctx.metrics.stomp_frame(&frame.command);
                        let (receipt, size) = (frame.get("receipt").map(str::to_owned), frame.size());
                        match Command::from_frame(frame, session.version()) {
                            Ok(command) => (Item::Command(command), size),
                            Err(message) => (Item::Refuse { message, receipt }, size),
                        }
                    }
                };
                match &item {
                    Item::Command(Command::Unsubscribe { id, .. }) => session.unsubscribing(id),
                    Item::Command(Command::Disconnect { .. }) | Item::Refuse { .. } | Item::End => reading = false,
                    Item::Command(_) => {}
                }
                backlog.push(item, size);
                continue;
            }
            Step::Written(reply) => {
                writing = None;
                backlog.run_finished();
                // The client was waiting on us, not idle.
                read_deadline = Instant::now() + read_window;
                reply
            }
            Step::Event(Some(event)) => {
                // Deliveries that are already waiting go out with one flush.
                let mut reply = session.on_event(event).await;
                while let Reply::Continue(frames) = &mut reply {
                    if frames.len() >= EVENTS_PER_FLUSH {
                        break;
                    }
                    let Ok(event) = events.try_recv() else { break };
                    let earlier = std::mem::take(frames);
                    reply = session.on_event(event).await.after(earlier);
                }
                reply
            }
            Step::Event(None) => continue,
            Step::Beat => {
                answering = framed.send(Outbound::Heartbeat).await.is_ok();
                continue;
            }
            Step::Idle => Reply::Close(vec![error_frame("no frame or heart-beat received in time; closing", None)]),
            Step::Shutdown => {
                // Leases handed out stay valid until their visibility ends.
                release = false;
                Reply::Close(vec![error_frame("the server is shutting down", None)])
            }
        };
        // Writes under way finish and are answered before the connection closes.
        let reply = match (&reply, writing.take()) {
            (Reply::Close(_), Some(writes)) => {
                backlog.run_finished();
                writes.await.then(reply)
            }
            (_, still) => {
                writing = still;
                reply
            }
        };
        if let Flow::Close = answer(&mut framed, reply, &mut answering).await {
            break release;
        }
    };
    // A clean end: TLS sends close_notify, TCP a FIN, after the last frame.
    let _ = framed.into_inner().shutdown().await;
    session.close(events, release).await;
}

enum Flow {
    Go,
    Close,
}

/// Sends a reply's frames, unless an earlier send failed; whether the connection goes on.
async fn answer<S>(framed: &mut Framed<S, FrameCodec>, reply: Reply, answering: &mut bool) -> Flow
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (frames, close) = reply.into_parts();
    let flow = if close { Flow::Close } else { Flow::Go };
    if *answering {
        for frame in frames {
            if framed.feed(Outbound::Frame(frame)).await.is_err() {
                *answering = false;
                break;
            }
        }
        if *answering && framed.flush().await.is_err() {
            *answering = false;
        }
    }
    flow
}

async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(framed: &mut Framed<S, FrameCodec>, message: &str) {
    let _ = framed.send(Outbound::Frame(error_frame(message, None))).await;
}
