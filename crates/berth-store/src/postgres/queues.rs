//! Queues, work requests and retry tokens.

use berth_core::clock::Timestamp;
use berth_core::error::StoreError;
use berth_core::model::{LifecycleState, Queue, QueueFilter, QueueRow, QueueSort, WorkRequest};
use berth_core::store::{Created, NewQueue, PrimaryGroup, RetryToken};
use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::{from_json, json, sql};

const QUEUE_COLUMNS: &str = "q.row, q.id, q.tenancy_id, q.created_at, q.updated_at, q.state, q.version, q.spec";

fn queue(row: &Row) -> Result<Queue, StoreError> {
    let state: String = row.get(5);
    Ok(Queue {
        row: row.get(0),
        id: row.get(1),
        tenancy_id: row.get(2),
        created_at: Timestamp(row.get(3)),
        updated_at: Timestamp(row.get(4)),
        state: LifecycleState::parse(&state).unwrap_or(LifecycleState::Failed),
        version: row.get(6),
        spec: from_json(row.get(7))?,
    })
}

pub(crate) async fn insert_work_request(c: &impl GenericClient, work: &WorkRequest) -> Result<(), StoreError> {
    sql::execute(
        c,
        "INSERT INTO work_requests (id, tenancy_id, compartment_id, accepted_at, body) VALUES ($1, $2, $3, $4, $5)",
        &[&work.id, &work.tenancy_id, &work.compartment_id, &work.accepted_at.0, &json(work)?],
    )
    .await?;
    Ok(())
}

/// Claims a create's retry token, or says what an earlier request with it did.
pub(crate) async fn check_retry_token(
    c: &impl GenericClient,
    tenancy_id: &str,
    retry: Option<&RetryToken>,
    work_request_id: &str,
    now: Timestamp,
) -> Result<Option<Created>, StoreError> {
    let Some(retry) = retry else { return Ok(None) };
    sql::execute(
        c,
        "DELETE FROM retry_tokens WHERE tenancy_id = $1 AND token = $2 AND expires_at <= $3",
        &[&tenancy_id, &retry.token, &now.0],
    )
    .await?;
    // Claims the token, or finds who holds it (a concurrent retry waits for the holder).
    let claimed = sql::execute(
        c,
        "INSERT INTO retry_tokens (tenancy_id, token, digest, work_request_id, expires_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        &[&tenancy_id, &retry.token, &retry.request_digest, &work_request_id, &retry.expires_at.0],
    )
    .await?;
    if claimed == 0 {
        let seen = sql::query_one(
            c,
            "SELECT digest, work_request_id FROM retry_tokens WHERE tenancy_id = $1 AND token = $2",
            &[&tenancy_id, &retry.token],
        )
        .await?;
        let (digest, earlier): (String, String) = (seen.get(0), seen.get(1));
        return Ok(Some(if digest == retry.request_digest {
            Created::Replayed(earlier)
        } else {
            Created::TokenConflict
        }));
    }
    Ok(None)
}

/// Forgets a retry token claimed by a request that failed after all.
pub(crate) async fn forget_retry_token(
    c: &impl GenericClient,
    tenancy_id: &str,
    retry: Option<&RetryToken>,
) -> Result<(), StoreError> {
    if let Some(retry) = retry {
        sql::execute(c, "DELETE FROM retry_tokens WHERE tenancy_id = $1 AND token = $2", &[&tenancy_id, &retry.token])
            .await?;
    }
    Ok(())
}

/// Inserts a queue, and its primary group if it has one.
pub(crate) async fn create_queue(
    c: &impl GenericClient,
    new: &NewQueue,
    work: &WorkRequest,
    retry: Option<&RetryToken>,
) -> Result<Created, StoreError> {
    if let Some(seen) = check_retry_token(c, &new.tenancy_id, retry, &work.id, new.now).await? {
        return Ok(seen);
    }
    let inserted = sql::query_one(
        c,
        "INSERT INTO queues (id, tenancy_id, compartment_id, display_name, state, created_at, updated_at, version,
                             dead_letter_after, spec)
         VALUES ($1, $2, $3, $4, 'ACTIVE', $5, $5, 1, $6, $7) RETURNING row",
        &[
            &new.id,
            &new.tenancy_id,
            &new.spec.compartment_id,
            &new.spec.display_name,
            &new.now.0,
            &i64::from(new.spec.policy.dead_letter_after),
            &json(&new.spec)?,
        ],
    )
    .await?;
    if let Some(primary) = &new.primary_group {
        super::consumer_groups::insert(c, primary, inserted.get(0), new.spec.policy.dead_letter_after).await?;
    }
    insert_work_request(c, work).await?;
    Ok(Created::New(work.clone()))
}

pub(crate) async fn get_queue(c: &impl GenericClient, tenancy_id: &str, id: &str) -> Result<Option<Queue>, StoreError> {
    let statement =
        format!("SELECT {QUEUE_COLUMNS} FROM queues q WHERE q.id = $1 AND q.tenancy_id = $2 AND q.state <> 'DELETED' AND q.parent IS NULL");
    sql::query_opt(c, &statement, &[&id, &tenancy_id]).await?.as_ref().map(queue).transpose()
}

pub(crate) async fn all_live_queues(c: &impl GenericClient) -> Result<Vec<(String, Queue)>, StoreError> {
    let statement = format!(
        "SELECT {QUEUE_COLUMNS}, t.name FROM queues q JOIN tenancies t ON t.id = q.tenancy_id
         WHERE q.state <> 'DELETED' AND q.parent IS NULL ORDER BY t.name, q.created_at, q.row"
    );
    let rows = sql::query(c, &statement, &[]).await?;
    rows.iter().map(|row| Ok((row.get(8), queue(row)?))).collect()
}

pub(crate) async fn list_queues(
    c: &impl GenericClient,
    tenancy_id: &str,
    filter: &QueueFilter,
    offset: u64,
    limit: u32,
) -> Result<Vec<Queue>, StoreError> {
    let state = filter.state.map(|s| s.as_str().to_owned());
    let order = if filter.descending { "DESC" } else { "ASC" };
    let key = match filter.sort {
        QueueSort::TimeCreated => "q.created_at",
        QueueSort::DisplayName => "q.display_name",
    };
    let statement = format!(
        "SELECT {QUEUE_COLUMNS} FROM queues q
         WHERE q.tenancy_id = $1 AND q.parent IS NULL
           AND (CASE WHEN $2::text IS NULL THEN q.state <> 'DELETED' ELSE q.state = $2 END)
           AND ($3::text IS NULL OR q.compartment_id = $3)
           AND ($4::text IS NULL OR q.display_name = $4)
           AND ($5::text IS NULL OR q.id = $5)
         ORDER BY {key} {order}, q.row {order} LIMIT $6 OFFSET $7"
    );
    let params: [&(dyn ToSql + Sync); 7] = [
        &tenancy_id,
        &state,
        &filter.compartment_id,
        &filter.display_name,
        &filter.id,
        &i64::from(limit),
        &i64::try_from(offset).unwrap_or(i64::MAX),
    ];
    let rows = sql::query(c, &statement, &params).await?;
    rows.iter().map(queue).collect()
}

/// Saves a queue (see [`berth_core::store::Store::save_queue`]); when saved, the streams of
/// its groups.
pub(crate) async fn save_queue(
    c: &impl GenericClient,
    q: &Queue,
    expected_version: i64,
    work: &WorkRequest,
    primary: Option<&PrimaryGroup>,
) -> Result<Option<Vec<QueueRow>>, StoreError> {
    if let Some(primary) = primary {
        // Under the queue row's lock, as every change to its groups.
        super::consumer_groups::lock_queue(c, q.row).await?;
        if !primary.allowed(&super::consumer_groups::of_queue(c, q.row).await?) {
            return Ok(None);
        }
    }
    let changed = sql::execute(
        c,
        "UPDATE queues SET compartment_id = $1, display_name = $2, state = $3, updated_at = $4, version = $5,
                           dead_letter_after = $6, spec = $7
         WHERE row = $8 AND version = $9",
        &[
            &q.spec.compartment_id,
            &q.spec.display_name,
            &q.state.as_str(),
            &q.updated_at.0,
            &q.version,
            &i64::from(q.spec.policy.dead_letter_after),
            &json(&q.spec)?,
            &q.row,
            &expected_version,
        ],
    )
    .await?;
    if changed == 0 {
        return Ok(None);
    }
    if let Some(primary) = primary {
        super::consumer_groups::apply_primary(c, q.row, q.spec.policy.dead_letter_after, primary).await?;
    }
    insert_work_request(c, work).await?;
    follow_queue(c, q).await.map(Some)
}

/// Makes a queue's consumer groups follow its new row: deleted with it, thresholds of
/// those without their own taken from it. Returns their streams.
async fn follow_queue(c: &impl GenericClient, q: &Queue) -> Result<Vec<QueueRow>, StoreError> {
    let groups = super::consumer_groups::of_queue(c, q.row).await?;
    if q.state == LifecycleState::Deleted {
        sql::execute(
            c,
            "UPDATE queues SET state = 'DELETED', updated_at = $1 WHERE parent = $2 AND state <> 'DELETED'",
            &[&q.updated_at.0, &q.row],
        )
        .await?;
    }
    for group in &groups {
        let threshold = i64::from(group.spec.dead_letter_after(q.spec.policy.dead_letter_after));
        // The primary group's stream is the queue's own: its threshold holds there.
        sql::execute(
            c,
            "UPDATE queues SET dead_letter_after = $1 WHERE row = ANY($2)",
            &[&threshold, &vec![group.row, group.stream]],
        )
        .await?;
    }
    Ok(groups.iter().map(|g| g.stream).collect())
}

pub(crate) async fn work_request(
    c: &impl GenericClient,
    tenancy_id: &str,
    id: &str,
) -> Result<Option<WorkRequest>, StoreError> {
    let row =
        sql::query_opt(c, "SELECT body FROM work_requests WHERE id = $1 AND tenancy_id = $2", &[&id, &tenancy_id])
            .await?;
    row.map(|row| from_json(row.get(0))).transpose()
}

pub(crate) async fn list_work_requests(
    c: &impl GenericClient,
    tenancy_id: &str,
    compartment_id: Option<&str>,
    id: Option<&str>,
    offset: u64,
    limit: u32,
) -> Result<Vec<WorkRequest>, StoreError> {
    let rows = sql::query(
        c,
        "SELECT body FROM work_requests
         WHERE tenancy_id = $1 AND ($2::text IS NULL OR compartment_id = $2) AND ($3::text IS NULL OR id = $3)
         ORDER BY accepted_at DESC, seq DESC LIMIT $4 OFFSET $5",
        &[&tenancy_id, &compartment_id, &id, &i64::from(limit), &i64::try_from(offset).unwrap_or(i64::MAX)],
    )
    .await?;
    rows.iter().map(|row| from_json(row.get(0))).collect()
}
