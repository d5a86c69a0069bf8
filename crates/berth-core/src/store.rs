//! The storage port. Backends (SQLite now, PostgreSQL later) implement [`Store`].
//!
//! Every method is atomic. Leasing and lease checks happen inside the store, so that
//! stateless nodes may share one (PostgreSQL); a backend that keeps state in memory must be
//! the only process serving its data (the SQLite store locks its database for that).
//! Time is always passed in (`now`); backends never read a clock.

use async_trait::async_trait;

use crate::clock::Timestamp;
use crate::error::{QueueError, StoreError};
use crate::model::{
    LeaseRef, LeaseRequest, LeasedMessage, MessageToStore, PurgeTarget, Queue, QueueFilter, QueueRow, QueueSpec,
    QueueStats, Tenancy, User, WorkRequest,
};

/// Result of a store call.
pub type StoreResult<T> = Result<T, StoreError>;

/// A queue to insert.
#[derive(Debug, Clone)]
pub struct NewQueue {
    /// Queue OCID.
    pub id: String,
    /// Owning tenancy.
    pub tenancy_id: String,
    /// Client's choices.
    pub spec: QueueSpec,
    /// Creation time.
    pub now: Timestamp,
}

/// An `opc-retry-token` and a digest of the request it came with.
#[derive(Debug, Clone)]
pub struct RetryToken {
    /// The token.
    pub token: String,
    /// Digest of the request body, to tell a retry from a different request.
    pub request_digest: String,
    /// Tokens older than this are forgotten.
    pub expires_at: Timestamp,
}

/// Outcome of [`Store::create_queue`].
#[derive(Debug, Clone)]
pub enum Created {
    /// The queue was created; here is its work request.
    New(WorkRequest),
    /// The retry token was seen before with the same request: the earlier work request id.
    Replayed(String),
    /// The retry token was seen before with another request.
    TokenConflict,
}

/// For bulk operations: settle expired leases as of `now` first (so messages due for the
/// DLQ are on the right side), then touch at most `batch` rows.
#[derive(Debug, Clone, Copy)]
pub struct Settle {
    /// The current time.
    pub now: Timestamp,
    /// The queue's dead-letter threshold.
    pub dead_letter_after: u32,
    /// Most rows to touch.
    pub batch: u32,
}

/// What a lease call did.
#[derive(Debug, Clone, Default)]
pub struct Leased {
    /// The messages leased, in order.
    pub messages: Vec<LeasedMessage>,
    /// Expired leases the call ended on the way (released or dead-lettered): messages that
    /// became ready without a put announcing them.
    pub settled: u64,
    /// When nothing was leased: the earliest time a leased or delayed message of the queue
    /// becomes visible (answered in the same call, so an empty poll costs one round trip).
    pub next_visible_at: Option<Timestamp>,
}

/// What one background sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Messages removed because their retention ended.
    pub expired: u64,
    /// Expired leases returned to their queue.
    pub released: u64,
    /// Messages moved to a dead letter queue.
    pub dead_lettered: u64,
    /// Rows removed from deleted queues, and work requests past their retention.
    pub reclaimed: u64,
    /// Queues with leases released or dead-lettered, whose waiting pollers should look again.
    pub settled_queues: Vec<QueueRow>,
}

impl SweepReport {
    /// Whether the sweep found a full batch of work somewhere (so more may remain).
    pub fn total(&self) -> u64 {
        self.expired + self.released + self.dead_lettered + self.reclaimed
    }
}

/// The storage backend.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // ---- identity ----

    /// The secret receipts are signed with (created with the store).
    async fn receipt_secret(&self) -> StoreResult<Vec<u8>>;
    /// The tenancy with this name, created with `new_id` if absent.
    async fn ensure_tenancy(&self, name: &str, new_id: &str) -> StoreResult<Tenancy>;
    /// The tenancy with this name.
    async fn tenancy_by_name(&self, name: &str) -> StoreResult<Option<Tenancy>>;
    /// Adds a user; fails if the name is taken in its tenancy.
    async fn insert_user(&self, user: &User) -> StoreResult<()>;
    /// The user with this API key.
    async fn user_by_key(&self, tenancy_id: &str, user_id: &str, fingerprint: &str) -> StoreResult<Option<User>>;
    /// The user with this name in the named tenancy.
    async fn user_by_name(&self, tenancy_name: &str, user_name: &str) -> StoreResult<Option<User>>;

    // ---- queues and work requests ----

    /// Inserts a queue and its work request, honouring a retry token atomically.
    async fn create_queue(&self, queue: NewQueue, work: WorkRequest, retry: Option<RetryToken>)
        -> StoreResult<Created>;
    /// A queue of this tenancy that is not deleted.
    async fn queue(&self, tenancy_id: &str, id: &str) -> StoreResult<Option<Queue>>;
    /// Queues of a tenancy, filtered and sorted, `limit` from `offset`.
    async fn list_queues(
        &self,
        tenancy_id: &str,
        filter: &QueueFilter,
        offset: u64,
        limit: u32,
    ) -> StoreResult<Vec<Queue>>;
    /// Replaces a queue's row if its version is still `expected_version`, and records `work`.
    /// Returns false (and changes nothing) if the version moved on.
    async fn save_queue(&self, queue: &Queue, expected_version: i64, work: &WorkRequest) -> StoreResult<bool>;
    /// Records a work request that changes no queue row (e.g. a purge).
    async fn insert_work_request(&self, work: &WorkRequest) -> StoreResult<()>;
    /// A work request of this tenancy.
    async fn work_request(&self, tenancy_id: &str, id: &str) -> StoreResult<Option<WorkRequest>>;
    /// Work requests of a tenancy, newest first.
    async fn list_work_requests(
        &self,
        tenancy_id: &str,
        compartment_id: Option<&str>,
        id: Option<&str>,
        offset: u64,
        limit: u32,
    ) -> StoreResult<Vec<WorkRequest>>;

    // ---- messages ----

    /// Appends messages in order; returns their ids. Fails with `LimitExceeded` when a new
    /// channel would exceed `max_channels` (nothing is stored then).
    async fn put_messages(
        &self,
        queue: QueueRow,
        messages: Vec<MessageToStore>,
        max_channels: u32,
    ) -> Result<Vec<i64>, QueueError>;
    /// Releases expired leases of the queue (dead-lettering as the request says), then leases
    /// up to `max_messages` visible, unexpired messages, oldest first per channel; with none,
    /// says when the next one becomes visible.
    async fn lease(&self, request: LeaseRequest) -> StoreResult<Leased>;
    /// Moves each current lease's end to its new time; false where the lease is not current.
    async fn extend_leases(&self, leases: Vec<(LeaseRef, Timestamp)>, now: Timestamp) -> StoreResult<Vec<bool>>;
    /// Deletes each message whose lease is current; false where it is not.
    async fn delete_leased(&self, leases: Vec<LeaseRef>, now: Timestamp) -> StoreResult<Vec<bool>>;
    /// Message counts of the queue and its DLQ, optionally of one channel.
    async fn stats(
        &self,
        queue: QueueRow,
        channel: Option<&str>,
        now: Timestamp,
        dead_letter_after: u32,
    ) -> StoreResult<QueueStats>;
    /// Ids of non-empty channels (queue or DLQ) starting with `prefix`, after `after`, sorted.
    async fn channels(
        &self,
        queue: QueueRow,
        prefix: Option<&str>,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<String>>;
    /// Settles expired leases, then deletes up to `settle.batch` messages of the target;
    /// returns how many (0 = done).
    async fn purge(
        &self,
        queue: QueueRow,
        target: PurgeTarget,
        channels: Option<Vec<String>>,
        settle: Settle,
    ) -> StoreResult<u64>;
    /// Settles expired leases, then moves up to `settle.batch` DLQ messages back to the queue
    /// with delivery count 0; returns how many.
    async fn redrive(&self, queue: QueueRow, channels: Option<Vec<String>>, settle: Settle) -> StoreResult<u64>;
    /// One bounded round of background work across all queues.
    async fn sweep(&self, now: Timestamp, batch: u32) -> StoreResult<SweepReport>;
    /// Backend upkeep that must stay off the commit path (SQLite: WAL checkpoints).
    async fn housekeeping(&self) -> StoreResult<()> {
        Ok(())
    }
    /// Whether the store can carry out writes now (`/health`): `Unavailable` when it cannot.
    async fn check_writable(&self) -> StoreResult<()>;
    /// Flushes and closes; later calls fail.
    async fn close(&self) -> StoreResult<()>;
}
