//! Wire types of the REST API with OCI's exact JSON names, and their mapping to the core.
//! Optional request fields are `Option` so that a missing required one gets a clear
//! `MissingParameter` instead of a serde message.

use std::collections::BTreeMap;

use berth_core::consumer_group::{ConsumerGroup, ConsumerGroupDetails, CONSUMER_GROUPS};
use berth_core::delivery::Standing;
use berth_core::engine::Delivered;
use berth_core::model::{MessageCounts, PeekedMessage, Queue, QueueStats, WorkEntry, WorkRequest};
use berth_core::Timestamp;
use serde::{Deserialize, Serialize};

/// RFC 3339 UTC with milliseconds, as OCI emits (`2018-04-20T00:00:07.405Z`).
pub fn time(at: Timestamp) -> String {
    humantime::format_rfc3339_millis(at.to_system_time()).to_string()
}

/// Tags as OCI models them.
pub type FreeformTags = BTreeMap<String, String>;
/// Defined tags as OCI models them.
pub type DefinedTags = BTreeMap<String, BTreeMap<String, serde_json::Value>>;

// ---------- data plane ----------

/// Berth extension: a message as a peek shows it (no receipt).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeekMessage {
    pub id: i64,
    pub content: String,
    pub delivery_count: u32,
    /// `VISIBLE`, `IN_FLIGHT` or `DELAYED`.
    pub state: &'static str,
    pub visible_after: String,
    pub expire_after: String,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<MessageMetadata>,
}

impl From<PeekedMessage> for PeekMessage {
    fn from(m: PeekedMessage) -> Self {
        PeekMessage {
            id: m.id,
            content: m.content,
            delivery_count: m.delivery_count,
            state: match m.standing {
                Standing::Visible => "VISIBLE",
                Standing::InFlight => "IN_FLIGHT",
                Standing::Delayed => "DELAYED",
            },
            visible_after: time(m.visible_at),
            expire_after: time(m.expire_at),
            created_at: time(m.created_at),
            metadata: metadata(m.channel, m.properties),
        }
    }
}

/// A message's metadata, absent when it has neither a channel nor properties.
fn metadata(channel: String, properties: Option<BTreeMap<String, String>>) -> Option<MessageMetadata> {
    (!channel.is_empty() || properties.is_some()).then(|| MessageMetadata {
        channel_id: (!channel.is_empty()).then_some(channel),
        custom_properties: properties,
    })
}

#[derive(Serialize)]
pub struct PeekResponse {
    pub messages: Vec<PeekMessage>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PutMessagesDetails {
    pub messages: Vec<PutMessagesEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PutMessagesEntry {
    pub content: String,
    pub metadata: Option<MessageMetadata>,
    /// Berth extension: seconds before the message becomes visible.
    pub delay_in_seconds: Option<i64>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageMetadata {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_properties: Option<BTreeMap<String, String>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PutMessages {
    pub messages: Vec<PutMessage>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PutMessage {
    pub id: i64,
    pub expire_after: String,
}

#[derive(Serialize)]
pub struct GetMessagesResponse {
    pub messages: Vec<GetMessage>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GetMessage {
    pub id: i64,
    pub content: String,
    pub receipt: String,
    pub delivery_count: u32,
    pub visible_after: String,
    pub expire_after: String,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<MessageMetadata>,
}

impl From<Delivered> for GetMessage {
    fn from(d: Delivered) -> Self {
        let m = d.message;
        let metadata = metadata(m.channel, m.properties);
        GetMessage {
            id: m.id,
            content: m.content,
            receipt: d.receipt,
            delivery_count: m.delivery_count,
            visible_after: time(m.visible_after),
            expire_after: time(m.expire_at),
            created_at: time(m.created_at),
            metadata,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateMessageDetails {
    pub visibility_in_seconds: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdatedMessage {
    pub id: i64,
    pub visible_after: String,
}

#[derive(Deserialize)]
pub struct UpdateMessagesDetails {
    pub entries: Vec<UpdateMessagesEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateMessagesEntry {
    pub receipt: String,
    pub visibility_in_seconds: i64,
}

#[derive(Deserialize)]
pub struct DeleteMessagesDetails {
    pub entries: Vec<DeleteMessagesEntry>,
}

#[derive(Deserialize)]
pub struct DeleteMessagesEntry {
    pub receipt: String,
}

/// Result of UpdateMessages / DeleteMessages: entries in request order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchResult<T: Serialize> {
    pub server_failures: u32,
    pub client_failures: u32,
    pub entries: Vec<BatchEntry<T>>,
}

/// One batch entry: the success value's fields, or an error.
#[derive(Serialize)]
#[serde(untagged)]
pub enum BatchEntry<T: Serialize> {
    Ok(T),
    #[serde(rename_all = "camelCase")]
    Failed {
        error_code: u16,
        error_message: String,
    },
}

/// A successful DeleteMessages entry: an empty object.
#[derive(Serialize)]
pub struct Empty {}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    pub visible_messages: u64,
    pub in_flight_messages: u64,
    pub size_in_bytes: u64,
    /// Berth extension: messages waiting out a delivery delay.
    pub delayed_messages: u64,
}

impl From<MessageCounts> for Counts {
    fn from(c: MessageCounts) -> Self {
        Counts {
            visible_messages: c.visible,
            in_flight_messages: c.in_flight,
            size_in_bytes: c.size_bytes,
            delayed_messages: c.delayed,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub queue: Counts,
    pub dlq: Counts,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer_group_id: Option<String>,
}

impl Stats {
    pub fn new(stats: QueueStats, channel_id: Option<String>, consumer_group_id: Option<String>) -> Self {
        Stats { queue: stats.queue.into(), dlq: stats.dead_letter.into(), channel_id, consumer_group_id }
    }
}

#[derive(Serialize)]
pub struct Collection<T: Serialize> {
    pub items: Vec<T>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RedriveDetails {
    pub channel_ids: Option<Vec<String>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Redriven {
    pub messages_moved: u64,
}

// ---------- control plane ----------

/// A capability in requests and in GetQueue (objects with `type`). CONSUMER_GROUPS
/// carries the primary group's settings when it is added; GetQueue leaves them out.
#[derive(Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Capability {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing)]
    pub is_primary_consumer_group_enabled: Option<bool>,
    #[serde(default, skip_serializing)]
    pub primary_consumer_group_display_name: Option<String>,
    #[serde(default, skip_serializing)]
    pub primary_consumer_group_filter: Option<String>,
    #[serde(default, skip_serializing)]
    pub primary_consumer_group_dead_letter_queue_delivery_count: Option<i64>,
}

impl Capability {
    /// The primary group's settings, if this adds consumer groups.
    pub fn primary_consumer_group(&self) -> Option<ConsumerGroupDetails> {
        (self.kind == CONSUMER_GROUPS).then(|| ConsumerGroupDetails {
            display_name: self.primary_consumer_group_display_name.clone(),
            filter: self.primary_consumer_group_filter.clone(),
            enabled: self.is_primary_consumer_group_enabled,
            dead_letter_after: self.primary_consumer_group_dead_letter_queue_delivery_count,
            ..ConsumerGroupDetails::default()
        })
    }
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateQueueDetails {
    pub display_name: Option<String>,
    pub compartment_id: Option<String>,
    pub retention_in_seconds: Option<i64>,
    pub visibility_in_seconds: Option<i64>,
    pub timeout_in_seconds: Option<i64>,
    pub channel_consumption_limit: Option<i64>,
    pub dead_letter_queue_delivery_count: Option<i64>,
    pub custom_encryption_key_id: Option<String>,
    pub capabilities: Option<Vec<Capability>>,
    pub freeform_tags: Option<FreeformTags>,
    pub defined_tags: Option<DefinedTags>,
    /// Berth extension: default delivery delay of new messages.
    pub delivery_delay_in_seconds: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateQueueDetails {
    pub display_name: Option<String>,
    pub visibility_in_seconds: Option<i64>,
    pub timeout_in_seconds: Option<i64>,
    pub channel_consumption_limit: Option<i64>,
    pub dead_letter_queue_delivery_count: Option<i64>,
    pub custom_encryption_key_id: Option<String>,
    pub capabilities: Option<Vec<Capability>>,
    pub freeform_tags: Option<FreeformTags>,
    pub defined_tags: Option<DefinedTags>,
    pub delivery_delay_in_seconds: Option<i64>,
    /// Not changeable; present only to refuse it clearly.
    pub retention_in_seconds: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeCompartmentDetails {
    pub compartment_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PurgeQueueDetails {
    pub purge_type: Option<String>,
    pub channel_ids: Option<Vec<String>>,
    pub consumer_group_id: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueBody {
    pub id: String,
    pub display_name: String,
    pub compartment_id: String,
    pub time_created: String,
    pub time_updated: String,
    pub lifecycle_state: &'static str,
    pub messages_endpoint: String,
    pub retention_in_seconds: u32,
    pub visibility_in_seconds: u32,
    pub timeout_in_seconds: u32,
    pub dead_letter_queue_delivery_count: u32,
    pub channel_consumption_limit: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_encryption_key_id: Option<String>,
    pub capabilities: Vec<Capability>,
    pub freeform_tags: FreeformTags,
    pub defined_tags: DefinedTags,
    pub system_tags: DefinedTags,
    /// Berth extension.
    pub delivery_delay_in_seconds: u32,
}

impl QueueBody {
    pub fn new(q: Queue, messages_endpoint: &str) -> Self {
        let s = q.spec;
        QueueBody {
            id: q.id,
            display_name: s.display_name,
            compartment_id: s.compartment_id,
            time_created: time(q.created_at),
            time_updated: time(q.updated_at),
            lifecycle_state: q.state.as_str(),
            messages_endpoint: messages_endpoint.to_owned(),
            retention_in_seconds: s.policy.retention_secs,
            visibility_in_seconds: s.policy.visibility_secs,
            timeout_in_seconds: s.policy.timeout_secs,
            dead_letter_queue_delivery_count: s.policy.dead_letter_after,
            channel_consumption_limit: s.policy.channel_consumption_limit,
            custom_encryption_key_id: s.custom_encryption_key_id,
            capabilities: s.capabilities.into_iter().map(|kind| Capability { kind, ..Capability::default() }).collect(),
            freeform_tags: s.freeform_tags,
            defined_tags: s.defined_tags,
            system_tags: DefinedTags::new(),
            delivery_delay_in_seconds: s.policy.delivery_delay_secs,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueSummary {
    pub id: String,
    pub display_name: String,
    pub compartment_id: String,
    pub time_created: String,
    pub time_updated: String,
    pub lifecycle_state: &'static str,
    pub messages_endpoint: String,
    /// Plain strings here, unlike GetQueue.
    pub capabilities: Vec<String>,
    pub freeform_tags: FreeformTags,
    pub defined_tags: DefinedTags,
    pub system_tags: DefinedTags,
}

impl QueueSummary {
    pub fn new(q: Queue, messages_endpoint: &str) -> Self {
        QueueSummary {
            id: q.id,
            display_name: q.spec.display_name,
            compartment_id: q.spec.compartment_id,
            time_created: time(q.created_at),
            time_updated: time(q.updated_at),
            lifecycle_state: q.state.as_str(),
            messages_endpoint: messages_endpoint.to_owned(),
            capabilities: q.spec.capabilities,
            freeform_tags: q.spec.freeform_tags,
            defined_tags: q.spec.defined_tags,
            system_tags: DefinedTags::new(),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkResourceBody {
    pub entity_type: String,
    pub action_type: berth_core::model::ActionType,
    pub identifier: String,
    pub entity_uri: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkRequestBody {
    pub id: String,
    pub operation_type: berth_core::model::OperationType,
    pub status: berth_core::model::WorkStatus,
    pub compartment_id: String,
    pub resources: Vec<WorkResourceBody>,
    pub percent_complete: f32,
    pub time_accepted: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_started: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_finished: Option<String>,
}

impl From<WorkRequest> for WorkRequestBody {
    fn from(w: WorkRequest) -> Self {
        WorkRequestBody {
            id: w.id,
            operation_type: w.operation,
            status: w.status,
            compartment_id: w.compartment_id,
            resources: w
                .resources
                .into_iter()
                .map(|r| WorkResourceBody {
                    entity_type: r.entity_type,
                    action_type: r.action_type,
                    identifier: r.identifier,
                    entity_uri: r.entity_uri,
                })
                .collect(),
            percent_complete: w.percent_complete,
            time_accepted: time(w.accepted_at),
            time_started: w.started_at.map(time),
            time_finished: w.finished_at.map(time),
        }
    }
}

#[derive(Serialize)]
pub struct WorkErrorBody {
    pub code: String,
    pub message: String,
    pub timestamp: String,
}

impl From<WorkEntry> for WorkErrorBody {
    fn from(e: WorkEntry) -> Self {
        WorkErrorBody { code: e.code, message: e.message, timestamp: time(e.timestamp) }
    }
}

#[derive(Serialize)]
pub struct WorkLogBody {
    pub message: String,
    pub timestamp: String,
}

impl From<WorkEntry> for WorkLogBody {
    fn from(e: WorkEntry) -> Self {
        WorkLogBody { message: e.message, timestamp: time(e.timestamp) }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateConsumerGroupDetails {
    pub display_name: Option<String>,
    pub queue_id: Option<String>,
    pub filter: Option<String>,
    pub is_enabled: Option<bool>,
    pub dead_letter_queue_delivery_count: Option<i64>,
    pub freeform_tags: Option<FreeformTags>,
    pub defined_tags: Option<DefinedTags>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateConsumerGroupDetails {
    pub display_name: Option<String>,
    pub filter: Option<String>,
    pub is_enabled: Option<bool>,
    pub dead_letter_queue_delivery_count: Option<i64>,
    pub freeform_tags: Option<FreeformTags>,
    pub defined_tags: Option<DefinedTags>,
}

/// GetConsumerGroup's body; `ConsumerGroupSummary` without the threshold.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerGroupBody {
    pub id: String,
    pub display_name: String,
    pub queue_id: String,
    pub time_created: String,
    pub time_updated: String,
    pub lifecycle_state: &'static str,
    pub filter: String,
    /// Absent: the queue's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter_queue_delivery_count: Option<u32>,
    pub freeform_tags: FreeformTags,
    pub defined_tags: DefinedTags,
    pub system_tags: DefinedTags,
}

impl ConsumerGroupBody {
    /// The body of GetConsumerGroup (`summary`: of an item of ListConsumerGroups).
    pub fn new(g: ConsumerGroup, summary: bool) -> Self {
        ConsumerGroupBody {
            id: g.id,
            display_name: g.spec.display_name,
            queue_id: g.queue_id,
            time_created: time(g.created_at),
            time_updated: time(g.updated_at),
            lifecycle_state: g.state.as_str(),
            filter: g.spec.filter,
            dead_letter_queue_delivery_count: g.spec.dead_letter_after.filter(|_| !summary),
            freeform_tags: g.spec.freeform_tags,
            defined_tags: g.spec.defined_tags,
            system_tags: DefinedTags::new(),
        }
    }
}
