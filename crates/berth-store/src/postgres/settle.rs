//! Ended leases and delays: each locked row's fate is [`after_lease`]'s, by the threshold
//! the queue row holds in the same transaction.

use std::collections::{BTreeSet, HashMap};

use berth_core::clock::Timestamp;
use berth_core::delivery::{after_lease, AfterLease, Ended};
use berth_core::error::StoreError;
use berth_core::model::QueueRow;
use berth_core::store::{Moved, SweepReport};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::sql;

/// What settling did: the counts, and the queues with messages released or dead-lettered
/// (their pollers should look again).
#[derive(Debug, Default)]
pub(crate) struct Settled {
    pub(crate) report: SweepReport,
    pub(crate) queues: BTreeSet<QueueRow>,
    /// What retention and the dead-letter rule moved, per queue (for metrics).
    pub(crate) moved: HashMap<QueueRow, Moved>,
}

const DUE_COLUMNS: &str = "m.id, m.queue, m.delivery_count, m.dlq, m.expire_at";

/// What settling does with a due row another transaction (the sweeper, a consumer) holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Locked {
    /// Leave it to that transaction: consumers must not queue up behind each other.
    Skip,
    /// Wait for it, so the statements after see where it went: a purge or redrive that
    /// skipped a message the sweeper is dead-lettering would miss a message the stats count.
    Wait,
}

/// Settles up to `limit` ended leases and delays of one queue, oldest end first.
pub(crate) async fn queue(
    c: &impl GenericClient,
    queue: QueueRow,
    now: Timestamp,
    limit: u32,
    locked: Locked,
) -> Result<Settled, StoreError> {
    let due = sql::query(c, &due_in_queue(locked), &[&queue, &now.0, &i64::from(limit)]).await?;
    apply(c, &due, now).await
}

/// The rows [`apply`] settles of a queue: `$1` the queue, `$2` now, `$3` the most.
pub(crate) fn due_in_queue(locked: Locked) -> String {
    let lock = match locked {
        Locked::Skip => "FOR UPDATE OF m SKIP LOCKED",
        Locked::Wait => "FOR UPDATE OF m",
    };
    format!(
        "SELECT {DUE_COLUMNS}, q.dead_letter_after FROM messages m JOIN queues q ON q.row = m.queue
         WHERE m.queue = $1 AND m.leased AND m.visible_at <= $2
         ORDER BY m.visible_at LIMIT $3 {lock}"
    )
}

/// Settles up to `limit` ended leases and delays of each live queue, `limit` in all.
pub(crate) async fn all(c: &impl GenericClient, now: Timestamp, limit: u32) -> Result<Settled, StoreError> {
    let statement = format!(
        "SELECT d.*, q.dead_letter_after FROM queues q CROSS JOIN LATERAL (
             SELECT {DUE_COLUMNS} FROM messages m
             WHERE m.queue = q.row AND m.leased AND m.visible_at <= $1
             ORDER BY m.visible_at LIMIT $2 FOR UPDATE SKIP LOCKED) d
         WHERE q.state <> 'DELETED' LIMIT $2"
    );
    let due = sql::query(c, &statement, &[&now.0, &i64::from(limit)]).await?;
    apply(c, &due, now).await
}

/// Rows of `DUE_COLUMNS` and the queue's threshold, each moved as its fate says.
pub(crate) async fn apply(c: &impl GenericClient, due: &[Row], now: Timestamp) -> Result<Settled, StoreError> {
    let mut settled = Settled::default();
    let (mut expire, mut redeliver, mut dead_letter) = (Rows::default(), Rows::default(), Rows::default());
    for row in due {
        let ended = Ended {
            delivery_count: u32::try_from(row.get::<_, i64>(2)).unwrap_or(u32::MAX),
            in_dead_letter_queue: row.get(3),
            expire_at: Timestamp(row.get(4)),
        };
        let threshold = u32::try_from(row.get::<_, i64>(5)).unwrap_or(0);
        let (id, queue): (i64, QueueRow) = (row.get(0), row.get(1));
        let fate = after_lease(ended, threshold, now);
        match fate {
            AfterLease::Expire => {
                expire.push(id, queue);
                settled.moved.entry(row.get(1)).or_default().expired += 1;
            }
            AfterLease::Redeliver => redeliver.push(id, queue),
            AfterLease::DeadLetter => {
                dead_letter.push(id, queue);
                settled.moved.entry(row.get(1)).or_default().dead_lettered += 1;
            }
        }
        if fate != AfterLease::Expire {
            settled.queues.insert(row.get(1));
        }
    }
    settled.report.expired = expire.apply(c, "DELETE FROM messages").await?;
    settled.report.released = redeliver.apply(c, "UPDATE messages SET leased = false").await?;
    settled.report.dead_lettered = dead_letter.apply(c, "UPDATE messages SET leased = false, dlq = true").await?;
    Ok(settled)
}

/// Messages by (id, stream): a fanned-out message has the same id in each stream.
#[derive(Default)]
struct Rows {
    ids: Vec<i64>,
    queues: Vec<QueueRow>,
}

impl Rows {
    fn push(&mut self, id: i64, queue: QueueRow) {
        self.ids.push(id);
        self.queues.push(queue);
    }

    /// Runs `change` (a DELETE or UPDATE of `messages`) on these rows.
    async fn apply(&self, c: &impl GenericClient, change: &str) -> Result<u64, StoreError> {
        if self.ids.is_empty() {
            return Ok(0);
        }
        let statement = format!("{change} WHERE (id, queue) IN (SELECT * FROM unnest($1::bigint[], $2::bigint[]))");
        sql::execute(c, &statement, &[&self.ids, &self.queues]).await
    }
}
