//! `Store` for `PostgresStore`: each method is one transaction (or one read), and its
//! changes are announced once it committed. Puts, deletes and leases go in batches with
//! others of their kind (`batches.rs`).

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use berth_core::clock::Timestamp;
use berth_core::consumer_group::{ConsumerGroup, ConsumerGroupFilter, NewConsumerGroup};
use berth_core::error::StoreError;
use berth_core::model::{
    LeaseRef, LeaseRequest, LifecycleState, MessageToStore, PeekRequest, PeekedMessage, PurgeTarget, Queue,
    QueueFilter, QueueRow, QueueStats, Tenancy, User, WorkRequest,
};
use berth_core::store::{
    Appended, Change, Created, GroupCreated, GroupSaved, Leased, NewQueue, PrimaryGroup, RetryToken, Settle, Store,
    StoreObserver, StoreResult, SweepReport,
};
use tokio::sync::broadcast;

use super::node::changed;
use super::settle::Locked;
use super::{consumer_groups, identity, messages, pg, queues, settle, sql, sweep, PostgresStore};

/// Runs `$body` in a transaction on a pooled connection and commits it.
macro_rules! transaction {
    ($store:expr, |$tx:ident| $body:expr) => {{
        let mut client = $store.client().await?;
        let $tx = client.transaction().await.map_err(pg)?;
        let outcome = $body;
        let started = std::time::Instant::now();
        $tx.commit().await.map_err(pg)?;
        $store.node.committed(1, started.elapsed());
        outcome
    }};
}

#[async_trait]
impl Store for PostgresStore {
    async fn receipt_secret(&self) -> StoreResult<Vec<u8>> {
        identity::receipt_secret(&self.client().await?).await
    }

    async fn ensure_tenancy(&self, name: &str, new_id: &str) -> StoreResult<Tenancy> {
        identity::ensure_tenancy(&self.client().await?, name, new_id).await
    }

    async fn tenancy_by_name(&self, name: &str) -> StoreResult<Option<Tenancy>> {
        identity::tenancy_by_name(&self.client().await?, name).await
    }

    async fn insert_user(&self, user: &User) -> StoreResult<bool> {
        identity::insert_user(&self.client().await?, user).await
    }

    async fn user_by_key(&self, tenancy_id: &str, user_id: &str, fingerprint: &str) -> StoreResult<Option<User>> {
        identity::user_by_key(&self.client().await?, tenancy_id, user_id, fingerprint).await
    }

    async fn tenancies(&self) -> StoreResult<Vec<Tenancy>> {
        identity::tenancies(&self.client().await?).await
    }

    async fn users(&self) -> StoreResult<Vec<User>> {
        identity::users(&self.client().await?).await
    }

    async fn user_by_name(&self, tenancy_name: &str, user_name: &str) -> StoreResult<Option<User>> {
        identity::user_by_name(&self.client().await?, tenancy_name, user_name).await
    }

    async fn create_queue(
        &self,
        queue: NewQueue,
        work: WorkRequest,
        retry: Option<RetryToken>,
    ) -> StoreResult<Created> {
        Ok(transaction!(self, |tx| queues::create_queue(&tx, &queue, &work, retry.as_ref()).await?))
    }

    async fn queue(&self, tenancy_id: &str, id: &str) -> StoreResult<Option<Queue>> {
        queues::get_queue(&self.client().await?, tenancy_id, id).await
    }

    async fn all_live_queues(&self) -> StoreResult<Vec<(String, Queue)>> {
        queues::all_live_queues(&self.client().await?).await
    }

    async fn list_queues(
        &self,
        tenancy_id: &str,
        filter: &QueueFilter,
        offset: u64,
        limit: u32,
    ) -> StoreResult<Vec<Queue>> {
        queues::list_queues(&self.client().await?, tenancy_id, filter, offset, limit).await
    }

    async fn save_queue(
        &self,
        queue: &Queue,
        expected_version: i64,
        work: &WorkRequest,
        primary: Option<&PrimaryGroup>,
    ) -> StoreResult<bool> {
        let saved = transaction!(self, |tx| queues::save_queue(&tx, queue, expected_version, work, primary).await?);
        let Some(streams) = saved else { return Ok(false) };
        // Other nodes' pollers of a deleted queue, or of its groups, wake and find it gone.
        let deleted = queue.state == LifecycleState::Deleted;
        self.node.announce(changed(streams.into_iter().filter(|_| deleted).chain([queue.row])));
        Ok(true)
    }

    async fn insert_work_request(&self, work: &WorkRequest) -> StoreResult<()> {
        queues::insert_work_request(&self.client().await?, work).await
    }

    async fn work_request(&self, tenancy_id: &str, id: &str) -> StoreResult<Option<WorkRequest>> {
        queues::work_request(&self.client().await?, tenancy_id, id).await
    }

    async fn list_work_requests(
        &self,
        tenancy_id: &str,
        compartment_id: Option<&str>,
        id: Option<&str>,
        offset: u64,
        limit: u32,
    ) -> StoreResult<Vec<WorkRequest>> {
        queues::list_work_requests(&self.client().await?, tenancy_id, compartment_id, id, offset, limit).await
    }

    async fn create_consumer_group(
        &self,
        group: NewConsumerGroup,
        work: WorkRequest,
        retry: Option<RetryToken>,
    ) -> StoreResult<GroupCreated> {
        Ok(transaction!(self, |tx| consumer_groups::create(&tx, &group, &work, retry.as_ref()).await?))
    }

    async fn consumer_group(&self, tenancy_id: &str, id: &str) -> StoreResult<Option<ConsumerGroup>> {
        consumer_groups::get(&self.client().await?, tenancy_id, id).await
    }

    async fn list_consumer_groups(
        &self,
        tenancy_id: &str,
        filter: &ConsumerGroupFilter,
        offset: u64,
        limit: u32,
    ) -> StoreResult<Vec<ConsumerGroup>> {
        consumer_groups::list(&self.client().await?, tenancy_id, filter, offset, limit).await
    }

    async fn save_consumer_group(
        &self,
        group: &ConsumerGroup,
        expected_version: i64,
        work: &WorkRequest,
    ) -> StoreResult<GroupSaved> {
        let saved = transaction!(self, |tx| consumer_groups::save(&tx, group, expected_version, work).await?);
        if saved == GroupSaved::Saved {
            // Pollers of a deleted group wake and find it gone.
            self.node.announce(changed([group.stream]));
        }
        Ok(saved)
    }

    async fn put_messages(
        &self,
        queue: QueueRow,
        messages: Vec<MessageToStore>,
        max_channels: u32,
    ) -> StoreResult<Appended> {
        self.puts.submit(messages::PutRequest { queue, messages, max_channels }).await
    }

    fn changes(&self) -> broadcast::Receiver<Change> {
        self.node.changes.subscribe()
    }

    async fn lease(&self, request: LeaseRequest) -> StoreResult<Leased> {
        self.leases.submit(request).await
    }

    async fn extend_leases(&self, leases: Vec<(LeaseRef, Timestamp)>, now: Timestamp) -> StoreResult<Vec<bool>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        // One statement, committed on its own: its time includes the commit.
        let started = Instant::now();
        let extended = messages::extend(&client, &leases, now).await?;
        self.node.committed(1, started.elapsed());
        // Leases moved to end now or earlier give their messages back.
        let released = leases.iter().zip(&extended).filter(|((_, until), ok)| **ok && *until <= now);
        self.node.announce(changed(released.map(|((lease, _), _)| lease.queue)));
        Ok(extended)
    }

    async fn delete_leased(&self, leases: Vec<LeaseRef>, now: Timestamp) -> StoreResult<Vec<bool>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let deleted = self.deletes.submit((leases, now)).await?;
        Ok(deleted)
    }

    async fn stats(&self, queue: QueueRow, channel: Option<&str>, now: Timestamp) -> StoreResult<QueueStats> {
        // One snapshot for its reads.
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg)?;
        let stats = messages::stats(&tx, queue, channel, now).await?;
        tx.commit().await.map_err(pg)?;
        Ok(stats)
    }

    async fn peek(&self, request: PeekRequest) -> StoreResult<Vec<PeekedMessage>> {
        messages::peek(&self.client().await?, &request).await
    }

    async fn channels(
        &self,
        queue: QueueRow,
        prefix: Option<&str>,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<String>> {
        let client = self.client().await?;
        messages::channels(&client, queue, prefix.unwrap_or(""), after.unwrap_or(""), limit).await
    }

    async fn purge(
        &self,
        queue: QueueRow,
        target: PurgeTarget,
        channels: Option<Vec<String>>,
        to_settle: Settle,
    ) -> StoreResult<u64> {
        let (settled, purged) = transaction!(self, |tx| {
            let settled = settle::queue(&tx, queue, to_settle.now, to_settle.batch, Locked::Wait).await?;
            (settled, messages::purge(&tx, queue, target, channels.as_deref(), to_settle.batch).await?)
        });
        self.node.report(&settled.moved);
        self.node.announce(changed(settled.queues));
        Ok(purged)
    }

    async fn redrive(&self, queue: QueueRow, channels: Option<Vec<String>>, to_settle: Settle) -> StoreResult<u64> {
        let (settled, moved) = transaction!(self, |tx| {
            let settled = settle::queue(&tx, queue, to_settle.now, to_settle.batch, Locked::Wait).await?;
            (settled, messages::redrive(&tx, queue, channels.as_deref(), to_settle.batch).await?)
        });
        let redriven = (moved > 0).then_some(queue);
        self.node.report(&settled.moved);
        self.node.announce(changed(settled.queues.into_iter().chain(redriven)));
        Ok(moved)
    }

    async fn sweep(&self, now: Timestamp, batch: u32) -> StoreResult<SweepReport> {
        let settled = transaction!(self, |tx| sweep::sweep(&tx, self.sweep_lock, now, batch).await?);
        self.node.report(&settled.moved);
        self.node.announce(changed(settled.queues));
        Ok(settled.report)
    }

    async fn housekeeping(&self) -> StoreResult<()> {
        self.vacuum.if_due(&self.client().await?).await
    }

    async fn check_writable(&self) -> StoreResult<()> {
        let client = self.client().await?;
        let primary: bool = sql::query_one(&client, "SELECT NOT pg_is_in_recovery()", &[]).await?.get(0);
        if primary {
            Ok(())
        } else {
            Err(StoreError::Unavailable("the PostgreSQL server is a read-only standby".into()))
        }
    }

    fn observe(&self, observer: Arc<dyn StoreObserver>) {
        let _ = self.node.observer.set(observer);
    }

    async fn close(&self) -> StoreResult<()> {
        self.stop.cancel();
        self.pool.close();
        Ok(())
    }
}
