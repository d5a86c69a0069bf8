//! Queues, work requests and retry tokens.

use berth_core::model::{LifecycleState, Queue, QueueFilter, QueueRow, QueueSort, WorkRequest};
use berth_core::store::{Created, NewQueue, PrimaryGroup, RetryToken};
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};

use berth_core::clock::Timestamp;

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> rusqlite::Result<String> {
    serde_json::to_string(value).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(column: usize, text: &str) -> rusqlite::Result<T> {
    serde_json::from_str(text)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, Box::new(e)))
}

const QUEUE_COLUMNS: &str = "row, id, tenancy_id, created_at, updated_at, state, version, spec";

fn queue(row: &Row<'_>) -> rusqlite::Result<Queue> {
    let state: String = row.get(5)?;
    let spec: String = row.get(7)?;
    Ok(Queue {
        row: row.get(0)?,
        id: row.get(1)?,
        tenancy_id: row.get(2)?,
        created_at: Timestamp(row.get(3)?),
        updated_at: Timestamp(row.get(4)?),
        state: LifecycleState::parse(&state).unwrap_or(LifecycleState::Failed),
        version: row.get(6)?,
        spec: from_json(7, &spec)?,
    })
}

pub(crate) fn insert_work_request(conn: &Connection, work: &WorkRequest) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO work_requests (id, tenancy_id, compartment_id, accepted_at, body) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![work.id, work.tenancy_id, work.compartment_id, work.accepted_at.0, to_json(work)?],
    )?;
    Ok(())
}

/// Records a create's retry token, or says what an earlier request with it did.
pub(crate) fn check_retry_token(
    conn: &Connection,
    tenancy_id: &str,
    retry: Option<&RetryToken>,
    work_request_id: &str,
    now: Timestamp,
) -> rusqlite::Result<Option<Created>> {
    let Some(retry) = retry else { return Ok(None) };
    conn.execute(
        "DELETE FROM retry_tokens WHERE tenancy_id = ?1 AND token = ?2 AND expires_at <= ?3",
        params![tenancy_id, retry.token, now.0],
    )?;
    let seen: Option<(String, String)> = conn
        .query_row(
            "SELECT digest, work_request_id FROM retry_tokens WHERE tenancy_id = ?1 AND token = ?2",
            params![tenancy_id, retry.token],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    if let Some((digest, earlier)) = seen {
        return Ok(Some(if digest == retry.request_digest {
            Created::Replayed(earlier)
        } else {
            Created::TokenConflict
        }));
    }
    conn.execute(
        "INSERT INTO retry_tokens (tenancy_id, token, digest, work_request_id, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![tenancy_id, retry.token, retry.request_digest, work_request_id, retry.expires_at.0],
    )?;
    Ok(None)
}

/// Forgets a retry token claimed by a request that failed after all.
pub(crate) fn forget_retry_token(
    conn: &Connection,
    tenancy_id: &str,
    retry: Option<&RetryToken>,
) -> rusqlite::Result<()> {
    if let Some(retry) = retry {
        conn.execute(
            "DELETE FROM retry_tokens WHERE tenancy_id = ?1 AND token = ?2",
            params![tenancy_id, retry.token],
        )?;
    }
    Ok(())
}

/// Inserts a queue, and its primary group if it has one; when it has, also the group's
/// stream (the queue's row) and its threshold (for the index).
pub(crate) fn create_queue(
    conn: &Connection,
    new: &NewQueue,
    work: &WorkRequest,
    retry: Option<&RetryToken>,
) -> rusqlite::Result<(Created, Option<(QueueRow, u32)>)> {
    if let Some(seen) = check_retry_token(conn, &new.tenancy_id, retry, &work.id, new.now)? {
        return Ok((seen, None));
    }
    conn.execute(
        "INSERT INTO queues (id, tenancy_id, compartment_id, display_name, state, created_at, updated_at, version,
                             dead_letter_after, spec)
         VALUES (?1, ?2, ?3, ?4, 'ACTIVE', ?5, ?5, 1, ?6, ?7)",
        params![
            new.id,
            new.tenancy_id,
            new.spec.compartment_id,
            new.spec.display_name,
            new.now.0,
            new.spec.policy.dead_letter_after,
            to_json(&new.spec)?
        ],
    )?;
    let row = conn.last_insert_rowid();
    let primary = new
        .primary_group
        .as_ref()
        .map(|primary| super::consumer_groups::insert(conn, primary, row, new.spec.policy.dead_letter_after))
        .transpose()?;
    insert_work_request(conn, work)?;
    Ok((Created::New(work.clone()), primary))
}

pub(crate) fn get_queue(conn: &Connection, tenancy_id: &str, id: &str) -> rusqlite::Result<Option<Queue>> {
    let sql = format!("SELECT {QUEUE_COLUMNS} FROM queues WHERE id = ?1 AND tenancy_id = ?2 AND state <> 'DELETED' AND parent IS NULL");
    conn.prepare_cached(&sql)?.query_row(params![id, tenancy_id], queue).optional()
}

/// Every live queue of every tenancy, with its tenancy's name, by tenancy and creation.
pub(crate) fn all_live_queues(conn: &Connection) -> rusqlite::Result<Vec<(String, Queue)>> {
    let columns = QUEUE_COLUMNS.split(", ").map(|c| format!("q.{c}")).collect::<Vec<_>>().join(", ");
    let sql = format!(
        "SELECT {columns}, t.name FROM queues q JOIN tenancies t ON t.id = q.tenancy_id
         WHERE q.state <> 'DELETED' AND q.parent IS NULL ORDER BY t.name, q.created_at, q.row"
    );
    let mut statement = conn.prepare_cached(&sql)?;
    let rows = statement.query_map([], |row| Ok((row.get(8)?, queue(row)?)))?;
    rows.collect()
}

pub(crate) fn list_queues(
    conn: &Connection,
    tenancy_id: &str,
    filter: &QueueFilter,
    offset: u64,
    limit: u32,
) -> rusqlite::Result<Vec<Queue>> {
    let mut sql = format!("SELECT {QUEUE_COLUMNS} FROM queues WHERE tenancy_id = ? AND parent IS NULL");
    let mut args = vec![Value::from(tenancy_id.to_owned())];
    match filter.state {
        Some(state) => {
            sql.push_str(" AND state = ?");
            args.push(Value::from(state.as_str().to_owned()));
        }
        None => sql.push_str(" AND state <> 'DELETED'"),
    }
    let optional =
        [("compartment_id", &filter.compartment_id), ("display_name", &filter.display_name), ("id", &filter.id)];
    for (column, value) in optional {
        if let Some(value) = value {
            sql.push_str(&format!(" AND {column} = ?"));
            args.push(Value::from(value.clone()));
        }
    }
    let order = if filter.descending { "DESC" } else { "ASC" };
    let key = match filter.sort {
        QueueSort::TimeCreated => "created_at",
        QueueSort::DisplayName => "display_name",
    };
    sql.push_str(&format!(" ORDER BY {key} {order}, row {order} LIMIT ? OFFSET ?"));
    args.push(Value::from(i64::from(limit)));
    args.push(Value::from(offset as i64));
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params_from_iter(args), queue)?;
    rows.collect()
}

pub(crate) fn save_queue(
    conn: &Connection,
    q: &Queue,
    expected_version: i64,
    work: &WorkRequest,
    primary: Option<&PrimaryGroup>,
) -> rusqlite::Result<bool> {
    if let Some(primary) = primary {
        if !primary.allowed(&super::consumer_groups::of_queue(conn, q.row)?) {
            return Ok(false);
        }
    }
    let changed = conn.execute(
        "UPDATE queues SET compartment_id = ?1, display_name = ?2, state = ?3, updated_at = ?4, version = ?5,
                           dead_letter_after = ?6, spec = ?7
         WHERE row = ?8 AND version = ?9",
        params![
            q.spec.compartment_id,
            q.spec.display_name,
            q.state.as_str(),
            q.updated_at.0,
            q.version,
            q.spec.policy.dead_letter_after,
            to_json(&q.spec)?,
            q.row,
            expected_version
        ],
    )?;
    if changed == 1 {
        if let Some(primary) = primary {
            super::consumer_groups::apply_primary(conn, q.row, q.spec.policy.dead_letter_after, primary)?;
        }
        insert_work_request(conn, work)?;
    }
    Ok(changed == 1)
}

/// Makes a queue's consumer groups follow its new row: deleted with it, thresholds of
/// those without their own taken from it. Returns each stream's threshold now.
pub(crate) fn follow_queue(conn: &Connection, q: &Queue) -> rusqlite::Result<Vec<(QueueRow, u32)>> {
    if q.state == LifecycleState::Deleted {
        conn.execute(
            "UPDATE queues SET state = 'DELETED', updated_at = ?1 WHERE parent = ?2 AND state <> 'DELETED'",
            params![q.updated_at.0, q.row],
        )?;
    }
    let groups = super::consumer_groups::of_queue(conn, q.row)?;
    let mut thresholds = vec![(q.row, q.spec.policy.dead_letter_after)];
    for group in groups {
        let threshold = group.spec.dead_letter_after(q.spec.policy.dead_letter_after);
        conn.execute("UPDATE queues SET dead_letter_after = ?1 WHERE row = ?2", params![threshold, group.row])?;
        if group.primary {
            conn.execute("UPDATE queues SET dead_letter_after = ?1 WHERE row = ?2", params![threshold, q.row])?;
        }
        // The primary group's stream is the queue's own: its threshold wins there.
        thresholds.retain(|(stream, _)| *stream != group.stream);
        thresholds.push((group.stream, threshold));
    }
    Ok(thresholds)
}

pub(crate) fn work_request(conn: &Connection, tenancy_id: &str, id: &str) -> rusqlite::Result<Option<WorkRequest>> {
    let body: Option<String> = conn
        .prepare_cached("SELECT body FROM work_requests WHERE id = ?1 AND tenancy_id = ?2")?
        .query_row(params![id, tenancy_id], |row| row.get(0))
        .optional()?;
    body.map(|body| from_json(0, &body)).transpose()
}

pub(crate) fn list_work_requests(
    conn: &Connection,
    tenancy_id: &str,
    compartment_id: Option<&str>,
    id: Option<&str>,
    offset: u64,
    limit: u32,
) -> rusqlite::Result<Vec<WorkRequest>> {
    let mut stmt = conn.prepare_cached(
        "SELECT body FROM work_requests
         WHERE tenancy_id = ?1 AND (?2 IS NULL OR compartment_id = ?2) AND (?3 IS NULL OR id = ?3)
         ORDER BY accepted_at DESC, rowid DESC LIMIT ?4 OFFSET ?5",
    )?;
    let rows = stmt.query_map(params![tenancy_id, compartment_id, id, limit, offset as i64], |row| {
        let body: String = row.get(0)?;
        from_json(0, &body)
    })?;
    rows.collect()
}
