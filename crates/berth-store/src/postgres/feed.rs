//! The change feed across nodes: LISTEN/NOTIFY on a channel of the store's own.
//!
//! NOTIFY is sent after the commit, by one task per node on a pooled connection, never
//! inside the transaction that made the change: a notifying commit holds PostgreSQL's
//! notification queue lock until it is durable, which would serialise every commit of
//! every node. Changes waiting while a NOTIFY is under way are merged into the next one.
//! Each node listens on one dedicated connection; while it cannot, its pollers look again
//! every [`FALLBACK_POLL`] instead (a lost notification delays a poll, never loses a message).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_core::model::QueueRow;
use berth_core::store::Change;
use deadpool_postgres::Pool;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, Notify};
use tokio_postgres::AsyncMessage;
use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_util::sync::CancellationToken;

use super::connection;
use super::floors::Floors;

/// How often pollers look again while this node cannot listen.
const FALLBACK_POLL: Duration = Duration::from_secs(1);
/// PostgreSQL refuses payloads of 8000 bytes or more.
const MAX_PAYLOAD: usize = 7_900;

/// The NOTIFY channel of a store (one database may hold several stores' schemas).
pub(crate) fn channel_of(store_id: &str) -> String {
    format!("berth_{store_id}")
}

/// What one NOTIFY carries.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Payload {
    /// The node that sent it (which has woken its own pollers already).
    node: String,
    /// Queue, count and named channels of messages made ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    ready: Vec<(QueueRow, usize, Vec<String>)>,
    /// Queues whose every poller should look again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    changed: Vec<QueueRow>,
    /// For each queue of `ready`: the first id put, and whether the default channel had any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    first: Vec<(QueueRow, i64, bool)>,
}

impl Payload {
    /// Follows the payload's puts in `floors` and passes its changes to the feed.
    fn deliver(self, floors: &Floors, feed: &broadcast::Sender<Change>) {
        let first: HashMap<QueueRow, (i64, bool)> =
            self.first.into_iter().map(|(queue, id, default)| (queue, (id, default))).collect();
        for (queue, count, channels) in self.ready {
            match first.get(&queue) {
                Some(&(id, default)) => {
                    let mut put: Vec<&str> = channels.iter().map(String::as_str).collect();
                    if default {
                        put.push("");
                    }
                    floors.put(queue, id, &put);
                }
                // From a node that does not send ids.
                None => floors.follow(&Change::Changed { queue }),
            }
            let _ = feed.send(Change::Ready { queue, count, channels });
        }
        for queue in self.changed {
            pass(Change::Changed { queue }, floors, feed);
        }
    }
}

/// Passes another node's change to this node's floors and feed.
fn pass(change: Change, floors: &Floors, feed: &broadcast::Sender<Change>) {
    floors.follow(&change);
    let _ = feed.send(change);
}

/// A committed change for the other nodes, with a put's first id and whether it had
/// messages in the default channel.
pub(crate) struct Pushed {
    pub(crate) change: Change,
    pub(crate) first: Option<(i64, bool)>,
}

/// Sends this node's changes to the others.
pub(crate) struct Notifier {
    node: String,
    channel: String,
    // std Mutex: held only to push or take, never across an await.
    pending: Mutex<Vec<Pushed>>,
    wake: Notify,
}

impl Notifier {
    pub(crate) fn new(node: String, channel: String) -> Notifier {
        Notifier { node, channel, pending: Mutex::new(Vec::new()), wake: Notify::new() }
    }

    /// Queues a committed change for the other nodes.
    pub(crate) fn push(&self, change: Pushed) {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).push(change);
        self.wake.notify_one();
    }

    /// Sends what was pushed, merged, until `stop` fires.
    pub(crate) async fn send(self: Arc<Self>, pool: Pool, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.wake.notified() => {}
            }
            let changes = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
            let payloads = self.payloads(changes);
            let sent = async {
                let client = connection(&pool).await?;
                let statement = client.prepare_cached("SELECT pg_notify($1, $2)").await.map_err(super::pg)?;
                for payload in &payloads {
                    client.execute(&statement, &[&self.channel, payload]).await.map_err(super::pg)?;
                }
                Ok::<_, berth_core::error::StoreError>(())
            };
            if let Err(e) = sent.await {
                // The other nodes' pollers find the messages at their next look.
                tracing::debug!(error = %e, "cannot notify the other nodes of changes");
            }
        }
    }

    /// The changes merged per queue, as payloads under PostgreSQL's size limit.
    fn payloads(&self, changes: Vec<Pushed>) -> Vec<String> {
        let mut ready: BTreeMap<QueueRow, (usize, BTreeSet<String>)> = BTreeMap::new();
        let mut first: BTreeMap<QueueRow, (i64, bool)> = BTreeMap::new();
        let mut changed: BTreeSet<QueueRow> = BTreeSet::new();
        for Pushed { change, first: put } in changes {
            match change {
                Change::Ready { queue, count, channels } => {
                    let entry = ready.entry(queue).or_default();
                    entry.0 += count;
                    entry.1.extend(channels);
                    match put {
                        Some((id, default)) => {
                            let entry = first.entry(queue).or_insert((id, default));
                            *entry = (entry.0.min(id), entry.1 || default);
                        }
                        // Without an id the receivers forget the queue's floors.
                        None => {
                            changed.insert(queue);
                        }
                    }
                }
                Change::Changed { queue } => {
                    changed.insert(queue);
                }
                Change::Missed => {}
            }
        }
        // Every poller of a changed queue looks again anyway.
        ready.retain(|queue, _| !changed.contains(queue));
        let mut payloads = Vec::new();
        let mut payload = Payload { node: self.node.clone(), ..Payload::default() };
        let mut size = 0;
        let mut flush = |payload: &mut Payload, size: &mut usize| {
            if !payload.ready.is_empty() || !payload.changed.is_empty() {
                let full = std::mem::replace(payload, Payload { node: self.node.clone(), ..Payload::default() });
                payloads.push(serde_json::to_string(&full).unwrap_or_default());
            }
            *size = 0;
        };
        for (queue, (count, channels)) in ready {
            let entry_size = 64 + channels.iter().map(|c| c.len() + 3).sum::<usize>();
            if size + entry_size > MAX_PAYLOAD {
                flush(&mut payload, &mut size);
            }
            size += entry_size;
            // A channel list too long for one payload wakes every poller of the queue instead.
            if entry_size > MAX_PAYLOAD {
                payload.changed.push(queue);
            } else {
                payload.ready.push((queue, count, channels.into_iter().collect()));
                if let Some(&(id, default)) = first.get(&queue) {
                    payload.first.push((queue, id, default));
                }
            }
        }
        for queue in changed {
            if size + 24 > MAX_PAYLOAD {
                flush(&mut payload, &mut size);
            }
            size += 24;
            payload.changed.push(queue);
        }
        flush(&mut payload, &mut size);
        payloads
    }
}

/// Listens for the other nodes' changes and passes them to this node's feed, until `stop`
/// fires; reconnects when the connection drops, meanwhile waking pollers now and then.
pub(crate) async fn listen(
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    node: String,
    channel: String,
    feed: broadcast::Sender<Change>,
    floors: Arc<Floors>,
    stop: CancellationToken,
) {
    loop {
        let listened = tokio::select! {
            () = stop.cancelled() => return,
            outcome = listen_once(&config, tls.clone(), &node, &channel, &feed, &floors) => outcome,
        };
        if let Err(e) = listened {
            tracing::warn!(error = %e, "the change feed's connection to PostgreSQL dropped; reconnecting");
        }
        // Until listening again, pollers look every FALLBACK_POLL.
        pass(Change::Missed, &floors, &feed);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(FALLBACK_POLL) => {}
        }
    }
}

async fn listen_once(
    config: &tokio_postgres::Config,
    tls: MakeRustlsConnect,
    node: &str,
    channel: &str,
    feed: &broadcast::Sender<Change>,
    floors: &Floors,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(tls).await?;
    let (notifications, mut received) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if notifications.send(n.payload().to_owned()).is_err() {
                        return Ok(());
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    });
    client.batch_execute(&format!("LISTEN \"{channel}\"")).await?;
    // Changes committed while this node was not listening were missed.
    pass(Change::Missed, floors, feed);
    while let Some(text) = received.recv().await {
        match serde_json::from_str::<Payload>(&text) {
            Ok(payload) if payload.node == node => {}
            Ok(payload) => payload.deliver(floors, feed),
            Err(e) => {
                tracing::warn!(error = %e, "an unreadable change notification; waking every poller");
                pass(Change::Missed, floors, feed);
            }
        }
    }
    drop(client);
    match driver.await {
        Ok(outcome) => outcome,
        Err(_) => Ok(()),
    }
}
