//! Consumer groups: rows of `queues` with their queue's row in `parent` (see `schema.rs`).
//! Changes to a queue's groups hold its row's lock, so that display names stay unique
//! across nodes.

use berth_core::clock::Timestamp;
use berth_core::consumer_group::{self, ConsumerGroup, ConsumerGroupFilter, NewConsumerGroup, Subscriber};
use berth_core::error::StoreError;
use berth_core::model::{LifecycleState, QueueRow, QueueSpec, WorkRequest};
use berth_core::store::{Created, GroupCreated, GroupSaved, PrimaryGroup, RetryToken};
use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::queues::{check_retry_token, forget_retry_token, insert_work_request};
use super::{from_json, json, sql};

const COLUMNS: &str = "g.row, coalesce(g.stream, g.row), g.id, g.parent, p.id, g.tenancy_id, g.stream IS NOT NULL,
                       g.created_at, g.updated_at, g.state, g.version, g.spec";

const FROM: &str = "FROM queues g JOIN queues p ON p.row = g.parent";

fn group(row: &Row) -> Result<ConsumerGroup, StoreError> {
    let state: String = row.get(9);
    Ok(ConsumerGroup {
        row: row.get(0),
        stream: row.get(1),
        id: row.get(2),
        queue_row: row.get(3),
        queue_id: row.get(4),
        tenancy_id: row.get(5),
        primary: row.get(6),
        created_at: Timestamp(row.get(7)),
        updated_at: Timestamp(row.get(8)),
        state: LifecycleState::parse(&state).unwrap_or(LifecycleState::Failed),
        version: row.get(10),
        spec: from_json(row.get(11))?,
    })
}

/// The live groups of a queue, oldest first.
pub(crate) async fn of_queue(c: &impl GenericClient, queue: QueueRow) -> Result<Vec<ConsumerGroup>, StoreError> {
    let statement = format!("SELECT {COLUMNS} {FROM} WHERE g.parent = $1 AND g.state <> 'DELETED' ORDER BY g.row");
    sql::query(c, &statement, &[&queue]).await?.iter().map(group).collect()
}

/// Which of these queues have live groups.
pub(crate) async fn with_groups(
    c: &impl GenericClient,
    queues: &[QueueRow],
) -> Result<std::collections::HashSet<QueueRow>, StoreError> {
    let rows =
        sql::query(c, "SELECT DISTINCT parent FROM queues WHERE parent = ANY($1) AND state <> 'DELETED'", &[&queues])
            .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Where a put to the queue goes: `None` for a queue without consumer groups (to itself).
pub(crate) async fn subscribers(
    c: &impl GenericClient,
    queue: QueueRow,
) -> Result<Option<Vec<Subscriber>>, StoreError> {
    let groups = of_queue(c, queue).await?;
    Ok(consumer_group::subscribers(&groups))
}

/// Takes the queue's group lock, then locks its row if it is live; its own threshold (its
/// policy's: its stream's is its primary group's to set). The group lock first: a put
/// sharing it may wait for the row (a new channel), never the other way round.
pub(crate) async fn lock_queue(c: &impl GenericClient, queue: QueueRow) -> Result<Option<u32>, StoreError> {
    sql::execute(c, "SELECT pg_advisory_xact_lock($1)", &[&group_lock(queue)]).await?;
    let row = sql::query_opt(
        c,
        "SELECT spec FROM queues WHERE row = $1 AND parent IS NULL AND state <> 'DELETED' FOR UPDATE",
        &[&queue],
    )
    .await?;
    row.map(|row| from_json::<QueueSpec>(row.get(0)).map(|spec| spec.policy.dead_letter_after)).transpose()
}

/// The advisory lock key that guards a queue's groups against puts reading them: a lock in
/// memory, not a row lock, so that puts sharing it write nothing for it. (Stores sharing a
/// database share keys too; that only makes them wait for each other now and then.)
fn group_lock(queue: QueueRow) -> i64 {
    // Above the keys of the schema lock and of the sweep locks (below 2^60).
    queue | 0x4752_0000_0000_0000 // "GR"
}

/// Shares the queue's group lock until the transaction ends.
pub(crate) async fn share_group_lock(c: &impl GenericClient, queue: QueueRow) -> Result<(), StoreError> {
    sql::execute(c, "SELECT pg_advisory_xact_lock_shared($1)", &[&group_lock(queue)]).await?;
    Ok(())
}

pub(crate) async fn create(
    c: &impl GenericClient,
    new: &NewConsumerGroup,
    work: &WorkRequest,
    retry: Option<&RetryToken>,
) -> Result<GroupCreated, StoreError> {
    let Some(queue_threshold) = lock_queue(c, new.queue_row).await? else { return Ok(GroupCreated::QueueGone) };
    // A retry of a create that succeeded finds its own name taken: the token answers first.
    if let Some(seen) = check_retry_token(c, &new.tenancy_id, retry, &work.id, new.now).await? {
        return Ok(GroupCreated::Done(seen));
    }
    if let Some(refused) = consumer_group::refused(&of_queue(c, new.queue_row).await?, &new.spec.display_name) {
        forget_retry_token(c, &new.tenancy_id, retry).await?;
        return Ok(refused);
    }
    insert(c, new, new.queue_row, queue_threshold).await?;
    insert_work_request(c, work).await?;
    Ok(GroupCreated::Done(Created::New(work.clone())))
}

/// Inserts a group of the queue at `queue_row`.
pub(crate) async fn insert(
    c: &impl GenericClient,
    new: &NewConsumerGroup,
    queue_row: QueueRow,
    queue_threshold: u32,
) -> Result<(), StoreError> {
    let threshold = i64::from(new.spec.dead_letter_after(queue_threshold));
    let state = ConsumerGroup::state_of(&new.spec);
    sql::execute(
        c,
        "INSERT INTO queues (id, tenancy_id, compartment_id, display_name, state, created_at, updated_at, version,
                             dead_letter_after, spec, parent, stream)
         SELECT $1, $2, compartment_id, $3, $4, $5, $5, 1, $6, $7, row, CASE WHEN $8 THEN row END
         FROM queues WHERE row = $9",
        &[
            &new.id,
            &new.tenancy_id,
            &new.spec.display_name,
            &state.as_str(),
            &new.now.0,
            &threshold,
            &json(&new.spec)?,
            &new.primary,
            &queue_row,
        ],
    )
    .await?;
    if new.primary {
        sql::execute(c, "UPDATE queues SET dead_letter_after = $1 WHERE row = $2", &[&threshold, &queue_row]).await?;
    }
    Ok(())
}

/// A live group of the tenancy.
pub(crate) async fn get(
    c: &impl GenericClient,
    tenancy_id: &str,
    id: &str,
) -> Result<Option<ConsumerGroup>, StoreError> {
    let statement = format!("SELECT {COLUMNS} {FROM} WHERE g.id = $1 AND g.tenancy_id = $2 AND g.state <> 'DELETED'");
    sql::query_opt(c, &statement, &[&id, &tenancy_id]).await?.as_ref().map(group).transpose()
}

pub(crate) async fn list(
    c: &impl GenericClient,
    tenancy_id: &str,
    filter: &ConsumerGroupFilter,
    offset: u64,
    limit: u32,
) -> Result<Vec<ConsumerGroup>, StoreError> {
    let state = filter.state.map(|s| s.as_str().to_owned());
    let order = if filter.descending { "DESC" } else { "ASC" };
    let key = if filter.by_display_name { "g.display_name" } else { "g.created_at" };
    let statement = format!(
        "SELECT {COLUMNS} {FROM}
         WHERE g.tenancy_id = $1
           AND (CASE WHEN $2::text IS NULL THEN g.state <> 'DELETED' ELSE g.state = $2 END)
           AND ($3::text IS NULL OR p.id = $3)
           AND ($4::text IS NULL OR g.display_name = $4)
           AND ($5::text IS NULL OR g.id = $5)
         ORDER BY {key} {order}, g.row {order} LIMIT $6 OFFSET $7"
    );
    let params: [&(dyn ToSql + Sync); 7] = [
        &tenancy_id,
        &state,
        &filter.queue_id,
        &filter.display_name,
        &filter.id,
        &i64::from(limit),
        &i64::try_from(offset).unwrap_or(i64::MAX),
    ];
    sql::query(c, &statement, &params).await?.iter().map(group).collect()
}

pub(crate) async fn save(
    c: &impl GenericClient,
    g: &ConsumerGroup,
    expected_version: i64,
    work: &WorkRequest,
) -> Result<GroupSaved, StoreError> {
    // A deleted queue's groups are deleted with it; its threshold no longer matters.
    let queue_threshold = lock_queue(c, g.queue_row).await?.unwrap_or(0);
    let saved = update(c, g, expected_version, queue_threshold).await?;
    if saved == GroupSaved::Saved {
        insert_work_request(c, work).await?;
    }
    Ok(saved)
}

/// Replaces a group's row if its version is still `expected_version` and its name is free.
async fn update(
    c: &impl GenericClient,
    g: &ConsumerGroup,
    expected_version: i64,
    queue_threshold: u32,
) -> Result<GroupSaved, StoreError> {
    if g.state != LifecycleState::Deleted
        && consumer_group::name_taken(&of_queue(c, g.queue_row).await?, &g.spec.display_name, Some(g.row))
    {
        return Ok(GroupSaved::NameTaken);
    }
    let threshold = i64::from(g.spec.dead_letter_after(queue_threshold));
    let changed = sql::execute(
        c,
        "UPDATE queues SET display_name = $1, state = $2, updated_at = $3, version = $4, dead_letter_after = $5,
                           spec = $6
         WHERE row = $7 AND version = $8 AND parent IS NOT NULL",
        &[
            &g.spec.display_name,
            &g.state.as_str(),
            &g.updated_at.0,
            &g.version,
            &threshold,
            &json(&g.spec)?,
            &g.row,
            &expected_version,
        ],
    )
    .await?;
    if changed == 0 {
        return Ok(GroupSaved::VersionMoved);
    }
    if g.primary {
        sql::execute(c, "UPDATE queues SET dead_letter_after = $1 WHERE row = $2", &[&threshold, &g.stream]).await?;
    }
    Ok(GroupSaved::Saved)
}

/// Applies an allowed `primary` to the queue at `queue`, whose row this transaction has
/// locked (its thresholds follow in `queues::follow_queue`). Fails, rolling back, if it
/// was not allowed after all.
pub(crate) async fn apply_primary(
    c: &impl GenericClient,
    queue: QueueRow,
    queue_threshold: u32,
    primary: &PrimaryGroup,
) -> Result<(), StoreError> {
    match primary {
        PrimaryGroup::New(new) => insert(c, new, queue, queue_threshold).await,
        PrimaryGroup::Changed { group, expected_version } => {
            match update(c, group, *expected_version, queue_threshold).await? {
                GroupSaved::Saved => Ok(()),
                refused => {
                    Err(StoreError::Backend(format!("the primary group moved under its queue's lock: {refused:?}")))
                }
            }
        }
    }
}
