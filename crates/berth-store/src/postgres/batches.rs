//! The requests a node runs in batches (see `coalesce.rs`), each batch announced once
//! committed: puts, one transaction; deletes, one statement; leases of one queue, side and
//! channel, one transaction with one pick.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use berth_core::clock::Timestamp;
use berth_core::error::StoreError;
use berth_core::model::{LeaseRef, LeaseRequest, QueueRow};
use berth_core::store::{Appended, Change, Leased};
use deadpool_postgres::Pool;

use super::coalesce::Batch;
use super::messages::{self, Put, PutRequest};
use super::node::{changed, Node};
use super::pipelined::Pipelined;
use super::settle::{self, Locked};
use super::{connection, pg, sql};

/// Ended leases settled per lease batch; the sweep handles any surplus.
const SETTLE_PER_LEASE: u32 = 256;

/// A lease commits without waiting for its WAL to reach the disk. A queue's leases go one
/// batch at a time, so that wait was on the path of every delivery (W1 on one node: 1.04×
/// without it, docs/BENCHMARKS.md). A crash of PostgreSQL (not of a node) can lose the
/// leases of its last moments: those messages are delivered again, as after a visibility
/// timeout, the lost delivery not counted. Puts, deletes and visibility changes stay
/// synchronous, and each one's flush makes durable every lease committed before it.
const BEGIN_LEASE: &str = "BEGIN; SET LOCAL synchronous_commit TO off";

pub(crate) struct Puts {
    pub(crate) pool: Pool,
    pub(crate) node: Arc<Node>,
}

#[async_trait]
impl Batch for Puts {
    type Request = PutRequest;
    type Output = Appended;
    type Key = ();

    fn key(_: &PutRequest) {}

    async fn run(&self, requests: &[PutRequest]) -> Result<Vec<Appended>, StoreError> {
        let mut client = connection(&self.pool).await?;
        let tx = client.transaction().await.map_err(pg)?;
        let puts = messages::put_all(&tx, requests).await?;
        let started = Instant::now();
        tx.commit().await.map_err(pg)?;
        self.node.committed(requests.len(), started.elapsed());
        Ok(requests.iter().zip(puts).map(|(request, put)| self.announce(request, put)).collect())
    }
}

impl Puts {
    /// Tells a committed put's streams.
    fn announce(&self, request: &PutRequest, (appended, targets): Put) -> Appended {
        let (queue, messages) = (request.queue, &request.messages);
        let Appended::Stored(ids) = &appended else { return appended };
        let Some(&first) = ids.first() else { return appended };
        let channels: BTreeSet<&str> = messages.iter().map(|m| m.message.channel.as_str()).collect();
        match targets {
            None => self.node.announce_put(queue, first, channels, Change::of_put(queue, messages.iter())),
            Some(targets) => {
                let changes = Change::of_fanned_put(&targets, messages);
                for ((stream, positions), change) in targets.iter().zip(changes) {
                    let share = positions.iter().map(|&at| messages[at].message.channel.as_str()).collect();
                    self.node.announce_put(*stream, ids[positions[0]], share, change);
                }
            }
        }
        appended
    }
}

pub(crate) struct Deletes {
    pub(crate) pool: Pool,
    pub(crate) node: Arc<Node>,
}

#[async_trait]
impl Batch for Deletes {
    type Request = (Vec<LeaseRef>, Timestamp);
    type Output = Vec<bool>;
    type Key = ();

    fn key(_: &Self::Request) {}

    async fn run(&self, requests: &[(Vec<LeaseRef>, Timestamp)]) -> Result<Vec<Vec<bool>>, StoreError> {
        let client = connection(&self.pool).await?;
        // One statement, committed on its own: its time includes the commit.
        let started = Instant::now();
        let deleted = messages::delete_all(&client, requests).await?;
        self.node.committed(requests.len(), started.elapsed());
        Ok(deleted)
    }
}

pub(crate) struct Leases {
    pub(crate) pool: Pool,
    pub(crate) node: Arc<Node>,
}

#[async_trait]
impl Batch for Leases {
    type Request = LeaseRequest;
    type Output = Leased;
    type Key = (QueueRow, bool, Option<String>);

    fn key(request: &LeaseRequest) -> Self::Key {
        (request.queue, request.dead_letter, request.channel.clone())
    }

    async fn run(&self, requests: &[LeaseRequest]) -> Result<Vec<Leased>, StoreError> {
        let Some(first) = requests.first() else { return Ok(Vec::new()) };
        let (queue, dead_letter) = (first.queue, first.dead_letter);
        let now = messages::batch_now(requests);
        // Until it committed: if it fails, the messages it locked are ready again, below
        // floors that other leases set past them.
        let unfinished = Unfinished { node: &self.node, queue };
        let tx = Pipelined::new(connection(&self.pool).await?);
        let c = tx.client();
        // Settling and the pick from the floors go with the BEGIN: when settling released
        // messages (seldom), the pick is made again from the start.
        let due_in_queue = settle::due_in_queue(Locked::Skip);
        let most = i64::from(SETTLE_PER_LEASE);
        let due_params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&queue, &now.0, &most];
        let hinted = messages::hinted_scan(requests, &self.node.floors);
        let (due, hinted) = tx
            .begin_with(BEGIN_LEASE, async {
                let due = sql::query(c, &due_in_queue, &due_params);
                let hinted = async {
                    match hinted {
                        Some(scan) => messages::candidates(c, requests, scan).await.map(Some),
                        None => Ok(None),
                    }
                };
                tokio::try_join!(due, hinted)
            })
            .await?;
        let settled = settle::apply(c, &due, now).await?;
        let rescan = !settled.queues.is_empty();
        let mut picked = messages::pick(c, requests, &self.node.floors, hinted, rescan).await?;
        let mut next_visible_at = None;
        let started = Instant::now();
        let taken = if picked.leaves_any_empty(requests.len()) {
            let next = |rows: Vec<tokio_postgres::Row>| rows.first().and_then(|row| row.get::<_, Option<i64>>(0));
            if picked.ids.is_empty() {
                next_visible_at = next(tx.commit_with(messages::NEXT_VISIBLE, &[&queue, &dead_letter]).await?);
                Vec::new()
            } else {
                // Read before this batch's own leases: those end at their visibility too.
                let others = next(sql::query(c, messages::NEXT_VISIBLE, &[&queue, &dead_letter]).await?);
                next_visible_at = others.into_iter().chain(picked.untils.iter().copied()).min();
                tx.commit_with(messages::TAKE, &[&picked.ids, &picked.untils, &picked.tokens, &queue]).await?
            }
        } else {
            tx.commit_with(messages::TAKE, &[&picked.ids, &picked.untils, &picked.tokens, &queue]).await?
        };
        std::mem::forget(unfinished);
        self.node.committed(requests.len(), started.elapsed());
        let (leased, unreadable) = messages::leased(requests, &mut picked, taken, next_visible_at.map(Timestamp));
        if !unreadable.is_empty() {
            // Leased to this batch, so no other lease takes them meanwhile; if this fails,
            // the next lease after theirs ends moves them.
            if let Err(e) = messages::quarantine(c, first, now, &unreadable).await {
                tracing::warn!(queue, error = %e, "cannot move unreadable messages out of the queue");
            }
        }
        self.node.floors.record(queue, dead_letter, &picked.pick, Instant::now());
        let gave_back = picked.pick.gave_back.then_some(queue);
        self.node.report(&settled.moved);
        self.node.announce(changed(settled.queues.into_iter().chain(gave_back)));
        Ok(leased)
    }
}

/// A lease under way: dropped before it committed, it tells every node that its queue's
/// messages may be ready below their floors.
struct Unfinished<'a> {
    node: &'a Node,
    queue: QueueRow,
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        self.node.announce(changed([self.queue]));
    }
}
