//! The values the engine and the stores exchange: queues, messages, leases, work requests.
//! Stored forms derive serde so backends can keep the variable parts as JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;

/// A queue's numeric key inside the store (never shown to clients).
pub type QueueRow = i64;

/// Lifecycle states of a queue (OCI's seven values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LifecycleState {
    /// Being created.
    Creating,
    /// Being updated.
    Updating,
    /// Usable.
    Active,
    /// Being deleted.
    Deleting,
    /// Deleted.
    Deleted,
    /// Creation failed.
    Failed,
    /// Disabled.
    Inactive,
}

impl LifecycleState {
    /// The wire name, e.g. `ACTIVE`.
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleState::Creating => "CREATING",
            LifecycleState::Updating => "UPDATING",
            LifecycleState::Active => "ACTIVE",
            LifecycleState::Deleting => "DELETING",
            LifecycleState::Deleted => "DELETED",
            LifecycleState::Failed => "FAILED",
            LifecycleState::Inactive => "INACTIVE",
        }
    }

    /// Parses a wire name in any case.
    pub fn parse(value: &str) -> Option<Self> {
        let all = [
            LifecycleState::Creating,
            LifecycleState::Updating,
            LifecycleState::Active,
            LifecycleState::Deleting,
            LifecycleState::Deleted,
            LifecycleState::Failed,
            LifecycleState::Inactive,
        ];
        all.into_iter().find(|s| s.as_str().eq_ignore_ascii_case(value))
    }
}

/// The rules a queue applies to its messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuePolicy {
    /// How long a message lives, in seconds (fixed at creation).
    pub retention_secs: u32,
    /// Default lease length for GetMessages, in seconds.
    pub visibility_secs: u32,
    /// Default long-poll wait, in seconds.
    pub timeout_secs: u32,
    /// Deliveries after which an undeleted message is dead-lettered (0 = no DLQ).
    pub dead_letter_after: u32,
    /// Default delay before a new message becomes visible, in seconds (Berth extension).
    pub delivery_delay_secs: u32,
    /// Percent of the queue one channel may use (stored and reported).
    pub channel_consumption_limit: u32,
}

impl Default for QueuePolicy {
    fn default() -> Self {
        QueuePolicy {
            retention_secs: 86_400,
            visibility_secs: 30,
            timeout_secs: 30,
            dead_letter_after: 0,
            delivery_delay_secs: 0,
            channel_consumption_limit: 100,
        }
    }
}

/// The client-controlled description of a queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueSpec {
    /// Display name (need not be unique).
    pub display_name: String,
    /// Compartment OCID.
    pub compartment_id: String,
    /// Message rules.
    pub policy: QueuePolicy,
    /// KMS key OCID, stored and reported only.
    pub custom_encryption_key_id: Option<String>,
    /// Enabled capabilities, e.g. `LARGE_MESSAGES`.
    pub capabilities: Vec<String>,
    /// The primary consumer group's settings where the CONSUMER_GROUPS capability is
    /// added (read once, not kept: the group keeps them).
    #[serde(skip)]
    pub primary_consumer_group: Option<crate::consumer_group::ConsumerGroupDetails>,
    /// Free-form tags.
    pub freeform_tags: BTreeMap<String, String>,
    /// Defined tags.
    pub defined_tags: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
}

impl QueueSpec {
    /// Whether the queue has the CONSUMER_GROUPS capability (and so its primary group).
    pub fn has_consumer_groups(&self) -> bool {
        self.capabilities.iter().any(|c| c == crate::consumer_group::CONSUMER_GROUPS)
    }
}

/// A queue as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Queue {
    /// Store key.
    pub row: QueueRow,
    /// Queue OCID.
    pub id: String,
    /// Owning tenancy OCID.
    pub tenancy_id: String,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
    /// Lifecycle state.
    pub state: LifecycleState,
    /// Incremented on every change; the etag.
    pub version: i64,
    /// Everything the client chose.
    pub spec: QueueSpec,
}

/// Sort key for listing queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueSort {
    /// By creation time.
    TimeCreated,
    /// By display name.
    DisplayName,
}

/// Which queues to list.
#[derive(Debug, Clone)]
pub struct QueueFilter {
    /// Only this compartment.
    pub compartment_id: Option<String>,
    /// Only this state.
    pub state: Option<LifecycleState>,
    /// Only this exact display name.
    pub display_name: Option<String>,
    /// Only this queue OCID.
    pub id: Option<String>,
    /// Sort key.
    pub sort: QueueSort,
    /// Descending order.
    pub descending: bool,
}

/// A page of results plus the cursor to the next.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The results.
    pub items: Vec<T>,
    /// Opaque cursor for the next page, if any.
    pub next: Option<String>,
}

/// A message to publish, validated.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// UTF-8 content.
    pub content: String,
    /// Channel id, empty for the queue's default channel.
    pub channel: String,
    /// Custom properties.
    pub properties: Option<BTreeMap<String, String>>,
    /// Seconds before the message becomes visible (None = the queue's default).
    pub delay_secs: Option<u32>,
}

/// A message ready for the store: times resolved.
#[derive(Debug, Clone)]
pub struct MessageToStore {
    /// The message.
    pub message: NewMessage,
    /// Creation time.
    pub created_at: Timestamp,
    /// When retention removes it.
    pub expire_at: Timestamp,
    /// When it first becomes visible, if later than `created_at`.
    pub delayed_until: Option<Timestamp>,
}

/// A message handed out under a lease.
#[derive(Debug, Clone, PartialEq)]
pub struct LeasedMessage {
    /// Message id (below 2^53).
    pub id: i64,
    /// Content.
    pub content: String,
    /// Channel id, empty for the default channel.
    pub channel: String,
    /// Custom properties.
    pub properties: Option<BTreeMap<String, String>>,
    /// Deliveries so far, this one included.
    pub delivery_count: u32,
    /// Creation time.
    pub created_at: Timestamp,
    /// Retention end.
    pub expire_at: Timestamp,
    /// When the lease ends.
    pub visible_after: Timestamp,
    /// Identifies this lease among all leases of this message.
    pub lease_token: i64,
}

/// Names one lease of one message: what a receipt carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseRef {
    /// The queue.
    pub queue: QueueRow,
    /// The message.
    pub message_id: i64,
    /// The lease.
    pub lease_token: i64,
    /// Whether the message was leased from the dead letter queue.
    pub dead_letter: bool,
}

/// What to lease.
#[derive(Debug, Clone)]
pub struct LeaseRequest {
    /// The queue.
    pub queue: QueueRow,
    /// Lease from the dead letter queue instead.
    pub dead_letter: bool,
    /// Only this channel (exact id); `None` serves all channels fairly.
    pub channel: Option<String>,
    /// At most this many messages.
    pub max_messages: u32,
    /// At most this many content bytes (at least one message is always returned).
    pub max_bytes: usize,
    /// The current time.
    pub now: Timestamp,
    /// When the leases end.
    pub visible_after: Timestamp,
}

/// What a peek lists: messages of one side of a queue from an id on, in id order.
#[derive(Debug, Clone)]
pub struct PeekRequest {
    /// The queue.
    pub queue: QueueRow,
    /// The dead letter queue instead.
    pub dead_letter: bool,
    /// Only this channel (exact id).
    pub channel: Option<String>,
    /// Leased messages too.
    pub in_flight: bool,
    /// Delayed messages too.
    pub delayed: bool,
    /// Only ids above this one (the previous page's last).
    pub after: i64,
    /// At most this many messages.
    pub limit: u32,
    /// The current time.
    pub now: Timestamp,
}

impl PeekRequest {
    /// Whether a message standing so, on the DLQ side or not, belongs in this peek.
    pub fn shows(&self, stands: crate::delivery::Standing, in_dead_letter_queue: bool) -> bool {
        use crate::delivery::Standing;
        in_dead_letter_queue == self.dead_letter
            && match stands {
                Standing::Visible => true,
                Standing::InFlight => self.in_flight,
                Standing::Delayed => self.delayed,
            }
    }
}

/// A message as a peek shows it: no receipt, nothing changed by looking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeekedMessage {
    /// Message id.
    pub id: i64,
    /// Content.
    pub content: String,
    /// Channel id, empty for the default channel.
    pub channel: String,
    /// Custom properties.
    pub properties: Option<BTreeMap<String, String>>,
    /// Deliveries so far.
    pub delivery_count: u32,
    /// Creation time.
    pub created_at: Timestamp,
    /// Retention end.
    pub expire_at: Timestamp,
    /// When it became or becomes visible (its lease or delay end).
    pub visible_at: Timestamp,
    /// Where it stands now.
    pub standing: crate::delivery::Standing,
}

/// Message counts of one queue or DLQ.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessageCounts {
    /// Deliverable now.
    pub visible: u64,
    /// Leased and not yet deleted or expired.
    pub in_flight: u64,
    /// Not yet visible because of a delivery delay.
    pub delayed: u64,
    /// Content bytes of visible and in-flight messages.
    pub size_bytes: u64,
}

/// GetStats result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// The queue itself.
    pub queue: MessageCounts,
    /// Its dead letter queue.
    pub dead_letter: MessageCounts,
}

/// Which messages PurgeQueue removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PurgeTarget {
    /// The queue only.
    Normal,
    /// The DLQ only.
    DeadLetter,
    /// Both.
    Both,
}

/// Kinds of asynchronous operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OperationType {
    /// CreateQueue.
    CreateQueue,
    /// UpdateQueue.
    UpdateQueue,
    /// DeleteQueue.
    DeleteQueue,
    /// ChangeQueueCompartment.
    MoveQueue,
    /// PurgeQueue.
    PurgeQueue,
    /// CreateConsumerGroup.
    CreateConsumerGroup,
    /// UpdateConsumerGroup.
    UpdateConsumerGroup,
    /// DeleteConsumerGroup.
    DeleteConsumerGroup,
}

/// Status of a work request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkStatus {
    /// Accepted.
    Accepted,
    /// Running.
    InProgress,
    /// Failed.
    Failed,
    /// Done.
    Succeeded,
}

/// What a work request did to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ActionType {
    /// Created it.
    Created,
    /// Changed it.
    Updated,
    /// Deleted it.
    Deleted,
    /// Still working on it.
    InProgress,
    /// Touched it otherwise.
    Related,
}

/// A resource a work request acted on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkResource {
    /// e.g. `queue`.
    pub entity_type: String,
    /// What was done.
    pub action_type: ActionType,
    /// The resource OCID.
    pub identifier: String,
    /// Path a client can GET.
    pub entity_uri: String,
}

/// A log line or error of a work request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkEntry {
    /// Error code (empty for log lines).
    pub code: String,
    /// Text.
    pub message: String,
    /// When.
    pub timestamp: Timestamp,
}

/// The record of an asynchronous control-plane operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkRequest {
    /// Work request OCID.
    pub id: String,
    /// Owning tenancy.
    pub tenancy_id: String,
    /// Compartment of the affected resource.
    pub compartment_id: String,
    /// What kind of operation.
    pub operation: OperationType,
    /// Where it stands.
    pub status: WorkStatus,
    /// Resources it touched.
    pub resources: Vec<WorkResource>,
    /// Percent done.
    pub percent_complete: f32,
    /// Accepted at.
    pub accepted_at: Timestamp,
    /// Started at.
    pub started_at: Option<Timestamp>,
    /// Finished at.
    pub finished_at: Option<Timestamp>,
    /// Progress log.
    pub logs: Vec<WorkEntry>,
    /// Errors, if it failed.
    pub errors: Vec<WorkEntry>,
}

/// A tenancy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenancy {
    /// Tenancy OCID.
    pub id: String,
    /// Unique name (used in STOMP logins).
    pub name: String,
}

/// A user with an API signing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// User OCID.
    pub id: String,
    /// Tenancy OCID.
    pub tenancy_id: String,
    /// Name, unique within the tenancy.
    pub name: String,
    /// Key fingerprint (MD5 of the SubjectPublicKeyInfo, colon-separated hex).
    pub fingerprint: String,
    /// RSA public key, PKCS#1 DER.
    pub public_key_der: Vec<u8>,
    /// SHA-256 of the STOMP passcode, hex.
    pub stomp_passcode_sha256: String,
}
