//! What this node tells once a transaction committed: its own pollers (the change feed),
//! the other nodes (by NOTIFY), its floors, and the store's observer.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use berth_core::model::QueueRow;
use berth_core::store::{Change, Moved, StoreObserver};
use tokio::sync::broadcast;

use super::feed;
use super::floors::Floors;

pub(crate) struct Node {
    pub(crate) changes: broadcast::Sender<Change>,
    pub(crate) feed: Arc<feed::Notifier>,
    /// Where this node's leases start scanning.
    pub(crate) floors: Arc<Floors>,
    pub(crate) observer: OnceLock<Arc<dyn StoreObserver>>,
}

impl Node {
    /// Announces changes once committed: to this node's pollers at once, to others' by NOTIFY.
    pub(crate) fn announce(&self, changes: Vec<Change>) {
        for change in changes {
            self.publish(feed::Pushed { change, first: None });
        }
    }

    /// Announces a committed put of messages with ids from `first` in these channels.
    pub(crate) fn announce_put(&self, queue: QueueRow, first: i64, channels: BTreeSet<&str>, change: Change) {
        self.floors.put(queue, first, &channels.iter().copied().collect::<Vec<_>>());
        self.publish(feed::Pushed { change, first: Some((first, channels.contains(""))) });
    }

    fn publish(&self, pushed: feed::Pushed) {
        self.floors.follow(&pushed.change);
        let _ = self.changes.send(pushed.change.clone());
        self.feed.push(pushed);
    }

    /// A transaction committed, carrying `writes` requests.
    pub(crate) fn committed(&self, writes: usize, took: Duration) {
        if let Some(observer) = self.observer.get() {
            observer.committed(writes, took);
        }
    }

    /// What settling moved, once committed.
    pub(crate) fn report(&self, moved: &HashMap<QueueRow, Moved>) {
        if let Some(observer) = self.observer.get() {
            for (queue, moved) in moved {
                observer.settled(*queue, *moved);
            }
        }
    }
}

/// `Changed` once for each queue.
pub(crate) fn changed(queues: impl IntoIterator<Item = QueueRow>) -> Vec<Change> {
    let queues: BTreeSet<QueueRow> = queues.into_iter().collect();
    queues.into_iter().map(|queue| Change::Changed { queue }).collect()
}
