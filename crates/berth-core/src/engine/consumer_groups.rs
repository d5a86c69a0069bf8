//! Consumer groups: their control plane, and how data-plane calls name a group's stream.
//! Every mutation completes before it is answered and leaves a SUCCEEDED work request.

use std::collections::BTreeMap;

use crate::clock::Timestamp;
use crate::consumer_group::{
    self, dead_letter_threshold, validate, ConsumerGroup, ConsumerGroupDetails, ConsumerGroupFilter, ConsumerGroupSpec,
    NewConsumerGroup, CONSUMER_GROUPS,
};
use crate::error::QueueError;
use crate::limits;
use crate::model::{ActionType, LifecycleState, OperationType, Page, Queue, QueueRow, WorkRequest, WorkResource};
use crate::ocid;
use crate::store::{GroupCreated, GroupSaved, PrimaryGroup, RetryToken};

use super::queues::{page_window, paged, RETRY_TOKEN_SECS};
use super::Engine;

/// A queue, or one of its consumer groups, as a data-plane call names it. Without a group,
/// a queue with consumer groups is read through its primary group, whose stream is the
/// queue's own.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The queue OCID.
    pub queue_id: &'a str,
    /// The consumer group OCID, if one is named.
    pub consumer_group_id: Option<&'a str>,
}

impl<'a> From<&'a str> for Target<'a> {
    fn from(queue_id: &'a str) -> Self {
        Target { queue_id, consumer_group_id: None }
    }
}

impl<'a> From<&'a String> for Target<'a> {
    fn from(queue_id: &'a String) -> Self {
        Target { queue_id, consumer_group_id: None }
    }
}

/// The changes of UpdateConsumerGroup; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ConsumerGroupChange {
    /// New display name.
    pub display_name: Option<String>,
    /// New filter (`""`: every message).
    pub filter: Option<String>,
    /// Enable or disable.
    pub enabled: Option<bool>,
    /// New dead-letter threshold; `-1` follows the queue's again.
    pub dead_letter_after: Option<i64>,
    /// New free-form tags.
    pub freeform_tags: Option<BTreeMap<String, String>>,
    /// New defined tags.
    pub defined_tags: Option<BTreeMap<String, BTreeMap<String, serde_json::Value>>>,
}

/// The refusal of a display name the queue's groups have already.
fn name_taken_error(queue_id: &str, name: &str) -> QueueError {
    QueueError::invalid(format!(
        "queue {queue_id} already has a consumer group named {name:?} (names are unique regardless of case)"
    ))
}

impl Engine {
    /// A group's work request, in its queue's compartment (groups have none of their own).
    fn group_work(
        &self,
        queue: &Queue,
        group_id: &str,
        operation: OperationType,
        action: ActionType,
        now: Timestamp,
    ) -> WorkRequest {
        let resource = WorkResource {
            entity_type: "consumerGroup".into(),
            action_type: action,
            identifier: group_id.into(),
            entity_uri: format!("/consumerGroups/{group_id}"),
        };
        self.work(queue, operation, resource, now)
    }

    /// CreateConsumerGroup. With a retry token, a repeat of the same request returns the
    /// first work request.
    ///
    /// # Errors
    /// `QueueNotFound`, `InvalidParameter` (a queue without the capability, a bad spec or a
    /// display name its queue has already), `RetryTokenReused`.
    pub async fn create_consumer_group(
        &self,
        tenancy_id: &str,
        queue_id: &str,
        details: ConsumerGroupDetails,
        retry_token: Option<(String, String)>,
    ) -> Result<WorkRequest, QueueError> {
        let queue = self.active_queue(tenancy_id, queue_id).await?;
        if !queue.spec.has_consumer_groups() {
            return Err(QueueError::invalid(format!(
                "queue {queue_id} does not have the {CONSUMER_GROUPS} capability: add it with UpdateQueue first"
            )));
        }
        let new = self.new_group(&queue, details.spec(false)?, false);
        let retry = retry_token.map(|(token, request_digest)| RetryToken {
            token,
            request_digest,
            expires_at: new.now.plus_secs(RETRY_TOKEN_SECS),
        });
        let work = self.group_work(&queue, &new.id, OperationType::CreateConsumerGroup, ActionType::Created, new.now);
        let name = new.spec.display_name.clone();
        match self.store.create_consumer_group(new, work, retry).await? {
            GroupCreated::Done(created) => self.created(tenancy_id, created).await,
            GroupCreated::NameTaken => Err(name_taken_error(&queue.id, &name)),
            GroupCreated::QueueGone => Err(QueueError::QueueNotFound),
            GroupCreated::TooMany => Err(QueueError::LimitExceeded(format!(
                "queue {} has {} consumer groups, the most a queue can have",
                queue.id,
                limits::MAX_CONSUMER_GROUPS
            ))),
        }
    }

    /// A new group of `queue`, its id minted.
    pub(super) fn new_group(&self, queue: &Queue, spec: ConsumerGroupSpec, primary: bool) -> NewConsumerGroup {
        NewConsumerGroup {
            id: ocid::new("queueconsumergroup", &self.region, "aaaaaaaa"),
            tenancy_id: queue.tenancy_id.clone(),
            queue_row: queue.row,
            queue_id: queue.id.clone(),
            primary,
            spec,
            now: self.clock.now(),
        }
    }

    /// The live groups of a queue, oldest first.
    pub(super) async fn groups_of(&self, queue: &Queue) -> Result<Vec<ConsumerGroup>, QueueError> {
        let filter = ConsumerGroupFilter { queue_id: Some(queue.id.clone()), ..ConsumerGroupFilter::default() };
        Ok(self.store.list_consumer_groups(&queue.tenancy_id, &filter, 0, u32::MAX).await?)
    }

    /// Every stream of a queue: its own, and those of its groups.
    pub(super) async fn streams_of(&self, queue: &Queue) -> Result<Vec<QueueRow>, QueueError> {
        let groups = self.groups_of(queue).await?;
        let mut streams: Vec<QueueRow> = groups.iter().map(|g| g.stream).chain([queue.row]).collect();
        streams.sort_unstable();
        streams.dedup();
        Ok(streams)
    }

    /// What saving `queue` as it is now does to its primary group: a queue with the
    /// capability and none gets one (the queue's messages so far are its), `details` (of its
    /// CONSUMER_GROUPS capability) apply to an existing one.
    pub(super) async fn primary_change(
        &self,
        queue: &Queue,
        details: Option<&ConsumerGroupDetails>,
    ) -> Result<Option<PrimaryGroup>, QueueError> {
        if queue.state == LifecycleState::Deleted || !queue.spec.has_consumer_groups() {
            return Ok(None);
        }
        let groups = self.groups_of(queue).await?;
        let Some(primary) = groups.iter().find(|g| g.primary) else {
            let spec = details.cloned().unwrap_or_default().spec(true)?;
            return Ok(Some(PrimaryGroup::New(self.new_group(queue, spec, true))));
        };
        let Some(details) = details else { return Ok(None) };
        let mut group = primary.clone();
        details.apply_to_primary(&mut group.spec)?;
        if group.spec == primary.spec {
            // Resent as it is (tools send the whole capability list): its etag stays.
            return Ok(None);
        }
        if consumer_group::name_taken(&groups, &group.spec.display_name, Some(group.row)) {
            return Err(name_taken_error(&queue.id, &group.spec.display_name));
        }
        group.state = ConsumerGroup::state_of(&group.spec);
        group.version += 1;
        group.updated_at = self.clock.now();
        Ok(Some(PrimaryGroup::Changed { group, expected_version: primary.version }))
    }

    /// GetConsumerGroup.
    ///
    /// # Errors
    /// `ConsumerGroupNotFound`.
    pub async fn get_consumer_group(&self, tenancy_id: &str, id: &str) -> Result<ConsumerGroup, QueueError> {
        self.store.consumer_group(tenancy_id, id).await?.ok_or(QueueError::ConsumerGroupNotFound)
    }

    /// ListConsumerGroups: `page` is the opaque cursor of the previous page.
    ///
    /// # Errors
    /// `InvalidParameter` for a bad limit or page.
    pub async fn list_consumer_groups(
        &self,
        tenancy_id: &str,
        filter: &ConsumerGroupFilter,
        page: Option<&str>,
        limit: Option<i64>,
    ) -> Result<Page<ConsumerGroup>, QueueError> {
        let (offset, limit) = page_window(page, limit)?;
        let items = self.store.list_consumer_groups(tenancy_id, filter, offset, limit + 1).await?;
        Ok(paged(items, offset, limit))
    }

    /// Applies `change` to a group if `if_match` (when given) names its current version.
    async fn change_group(
        &self,
        tenancy_id: &str,
        id: &str,
        if_match: Option<&str>,
        operation: OperationType,
        action: ActionType,
        mut change: impl FnMut(&mut ConsumerGroup) -> Result<(), QueueError>,
    ) -> Result<WorkRequest, QueueError> {
        loop {
            let mut group = self.get_consumer_group(tenancy_id, id).await?;
            let queue = self.active_queue(tenancy_id, &group.queue_id).await?;
            super::queues::check_version(group.version, if_match)?;
            let expected = group.version;
            change(&mut group)?;
            let now = self.clock.now();
            group.version += 1;
            group.updated_at = now;
            let work = self.group_work(&queue, &group.id, operation, action, now);
            let saved = self.store.save_consumer_group(&group, expected, &work).await?;
            self.groups.forget(tenancy_id, id);
            match saved {
                GroupSaved::Saved => return Ok(work),
                GroupSaved::NameTaken => return Err(name_taken_error(&group.queue_id, &group.spec.display_name)),
                GroupSaved::VersionMoved if if_match.is_some() => return Err(QueueError::EtagMismatch),
                GroupSaved::VersionMoved => {}
            }
        }
    }

    /// UpdateConsumerGroup. Lowering a threshold applies to later deliveries only.
    ///
    /// # Errors
    /// `ConsumerGroupNotFound`, `EtagMismatch`, `InvalidParameter`.
    pub async fn update_consumer_group(
        &self,
        tenancy_id: &str,
        id: &str,
        if_match: Option<&str>,
        change: ConsumerGroupChange,
    ) -> Result<WorkRequest, QueueError> {
        let threshold = match change.dead_letter_after {
            None => None,
            Some(-1) => Some(None),
            Some(value) => Some(Some(dead_letter_threshold(value)?)),
        };
        let (operation, action) = (OperationType::UpdateConsumerGroup, ActionType::Updated);
        self.change_group(tenancy_id, id, if_match, operation, action, |group| {
            let spec = &mut group.spec;
            if let Some(name) = &change.display_name {
                spec.display_name = name.clone();
            }
            if let Some(filter) = &change.filter {
                spec.filter = filter.clone();
            }
            if let Some(enabled) = change.enabled {
                spec.enabled = enabled;
            }
            if let Some(threshold) = threshold {
                spec.dead_letter_after = threshold;
            }
            if let Some(tags) = &change.freeform_tags {
                spec.freeform_tags = tags.clone();
            }
            if let Some(tags) = &change.defined_tags {
                spec.defined_tags = tags.clone();
            }
            validate(spec, group.primary)?;
            group.state = ConsumerGroup::state_of(spec);
            Ok(())
        })
        .await
    }

    /// DeleteConsumerGroup: the group disappears at once; its messages are reclaimed in the
    /// background. The primary group goes only with its queue.
    ///
    /// # Errors
    /// `ConsumerGroupNotFound`, `EtagMismatch`, `InvalidParameter` for the primary group.
    pub async fn delete_consumer_group(
        &self,
        tenancy_id: &str,
        id: &str,
        if_match: Option<&str>,
    ) -> Result<WorkRequest, QueueError> {
        let (operation, action) = (OperationType::DeleteConsumerGroup, ActionType::Deleted);
        let mut stream = None;
        let work = self
            .change_group(tenancy_id, id, if_match, operation, action, |group| {
                if group.primary {
                    return Err(QueueError::invalid(
                        "the primary consumer group cannot be deleted; disable it, or delete its queue",
                    ));
                }
                group.state = LifecycleState::Deleted;
                stream = Some(group.stream);
                Ok(())
            })
            .await?;
        // Waiting long polls wake, find the group gone and answer 404.
        if let Some(stream) = stream {
            self.wakeups.forget(stream);
        }
        Ok(work)
    }

    /// The live queue a data-plane call names and the stream it reads: the queue's own, or
    /// the named group's (from the cache when fresh).
    pub(super) async fn target(&self, tenancy_id: &str, target: Target<'_>) -> Result<(Queue, QueueRow), QueueError> {
        let queue = self.active_queue(tenancy_id, target.queue_id).await?;
        let Some(group_id) = target.consumer_group_id else {
            let row = queue.row;
            return Ok((queue, row));
        };
        let group = match self.groups.get(tenancy_id, group_id) {
            Some(group) => group,
            None => {
                let group = self.get_consumer_group(tenancy_id, group_id).await?;
                self.groups.put(tenancy_id, group_id, &group);
                group
            }
        };
        if group.queue_row != queue.row {
            return Err(QueueError::ConsumerGroupNotFound);
        }
        Ok((queue, group.stream))
    }

    /// Whether a data-plane call could read `target` now: its queue, and its group if one
    /// is named, exist and belong together.
    ///
    /// # Errors
    /// `QueueNotFound`, `ConsumerGroupNotFound`.
    pub async fn check_target(&self, tenancy_id: &str, target: Target<'_>) -> Result<(), QueueError> {
        self.target(tenancy_id, target).await.map(|_| ())
    }

    /// Forgets a cached group (its deletion on another node may have woken a poll).
    pub(super) fn forget_group(&self, tenancy_id: &str, target: Target<'_>) {
        if let Some(id) = target.consumer_group_id {
            self.groups.forget(tenancy_id, id);
        }
    }

    /// The streams a purge of `consumer_group_id` touches: the primary's (the queue's own)
    /// without one, every group's for `all`.
    pub(super) async fn purge_streams(
        &self,
        queue: &Queue,
        consumer_group_id: Option<&str>,
    ) -> Result<Vec<QueueRow>, QueueError> {
        match consumer_group_id {
            None => Ok(vec![queue.row]),
            Some(all) if all.eq_ignore_ascii_case("all") => self.streams_of(queue).await,
            Some(id) => {
                let target = Target { queue_id: &queue.id, consumer_group_id: Some(id) };
                Ok(vec![self.target(&queue.tenancy_id, target).await?.1])
            }
        }
    }
}
