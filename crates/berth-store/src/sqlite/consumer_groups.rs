//! Consumer groups: rows of `queues` with their queue's row in `parent` (see `schema.rs`).

use berth_core::clock::Timestamp;
use berth_core::consumer_group::{self, ConsumerGroup, ConsumerGroupFilter, NewConsumerGroup, Subscriber};
use berth_core::model::{LifecycleState, QueueRow, QueueSpec, WorkRequest};
use berth_core::store::{Created, GroupCreated, GroupSaved, PrimaryGroup, RetryToken};
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};

use super::queues::{check_retry_token, forget_retry_token, from_json, insert_work_request, to_json};

const COLUMNS: &str = "g.row, coalesce(g.stream, g.row), g.id, g.parent, p.id, g.tenancy_id, g.stream IS NOT NULL,
                       g.created_at, g.updated_at, g.state, g.version, g.spec";

const FROM: &str = "FROM queues g JOIN queues p ON p.row = g.parent";

fn group(row: &Row<'_>) -> rusqlite::Result<ConsumerGroup> {
    let state: String = row.get(9)?;
    let spec: String = row.get(11)?;
    Ok(ConsumerGroup {
        row: row.get(0)?,
        stream: row.get(1)?,
        id: row.get(2)?,
        queue_row: row.get(3)?,
        queue_id: row.get(4)?,
        tenancy_id: row.get(5)?,
        primary: row.get(6)?,
        created_at: Timestamp(row.get(7)?),
        updated_at: Timestamp(row.get(8)?),
        state: LifecycleState::parse(&state).unwrap_or(LifecycleState::Failed),
        version: row.get(10)?,
        spec: from_json(11, &spec)?,
    })
}

/// The live groups of a queue, oldest first.
pub(crate) fn of_queue(conn: &Connection, queue: QueueRow) -> rusqlite::Result<Vec<ConsumerGroup>> {
    let sql = format!("SELECT {COLUMNS} {FROM} WHERE g.parent = ?1 AND g.state <> 'DELETED' ORDER BY g.row");
    let mut statement = conn.prepare_cached(&sql)?;
    let rows = statement.query_map(params![queue], group)?;
    rows.collect()
}

/// Where a put to the queue goes: `None` for a queue without consumer groups (to itself).
pub(crate) fn subscribers(conn: &Connection, queue: QueueRow) -> rusqlite::Result<Option<Vec<Subscriber>>> {
    let groups = of_queue(conn, queue)?;
    Ok(consumer_group::subscribers(&groups))
}

/// The queue's own threshold (its policy's, not its stream's, which its primary group sets).
fn queue_threshold(conn: &Connection, queue: QueueRow) -> rusqlite::Result<Option<u32>> {
    let spec: Option<String> = conn
        .query_row(
            "SELECT spec FROM queues WHERE row = ?1 AND parent IS NULL AND state <> 'DELETED'",
            params![queue],
            |row| row.get(0),
        )
        .optional()?;
    spec.map(|spec| from_json::<QueueSpec>(0, &spec).map(|spec| spec.policy.dead_letter_after)).transpose()
}

/// Inserts a group; on success also each stream's threshold now (for the index).
pub(crate) fn create(
    conn: &Connection,
    new: &NewConsumerGroup,
    work: &WorkRequest,
    retry: Option<&RetryToken>,
) -> rusqlite::Result<(GroupCreated, Option<(QueueRow, u32)>)> {
    let Some(queue_threshold) = queue_threshold(conn, new.queue_row)? else {
        return Ok((GroupCreated::QueueGone, None));
    };
    // A retry of a create that succeeded finds its own name taken: the token answers first.
    if let Some(seen) = check_retry_token(conn, &new.tenancy_id, retry, &work.id, new.now)? {
        return Ok((GroupCreated::Done(seen), None));
    }
    if let Some(refused) = consumer_group::refused(&of_queue(conn, new.queue_row)?, &new.spec.display_name) {
        forget_retry_token(conn, &new.tenancy_id, retry)?;
        return Ok((refused, None));
    }
    let stream = insert(conn, new, new.queue_row, queue_threshold)?;
    insert_work_request(conn, work)?;
    Ok((GroupCreated::Done(Created::New(work.clone())), Some(stream)))
}

/// Inserts a group of the queue at `queue_row`: its stream and that stream's threshold.
pub(crate) fn insert(
    conn: &Connection,
    new: &NewConsumerGroup,
    queue_row: QueueRow,
    queue_threshold: u32,
) -> rusqlite::Result<(QueueRow, u32)> {
    let threshold = new.spec.dead_letter_after(queue_threshold);
    let state = ConsumerGroup::state_of(&new.spec);
    conn.execute(
        "INSERT INTO queues (id, tenancy_id, compartment_id, display_name, state, created_at, updated_at, version,
                             dead_letter_after, spec, parent, stream)
         SELECT ?1, ?2, compartment_id, ?3, ?4, ?5, ?5, 1, ?6, ?7, row, CASE WHEN ?8 THEN row END
         FROM queues WHERE row = ?9",
        params![
            new.id,
            new.tenancy_id,
            new.spec.display_name,
            state.as_str(),
            new.now.0,
            threshold,
            to_json(&new.spec)?,
            new.primary,
            queue_row
        ],
    )?;
    let stream = if new.primary { queue_row } else { conn.last_insert_rowid() };
    if new.primary {
        conn.execute("UPDATE queues SET dead_letter_after = ?1 WHERE row = ?2", params![threshold, queue_row])?;
    }
    Ok((stream, threshold))
}

/// A live group of the tenancy.
pub(crate) fn get(conn: &Connection, tenancy_id: &str, id: &str) -> rusqlite::Result<Option<ConsumerGroup>> {
    let sql = format!("SELECT {COLUMNS} {FROM} WHERE g.id = ?1 AND g.tenancy_id = ?2 AND g.state <> 'DELETED'");
    conn.prepare_cached(&sql)?.query_row(params![id, tenancy_id], group).optional()
}

pub(crate) fn list(
    conn: &Connection,
    tenancy_id: &str,
    filter: &ConsumerGroupFilter,
    offset: u64,
    limit: u32,
) -> rusqlite::Result<Vec<ConsumerGroup>> {
    let mut sql = format!("SELECT {COLUMNS} {FROM} WHERE g.tenancy_id = ?");
    let mut args = vec![Value::from(tenancy_id.to_owned())];
    match filter.state {
        Some(state) => {
            sql.push_str(" AND g.state = ?");
            args.push(Value::from(state.as_str().to_owned()));
        }
        None => sql.push_str(" AND g.state <> 'DELETED'"),
    }
    for (column, value) in [("p.id", &filter.queue_id), ("g.display_name", &filter.display_name), ("g.id", &filter.id)]
    {
        if let Some(value) = value {
            sql.push_str(&format!(" AND {column} = ?"));
            args.push(Value::from(value.clone()));
        }
    }
    let order = if filter.descending { "DESC" } else { "ASC" };
    let key = if filter.by_display_name { "g.display_name" } else { "g.created_at" };
    sql.push_str(&format!(" ORDER BY {key} {order}, g.row {order} LIMIT ? OFFSET ?"));
    args.push(Value::from(i64::from(limit)));
    args.push(Value::from(offset as i64));
    let mut statement = conn.prepare(&sql)?;
    let rows = statement.query_map(params_from_iter(args), group)?;
    rows.collect()
}

/// Saves a group; when saved, also its stream's threshold now (for the index).
pub(crate) fn save(
    conn: &Connection,
    g: &ConsumerGroup,
    expected_version: i64,
    work: &WorkRequest,
) -> rusqlite::Result<(GroupSaved, Option<(QueueRow, u32)>)> {
    let queue_threshold = queue_threshold(conn, g.queue_row)?.unwrap_or(0);
    let saved = update(conn, g, expected_version, queue_threshold)?;
    if saved.0 == GroupSaved::Saved {
        insert_work_request(conn, work)?;
    }
    Ok(saved)
}

/// Replaces a group's row if its version is still `expected_version` and its name is free.
fn update(
    conn: &Connection,
    g: &ConsumerGroup,
    expected_version: i64,
    queue_threshold: u32,
) -> rusqlite::Result<(GroupSaved, Option<(QueueRow, u32)>)> {
    if g.state != LifecycleState::Deleted
        && consumer_group::name_taken(&of_queue(conn, g.queue_row)?, &g.spec.display_name, Some(g.row))
    {
        return Ok((GroupSaved::NameTaken, None));
    }
    let threshold = g.spec.dead_letter_after(queue_threshold);
    let changed = conn.execute(
        "UPDATE queues SET display_name = ?1, state = ?2, updated_at = ?3, version = ?4, dead_letter_after = ?5,
                           spec = ?6
         WHERE row = ?7 AND version = ?8 AND parent IS NOT NULL",
        params![
            g.spec.display_name,
            g.state.as_str(),
            g.updated_at.0,
            g.version,
            threshold,
            to_json(&g.spec)?,
            g.row,
            expected_version
        ],
    )?;
    if changed == 0 {
        return Ok((GroupSaved::VersionMoved, None));
    }
    if g.primary {
        conn.execute("UPDATE queues SET dead_letter_after = ?1 WHERE row = ?2", params![threshold, g.stream])?;
    }
    Ok((GroupSaved::Saved, Some((g.stream, threshold))))
}

/// Applies an allowed `primary` to the queue at `queue` (its thresholds follow in
/// `queues::follow_queue`). Fails, undoing the job, if it was not allowed after all.
pub(crate) fn apply_primary(
    conn: &Connection,
    queue: QueueRow,
    queue_threshold: u32,
    primary: &PrimaryGroup,
) -> rusqlite::Result<()> {
    match primary {
        PrimaryGroup::New(new) => insert(conn, new, queue, queue_threshold).map(|_| ()),
        PrimaryGroup::Changed { group, expected_version } => {
            match update(conn, group, *expected_version, queue_threshold)?.0 {
                GroupSaved::Saved => Ok(()),
                _ => Err(rusqlite::Error::StatementChangedRows(0)),
            }
        }
    }
}
