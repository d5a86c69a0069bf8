//! `Store` for `SqliteStore`: each method is one read or one write job.

use std::sync::Arc;

use async_trait::async_trait;
use berth_core::clock::Timestamp;
use berth_core::consumer_group::{ConsumerGroup, ConsumerGroupFilter, NewConsumerGroup};
use berth_core::error::StoreError;
use berth_core::model::{
    LeaseRef, LeaseRequest, MessageToStore, PeekRequest, PeekedMessage, PurgeTarget, Queue, QueueFilter, QueueRow,
    QueueStats, Tenancy, User, WorkRequest,
};
use berth_core::store::{
    Appended, Change, Created, GroupCreated, GroupSaved, Leased, NewQueue, PrimaryGroup, RetryToken, Settle, Store,
    StoreObserver, StoreResult, SweepReport,
};
use rusqlite::Connection;
use tokio::sync::broadcast;

use super::index::Index;
use super::{backend, consumer_groups, identity, messages, queues, PutFailed, SqliteStore};

#[async_trait]
impl Store for SqliteStore {
    async fn receipt_secret(&self) -> StoreResult<Vec<u8>> {
        self.read(identity::receipt_secret).await
    }

    async fn ensure_tenancy(&self, name: &str, new_id: &str) -> StoreResult<Tenancy> {
        let (name, new_id) = (name.to_owned(), new_id.to_owned());
        self.write(move |c| identity::ensure_tenancy(c, &name, &new_id)).await
    }

    async fn tenancy_by_name(&self, name: &str) -> StoreResult<Option<Tenancy>> {
        let name = name.to_owned();
        self.read(move |c| identity::tenancy_by_name(c, &name)).await
    }

    async fn insert_user(&self, user: &User) -> StoreResult<bool> {
        let user = user.clone();
        self.write(move |c| identity::insert_user(c, &user)).await
    }

    async fn user_by_key(&self, tenancy_id: &str, user_id: &str, fingerprint: &str) -> StoreResult<Option<User>> {
        let (t, u, f) = (tenancy_id.to_owned(), user_id.to_owned(), fingerprint.to_owned());
        self.read(move |c| identity::user_by_key(c, &t, &u, &f)).await
    }

    async fn tenancies(&self) -> StoreResult<Vec<Tenancy>> {
        self.read(identity::tenancies).await
    }

    async fn users(&self) -> StoreResult<Vec<User>> {
        self.read(identity::users).await
    }

    async fn user_by_name(&self, tenancy_name: &str, user_name: &str) -> StoreResult<Option<User>> {
        let (t, u) = (tenancy_name.to_owned(), user_name.to_owned());
        self.read(move |c| identity::user_by_name(c, &t, &u)).await
    }

    async fn create_queue(
        &self,
        queue: NewQueue,
        work: WorkRequest,
        retry: Option<RetryToken>,
    ) -> StoreResult<Created> {
        if queue.primary_group.is_none() {
            return self.write(move |c| queues::create_queue(c, &queue, &work, retry.as_ref()).map(|(c, _)| c)).await;
        }
        // With the index: puts after this commit fan out to the primary group.
        let job = move |c: &Connection, index: &mut Index| {
            let (created, primary) = queues::create_queue(c, &queue, &work, retry.as_ref()).map_err(backend)?;
            if let Some((row, threshold)) = primary {
                index.set_dead_letter_after(row, threshold);
                index.set_subscribers(row, consumer_groups::subscribers(c, row).map_err(backend)?);
            }
            Ok(created)
        };
        self.write_messages(job, |_| Vec::new()).await
    }

    async fn queue(&self, tenancy_id: &str, id: &str) -> StoreResult<Option<Queue>> {
        let (t, id) = (tenancy_id.to_owned(), id.to_owned());
        self.read(move |c| queues::get_queue(c, &t, &id)).await
    }

    async fn all_live_queues(&self) -> StoreResult<Vec<(String, Queue)>> {
        self.read(queues::all_live_queues).await
    }

    async fn list_queues(
        &self,
        tenancy_id: &str,
        filter: &QueueFilter,
        offset: u64,
        limit: u32,
    ) -> StoreResult<Vec<Queue>> {
        let (t, filter) = (tenancy_id.to_owned(), filter.clone());
        self.read(move |c| queues::list_queues(c, &t, &filter, offset, limit)).await
    }

    async fn save_queue(
        &self,
        queue: &Queue,
        expected_version: i64,
        work: &WorkRequest,
        primary: Option<&PrimaryGroup>,
    ) -> StoreResult<bool> {
        let (queue, work, primary) = (queue.clone(), work.clone(), primary.cloned());
        // With the index, so that settling and counts follow the new threshold from this commit on.
        let job = move |c: &Connection, index: &mut Index| {
            let saved = queues::save_queue(c, &queue, expected_version, &work, primary.as_ref()).map_err(backend)?;
            if saved {
                for (stream, threshold) in queues::follow_queue(c, &queue).map_err(backend)? {
                    index.set_dead_letter_after(stream, threshold);
                }
                index.set_subscribers(queue.row, consumer_groups::subscribers(c, queue.row).map_err(backend)?);
            }
            Ok(saved)
        };
        self.write_messages(job, |_| Vec::new()).await
    }

    async fn insert_work_request(&self, work: &WorkRequest) -> StoreResult<()> {
        let work = work.clone();
        self.write(move |c| queues::insert_work_request(c, &work)).await
    }

    async fn work_request(&self, tenancy_id: &str, id: &str) -> StoreResult<Option<WorkRequest>> {
        let (t, id) = (tenancy_id.to_owned(), id.to_owned());
        self.read(move |c| queues::work_request(c, &t, &id)).await
    }

    async fn list_work_requests(
        &self,
        tenancy_id: &str,
        compartment_id: Option<&str>,
        id: Option<&str>,
        offset: u64,
        limit: u32,
    ) -> StoreResult<Vec<WorkRequest>> {
        let t = tenancy_id.to_owned();
        let (compartment, id) = (compartment_id.map(str::to_owned), id.map(str::to_owned));
        self.read(move |c| queues::list_work_requests(c, &t, compartment.as_deref(), id.as_deref(), offset, limit))
            .await
    }

    async fn create_consumer_group(
        &self,
        group: NewConsumerGroup,
        work: WorkRequest,
        retry: Option<RetryToken>,
    ) -> StoreResult<GroupCreated> {
        // With the index: puts after this commit fan out to the group.
        let job = move |c: &Connection, index: &mut Index| {
            let (created, stream) = consumer_groups::create(c, &group, &work, retry.as_ref()).map_err(backend)?;
            if let Some((stream, threshold)) = stream {
                index.set_dead_letter_after(stream, threshold);
                index.set_subscribers(
                    group.queue_row,
                    consumer_groups::subscribers(c, group.queue_row).map_err(backend)?,
                );
            }
            Ok(created)
        };
        self.write_messages(job, |_| Vec::new()).await
    }

    async fn consumer_group(&self, tenancy_id: &str, id: &str) -> StoreResult<Option<ConsumerGroup>> {
        let (t, id) = (tenancy_id.to_owned(), id.to_owned());
        self.read(move |c| consumer_groups::get(c, &t, &id)).await
    }

    async fn list_consumer_groups(
        &self,
        tenancy_id: &str,
        filter: &ConsumerGroupFilter,
        offset: u64,
        limit: u32,
    ) -> StoreResult<Vec<ConsumerGroup>> {
        let (t, filter) = (tenancy_id.to_owned(), filter.clone());
        self.read(move |c| consumer_groups::list(c, &t, &filter, offset, limit)).await
    }

    async fn save_consumer_group(
        &self,
        group: &ConsumerGroup,
        expected_version: i64,
        work: &WorkRequest,
    ) -> StoreResult<GroupSaved> {
        let (group, work) = (group.clone(), work.clone());
        let job = move |c: &Connection, index: &mut Index| {
            let (saved, stream) = consumer_groups::save(c, &group, expected_version, &work).map_err(backend)?;
            if let Some((stream, threshold)) = stream {
                index.set_dead_letter_after(stream, threshold);
                index.set_subscribers(
                    group.queue_row,
                    consumer_groups::subscribers(c, group.queue_row).map_err(backend)?,
                );
            }
            Ok(saved)
        };
        self.write_messages(job, |_| Vec::new()).await
    }

    async fn put_messages(
        &self,
        queue: QueueRow,
        messages: Vec<MessageToStore>,
        max_channels: u32,
    ) -> StoreResult<Appended> {
        let room = self.room.clone();
        let change = Change::of_put(queue, &messages);
        let job = move |c: &Connection, index: &mut Index| {
            room.check(c)?;
            messages::put(c, index, queue, messages, max_channels)
        };
        let announce = move |put: &messages::Put| match put {
            (Appended::Stored(_), None) => vec![change],
            (Appended::Stored(_), Some(changes)) => changes.clone(),
            (Appended::ChannelsFull, _) => Vec::new(),
        };
        let (appended, _) = self.write_messages(job, announce).await.map_err(|PutFailed(e)| e)?;
        Ok(appended)
    }

    fn changes(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    async fn lease(&self, request: LeaseRequest) -> StoreResult<Leased> {
        let queue = request.queue;
        let job = move |c: &Connection, index: &mut Index| messages::lease(c, index, &request).map_err(backend);
        let announce = move |(_, settled): &(Leased, bool)| changed(settled.then_some(queue));
        let (leased, _) = self.write_messages(job, announce).await?;
        Ok(leased)
    }

    async fn extend_leases(&self, leases: Vec<(LeaseRef, Timestamp)>, now: Timestamp) -> StoreResult<Vec<bool>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        // Leases moved to end now or earlier give their messages back.
        let released: Vec<QueueRow> = leases.iter().filter(|(_, until)| *until <= now).map(|(l, _)| l.queue).collect();
        let job = move |c: &Connection, index: &mut Index| messages::extend(c, index, &leases, now).map_err(backend);
        self.write_messages(job, move |_| changed(released)).await
    }

    async fn delete_leased(&self, leases: Vec<LeaseRef>, now: Timestamp) -> StoreResult<Vec<bool>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let job = move |c: &Connection, index: &mut Index| messages::delete(c, index, &leases, now).map_err(backend);
        self.write_messages(job, |_| Vec::new()).await
    }

    async fn stats(&self, queue: QueueRow, channel: Option<&str>, now: Timestamp) -> StoreResult<QueueStats> {
        let channel = channel.map(str::to_owned);
        self.read_index(move |index| index.stats(queue, channel.as_deref(), now.0)).await
    }

    async fn peek(&self, request: PeekRequest) -> StoreResult<Vec<PeekedMessage>> {
        // On the writer, which writes nothing for it: a reader could miss the bodies of a
        // put the index holds but that is not committed yet, and page past them.
        let job = move |c: &Connection, index: &mut Index| messages::peek(c, &index.peek(&request)).map_err(backend);
        self.write_messages(job, |_| Vec::new()).await
    }

    async fn channels(
        &self,
        queue: QueueRow,
        prefix: Option<&str>,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<String>> {
        let (prefix, after) = (prefix.unwrap_or("").to_owned(), after.unwrap_or("").to_owned());
        self.read_index(move |index| index.channels(queue, &prefix, &after, limit)).await
    }

    async fn purge(
        &self,
        queue: QueueRow,
        target: PurgeTarget,
        channels: Option<Vec<String>>,
        settle: Settle,
    ) -> StoreResult<u64> {
        let job = move |c: &Connection, index: &mut Index| {
            messages::purge(c, index, queue, target, channels.as_deref(), settle).map_err(backend)
        };
        self.write_messages(job, |_| Vec::new()).await
    }

    async fn redrive(&self, queue: QueueRow, channels: Option<Vec<String>>, settle: Settle) -> StoreResult<u64> {
        let job = move |c: &Connection, index: &mut Index| {
            messages::redrive(c, index, queue, channels.as_deref(), settle).map_err(backend)
        };
        self.write_messages(job, move |moved| changed((*moved > 0).then_some(queue))).await
    }

    async fn sweep(&self, now: Timestamp, batch: u32) -> StoreResult<SweepReport> {
        let job = move |c: &Connection, index: &mut Index| messages::sweep(c, index, now, batch).map_err(backend);
        let announce = |(_, settled): &(SweepReport, Vec<QueueRow>)| changed(settled.iter().copied());
        let (report, _) = self.write_messages(job, announce).await?;
        Ok(report)
    }

    async fn housekeeping(&self) -> StoreResult<()> {
        self.checkpoint_wal().await
    }

    async fn check_writable(&self) -> StoreResult<()> {
        if self.writer.can_write() {
            return Ok(());
        }
        Err(StoreError::Unavailable(
            "the SQLite writer cannot write (it stopped, or cannot begin a transaction); see the log".into(),
        ))
    }

    fn observe(&self, observer: Arc<dyn StoreObserver>) {
        let _ = self.observer.set(observer);
    }

    async fn close(&self) -> StoreResult<()> {
        self.close_writer().await
    }
}

/// `Changed` once for each queue.
fn changed(queues: impl IntoIterator<Item = QueueRow>) -> Vec<Change> {
    let mut queues: Vec<QueueRow> = queues.into_iter().collect();
    queues.sort_unstable();
    queues.dedup();
    queues.into_iter().map(|queue| Change::Changed { queue }).collect()
}
