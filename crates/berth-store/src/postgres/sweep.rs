//! Background work across all queues, by one node at a time: the node that takes the
//! store's advisory lock sweeps, the others skip that round.

use berth_core::clock::Timestamp;
use berth_core::error::StoreError;
use berth_core::limits::{DELETED_QUEUE_VISIBLE_MS, WORK_REQUEST_RETENTION_MS};
use deadpool_postgres::GenericClient;

use super::settle::{self, Settled};
use super::sql;

/// One bounded round: reclaims deleted queues, applies retention, settles ended leases,
/// forgets old retry tokens and work requests. Nothing if another node is sweeping.
pub(crate) async fn sweep(
    c: &impl GenericClient,
    lock: i64,
    now: Timestamp,
    batch: u32,
) -> Result<Settled, StoreError> {
    let leader: bool = sql::query_one(c, "SELECT pg_try_advisory_xact_lock($1)", &[&lock]).await?.get(0);
    if !leader {
        return Ok(Settled::default());
    }
    let batch_rows = i64::from(batch);
    let mut reclaimed = 0;
    let deleted = sql::query(c, "SELECT row, updated_at FROM queues WHERE state = 'DELETED'", &[]).await?;
    for queue in &deleted {
        let (row, updated_at): (i64, i64) = (queue.get(0), queue.get(1));
        let removed = sql::execute(
            c,
            "DELETE FROM messages WHERE queue = $1 AND id IN (
                 (SELECT id FROM messages WHERE queue = $1 AND NOT leased LIMIT $2)
                 UNION ALL
                 (SELECT id FROM messages WHERE queue = $1 AND leased LIMIT $2)
                 LIMIT $2)",
            &[&row, &batch_rows],
        )
        .await?;
        reclaimed += removed;
        // GetQueue still answers it as DELETED for a while; then the row goes once empty.
        if removed == 0 && updated_at <= now.0 - DELETED_QUEUE_VISIBLE_MS {
            sql::execute(c, "DELETE FROM queues WHERE row = $1", &[&row]).await?;
        }
    }
    let expired = sql::query(
        c,
        "DELETE FROM messages WHERE (id, queue) IN (
             SELECT id, queue FROM messages WHERE NOT leased AND expire_at <= $1
             ORDER BY expire_at LIMIT $2 FOR UPDATE SKIP LOCKED)
         RETURNING queue",
        &[&now.0, &batch_rows],
    )
    .await?;
    let mut settled = settle::all(c, now, batch).await?;
    for row in &expired {
        settled.moved.entry(row.get(0)).or_default().expired += 1;
    }
    sql::execute(c, "DELETE FROM retry_tokens WHERE expires_at <= $1", &[&now.0]).await?;
    reclaimed += sql::execute(
        c,
        "DELETE FROM work_requests WHERE id IN (
             SELECT id FROM work_requests WHERE accepted_at <= $1 ORDER BY accepted_at LIMIT $2)",
        &[&(now.0 - WORK_REQUEST_RETENTION_MS), &batch_rows],
    )
    .await?;
    reclaimed += release_bodies(c, batch_rows).await?;
    settled.report.expired += expired.len() as u64;
    settled.report.reclaimed += reclaimed;
    Ok(settled)
}

/// Folds up to `limit` released copies of fanned-out messages into their bodies' counts, and
/// deletes the bodies no stream holds any more; returns how many releases it folded (a
/// full batch makes the sweeper go on at once, so releases do not pile up under fan-out).
/// Only the sweeping node does this, so no two transactions count down one body at once.
async fn release_bodies(c: &impl GenericClient, limit: i64) -> Result<u64, StoreError> {
    let counted = sql::query(
        c,
        "WITH released AS (
             DELETE FROM body_releases WHERE ctid IN (SELECT ctid FROM body_releases LIMIT $1) RETURNING id),
         counted AS (SELECT id, count(*)::int AS n FROM released GROUP BY id),
         remaining AS (UPDATE bodies b SET refs = b.refs - counted.n FROM counted WHERE b.id = counted.id
                  RETURNING b.id, b.refs)
         SELECT (SELECT coalesce(sum(n), 0)::bigint FROM counted), array(SELECT id FROM remaining WHERE refs <= 0)",
        &[&limit],
    )
    .await?;
    let (folded, unheld): (i64, Vec<i64>) = counted.first().map_or((0, Vec::new()), |row| (row.get(0), row.get(1)));
    if !unheld.is_empty() {
        sql::execute(c, "DELETE FROM bodies WHERE id = ANY($1)", &[&unheld]).await?;
    }
    Ok(u64::try_from(folded).unwrap_or(0))
}
