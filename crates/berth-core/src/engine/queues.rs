//! Control-plane operations: queues and their work requests.
//! Every mutation completes before it is answered and leaves a SUCCEEDED work request.

use std::collections::BTreeMap;

use crate::clock::Timestamp;
use crate::consumer_group::{ConsumerGroupDetails, CONSUMER_GROUPS};
use crate::error::QueueError;
use crate::limits;
use crate::model::{
    ActionType, LifecycleState, OperationType, Page, PurgeTarget, Queue, QueueFilter, QueuePolicy, QueueSort,
    QueueSpec, WorkEntry, WorkRequest, WorkResource, WorkStatus,
};
use crate::ocid;
use crate::store::{Created, NewQueue, PrimaryGroup, RetryToken, Settle};

use super::Engine;

/// Rows one purge or redrive step touches, so long jobs interleave with other writes.
pub const PURGE_BATCH: u32 = 5_000;

/// How long an `opc-retry-token` is remembered, in seconds.
pub(super) const RETRY_TOKEN_SECS: i64 = 24 * 3600;

/// The changes of UpdateQueue; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct QueueChange {
    /// New display name.
    pub display_name: Option<String>,
    /// New default visibility.
    pub visibility_secs: Option<i64>,
    /// New default long-poll timeout.
    pub timeout_secs: Option<i64>,
    /// New dead-letter threshold.
    pub dead_letter_after: Option<i64>,
    /// New default delivery delay.
    pub delivery_delay_secs: Option<i64>,
    /// New channel consumption limit.
    pub channel_consumption_limit: Option<i64>,
    /// New KMS key id (`""` removes it).
    pub custom_encryption_key_id: Option<String>,
    /// New capability list.
    pub capabilities: Option<Vec<String>>,
    /// The primary consumer group's settings, where CONSUMER_GROUPS is added.
    pub primary_consumer_group: Option<ConsumerGroupDetails>,
    /// New free-form tags.
    pub freeform_tags: Option<BTreeMap<String, String>>,
    /// New defined tags.
    pub defined_tags: Option<BTreeMap<String, BTreeMap<String, serde_json::Value>>>,
}

/// Checks every rule of a queue's spec.
fn validate(spec: &QueueSpec) -> Result<(), QueueError> {
    limits::display_name(&spec.display_name)?;
    if spec.compartment_id.trim().is_empty() {
        return Err(QueueError::MissingParameter("compartmentId is required".into()));
    }
    let p = &spec.policy;
    let (min_retention, max_retention) = limits::RETENTION_SECS;
    limits::in_range("retentionInSeconds", p.retention_secs.into(), min_retention.into(), max_retention.into())?;
    limits::in_range("visibilityInSeconds", p.visibility_secs.into(), 1, limits::MAX_VISIBILITY_SECS.into())?;
    limits::in_range("timeoutInSeconds", p.timeout_secs.into(), 0, limits::MAX_TIMEOUT_SECS.into())?;
    limits::in_range(
        "deadLetterQueueDeliveryCount",
        p.dead_letter_after.into(),
        0,
        limits::MAX_DEAD_LETTER_AFTER.into(),
    )?;
    limits::in_range("deliveryDelayInSeconds", p.delivery_delay_secs.into(), 0, p.retention_secs.into())?;
    limits::in_range("channelConsumptionLimit", p.channel_consumption_limit.into(), 1, 100)?;
    for capability in &spec.capabilities {
        match capability.as_str() {
            "LARGE_MESSAGES" | CONSUMER_GROUPS => {}
            other => return Err(QueueError::invalid(format!("unknown capability type {other:?}"))),
        }
    }
    Ok(())
}

/// Narrows a client's number to u32; `validate` checks the field's own range afterwards.
fn non_negative(field: &str, value: i64) -> Result<u32, QueueError> {
    u32::try_from(value).map_err(|_| QueueError::invalid(format!("{field} must be a non-negative number, got {value}")))
}

impl QueuePolicy {
    fn apply(&mut self, change: &QueueChange) -> Result<(), QueueError> {
        let fields = [
            (&mut self.visibility_secs, change.visibility_secs, "visibilityInSeconds"),
            (&mut self.timeout_secs, change.timeout_secs, "timeoutInSeconds"),
            (&mut self.dead_letter_after, change.dead_letter_after, "deadLetterQueueDeliveryCount"),
            (&mut self.delivery_delay_secs, change.delivery_delay_secs, "deliveryDelayInSeconds"),
            (&mut self.channel_consumption_limit, change.channel_consumption_limit, "channelConsumptionLimit"),
        ];
        for (field, value, name) in fields {
            if let Some(value) = value {
                *field = non_negative(name, value)?;
            }
        }
        Ok(())
    }
}

impl Engine {
    fn work_request(&self, queue: &Queue, operation: OperationType, action: ActionType, now: Timestamp) -> WorkRequest {
        let resource = WorkResource {
            entity_type: "queue".into(),
            action_type: action,
            identifier: queue.id.clone(),
            entity_uri: format!("/queues/{}", queue.id),
        };
        self.work(queue, operation, resource, now)
    }

    /// A SUCCEEDED work request on a resource of `queue` (the queue itself, or one of its groups).
    pub(super) fn work(
        &self,
        queue: &Queue,
        operation: OperationType,
        resource: WorkResource,
        now: Timestamp,
    ) -> WorkRequest {
        let log = |message: &str| WorkEntry { code: String::new(), message: message.into(), timestamp: now };
        WorkRequest {
            id: ocid::new("queueworkrequest", &self.region, "aaaaaaaa"),
            tenancy_id: queue.tenancy_id.clone(),
            compartment_id: queue.spec.compartment_id.clone(),
            operation,
            status: WorkStatus::Succeeded,
            resources: vec![resource],
            percent_complete: 100.0,
            accepted_at: now,
            started_at: Some(now),
            finished_at: Some(now),
            logs: vec![log("Work request accepted"), log("Work request succeeded")],
            errors: Vec::new(),
        }
    }

    /// CreateQueue. With a retry token, a repeat of the same request returns the first work request.
    ///
    /// # Errors
    /// `InvalidParameter`/`MissingParameter` for a bad spec, `RetryTokenReused`.
    pub async fn create_queue(
        &self,
        tenancy_id: &str,
        spec: QueueSpec,
        retry_token: Option<(String, String)>,
    ) -> Result<WorkRequest, QueueError> {
        validate(&spec)?;
        let now = self.clock.now();
        let queue = Queue {
            row: 0,
            id: ocid::new("queue", &self.region, "amaaaaaa"),
            tenancy_id: tenancy_id.to_owned(),
            created_at: now,
            updated_at: now,
            state: LifecycleState::Active,
            version: 1,
            spec,
        };
        let primary_group = match queue.spec.has_consumer_groups() {
            true => {
                let details = queue.spec.primary_consumer_group.clone().unwrap_or_default();
                Some(self.new_group(&queue, details.spec(true)?, true))
            }
            false => None,
        };
        let work = self.work_request(&queue, OperationType::CreateQueue, ActionType::Created, now);
        let retry = retry_token.map(|(token, request_digest)| RetryToken {
            token,
            request_digest,
            expires_at: now.plus_secs(RETRY_TOKEN_SECS),
        });
        let new = NewQueue { id: queue.id, tenancy_id: queue.tenancy_id, spec: queue.spec, now, primary_group };
        let created = self.store.create_queue(new, work, retry).await?;
        self.created(tenancy_id, created).await
    }

    /// The work request of a create, or of the earlier one its retry token names.
    pub(super) async fn created(&self, tenancy_id: &str, created: Created) -> Result<WorkRequest, QueueError> {
        match created {
            Created::New(work) => Ok(work),
            Created::Replayed(id) => self.get_work_request(tenancy_id, &id).await,
            Created::TokenConflict => Err(QueueError::RetryTokenReused),
        }
    }

    /// GetQueue.
    ///
    /// # Errors
    /// `QueueNotFound`.
    pub async fn get_queue(&self, tenancy_id: &str, queue_id: &str) -> Result<Queue, QueueError> {
        match self.active_queue(tenancy_id, queue_id).await {
            Err(QueueError::QueueNotFound) => self.recently_deleted(tenancy_id, queue_id).await,
            other => other,
        }
    }

    /// A queue deleted less than [`limits::DELETED_QUEUE_VISIBLE_MS`] ago, in state `DELETED`.
    async fn recently_deleted(&self, tenancy_id: &str, queue_id: &str) -> Result<Queue, QueueError> {
        let filter = QueueFilter {
            compartment_id: None,
            state: Some(LifecycleState::Deleted),
            display_name: None,
            id: Some(queue_id.to_owned()),
            sort: QueueSort::TimeCreated,
            descending: false,
        };
        let since = self.clock.now().0 - limits::DELETED_QUEUE_VISIBLE_MS;
        let found = self.store.list_queues(tenancy_id, &filter, 0, 1).await?;
        found.into_iter().find(|queue| queue.updated_at.0 > since).ok_or(QueueError::QueueNotFound)
    }

    /// ListQueues: `page` is the opaque cursor of the previous page.
    ///
    /// # Errors
    /// `InvalidParameter` for a bad limit or page.
    pub async fn list_queues(
        &self,
        tenancy_id: &str,
        filter: &QueueFilter,
        page: Option<&str>,
        limit: Option<i64>,
    ) -> Result<Page<Queue>, QueueError> {
        let (offset, limit) = page_window(page, limit)?;
        let items = self.store.list_queues(tenancy_id, filter, offset, limit + 1).await?;
        Ok(paged(items, offset, limit))
    }

    /// Applies `change` to a queue if `if_match` (when given) names its current version; a
    /// queue with consumer groups gets its primary group or has `primary` applied to it.
    #[allow(clippy::too_many_arguments)]
    async fn change_queue(
        &self,
        tenancy_id: &str,
        queue_id: &str,
        if_match: Option<&str>,
        operation: OperationType,
        action: ActionType,
        primary: Option<&ConsumerGroupDetails>,
        change: impl Fn(&mut Queue) -> Result<(), QueueError>,
    ) -> Result<WorkRequest, QueueError> {
        // Optimistic: re-read and retry when another writer got there first, unless the
        // client pinned a version with if-match that is no longer the queue's.
        loop {
            // Changes start from the store's copy, never a cached one.
            self.queues.forget(tenancy_id, queue_id);
            let mut queue = self.active_queue(tenancy_id, queue_id).await?;
            check_etag(&queue, if_match)?;
            let expected = queue.version;
            change(&mut queue)?;
            let now = self.clock.now();
            queue.version += 1;
            queue.updated_at = now;
            let work = self.work_request(&queue, operation, action, now);
            let primary = self.primary_change(&queue, primary).await?;
            let saved = self.store.save_queue(&queue, expected, &work, primary.as_ref()).await?;
            self.queues.forget(tenancy_id, queue_id);
            if let Some(PrimaryGroup::Changed { group, .. }) = &primary {
                self.groups.forget(tenancy_id, &group.id);
            }
            if saved {
                return Ok(work);
            }
            // The version moved on (with if-match, the check above now refuses), or the
            // primary group did (read it again).
        }
    }

    /// UpdateQueue.
    ///
    /// # Errors
    /// `QueueNotFound`, `EtagMismatch`, `InvalidParameter`.
    pub async fn update_queue(
        &self,
        tenancy_id: &str,
        queue_id: &str,
        if_match: Option<&str>,
        change: QueueChange,
    ) -> Result<WorkRequest, QueueError> {
        let (operation, action) = (OperationType::UpdateQueue, ActionType::Updated);
        let primary = change.primary_consumer_group.as_ref();
        self.change_queue(tenancy_id, queue_id, if_match, operation, action, primary, |queue| {
            let spec = &mut queue.spec;
            if let Some(name) = &change.display_name {
                spec.display_name = name.clone();
            }
            spec.policy.apply(&change)?;
            if let Some(key) = &change.custom_encryption_key_id {
                spec.custom_encryption_key_id = (!key.is_empty()).then(|| key.clone());
            }
            if let Some(capabilities) = &change.capabilities {
                if spec.has_consumer_groups() && !capabilities.iter().any(|c| c == CONSUMER_GROUPS) {
                    return Err(QueueError::invalid(
                        "the CONSUMER_GROUPS capability cannot be removed from a queue that has it",
                    ));
                }
                spec.capabilities = capabilities.clone();
            }
            if let Some(tags) = &change.freeform_tags {
                spec.freeform_tags = tags.clone();
            }
            if let Some(tags) = &change.defined_tags {
                spec.defined_tags = tags.clone();
            }
            validate(spec)
        })
        .await
    }

    /// DeleteQueue: the queue disappears at once; its messages are reclaimed in the background.
    ///
    /// # Errors
    /// `QueueNotFound`, `EtagMismatch`.
    pub async fn delete_queue(
        &self,
        tenancy_id: &str,
        queue_id: &str,
        if_match: Option<&str>,
    ) -> Result<WorkRequest, QueueError> {
        let queue = self.active_queue(tenancy_id, queue_id).await?;
        let streams = self.streams_of(&queue).await?;
        let (operation, action) = (OperationType::DeleteQueue, ActionType::Deleted);
        let work = self
            .change_queue(tenancy_id, queue_id, if_match, operation, action, None, |queue| {
                queue.state = LifecycleState::Deleted;
                Ok(())
            })
            .await?;
        // Waiting long polls, of the queue and of its groups, wake, find it gone and answer 404.
        for stream in streams {
            self.wakeups.forget(stream);
        }
        Ok(work)
    }

    /// ChangeQueueCompartment.
    ///
    /// # Errors
    /// `QueueNotFound`, `EtagMismatch`, `MissingParameter`.
    pub async fn change_compartment(
        &self,
        tenancy_id: &str,
        queue_id: &str,
        if_match: Option<&str>,
        compartment_id: String,
    ) -> Result<WorkRequest, QueueError> {
        let (operation, action) = (OperationType::MoveQueue, ActionType::Updated);
        self.change_queue(tenancy_id, queue_id, if_match, operation, action, None, |queue| {
            queue.spec.compartment_id = compartment_id.clone();
            validate(&queue.spec)
        })
        .await
    }

    /// PurgeQueue: deletes the target's messages in bounded batches, then records the work
    /// request. Of the primary group (the queue's own messages) without a consumer group,
    /// of every group's with `all`.
    ///
    /// # Errors
    /// `QueueNotFound`, `ConsumerGroupNotFound`, `EtagMismatch`.
    pub async fn purge_queue(
        &self,
        tenancy_id: &str,
        queue_id: &str,
        if_match: Option<&str>,
        target: PurgeTarget,
        channels: Option<Vec<String>>,
        consumer_group_id: Option<&str>,
    ) -> Result<WorkRequest, QueueError> {
        let queue = self.active_queue(tenancy_id, queue_id).await?;
        check_etag(&queue, if_match)?;
        let settle = |now| Settle { now, batch: PURGE_BATCH };
        for stream in self.purge_streams(&queue, consumer_group_id).await? {
            while self.store.purge(stream, target, channels.clone(), settle(self.clock.now())).await? > 0 {}
        }
        let work = self.work_request(&queue, OperationType::PurgeQueue, ActionType::Updated, self.clock.now());
        self.store.insert_work_request(&work).await?;
        Ok(work)
    }

    /// GetWorkRequest.
    ///
    /// # Errors
    /// `WorkRequestNotFound`.
    pub async fn get_work_request(&self, tenancy_id: &str, id: &str) -> Result<WorkRequest, QueueError> {
        self.store.work_request(tenancy_id, id).await?.ok_or(QueueError::WorkRequestNotFound)
    }

    /// ListWorkRequests, newest first.
    ///
    /// # Errors
    /// `InvalidParameter` for a bad limit or page.
    pub async fn list_work_requests(
        &self,
        tenancy_id: &str,
        compartment_id: Option<&str>,
        id: Option<&str>,
        page: Option<&str>,
        limit: Option<i64>,
    ) -> Result<Page<WorkRequest>, QueueError> {
        let (offset, limit) = page_window(page, limit)?;
        let items = self.store.list_work_requests(tenancy_id, compartment_id, id, offset, limit + 1).await?;
        Ok(paged(items, offset, limit))
    }
}

/// `if-match`, when given, must name the queue's current version (its etag).
fn check_etag(queue: &Queue, if_match: Option<&str>) -> Result<(), QueueError> {
    check_version(queue.version, if_match)
}

/// `if-match`, when given, must name this version (the resource's etag).
pub(super) fn check_version(version: i64, if_match: Option<&str>) -> Result<(), QueueError> {
    match if_match {
        Some(etag) if etag.trim_matches('"') != version.to_string() => Err(QueueError::EtagMismatch),
        _ => Ok(()),
    }
}

/// Largest page offset accepted: more rows than any list holds, and far from overflowing
/// the store's signed offsets or the next page's number.
const MAX_PAGE_OFFSET: u64 = 1 << 40;

/// Offset and limit from a page cursor (an offset) and a client limit (1..=1000, default 100).
pub fn page_window(page: Option<&str>, limit: Option<i64>) -> Result<(u64, u32), QueueError> {
    let limit = limits::in_range("limit", limit.unwrap_or(100), 1, 1000)?;
    let offset = match page {
        None => 0,
        Some(page) => page
            .parse()
            .ok()
            .filter(|offset| *offset <= MAX_PAGE_OFFSET)
            .ok_or_else(|| QueueError::invalid("page is not a cursor this server issued"))?,
    };
    Ok((offset, limit))
}

/// Cuts a page fetched with one extra row and names the next page if that row exists.
pub fn paged<T>(mut items: Vec<T>, offset: u64, limit: u32) -> Page<T> {
    let next = (items.len() > limit as usize).then(|| (offset + u64::from(limit)).to_string());
    items.truncate(limit as usize);
    Page { items, next }
}

/// Client values of a new queue's policy; `None` takes OCI's default.
#[derive(Debug, Clone, Default)]
pub struct PolicyValues {
    /// `retentionInSeconds`.
    pub retention: Option<i64>,
    /// `visibilityInSeconds`.
    pub visibility: Option<i64>,
    /// `timeoutInSeconds`.
    pub timeout: Option<i64>,
    /// `deadLetterQueueDeliveryCount`.
    pub dead_letter_after: Option<i64>,
    /// `deliveryDelayInSeconds`.
    pub delivery_delay: Option<i64>,
    /// `channelConsumptionLimit`.
    pub channel_consumption_limit: Option<i64>,
}

/// Builds a spec for CreateQueue from the client's optional values, with OCI's defaults.
///
/// # Errors
/// `InvalidParameter` for a negative value (ranges are checked by `create_queue`).
pub fn spec_with_defaults(
    display_name: String,
    compartment_id: String,
    values: PolicyValues,
) -> Result<QueueSpec, QueueError> {
    let defaults = QueuePolicy::default();
    let pick = |value: Option<i64>, default: u32, name: &str| value.map_or(Ok(default), |v| non_negative(name, v));
    Ok(QueueSpec {
        display_name,
        compartment_id,
        policy: QueuePolicy {
            retention_secs: pick(values.retention, defaults.retention_secs, "retentionInSeconds")?,
            visibility_secs: pick(values.visibility, defaults.visibility_secs, "visibilityInSeconds")?,
            timeout_secs: pick(values.timeout, defaults.timeout_secs, "timeoutInSeconds")?,
            dead_letter_after: pick(
                values.dead_letter_after,
                defaults.dead_letter_after,
                "deadLetterQueueDeliveryCount",
            )?,
            delivery_delay_secs: pick(values.delivery_delay, defaults.delivery_delay_secs, "deliveryDelayInSeconds")?,
            channel_consumption_limit: pick(
                values.channel_consumption_limit,
                defaults.channel_consumption_limit,
                "channelConsumptionLimit",
            )?,
        },
        custom_encryption_key_id: None,
        capabilities: Vec::new(),
        primary_consumer_group: None,
        freeform_tags: BTreeMap::new(),
        defined_tags: BTreeMap::new(),
    })
}
