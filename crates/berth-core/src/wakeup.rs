//! Per-queue wakeups for long polls. A hint only: a woken poller asks the store again,
//! so an extra wakeup costs a query, never a message.
//!
//! New messages wake as many waiting pollers as there are messages, not all of them: with
//! many consumers on a quiet queue, waking every one for each message made each message
//! cost one empty lease per consumer. Pollers that filter on a channel or read the dead
//! letter side wait apart, so a wakeup meant for the main stream is never spent on them.
//! A `Notified` dropped after `notify_one` chose it passes the wakeup on (tokio's
//! contract), so a poller that leaves without waiting does not swallow one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, Notify};
use tokio_util::sync::CancellationToken;

use crate::model::QueueRow;
use crate::store::Change;

/// What a poller waits for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Interest {
    pub(crate) dead_letter: bool,
    pub(crate) channel: Option<String>,
}

#[derive(Default)]
pub(crate) struct Wakeups {
    // std Mutex: held only to clone an Arc, never across an await.
    queues: Mutex<HashMap<QueueRow, HashMap<Interest, Arc<Notify>>>>,
}

/// Interests kept per queue before unused ones are dropped.
const MAX_INTERESTS: usize = 64;

impl Wakeups {
    /// The notifier for an interest; pollers call `notified()` on it before asking the store.
    pub(crate) fn of(&self, queue: QueueRow, interest: Interest) -> Arc<Notify> {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let interests = queues.entry(queue).or_default();
        if interests.len() >= MAX_INTERESTS && !interests.contains_key(&interest) {
            interests.retain(|_, notify| Arc::strong_count(notify) > 1);
        }
        interests.entry(interest).or_default().clone()
    }

    /// Messages became ready on the main side: `count` unfiltered pollers and every
    /// poller of those channels.
    pub(crate) fn ready(&self, queue: QueueRow, count: usize, channels: &[String]) {
        let queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let Some(interests) = queues.get(&queue) else { return };
        if let Some(any) = interests.get(&Interest { dead_letter: false, channel: None }) {
            for _ in 0..count {
                any.notify_one();
            }
        }
        for channel in channels {
            let interest = Interest { dead_letter: false, channel: Some(channel.clone()) };
            if let Some(notify) = interests.get(&interest) {
                notify.notify_waiters();
            }
        }
    }

    /// Wakes every poller of a queue (messages released or moved, or delays changed).
    pub(crate) fn wake_all(&self, queue: QueueRow) {
        let queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        for notify in queues.get(&queue).into_iter().flat_map(HashMap::values) {
            notify.notify_waiters();
        }
    }

    /// Wakes pollers as the store's change feed says, until it closes or `stop` fires.
    pub(crate) async fn follow(self: Arc<Self>, mut feed: broadcast::Receiver<Change>, stop: CancellationToken) {
        loop {
            let change = tokio::select! {
                change = feed.recv() => change,
                () = stop.cancelled() => return,
            };
            match change {
                Ok(Change::Ready { queue, count, channels }) => self.ready(queue, count, &channels),
                Ok(Change::Changed { queue }) => self.wake_all(queue),
                Ok(Change::Missed) => self.wake_every_queue(),
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "long-poll wakeups fell behind the store's changes; waking every poller");
                    self.wake_every_queue();
                }
                Err(RecvError::Closed) => return,
            }
        }
    }

    fn wake_every_queue(&self) {
        let queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        for notify in queues.values().flat_map(HashMap::values) {
            notify.notify_waiters();
        }
    }

    /// Forgets a deleted queue, waking its pollers.
    pub(crate) fn forget(&self, queue: QueueRow) {
        let removed = self.queues.lock().unwrap_or_else(|e| e.into_inner()).remove(&queue);
        for notify in removed.into_iter().flat_map(HashMap::into_values) {
            notify.notify_waiters();
        }
    }
}
