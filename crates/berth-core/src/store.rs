//! The storage port. Backends (SQLite now, PostgreSQL later) implement [`Store`].
//!
//! Every method is atomic. Leasing and lease checks happen inside the store, so that
//! stateless nodes may share one (PostgreSQL); a backend that keeps state in memory must be
//! the only process serving its data (the SQLite store locks its database for that).
//! Time is always passed in (`now`); backends never read a clock.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::clock::Timestamp;
use crate::consumer_group::{ConsumerGroup, ConsumerGroupFilter, NewConsumerGroup};
use crate::error::StoreError;
use crate::model::{
    LeaseRef, LeaseRequest, LeasedMessage, MessageToStore, PeekRequest, PeekedMessage, PurgeTarget, Queue, QueueFilter,
    QueueRow, QueueSpec, QueueStats, Tenancy, User, WorkRequest,
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
    /// Its primary consumer group, created with it (its `queue_row` is not known yet: the
    /// store uses the row it gives the queue).
    pub primary_group: Option<NewConsumerGroup>,
}

/// What a queue change does to its primary consumer group, in the same transaction.
#[derive(Debug, Clone)]
pub enum PrimaryGroup {
    /// The queue gets its primary group; the change is refused if it has one already.
    New(NewConsumerGroup),
    /// The primary group changes; refused if its version moved on or another live group
    /// of the queue has its new display name.
    Changed {
        /// The group as it will be.
        group: ConsumerGroup,
        /// The version it was read at.
        expected_version: i64,
    },
}

impl PrimaryGroup {
    /// Whether it may apply to a queue whose live groups are `groups`.
    pub fn allowed(&self, groups: &[ConsumerGroup]) -> bool {
        match self {
            PrimaryGroup::New(_) => !groups.iter().any(|g| g.primary),
            PrimaryGroup::Changed { group, expected_version } => {
                groups.iter().any(|g| g.row == group.row && g.version == *expected_version)
                    && !crate::consumer_group::name_taken(groups, &group.spec.display_name, Some(group.row))
            }
        }
    }
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

/// Outcome of a create with a retry token ([`Store::create_queue`]).
#[derive(Debug, Clone)]
pub enum Created {
    /// Created; here is its work request.
    New(WorkRequest),
    /// The retry token was seen before with the same request: the earlier work request id.
    Replayed(String),
    /// The retry token was seen before with another request.
    TokenConflict,
}

/// Outcome of [`Store::create_consumer_group`].
#[derive(Debug, Clone)]
pub enum GroupCreated {
    /// Created, or answered by its retry token.
    Done(Created),
    /// Nothing changed: a live consumer group of the queue has this display name.
    NameTaken,
    /// Nothing changed: the group's queue is deleted.
    QueueGone,
    /// Nothing changed: the queue has [`crate::limits::MAX_CONSUMER_GROUPS`] groups.
    TooMany,
}

/// Outcome of [`Store::save_consumer_group`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupSaved {
    /// Saved, with its work request.
    Saved,
    /// Nothing changed: the version moved on.
    VersionMoved,
    /// Nothing changed: another live group of the queue has the new display name.
    NameTaken,
}

/// For bulk operations: settle expired leases as of `now` first (so messages due for the
/// DLQ are on the right side, by the queue's threshold as the store holds it), then touch
/// at most `batch` rows.
#[derive(Debug, Clone, Copy)]
pub struct Settle {
    /// The current time.
    pub now: Timestamp,
    /// Most rows to touch.
    pub batch: u32,
}

/// What a commit changed that waiting long polls care about, announced by the store on its
/// change feed ([`Store::changes`]) once the commit is durable, to every node serving the
/// store. A hint: a woken poller asks the store again, so a spurious change costs a query,
/// and a lost one (a lagging feed) only delays a poll until it looks again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Messages became ready on the main side of the queue.
    Ready {
        /// The queue.
        queue: QueueRow,
        /// How many (as many unfiltered pollers wake).
        count: usize,
        /// The named channels among them (their pollers wake).
        channels: Vec<String>,
    },
    /// Messages of the queue became ready, or their visibility moved, some other way (ended
    /// leases released or dead-lettered, a lease given back, a redrive, a delayed put):
    /// every poller of the queue looks again.
    Changed {
        /// The queue.
        queue: QueueRow,
    },
    /// Changes may have been missed (the store could not follow other nodes for a while):
    /// every poller of every queue looks again.
    Missed,
}

impl Change {
    /// What a put of these messages announces.
    pub fn of_put<'a>(queue: QueueRow, messages: impl IntoIterator<Item = &'a MessageToStore>) -> Change {
        let (mut count, mut channels) = (0, Vec::new());
        for m in messages {
            if m.delayed_until.is_some() {
                // Sleeping pollers timed their sleep before this delay existed.
                return Change::Changed { queue };
            }
            count += 1;
            if !m.message.channel.is_empty() {
                channels.push(m.message.channel.clone());
            }
        }
        channels.sort_unstable();
        channels.dedup();
        Change::Ready { queue, count, channels }
    }

    /// What a fanned-out put changed: each stream's share of it, as [`Change::of_put`].
    pub fn of_fanned_put(targets: &[(QueueRow, Vec<usize>)], messages: &[MessageToStore]) -> Vec<Change> {
        let share = |positions: &[usize]| positions.iter().map(|&at| &messages[at]).collect::<Vec<_>>();
        targets.iter().map(|(stream, positions)| Change::of_put(*stream, share(positions))).collect()
    }
}

/// Changes announced at once before a slow follower misses some (it then wakes every poller).
pub const CHANGE_FEED_CAPACITY: usize = 4096;

/// What a put did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Stored, in order; their ids.
    Stored(Vec<i64>),
    /// Nothing stored: a new channel would exceed the queue's channel limit.
    ChannelsFull,
}

/// What a lease call did.
#[derive(Debug, Clone, Default)]
pub struct Leased {
    /// The messages leased, in order.
    pub messages: Vec<LeasedMessage>,
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
}

impl SweepReport {
    /// Whether the sweep found a full batch of work somewhere (so more may remain).
    pub fn total(&self) -> u64 {
        self.expired + self.released + self.dead_lettered + self.reclaimed
    }
}

/// Messages a store's own rules moved out of a queue's way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    /// Removed: their retention ended.
    pub expired: u64,
    /// Moved to the dead letter queue: their last delivery ended undeleted.
    pub dead_lettered: u64,
}

/// Told what a store did, for metrics: called after each commit on the thread or task that
/// committed, so it must be cheap and must not block.
pub trait StoreObserver: Send + Sync + 'static {
    /// A transaction committed, carrying `writes` (a SQLite group commit carries several
    /// requests' writes); its COMMIT took `took`.
    fn committed(&self, writes: usize, took: std::time::Duration);
    /// Retention and the dead-letter rule moved messages of a queue.
    fn settled(&self, queue: QueueRow, moved: Moved);
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
    /// Adds a user, unless the name is taken in its tenancy: whether it did.
    async fn insert_user(&self, user: &User) -> StoreResult<bool>;
    /// The user with this API key.
    async fn user_by_key(&self, tenancy_id: &str, user_id: &str, fingerprint: &str) -> StoreResult<Option<User>>;
    /// The user with this name in the named tenancy.
    async fn user_by_name(&self, tenancy_name: &str, user_name: &str) -> StoreResult<Option<User>>;

    /// Every tenancy, by name.
    async fn tenancies(&self) -> StoreResult<Vec<Tenancy>>;
    /// Every user of every tenancy, by tenancy id and name.
    async fn users(&self) -> StoreResult<Vec<User>>;

    // ---- queues and work requests ----

    /// Inserts a queue and its work request, honouring a retry token atomically.
    async fn create_queue(&self, queue: NewQueue, work: WorkRequest, retry: Option<RetryToken>)
        -> StoreResult<Created>;
    /// A queue of this tenancy that is not deleted.
    async fn queue(&self, tenancy_id: &str, id: &str) -> StoreResult<Option<Queue>>;
    /// Every live queue of every tenancy, with the tenancy's name (for metrics). Consumer
    /// groups are not queues: they are in none of the queue calls.
    async fn all_live_queues(&self) -> StoreResult<Vec<(String, Queue)>>;
    /// Queues of a tenancy, filtered and sorted, `limit` from `offset`.
    async fn list_queues(
        &self,
        tenancy_id: &str,
        filter: &QueueFilter,
        offset: u64,
        limit: u32,
    ) -> StoreResult<Vec<Queue>>;
    /// Replaces a queue's row if its version is still `expected_version`, applies `primary`
    /// and records `work`. Returns false (and changes nothing) if the version moved on or
    /// `primary` is refused. Its consumer groups follow: deleted with it, and those without
    /// a threshold of their own take its new one.
    async fn save_queue(
        &self,
        queue: &Queue,
        expected_version: i64,
        work: &WorkRequest,
        primary: Option<&PrimaryGroup>,
    ) -> StoreResult<bool>;
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

    // ---- consumer groups ----

    /// Inserts a consumer group of a live queue and its work request, honouring a retry
    /// token, unless a live group of the queue has its display name (in any case). A group
    /// gets the messages of every put answered after it was.
    async fn create_consumer_group(
        &self,
        group: NewConsumerGroup,
        work: WorkRequest,
        retry: Option<RetryToken>,
    ) -> StoreResult<GroupCreated>;
    /// A consumer group of this tenancy that is not deleted.
    async fn consumer_group(&self, tenancy_id: &str, id: &str) -> StoreResult<Option<ConsumerGroup>>;
    /// Consumer groups of a tenancy, filtered and sorted, `limit` from `offset`.
    async fn list_consumer_groups(
        &self,
        tenancy_id: &str,
        filter: &ConsumerGroupFilter,
        offset: u64,
        limit: u32,
    ) -> StoreResult<Vec<ConsumerGroup>>;
    /// Replaces a group's row if its version is still `expected_version`, and records
    /// `work`. A group saved DELETED leaves its stream to be reclaimed; a disabled one takes
    /// no new messages.
    async fn save_consumer_group(
        &self,
        group: &ConsumerGroup,
        expected_version: i64,
        work: &WorkRequest,
    ) -> StoreResult<GroupSaved>;

    // ---- messages ----

    /// Appends messages in order, unless a new channel would exceed `max_channels` in a
    /// stream. A queue with consumer groups fans them out by [`crate::consumer_group::fan_out`]
    /// over its enabled groups as they are at the commit, one body for every stream; the ids
    /// are the same in each.
    async fn put_messages(
        &self,
        queue: QueueRow,
        messages: Vec<MessageToStore>,
        max_channels: u32,
    ) -> StoreResult<Appended>;
    /// The change feed: what each commit from now on made ready, on any node.
    fn changes(&self) -> broadcast::Receiver<Change>;
    /// Releases expired leases of the queue (dead-lettering by the queue's threshold as the
    /// store holds it, read in the same transaction), then leases
    /// up to `max_messages` visible, unexpired messages, oldest first per channel; with none,
    /// says when the next one becomes visible.
    async fn lease(&self, request: LeaseRequest) -> StoreResult<Leased>;
    /// Moves each current lease's end to its new time; false where the lease is not current.
    async fn extend_leases(&self, leases: Vec<(LeaseRef, Timestamp)>, now: Timestamp) -> StoreResult<Vec<bool>>;
    /// Deletes each message whose lease is current; false where it is not.
    async fn delete_leased(&self, leases: Vec<LeaseRef>, now: Timestamp) -> StoreResult<Vec<bool>>;
    /// Message counts of the queue and its DLQ, optionally of one channel (an ended lease
    /// counts where settling it will put it, by the queue's threshold as the store holds it).
    async fn stats(&self, queue: QueueRow, channel: Option<&str>, now: Timestamp) -> StoreResult<QueueStats>;
    /// Messages of one side of a queue as [`crate::delivery::standing`] places them now, in
    /// id order, without leasing or changing them (bodies that cannot be read are left out).
    async fn peek(&self, request: PeekRequest) -> StoreResult<Vec<PeekedMessage>>;
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
    /// Backend upkeep that must stay off the commit path (SQLite: WAL checkpoints;
    /// PostgreSQL: vacuuming the messages table as its churn needs).
    async fn housekeeping(&self) -> StoreResult<()> {
        Ok(())
    }
    /// Whether the store can carry out writes now (`/health`): `Unavailable` when it cannot.
    async fn check_writable(&self) -> StoreResult<()>;
    /// Reports every later commit and settling to `observer` (one observer; a later call
    /// is ignored).
    fn observe(&self, observer: Arc<dyn StoreObserver>);
    /// Flushes and closes; later calls fail.
    async fn close(&self) -> StoreResult<()>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NewMessage;

    fn to_store(channel: &str, delayed: bool) -> MessageToStore {
        let message = NewMessage { content: "m".into(), channel: channel.into(), properties: None, delay_secs: None };
        let at = Timestamp(1_000);
        MessageToStore { message, created_at: at, expire_at: Timestamp(9_000), delayed_until: delayed.then_some(at) }
    }

    #[test]
    fn a_put_announces_its_count_and_named_channels_once_each_or_a_change_when_delayed() {
        let put = [to_store("b", false), to_store("", false), to_store("a", false), to_store("b", false)];
        let expected = Change::Ready { queue: 7, count: 4, channels: vec!["a".into(), "b".into()] };
        assert_eq!(Change::of_put(7, &put), expected);
        assert_eq!(Change::of_put(7, &[to_store("", false), to_store("a", true)]), Change::Changed { queue: 7 });
    }
}
