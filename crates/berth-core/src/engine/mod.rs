//! [`Engine`]: the queue rules around store calls, shared by every protocol edge.
//! The tenancy is an argument of every operation, so isolation is checked in one place.

mod consumer_groups;
mod counters;
mod messages;
mod queues;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::consumer_group::ConsumerGroup;
use crate::error::QueueError;
use crate::model::Queue;
use crate::receipt::ReceiptKey;
use crate::store::{Store, SweepReport};
use crate::wakeup::Wakeups;
use counters::Counters;

pub use consumer_groups::{ConsumerGroupChange, Target};
pub use counters::MessageTotals;
pub use messages::{Delivered, GetMessages, Peek, PutResult};
pub use queues::{page_window, paged, spec_with_defaults, PolicyValues, QueueChange, PURGE_BATCH};

/// A queue's state for metrics.
#[derive(Debug, Clone)]
pub struct QueueMetrics {
    /// Its tenancy's name.
    pub tenancy_name: String,
    /// The queue.
    pub queue: Queue,
    /// Its counts now.
    pub stats: crate::model::QueueStats,
    /// What this engine moved through it since start.
    pub totals: MessageTotals,
    /// Its consumer groups with their counts now and what this engine moved through them,
    /// the primary group's (`stats`, `totals` but for puts) included, when asked for.
    pub groups: Vec<(ConsumerGroup, crate::model::QueueStats, MessageTotals)>,
}

/// The queue engine.
pub struct Engine {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    receipts: ReceiptKey,
    wakeups: Arc<Wakeups>,
    /// Long polls waiting right now (found nothing and sleep until woken or timed out).
    waiting_polls: AtomicUsize,
    /// Messages moved through this engine, per queue.
    counters: Counters,
    region: String,
    shutdown: CancellationToken,
    queues: Cache<Queue>,
    groups: Cache<ConsumerGroup>,
}

/// Queues and consumer groups as recently read from the store. Data-plane calls look
/// theirs up on every request; this saves a store read each time. The store stays the
/// truth: entries live [`Cache::TTL`], and this node's own changes drop them at once, so
/// another node's change reaches this one within the TTL.
struct Cache<V> {
    // std Mutex: held only to copy an entry, never across an await.
    entries: Mutex<HashMap<(String, String), (V, Instant)>>,
}

impl<V> Default for Cache<V> {
    fn default() -> Self {
        Cache { entries: Mutex::new(HashMap::new()) }
    }
}

impl<V: Clone> Cache<V> {
    const TTL: Duration = Duration::from_secs(1);
    const MAX_ENTRIES: usize = 10_000;

    fn get(&self, tenancy_id: &str, id: &str) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (value, at) = entries.get(&(tenancy_id.to_owned(), id.to_owned()))?;
        (at.elapsed() < Self::TTL).then(|| value.clone())
    }

    fn put(&self, tenancy_id: &str, id: &str, value: &V) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= Self::MAX_ENTRIES {
            entries.retain(|_, (_, at)| at.elapsed() < Self::TTL);
        }
        entries.insert((tenancy_id.to_owned(), id.to_owned()), (value.clone(), Instant::now()));
    }

    fn forget(&self, tenancy_id: &str, id: &str) {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).remove(&(tenancy_id.to_owned(), id.to_owned()));
    }
}

impl Engine {
    /// An engine over `store`. `shutdown` ends waiting long polls early.
    ///
    /// # Errors
    /// When the store cannot give the receipt secret.
    pub async fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        region: String,
        shutdown: CancellationToken,
    ) -> Result<Self, QueueError> {
        let receipts = ReceiptKey::new(&store.receipt_secret().await?);
        let wakeups = Arc::new(Wakeups::default());
        tokio::spawn(wakeups.clone().follow(store.changes(), shutdown.clone()));
        Ok(Engine {
            store,
            clock,
            receipts,
            wakeups,
            waiting_polls: AtomicUsize::new(0),
            counters: Counters::default(),
            region,
            shutdown,
            queues: Cache::default(),
            groups: Cache::default(),
        })
    }

    /// Long polls of this engine waiting right now, having found nothing.
    pub fn waiting_polls(&self) -> usize {
        self.waiting_polls.load(Ordering::Relaxed)
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The region used in new OCIDs.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// One background sweep of the store (retention, ended leases, deleted queues) of at
    /// most `batch` rows per kind of work.
    ///
    /// # Errors
    /// A store failure.
    pub async fn sweep(&self, batch: u32) -> Result<SweepReport, QueueError> {
        Ok(self.store.sweep(self.clock.now(), batch).await?)
    }

    /// The store's upkeep that must stay off the commit path (SQLite: WAL checkpoints).
    ///
    /// # Errors
    /// A store failure.
    pub async fn housekeeping(&self) -> Result<(), QueueError> {
        Ok(self.store.housekeeping().await?)
    }

    /// Every live queue with its tenancy's name, counts as of now and what this engine
    /// moved through it (for metrics; one store read per queue), and with
    /// `consumer_groups` its groups' counts (one more per group but the primary).
    ///
    /// # Errors
    /// A store failure.
    pub async fn queue_metrics(&self, consumer_groups: bool) -> Result<Vec<QueueMetrics>, QueueError> {
        let now = self.clock.now();
        let mut out = Vec::new();
        for (tenancy_name, queue) in self.store.all_live_queues().await? {
            let stats = self.store.stats(queue.row, None, now).await?;
            let totals = self.counters.totals(&queue.id);
            let mut groups = Vec::new();
            if consumer_groups && queue.spec.has_consumer_groups() {
                for group in self.groups_of(&queue).await? {
                    // The primary group's stream is the queue's own, and so are its tallies.
                    let (stats, totals) = match group.stream == queue.row {
                        true => (stats, totals),
                        false => (self.store.stats(group.stream, None, now).await?, self.counters.totals(&group.id)),
                    };
                    groups.push((group, stats, totals));
                }
            }
            out.push(QueueMetrics { tenancy_name, queue, stats, totals, groups });
        }
        Ok(out)
    }

    /// Whether this node can serve writes (its store can write).
    ///
    /// # Errors
    /// The store's failure, `Unavailable` when it cannot write.
    pub async fn health(&self) -> Result<(), QueueError> {
        Ok(self.store.check_writable().await?)
    }

    /// A live queue of the tenancy, from the cache when fresh.
    async fn active_queue(&self, tenancy_id: &str, queue_id: &str) -> Result<Queue, QueueError> {
        if let Some(queue) = self.queues.get(tenancy_id, queue_id) {
            return Ok(queue);
        }
        let queue = self.store.queue(tenancy_id, queue_id).await?.ok_or(QueueError::QueueNotFound)?;
        self.queues.put(tenancy_id, queue_id, &queue);
        Ok(queue)
    }
}
