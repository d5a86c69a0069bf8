//! [`Engine`]: the queue rules around store calls, shared by every protocol edge.
//! The tenancy is an argument of every operation, so isolation is checked in one place.

mod messages;
mod queues;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::error::QueueError;
use crate::model::Queue;
use crate::receipt::ReceiptKey;
use crate::store::Store;
use crate::wakeup::Wakeups;

pub use messages::{Delivered, GetMessages, PutResult};
pub use queues::{page_window, paged, spec_with_defaults, PolicyValues, QueueChange, PURGE_BATCH};

/// The queue engine.
pub struct Engine {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    receipts: ReceiptKey,
    wakeups: Wakeups,
    region: String,
    shutdown: CancellationToken,
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
        Ok(Engine { store, clock, receipts, wakeups: Wakeups::default(), region, shutdown })
    }

    /// The store, for identity lookups at the edges.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The region used in new OCIDs.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// A live queue of the tenancy.
    async fn active_queue(&self, tenancy_id: &str, queue_id: &str) -> Result<Queue, QueueError> {
        self.store.queue(tenancy_id, queue_id).await?.ok_or(QueueError::QueueNotFound)
    }
}
