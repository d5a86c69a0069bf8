//! Per-connection state: who is connected, the subscriptions and the messages delivered
//! but not yet acknowledged. The session returns frames; it never touches the socket.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use berth_core::model::NewMessage;
use berth_core::{Engine, QueueError};
use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::command::{Command, Destination, Source, Write};
use super::frame::{Frame, Version};
use super::pipeline::{self, Op};
use super::subscription::{Consumer, Event};
use super::StompContext;
use crate::login_throttle::Attempter;

/// How the connection goes on after a command.
#[derive(Debug)]
pub enum Reply {
    /// Send these frames and keep reading.
    Continue(Vec<Frame>),
    /// Send these frames, then close.
    Close(Vec<Frame>),
}

impl Reply {
    /// The frames, and whether the connection closes after them.
    pub fn into_parts(self) -> (Vec<Frame>, bool) {
        match self {
            Reply::Continue(frames) => (frames, false),
            Reply::Close(frames) => (frames, true),
        }
    }

    /// This reply with `earlier` frames sent first.
    pub fn after(self, mut earlier: Vec<Frame>) -> Reply {
        let (frames, close) = self.into_parts();
        earlier.extend(frames);
        if close {
            Reply::Close(earlier)
        } else {
            Reply::Continue(earlier)
        }
    }

    /// This reply, then `later` unless this one closes the connection.
    pub fn then(self, later: Reply) -> Reply {
        match self {
            Reply::Close(_) => self,
            Reply::Continue(frames) => later.after(frames),
        }
    }
}

/// Negotiated heart-beat intervals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeats {
    /// How often the server sends one (None = never).
    pub send_every: Option<Duration>,
    /// How often the client promised one (None = never).
    pub expect_every: Option<Duration>,
}

/// Fastest heart-beat the server sends, and slowest it asks of a client that offers them.
const MIN_SEND_MS: u64 = 500;
const MIN_EXPECT_MS: u64 = 1000;

/// Negotiates heart-beats from the client's `cx,cy` (STOMP 1.1+).
pub fn negotiate(client: Option<&str>) -> Result<Heartbeats, String> {
    let Some(value) = client else { return Ok(Heartbeats { send_every: None, expect_every: None }) };
    let parsed = value
        .split_once(',')
        .and_then(|(cx, cy)| Some((cx.trim().parse::<u64>().ok()?, cy.trim().parse::<u64>().ok()?)));
    let (cx, cy) = parsed.ok_or_else(|| format!("heart-beat must be two numbers like 10000,10000, got {value:?}"))?;
    let every = |ms: u64, floor: u64| (ms > 0).then(|| Duration::from_millis(ms.max(floor)));
    Ok(Heartbeats { send_every: every(cy, MIN_SEND_MS), expect_every: every(cx, MIN_EXPECT_MS) })
}

/// An ERROR frame; `receipt` echoes the request's receipt so the client can match it.
pub fn error_frame(message: &str, receipt: Option<&str>) -> Frame {
    let short: String = message.lines().next().unwrap_or(message).chars().take(200).collect();
    let mut frame = Frame::new("ERROR").header("message", short).header("content-type", "text/plain");
    if let Some(receipt) = receipt {
        frame = frame.header("receipt-id", receipt);
    }
    frame.body(message.to_owned())
}

/// The RECEIPT a frame asked for, if it did.
pub(super) fn receipt_frame(receipt: Option<&str>) -> Vec<Frame> {
    receipt.map(|r| Frame::new("RECEIPT").header("receipt-id", r)).into_iter().collect()
}

/// What the client may be told about a failure: never whether another tenancy's queue exists.
pub(super) fn describe(error: &QueueError) -> String {
    match error {
        QueueError::QueueNotFound => "destination not found or not authorized".into(),
        QueueError::ConsumerGroupNotFound => "consumer group not found or not authorized".into(),
        QueueError::ReceiptInvalid => "the message's lease has ended (or it was never delivered here)".into(),
        QueueError::Store(berth_core::error::StoreError::Full(_)) => {
            "the server is out of storage space; new messages are refused until space is freed, retry later".into()
        }
        QueueError::Store(_) => "the service could not complete the request; it has been logged".into(),
        QueueError::WorkRequestNotFound
        | QueueError::InvalidParameter(_)
        | QueueError::MissingParameter(_)
        | QueueError::LimitExceeded(_)
        | QueueError::EtagMismatch
        | QueueError::RetryTokenReused => error.to_string(),
    }
}

struct Subscription {
    destination: Destination,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

struct Pending {
    subscription: String,
    source: Source,
    receipt: String,
    /// Holds the message's place in the subscription's prefetch window until ACK/NACK.
    _slot: OwnedSemaphorePermit,
}

/// A connected, authenticated client.
pub struct Session {
    engine: Arc<Engine>,
    tenancy_id: String,
    version: Version,
    subscriptions: HashMap<String, Subscription>,
    /// Delivered, not yet acknowledged; keyed by the ack id the client echoes.
    pending: HashMap<String, Pending>,
    events: mpsc::Sender<Event>,
}

/// Result of a successful handshake.
pub struct Connected {
    /// The session.
    pub session: Session,
    /// The CONNECTED frame to send.
    pub frame: Frame,
    /// Negotiated heart-beats.
    pub heartbeats: Heartbeats,
    /// Subscription events for the connection loop.
    pub events: mpsc::Receiver<Event>,
}

impl Session {
    /// Handles CONNECT/STOMP: version, credentials, heart-beats.
    ///
    /// # Errors
    /// The ERROR frame to send before closing.
    /// A failed login is logged with `peer`, whose later attempts then slow down.
    pub async fn connect(ctx: &StompContext, frame: Frame, peer: std::net::SocketAddr) -> Result<Connected, Frame> {
        let refuse = |message: &str| error_frame(message, frame.get("receipt"));
        if frame.command != "CONNECT" && frame.command != "STOMP" {
            return Err(refuse("the first frame must be CONNECT or STOMP"));
        }
        let version = match frame.get("accept-version") {
            None => Version::V1_0,
            Some(list) => list
                .split(',')
                .filter_map(Version::parse)
                .max()
                .ok_or_else(|| refuse("supported versions are 1.0, 1.1 and 1.2"))?,
        };
        let heartbeats = if version == Version::V1_0 { negotiate(None) } else { negotiate(frame.get("heart-beat")) }
            .map_err(|e| refuse(&e))?;
        let login = frame.get("login").unwrap_or_default();
        let attempter = Attempter::new(peer.ip(), login);
        if let Err(wait) = ctx.logins.wait_turn(&attempter).await {
            tracing::warn!(%peer, login, "STOMP login refused: too many failed logins");
            let retry = wait.as_secs() + 1;
            return Err(refuse(&format!("too many failed logins from this address; retry in {retry} s")));
        }
        let bad_login = || {
            let failures = ctx.logins.failed(&attempter);
            tracing::warn!(%peer, login, failures, "STOMP login failed");
            refuse("login failed: check login (<tenancy>/<user>) and passcode")
        };
        let passcode = frame.get("passcode").ok_or_else(bad_login)?;
        let (tenancy, user) = login.split_once('/').ok_or_else(bad_login)?;
        let user = match ctx.auth.stomp_user(tenancy, user, passcode).await {
            Ok(Some(user)) => user,
            Ok(None) => return Err(bad_login()),
            Err(e) => {
                tracing::error!(error = %e, "STOMP login lookup failed");
                return Err(refuse("the service could not check the login; try again"));
            }
        };
        ctx.logins.succeeded(&attempter);
        let (events_tx, events) = mpsc::channel(64);
        let ms = |d: Option<Duration>| d.map_or(0, |d| d.as_millis() as u64);
        let mut connected = Frame::new("CONNECTED")
            .header("version", version.as_str())
            .header("server", concat!("Berth/", env!("CARGO_PKG_VERSION")))
            .header("session", berth_core::ocid::new("stompsession", "", ""));
        if version != Version::V1_0 {
            let beats = format!("{},{}", ms(heartbeats.send_every), ms(heartbeats.expect_every));
            connected = connected.header("heart-beat", beats);
        }
        let session = Session {
            engine: ctx.engine.clone(),
            tenancy_id: user.tenancy_id,
            version,
            subscriptions: HashMap::new(),
            pending: HashMap::new(),
            events: events_tx,
        };
        Ok(Connected { session, frame: connected, heartbeats, events })
    }

    /// The negotiated version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Runs one command.
    pub async fn handle(&mut self, command: Command) -> Reply {
        match command {
            Command::Write(write) => self.start_writes(vec![write]).await,
            Command::Subscribe { id, destination, consumer_group_id, visibility, prefetch, receipt } => {
                if self.subscriptions.contains_key(&id) {
                    return Reply::Close(vec![error_frame(
                        &format!("subscription id {id:?} is in use"),
                        receipt.as_deref(),
                    )]);
                }
                let source = Source { queue_id: destination.queue_id.clone(), consumer_group_id };
                if let Err(e) = self.engine.check_target(&self.tenancy_id, source.target()).await {
                    return Reply::Close(vec![error_frame(&describe(&e), receipt.as_deref())]);
                }
                let stop = CancellationToken::new();
                let consumer = Consumer {
                    engine: self.engine.clone(),
                    tenancy_id: self.tenancy_id.clone(),
                    subscription: id.clone(),
                    destination: destination.clone(),
                    source,
                    visibility,
                    window: Arc::new(Semaphore::new(prefetch as usize)),
                    events: self.events.clone(),
                    stop: stop.clone(),
                };
                let task = tokio::spawn(consumer.run());
                self.subscriptions.insert(id, Subscription { destination, stop, task });
                Reply::Continue(receipt_frame(receipt.as_deref()))
            }
            Command::Unsubscribe { id, receipt } => {
                let Some(subscription) = self.subscriptions.remove(&id) else {
                    return Reply::Close(vec![error_frame(&format!("no subscription {id:?}"), receipt.as_deref())]);
                };
                stop_consumer(subscription).await;
                let released = self.take_pending(|p| p.subscription == id);
                release(&self.engine, &self.tenancy_id, released).await;
                Reply::Continue(receipt_frame(receipt.as_deref()))
            }
            Command::Disconnect { receipt } => Reply::Close(receipt_frame(receipt.as_deref())),
        }
    }

    /// An UNSUBSCRIBE was read and will run after the frames before it: its consumer stops
    /// now, so that no more messages go out for a subscription the client is leaving.
    pub fn unsubscribing(&self, id: &str) {
        if let Some(subscription) = self.subscriptions.get(id) {
            subscription.stop.cancel();
        }
    }

    /// Starts a run of SEND/ACK/NACK commands (see [`pipeline`]); the future answers them.
    /// An ACK or NACK takes its message off this connection now: its prefetch slot frees
    /// and a connection that ends meanwhile does not release it. A run stops before an
    /// ACK of nothing awaiting acknowledgement, which is refused.
    ///
    /// [`pipeline`]: super::pipeline
    pub fn start_writes(&mut self, writes: Vec<Write>) -> BoxFuture<'static, Reply> {
        let mut ops = Vec::with_capacity(writes.len());
        for write in writes {
            let op = match write {
                Write::Send { destination, content, receipt } => {
                    let message = NewMessage {
                        content,
                        channel: destination.channel.unwrap_or_default(),
                        properties: None,
                        delay_secs: None,
                    };
                    (Op::Put { queue_id: destination.queue_id, message }, receipt)
                }
                Write::Settle { ack_id, ack, receipt } => match self.pending.remove(&ack_id) {
                    Some(pending) => {
                        (Op::Settle { source: pending.source, lease: pending.receipt, delete: ack }, receipt)
                    }
                    None => {
                        let text = "no message with this ack id is awaiting acknowledgement on this connection";
                        ops.push((Op::Refused(text.into()), receipt));
                        break;
                    }
                },
            };
            ops.push(op);
        }
        Box::pin(pipeline::run(self.engine.clone(), self.tenancy_id.clone(), ops))
    }

    /// Turns a subscription event into the frame to send.
    pub async fn on_event(&mut self, event: Event) -> Reply {
        match event {
            Event::Failed { subscription, error } => {
                self.subscriptions.remove(&subscription);
                Reply::Close(vec![error_frame(
                    &format!("subscription {subscription:?} ended: {}", describe(&error)),
                    None,
                )])
            }
            Event::Delivery { subscription, source, delivered, permit } => {
                let Some(sub) = self.subscriptions.get(&subscription).filter(|sub| !sub.stop.is_cancelled()) else {
                    // Unsubscribed (or being unsubscribed) meanwhile: never sent, so the message goes back at once.
                    drop(permit);
                    release(&self.engine, &self.tenancy_id, vec![(source, delivered.receipt)]).await;
                    return Reply::Continue(Vec::new());
                };
                let m = &delivered.message;
                let destination = Destination {
                    queue_id: sub.destination.queue_id.clone(),
                    channel: (!m.channel.is_empty()).then(|| m.channel.clone()),
                };
                let receipt = delivered.receipt.clone();
                let mut frame = Frame::new("MESSAGE")
                    .header("subscription", subscription.as_str())
                    .header("destination", destination.render());
                frame = match self.version {
                    Version::V1_2 => frame.header("message-id", m.id.to_string()).header("ack", receipt.as_str()),
                    Version::V1_0 | Version::V1_1 => frame.header("message-id", receipt.as_str()),
                };
                let frame = frame
                    .header("delivery-count", m.delivery_count.to_string())
                    .header("visible-after", m.visible_after.0.to_string())
                    .header("expire-after", m.expire_at.0.to_string())
                    .header("oci-message-id", m.id.to_string())
                    .body(m.content.clone().into_bytes());
                self.pending.insert(receipt.clone(), Pending { subscription, source, receipt, _slot: permit });
                Reply::Continue(vec![frame])
            }
        }
    }

    /// Removes the pending messages `pick` selects; returns their (source, receipt).
    fn take_pending(&mut self, pick: impl Fn(&Pending) -> bool) -> Vec<(Source, String)> {
        let keys: Vec<String> = self.pending.iter().filter(|(_, p)| pick(p)).map(|(k, _)| k.clone()).collect();
        keys.into_iter().filter_map(|k| self.pending.remove(&k)).map(|p| (p.source, p.receipt)).collect()
    }

    /// Ends the session. With `release_pending`, unacknowledged messages become visible at
    /// once (a dropped client); without, their leases run out as usual (server shutdown).
    pub async fn close(mut self, mut events: mpsc::Receiver<Event>, release_pending: bool) {
        for (_, subscription) in self.subscriptions.drain() {
            stop_consumer(subscription).await;
        }
        // Deliveries still in the channel were never sent: they go back at once.
        events.close();
        let mut released = Vec::new();
        while let Some(event) = events.recv().await {
            if let Event::Delivery { source, delivered, .. } = event {
                released.push((source, delivered.receipt));
            }
        }
        if release_pending {
            released.extend(self.pending.drain().map(|(_, p)| (p.source, p.receipt)));
        }
        release(&self.engine, &self.tenancy_id, released).await;
    }
}

async fn stop_consumer(subscription: Subscription) {
    subscription.stop.cancel();
    if tokio::time::timeout(Duration::from_secs(5), subscription.task).await.is_err() {
        tracing::warn!("a STOMP consumer did not stop in time");
    }
}

/// Makes messages (source, receipt) visible again at once, in batches per source.
async fn release(engine: &Engine, tenancy_id: &str, messages: Vec<(Source, String)>) {
    let mut by_source: HashMap<Source, Vec<(String, i64)>> = HashMap::new();
    for (source, receipt) in messages {
        by_source.entry(source).or_default().push((receipt, 0));
    }
    for (source, receipts) in by_source {
        for chunk in receipts.chunks(berth_core::limits::MAX_BATCH_ENTRIES) {
            if let Err(e) = engine.update_messages(tenancy_id, source.target(), chunk.to_vec()).await {
                tracing::warn!(error = %e, "could not release unacknowledged messages; they return when their leases end");
            }
        }
    }
}
