//! Consumer groups: each reads its own copy of a queue's stream. A group's messages live in
//! a stream of their own (a [`QueueRow`] of the store, so every message rule applies to it
//! unchanged); the primary group's stream is the queue's own. A put is fanned out once, at
//! put time, by [`fan_out`]: bodies are stored once and shared by the streams.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::error::QueueError;
use crate::filter::{self, Filter};
use crate::limits;
use crate::model::{LifecycleState, MessageToStore, QueueRow};

/// The capability that gives a queue consumer groups.
pub const CONSUMER_GROUPS: &str = "CONSUMER_GROUPS";

/// Display name of the primary group when the client names none.
pub const PRIMARY_DISPLAY_NAME: &str = "Primary Consumer Group";

/// The client-controlled description of a consumer group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsumerGroupSpec {
    /// Display name, unique within its queue regardless of case.
    pub display_name: String,
    /// Filter text as given (empty: every message); see [`crate::filter`].
    pub filter: String,
    /// Disabled groups get no new messages (INACTIVE).
    pub enabled: bool,
    /// Deliveries before the dead letter queue; `None` follows the queue's.
    pub dead_letter_after: Option<u32>,
    /// Free-form tags.
    #[serde(default)]
    pub freeform_tags: BTreeMap<String, String>,
    /// Defined tags.
    #[serde(default)]
    pub defined_tags: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
}

impl ConsumerGroupSpec {
    /// The dead-letter threshold of the group's stream, given its queue's.
    pub fn dead_letter_after(&self, queue_threshold: u32) -> u32 {
        self.dead_letter_after.unwrap_or(queue_threshold)
    }
}

/// What a client chose for a new group, its numbers as given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConsumerGroupDetails {
    /// Display name (the primary group's defaults to "Primary Consumer Group").
    pub display_name: Option<String>,
    /// Filter (`None` or `""`: every message).
    pub filter: Option<String>,
    /// Enabled (default true).
    pub enabled: Option<bool>,
    /// Dead-letter threshold (`None`: the queue's).
    pub dead_letter_after: Option<i64>,
    /// Free-form tags.
    pub freeform_tags: BTreeMap<String, String>,
    /// Defined tags.
    pub defined_tags: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
}

impl ConsumerGroupDetails {
    /// The spec these details give, checked.
    ///
    /// # Errors
    /// `InvalidParameter` for a bad name, filter or threshold.
    pub fn spec(self, primary: bool) -> Result<ConsumerGroupSpec, QueueError> {
        let display_name = match self.display_name {
            Some(name) => name,
            None if primary => PRIMARY_DISPLAY_NAME.into(),
            None => return Err(QueueError::MissingParameter("displayName is required".into())),
        };
        let dead_letter_after = self.dead_letter_after.map(dead_letter_threshold).transpose()?;
        let spec = ConsumerGroupSpec {
            display_name,
            filter: self.filter.unwrap_or_default(),
            enabled: self.enabled.unwrap_or(true),
            dead_letter_after,
            freeform_tags: self.freeform_tags,
            defined_tags: self.defined_tags,
        };
        validate(&spec, primary)?;
        Ok(spec)
    }

    /// Applies the fields these details set to the primary group's spec, checked.
    ///
    /// # Errors
    /// `InvalidParameter` for a bad name, a filter or a bad threshold.
    pub fn apply_to_primary(&self, spec: &mut ConsumerGroupSpec) -> Result<(), QueueError> {
        if let Some(name) = &self.display_name {
            spec.display_name = name.clone();
        }
        if let Some(filter) = &self.filter {
            spec.filter = filter.clone();
        }
        if let Some(enabled) = self.enabled {
            spec.enabled = enabled;
        }
        if let Some(threshold) = self.dead_letter_after {
            spec.dead_letter_after = Some(dead_letter_threshold(threshold)?);
        }
        validate(spec, true)
    }
}

/// A client's dead-letter threshold, checked.
///
/// # Errors
/// `InvalidParameter` out of range.
pub fn dead_letter_threshold(value: i64) -> Result<u32, QueueError> {
    let most = limits::MAX_DEAD_LETTER_AFTER.into();
    limits::in_range("deadLetterQueueDeliveryCount", value, 0, most)
}

/// Checks every rule of a group's spec.
///
/// # Errors
/// `InvalidParameter` for a bad name or filter.
pub fn validate(spec: &ConsumerGroupSpec, primary: bool) -> Result<(), QueueError> {
    limits::display_name(&spec.display_name)?;
    if primary && !spec.filter.trim().is_empty() {
        return Err(QueueError::invalid("the primary consumer group takes every message: it cannot have a filter"));
    }
    filter::parse(&spec.filter).map_err(|e| QueueError::invalid(e.to_string()))?;
    Ok(())
}

/// A consumer group as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerGroup {
    /// The group's own store key.
    pub row: QueueRow,
    /// The stream its messages live in: `row`, or the queue's row for the primary group.
    pub stream: QueueRow,
    /// Consumer group OCID.
    pub id: String,
    /// Its queue.
    pub queue_row: QueueRow,
    /// Its queue's OCID.
    pub queue_id: String,
    /// Owning tenancy.
    pub tenancy_id: String,
    /// The queue's primary group: it has no filter and is not deleted on its own.
    pub primary: bool,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
    /// ACTIVE, INACTIVE or DELETED.
    pub state: LifecycleState,
    /// Incremented on every change; the etag.
    pub version: i64,
    /// Everything the client chose.
    pub spec: ConsumerGroupSpec,
}

impl ConsumerGroup {
    /// The lifecycle state a group's spec gives it (a live group).
    pub fn state_of(spec: &ConsumerGroupSpec) -> LifecycleState {
        if spec.enabled {
            LifecycleState::Active
        } else {
            LifecycleState::Inactive
        }
    }
}

/// A consumer group to insert.
#[derive(Debug, Clone)]
pub struct NewConsumerGroup {
    /// Consumer group OCID.
    pub id: String,
    /// Owning tenancy.
    pub tenancy_id: String,
    /// Its queue.
    pub queue_row: QueueRow,
    /// Its queue's OCID.
    pub queue_id: String,
    /// Whether it is the queue's primary group (its stream is the queue's own).
    pub primary: bool,
    /// Client's choices.
    pub spec: ConsumerGroupSpec,
    /// Creation time.
    pub now: Timestamp,
}

/// Which consumer groups to list.
#[derive(Debug, Clone, Default)]
pub struct ConsumerGroupFilter {
    /// Only the groups of this queue.
    pub queue_id: Option<String>,
    /// Only this group.
    pub id: Option<String>,
    /// Only this exact display name.
    pub display_name: Option<String>,
    /// Only this state (default: every state but DELETED).
    pub state: Option<LifecycleState>,
    /// By display name instead of creation time.
    pub by_display_name: bool,
    /// Descending order.
    pub descending: bool,
}

/// An enabled group's stream and filter, as a put sees it.
#[derive(Debug, Clone)]
pub struct Subscriber {
    /// Where its copies go.
    pub stream: QueueRow,
    /// Which messages it takes (`None`: all).
    pub filter: Option<Filter>,
}

impl Subscriber {
    /// The subscriber of an enabled group, its stored filter parsed; `None` when the group
    /// is disabled. A stored filter that no longer parses (it was checked when saved) takes
    /// nothing rather than everything.
    pub fn of(group: &ConsumerGroup) -> Option<Subscriber> {
        if group.state != LifecycleState::Active {
            return None;
        }
        match filter::parse(&group.spec.filter) {
            Ok(filter) => Some(Subscriber { stream: group.stream, filter }),
            Err(error) => {
                tracing::error!(group = %group.id, %error, "a stored consumer group filter does not parse; it takes no messages");
                None
            }
        }
    }
}

/// Where a put to a queue goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// All of it to the queue's own stream, as to a queue without groups (stored as such).
    Itself,
    /// Fanned out: each stream with the positions of its messages (see [`fan_out`]).
    Streams(Vec<(QueueRow, Vec<usize>)>),
}

/// Where a put to `queue` goes, given its enabled groups (`None`: it has none).
pub fn route(queue: QueueRow, subscribers: Option<&[Subscriber]>, messages: &[MessageToStore]) -> Route {
    let Some(subscribers) = subscribers else { return Route::Itself };
    let streams = fan_out(subscribers, messages);
    match streams.as_slice() {
        // Only the primary group, taking everything: nothing to share.
        [(stream, positions)] if *stream == queue && positions.len() == messages.len() => Route::Itself,
        _ => Route::Streams(streams),
    }
}

/// Where one put goes: each stream with the positions (in put order) of its messages.
/// Streams with no message are left out; a message no stream takes is dropped, as OCI does.
pub fn fan_out(subscribers: &[Subscriber], messages: &[MessageToStore]) -> Vec<(QueueRow, Vec<usize>)> {
    let mut out: Vec<(QueueRow, Vec<usize>)> = Vec::with_capacity(subscribers.len());
    for subscriber in subscribers {
        let taken: Vec<usize> = messages
            .iter()
            .enumerate()
            .filter(|(_, m)| subscriber.filter.as_ref().is_none_or(|f| f.matches(m.message.properties.as_ref())))
            .map(|(at, _)| at)
            .collect();
        if taken.is_empty() {
            continue;
        }
        // Every group has a stream of its own, so no stream is listed twice.
        out.push((subscriber.stream, taken));
    }
    out
}

/// Where puts to a queue with these live groups go: `None` for a queue without groups
/// (to itself); else the enabled groups' subscribers.
pub fn subscribers(groups: &[ConsumerGroup]) -> Option<Vec<Subscriber>> {
    (!groups.is_empty()).then(|| groups.iter().filter_map(Subscriber::of).collect())
}

/// Whether a group of `groups` other than `other_than` has this display name, in any case.
pub fn name_taken(groups: &[ConsumerGroup], name: &str, other_than: Option<QueueRow>) -> bool {
    let name = name.to_lowercase();
    groups.iter().any(|g| Some(g.row) != other_than && g.spec.display_name.to_lowercase() == name)
}

/// Why a queue whose live groups are `groups` refuses a new one named `name`, if it does.
pub fn refused(groups: &[ConsumerGroup], name: &str) -> Option<crate::store::GroupCreated> {
    if name_taken(groups, name, None) {
        return Some(crate::store::GroupCreated::NameTaken);
    }
    (groups.len() >= limits::MAX_CONSUMER_GROUPS).then_some(crate::store::GroupCreated::TooMany)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NewMessage;

    fn message(properties: &[(&str, &str)]) -> MessageToStore {
        let properties =
            (!properties.is_empty()).then(|| properties.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        let message = NewMessage { content: "m".into(), channel: String::new(), properties, delay_secs: None };
        MessageToStore { message, created_at: Timestamp(1), expire_at: Timestamp(2), delayed_until: None }
    }

    fn subscriber(stream: QueueRow, filter: &str) -> Subscriber {
        Subscriber { stream, filter: filter::parse(filter).unwrap() }
    }

    #[test]
    fn each_stream_gets_the_messages_its_filter_takes_and_unmatched_messages_go_nowhere() {
        let put = [message(&[("kind", "a")]), message(&[]), message(&[("kind", "b"), ("n", "3")])];
        let all = subscriber(1, "");
        let a = subscriber(2, ":kind = \"a\"");
        let big = subscriber(3, ":n > 2");
        let none = subscriber(4, ":missing");
        assert_eq!(
            fan_out(&[all, a.clone(), big.clone(), none], &put),
            vec![(1, vec![0, 1, 2]), (2, vec![0]), (3, vec![2])]
        );
        assert_eq!(fan_out(&[a, big], &put[1..2]), vec![]);
    }

    #[test]
    fn a_put_that_only_the_primary_group_takes_in_full_goes_to_the_queue_as_without_groups() {
        let put = [message(&[("kind", "a")]), message(&[])];
        assert_eq!(route(1, None, &put), Route::Itself);
        assert_eq!(route(1, Some(&[subscriber(1, "")]), &put), Route::Itself);
        assert_eq!(route(1, Some(&[subscriber(1, ":kind")]), &put), Route::Streams(vec![(1, vec![0])]));
        assert_eq!(route(1, Some(&[subscriber(2, "")]), &put), Route::Streams(vec![(2, vec![0, 1])]));
        assert_eq!(route(1, Some(&[]), &put), Route::Streams(vec![]), "no enabled group: dropped");
    }

    #[test]
    fn a_group_without_override_follows_its_queue_and_zero_means_no_dead_letter_queue() {
        let mut spec = ConsumerGroupSpec {
            display_name: "g".into(),
            filter: String::new(),
            enabled: true,
            dead_letter_after: None,
            freeform_tags: BTreeMap::new(),
            defined_tags: BTreeMap::new(),
        };
        assert_eq!(spec.dead_letter_after(5), 5);
        spec.dead_letter_after = Some(0);
        assert_eq!(spec.dead_letter_after(5), 0);
    }
}
