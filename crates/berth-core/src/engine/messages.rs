//! Data-plane operations: put, get (with long polling), update, delete, stats, channels.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::Timestamp;
use crate::error::QueueError;
use crate::limits;
use crate::model::{
    LeaseRef, LeaseRequest, LeasedMessage, MessageToStore, NewMessage, Page, PeekRequest, PeekedMessage, Queue,
    QueueRow, QueueStats,
};
use crate::store::{Appended, Settle};
use crate::wakeup::Interest;

use super::consumer_groups::Target;
use super::counters::Counted;
use super::Engine;

/// Parameters of GetMessages, already range-checked by [`GetMessages::new`].
#[derive(Debug, Clone, Default)]
pub struct GetMessages {
    /// Lease length; `None` = the queue's default.
    pub visibility_secs: Option<u32>,
    /// Long-poll wait; `None` = the queue's default.
    pub timeout_secs: Option<u32>,
    /// At most this many messages.
    pub limit: u32,
    /// Only this channel.
    pub channel: Option<String>,
    /// Consume the dead letter queue instead (Berth extension).
    pub dead_letter: bool,
}

impl GetMessages {
    /// Checks the client's values.
    ///
    /// # Errors
    /// `InvalidParameter` for values out of range.
    pub fn new(
        visibility_secs: Option<i64>,
        timeout_secs: Option<i64>,
        limit: Option<i64>,
        channel: Option<String>,
        dead_letter: bool,
    ) -> Result<Self, QueueError> {
        let visibility_secs = visibility_secs
            .map(|v| limits::in_range("visibilityInSeconds", v, 0, limits::MAX_VISIBILITY_SECS.into()))
            .transpose()?;
        let timeout_secs = timeout_secs
            .map(|v| limits::in_range("timeoutInSeconds", v, 0, limits::MAX_TIMEOUT_SECS.into()))
            .transpose()?;
        let limit = limits::in_range("limit", limit.unwrap_or(1), 1, limits::MAX_GET_LIMIT.into())?;
        if let Some(channel) = &channel {
            limits::channel_id(channel)?;
        }
        Ok(GetMessages { visibility_secs, timeout_secs, limit, channel, dead_letter })
    }
}

/// Messages a page of peek shows by default, and at most.
const PEEK_LIMIT_DEFAULT: u32 = 20;
const PEEK_LIMIT_MAX: u32 = 100;

/// What a peek asks for, as the client gave it.
#[derive(Debug, Clone, Default)]
pub struct Peek {
    /// The dead letter queue instead.
    pub dead_letter: bool,
    /// Only this channel.
    pub channel: Option<String>,
    /// Leased messages too.
    pub in_flight: bool,
    /// Delayed messages too.
    pub delayed: bool,
    /// At most this many (default 20, at most 100).
    pub limit: Option<i64>,
    /// The previous page's cursor.
    pub page: Option<String>,
}

/// A leased message and the receipt that names its lease.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// The message.
    pub message: LeasedMessage,
    /// Receipt for update and delete.
    pub receipt: String,
}

/// What PutMessages reports per message.
#[derive(Debug, Clone, Copy)]
pub struct PutResult {
    /// Message id.
    pub id: i64,
    /// Retention end.
    pub expire_at: Timestamp,
}

/// Counts a long poll as waiting while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn begin(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Shortest pause between two store queries of one long poll, so that a store whose
/// answers disagree (a due message it cannot lease yet) is not queried in a loop.
const MIN_POLL_PAUSE: Duration = Duration::from_millis(20);

/// Whose tallies a data-plane call counts in: its queue's, which are its primary group's,
/// or another group's (by its OCID, as never reused as a queue's).
fn tally_of<'a>(queue: &'a Queue, stream: QueueRow, target: Target<'a>) -> &'a str {
    match target.consumer_group_id {
        Some(group) if stream != queue.row => group,
        _ => &queue.id,
    }
}

impl Engine {
    /// PutMessages: validates and appends messages in order.
    ///
    /// # Errors
    /// `QueueNotFound`, `InvalidParameter` for bad content, `LimitExceeded` for channels.
    pub async fn put_messages(
        &self,
        tenancy_id: &str,
        queue_id: &str,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<PutResult>, QueueError> {
        self.append(tenancy_id, queue_id, messages, true).await
    }

    /// Like [`Engine::put_messages`] without OCI's per-request count and byte limits, for
    /// an edge that gathers one client's messages itself (STOMP SENDs written back to back
    /// go to the store together). Each message is still checked.
    ///
    /// # Errors
    /// As [`Engine::put_messages`].
    pub async fn put_gathered(
        &self,
        tenancy_id: &str,
        queue_id: &str,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<PutResult>, QueueError> {
        self.append(tenancy_id, queue_id, messages, false).await
    }

    async fn append(
        &self,
        tenancy_id: &str,
        queue_id: &str,
        messages: Vec<NewMessage>,
        request_limits: bool,
    ) -> Result<Vec<PutResult>, QueueError> {
        let queue = self.active_queue(tenancy_id, queue_id).await?;
        if messages.is_empty() {
            return Err(QueueError::invalid("messages must contain at least one message"));
        }
        if request_limits && messages.len() > limits::MAX_PUT_MESSAGES {
            return Err(QueueError::invalid(format!(
                "at most {} messages per request, got {}",
                limits::MAX_PUT_MESSAGES,
                messages.len()
            )));
        }
        let policy = &queue.spec.policy;
        let mut total = 0;
        for message in &messages {
            limits::content(&message.content)?;
            total += message.content.len();
            if !message.channel.is_empty() {
                limits::channel_id(&message.channel)?;
            }
            if let Some(props) = &message.properties {
                limits::properties(props.iter())?;
            }
            if let Some(delay) = message.delay_secs {
                limits::in_range("delayInSeconds", delay.into(), 0, policy.retention_secs.into())?;
            }
        }
        if request_limits && total > limits::MAX_PUT_BYTES {
            return Err(QueueError::invalid(format!(
                "messages total {total} bytes; the limit per request is {} bytes",
                limits::MAX_PUT_BYTES
            )));
        }
        let now = self.clock.now();
        let expire_at = now.plus_secs(policy.retention_secs.into());
        let to_store: Vec<MessageToStore> = messages
            .into_iter()
            .map(|message| {
                let delay = message.delay_secs.unwrap_or(policy.delivery_delay_secs);
                let delayed_until = (delay > 0).then(|| now.plus_secs(delay.into()));
                MessageToStore { message, created_at: now, expire_at, delayed_until }
            })
            .collect();
        let ids = match self.store.put_messages(queue.row, to_store, limits::MAX_CHANNELS).await? {
            Appended::Stored(ids) => ids,
            Appended::ChannelsFull => {
                let most = limits::MAX_CHANNELS;
                return Err(QueueError::LimitExceeded(format!("a queue holds at most {most} non-empty channels")));
            }
        };
        self.counters.add(&queue.id, Counted::Put, ids.len());
        Ok(ids.into_iter().map(|id| PutResult { id, expire_at }).collect())
    }

    /// GetMessages: leases visible messages, waiting up to the timeout for some to arrive.
    /// Returns an empty list at the timeout or at shutdown.
    ///
    /// # Errors
    /// `QueueNotFound`, or a store failure.
    pub async fn get_messages(
        &self,
        tenancy_id: &str,
        target: impl Into<Target<'_>>,
        params: GetMessages,
    ) -> Result<Vec<Delivered>, QueueError> {
        self.poll_messages(tenancy_id, target, params, &CancellationToken::new()).await
    }

    /// Like [`Engine::get_messages`], and the wait also ends (empty) when `stop` fires.
    /// Only the wait is cut short: messages already leased are always returned.
    ///
    /// # Errors
    /// `QueueNotFound`, or a store failure.
    pub async fn poll_messages(
        &self,
        tenancy_id: &str,
        target: impl Into<Target<'_>>,
        params: GetMessages,
        stop: &CancellationToken,
    ) -> Result<Vec<Delivered>, QueueError> {
        let target = target.into();
        let (queue, stream) = self.target(tenancy_id, target).await?;
        let policy = &queue.spec.policy;
        let visibility = params.visibility_secs.unwrap_or(policy.visibility_secs);
        let timeout = params.timeout_secs.unwrap_or(policy.timeout_secs);
        let deadline = self.clock.now().plus_secs(timeout.into());
        let interest = Interest { dead_letter: params.dead_letter, channel: params.channel.clone() };
        let notify = self.wakeups.of(stream, interest);
        let mut first = true;
        let mut woken_before = false;
        loop {
            // Registered before asking the store, so a put that lands in between still wakes us.
            let woken = notify.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if !std::mem::take(&mut first) {
                // The queue or group may have been deleted while we waited.
                self.target(tenancy_id, target).await?;
            }

            let now = self.clock.now();
            // A failing poll may have taken a wakeup meant for the others: hand it on.
            let failed = |e| {
                self.wakeups.wake_all(stream);
                e
            };
            let leased = self
                .store
                .lease(LeaseRequest {
                    queue: stream,
                    dead_letter: params.dead_letter,
                    channel: params.channel.clone(),
                    max_messages: params.limit,
                    max_bytes: limits::MAX_GET_BYTES,
                    now,
                    visible_after: now.plus_secs(visibility.into()),
                })
                .await
                .map_err(failed)?;
            if !leased.messages.is_empty() {
                let redelivered = leased.messages.iter().filter(|m| m.delivery_count > 1).count();
                let tally = tally_of(&queue, stream, target);
                self.counters.add(tally, Counted::Redelivered, redelivered);
                let messages = leased.messages.into_iter();
                self.counters.add(tally, Counted::Delivered, messages.len());
                return Ok(messages.map(|m| self.delivered(stream, params.dead_letter, m)).collect());
            }
            if now >= deadline || self.shutdown.is_cancelled() || stop.is_cancelled() {
                return Ok(Vec::new());
            }
            if woken_before {
                // Woken for nothing: perhaps by the queue's or group's deletion on another
                // node, which this node's cache may not know yet.
                self.queues.forget(tenancy_id, target.queue_id);
                self.forget_group(tenancy_id, target);
                self.target(tenancy_id, target).await?;
            }
            let next = leased.next_visible_at.map_or(deadline, |at| at.min(deadline));
            let pause = now.until(next).max(MIN_POLL_PAUSE);
            let _waiting = Waiting::begin(&self.waiting_polls);
            tokio::select! {
                _ = woken => woken_before = true,
                _ = tokio::time::sleep(pause) => woken_before = false,
                _ = self.shutdown.cancelled() => return Ok(Vec::new()),
                _ = stop.cancelled() => return Ok(Vec::new()),
            }
        }
    }

    fn delivered(&self, queue: i64, dead_letter: bool, message: LeasedMessage) -> Delivered {
        let lease = LeaseRef { queue, message_id: message.id, lease_token: message.lease_token, dead_letter };
        Delivered { receipt: self.receipts.issue(&lease), message }
    }

    /// UpdateMessages: sets each lease to end `visibility` seconds from now.
    /// One result per entry, in order: the message id and its new `visibleAfter`.
    ///
    /// # Errors
    /// `QueueNotFound` for the whole batch; per entry `ReceiptInvalid` or `InvalidParameter`.
    pub async fn update_messages(
        &self,
        tenancy_id: &str,
        target: impl Into<Target<'_>>,
        entries: Vec<(String, i64)>,
    ) -> Result<Vec<Result<(i64, Timestamp), QueueError>>, QueueError> {
        let (_, stream) = self.target(tenancy_id, target.into()).await?;
        check_batch_size(entries.len())?;
        let now = self.clock.now();
        let mut results: Vec<Result<(i64, Timestamp), QueueError>> = Vec::with_capacity(entries.len());
        let mut valid = Vec::new();
        for (receipt, visibility) in &entries {
            let checked = limits::in_range("visibilityInSeconds", *visibility, 0, limits::MAX_VISIBILITY_SECS.into())
                .and_then(|secs| Ok((self.open_receipt(stream, receipt)?, now.plus_secs(secs.into()))));
            match checked {
                Ok((lease, until)) => {
                    valid.push((lease, until));
                    results.push(Ok((lease.message_id, until)));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        let mut outcome = self.store.extend_leases(valid, now).await?.into_iter();
        for result in results.iter_mut().filter(|r| r.is_ok()) {
            if !outcome.next().unwrap_or(false) {
                *result = Err(QueueError::ReceiptInvalid);
            }
        }
        Ok(results)
    }

    /// DeleteMessages: deletes each message whose receipt names its current lease.
    ///
    /// # Errors
    /// `QueueNotFound` for the whole batch; per entry `ReceiptInvalid`.
    pub async fn delete_messages(
        &self,
        tenancy_id: &str,
        target: impl Into<Target<'_>>,
        receipts: Vec<String>,
    ) -> Result<Vec<Result<(), QueueError>>, QueueError> {
        let target = target.into();
        let (queue, stream) = self.target(tenancy_id, target).await?;
        check_batch_size(receipts.len())?;
        let mut results: Vec<Result<(), QueueError>> = Vec::with_capacity(receipts.len());
        let mut valid = Vec::new();
        for receipt in &receipts {
            match self.open_receipt(stream, receipt) {
                Ok(lease) => {
                    valid.push(lease);
                    results.push(Ok(()));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        let mut outcome = self.store.delete_leased(valid, self.clock.now()).await?.into_iter();
        for result in results.iter_mut().filter(|r| r.is_ok()) {
            if !outcome.next().unwrap_or(false) {
                *result = Err(QueueError::ReceiptInvalid);
            }
        }
        let deleted = results.iter().filter(|r| r.is_ok()).count();
        self.counters.add(tally_of(&queue, stream, target), Counted::Deleted, deleted);
        Ok(results)
    }

    fn open_receipt(&self, queue: i64, receipt: &str) -> Result<LeaseRef, QueueError> {
        let lease = self.receipts.open(receipt)?;
        if lease.queue != queue {
            return Err(QueueError::ReceiptInvalid);
        }
        Ok(lease)
    }

    /// GetStats, optionally of one channel.
    ///
    /// # Errors
    /// `QueueNotFound`, or a store failure.
    pub async fn stats(
        &self,
        tenancy_id: &str,
        target: impl Into<Target<'_>>,
        channel: Option<&str>,
    ) -> Result<QueueStats, QueueError> {
        let (_, stream) = self.target(tenancy_id, target.into()).await?;
        let now = self.clock.now();
        Ok(self.store.stats(stream, channel, now).await?)
    }

    /// Peek (Berth extension): messages of the queue or its DLQ in id order, bodies included,
    /// leasing nothing and changing no delivery count. The page cursor is the last id shown.
    ///
    /// # Errors
    /// `QueueNotFound`, `InvalidParameter` for a bad limit, channel or cursor, or a store failure.
    pub async fn peek(
        &self,
        tenancy_id: &str,
        target: impl Into<Target<'_>>,
        peek: Peek,
    ) -> Result<Page<PeekedMessage>, QueueError> {
        let (_, stream) = self.target(tenancy_id, target.into()).await?;
        let limit =
            limits::in_range("limit", peek.limit.unwrap_or(PEEK_LIMIT_DEFAULT.into()), 1, PEEK_LIMIT_MAX.into())?;
        if let Some(channel) = &peek.channel {
            limits::channel_id(channel)?;
        }
        let after = match peek.page.as_deref() {
            None => 0,
            Some(page) => page
                .parse::<i64>()
                .ok()
                .filter(|id| *id >= 0)
                .ok_or_else(|| QueueError::InvalidParameter("page is not a cursor this server issued".into()))?,
        };
        let request = PeekRequest {
            queue: stream,
            dead_letter: peek.dead_letter,
            channel: peek.channel,
            in_flight: peek.in_flight,
            delayed: peek.delayed,
            after,
            limit: limit + 1,
            now: self.clock.now(),
        };
        let mut items = self.store.peek(request).await?;
        let next = (items.len() > limit as usize).then(|| {
            items.truncate(limit as usize);
            items.last().map(|m| m.id.to_string()).unwrap_or_default()
        });
        Ok(Page { items, next })
    }

    /// ListChannels: non-empty channel ids with the given prefix, sorted, paged.
    ///
    /// # Errors
    /// `QueueNotFound`, `InvalidParameter` for a bad limit, or a store failure.
    pub async fn list_channels(
        &self,
        tenancy_id: &str,
        target: impl Into<Target<'_>>,
        prefix: Option<&str>,
        page: Option<&str>,
        limit: Option<i64>,
    ) -> Result<Page<String>, QueueError> {
        let (_, stream) = self.target(tenancy_id, target.into()).await?;
        let limit = limits::in_range("limit", limit.unwrap_or(limits::MAX_CHANNELS.into()), 1, 1000)?;
        let mut items = self.store.channels(stream, prefix, page, limit + 1).await?;
        let next = (items.len() > limit as usize).then(|| {
            items.truncate(limit as usize);
            items.last().cloned().unwrap_or_default()
        });
        Ok(Page { items, next })
    }

    /// Redrive (Berth extension): moves dead-lettered messages back, delivery count reset.
    ///
    /// # Errors
    /// `QueueNotFound`, or a store failure.
    pub async fn redrive(
        &self,
        tenancy_id: &str,
        target: impl Into<Target<'_>>,
        channels: Option<Vec<String>>,
    ) -> Result<u64, QueueError> {
        let (_, stream) = self.target(tenancy_id, target.into()).await?;
        let mut moved = 0;
        loop {
            let settle = Settle { now: self.clock.now(), batch: super::PURGE_BATCH };
            let batch = self.store.redrive(stream, channels.clone(), settle).await?;
            moved += batch;
            if batch < u64::from(super::PURGE_BATCH) {
                break;
            }
        }
        Ok(moved)
    }
}

fn check_batch_size(len: usize) -> Result<(), QueueError> {
    if len == 0 || len > limits::MAX_BATCH_ENTRIES {
        return Err(QueueError::invalid(format!(
            "entries must hold 1 to {} entries, got {len}",
            limits::MAX_BATCH_ENTRIES
        )));
    }
    Ok(())
}
