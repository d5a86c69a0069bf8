//! The SQLite schema. Messages have no secondary index: the writer keeps their state in
//! memory (`index.rs`) and SQLite only their durable copy, a row per put (a batch) and,
//! once one of its messages changed, a small row with the state of each of its messages,
//! both found by the batch's id.

use std::collections::BTreeMap;

use rusqlite::{params, Connection, Transaction, TransactionBehavior};
use serde::{Deserialize, Serialize};

use super::index::{Phase, Slot};

/// What a batch row's `meta` keeps of each message (short names: one per message).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct MessageMeta {
    /// Channel id; empty for the default channel.
    #[serde(rename = "c", default, skip_serializing_if = "String::is_empty")]
    pub(crate) channel: String,
    /// Content length in bytes, in `bodies`.
    #[serde(rename = "s")]
    pub(crate) size: u32,
    /// Custom properties.
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub(crate) properties: Option<BTreeMap<String, String>>,
    /// End of the delivery delay (ms since the epoch), if delayed.
    #[serde(rename = "d", default, skip_serializing_if = "Option::is_none")]
    pub(crate) delayed_until: Option<i64>,
}

/// Connection settings for every connection.
pub(crate) const PRAGMAS: &str = "
    PRAGMA busy_timeout = 10000;
    PRAGMA foreign_keys = OFF;
    PRAGMA temp_store = MEMORY;
";

/// Settings of the writer connection: durable commits, and no auto-vacuum: its pointer-map
/// upkeep on every page allocation, and its refusal to rewrite a large row in place, cost
/// W1 5–10 % (docs/BENCHMARKS.md). Pages freed by consumed messages are reused, so the file
/// keeps the size of its largest backlog (`VACUUM` while Berth is stopped shrinks it).
/// The writer checkpoints only as a safety net (the WAL past ~64 MiB): checkpoints normally
/// run on another connection (`SqliteStore::checkpoint`), off the writer's commit path.
/// A WAL that grew past 64 MiB (a burst faster than checkpoints) is cut back to that once
/// it restarts, instead of keeping disk space a full disk needs.
pub(crate) const WRITER_PRAGMAS: &str = "
    PRAGMA auto_vacuum = NONE;
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = FULL;
    PRAGMA wal_autocheckpoint = 16000;
    PRAGMA journal_size_limit = 67108864;
";

/// Creates what is missing.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS tenancies (
    id   TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS users (
    id                    TEXT PRIMARY KEY,
    tenancy_id            TEXT NOT NULL,
    name                  TEXT NOT NULL,
    fingerprint           TEXT NOT NULL,
    public_key            BLOB NOT NULL,
    stomp_passcode_sha256 TEXT NOT NULL,
    UNIQUE (tenancy_id, name)
);
CREATE TABLE IF NOT EXISTS queues (
    row               INTEGER PRIMARY KEY,
    id                TEXT NOT NULL UNIQUE,
    tenancy_id        TEXT NOT NULL,
    compartment_id    TEXT NOT NULL,
    display_name      TEXT NOT NULL,
    state             TEXT NOT NULL,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    version           INTEGER NOT NULL,
    dead_letter_after INTEGER NOT NULL,
    spec              TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS queues_by_tenancy ON queues (tenancy_id, created_at);
CREATE TABLE IF NOT EXISTS work_requests (
    id             TEXT PRIMARY KEY,
    tenancy_id     TEXT NOT NULL,
    compartment_id TEXT NOT NULL,
    accepted_at    INTEGER NOT NULL,
    body           TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS work_requests_by_tenancy ON work_requests (tenancy_id, accepted_at);
CREATE INDEX IF NOT EXISTS work_requests_by_age ON work_requests (accepted_at);
CREATE TABLE IF NOT EXISTS retry_tokens (
    tenancy_id      TEXT NOT NULL,
    token           TEXT NOT NULL,
    digest          TEXT NOT NULL,
    work_request_id TEXT NOT NULL,
    expires_at      INTEGER NOT NULL,
    PRIMARY KEY (tenancy_id, token)
);
-- One row per put. Its messages have the ids `id - n + 1 ..= id`, n = the length of `meta`
-- (AUTOINCREMENT: ids are never reused, so clients can deduplicate by id). `meta` is a JSON
-- array of `MessageMeta`, one per message; `bodies` their contents, concatenated; `sums`
-- the CRC-32 of each content, 4 bytes little-endian each (NULL in rows from before them).
CREATE TABLE IF NOT EXISTS message_batches (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    queue      INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expire_at  INTEGER NOT NULL,
    meta       TEXT NOT NULL,
    bodies     BLOB NOT NULL,
    sums       BLOB
);
-- The state of every message of a batch (same id) once one of them changed since the put:
-- one row per batch, not per message, so that a lease or delete of a put's messages writes
-- one row. A batch without a row is as its put left it. `states` is `encode_states`.
CREATE TABLE IF NOT EXISTS message_batch_states (
    id     INTEGER PRIMARY KEY,
    states BLOB NOT NULL
);
-- A put fanned out to consumer groups is one batch row whose `fanout` names each stream
-- that got some of its messages (see `Fanout`); each stream's state of it, once changed, is
-- here (an empty `states`: the stream is done with it). The row goes with the last stream.
CREATE TABLE IF NOT EXISTS stream_batch_states (
    stream INTEGER NOT NULL,
    id     INTEGER NOT NULL,
    states BLOB NOT NULL,
    PRIMARY KEY (stream, id)
) WITHOUT ROWID;
";

/// Layout 6 added consumer groups: a group is a `queues` row with its queue's row in
/// `parent`, and in `stream` the row its messages live in (NULL: its own; the primary
/// group's is its queue's). Queues have NULL in both.
const CONSUMER_GROUP_COLUMNS: &str = "
ALTER TABLE queues ADD COLUMN parent INTEGER;
ALTER TABLE queues ADD COLUMN stream INTEGER;
ALTER TABLE message_batches ADD COLUMN fanout TEXT;
CREATE INDEX IF NOT EXISTS queues_by_parent ON queues (parent) WHERE parent IS NOT NULL;
";

/// Which streams a fanned-out batch row feeds: each with the positions of its messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Fanout(pub(crate) Vec<(i64, Vec<u32>)>);

/// Layout 4 kept a state row per changed message; `per_message_states::convert` turns
/// them into batch state rows. leased = 1: invisible until visible_at (a lease, or a delay
/// when delivery_count = 0).
pub(crate) const MESSAGE_STATES: &str = "
CREATE TABLE IF NOT EXISTS message_states (
    id             INTEGER PRIMARY KEY,
    dlq            INTEGER NOT NULL,
    leased         INTEGER NOT NULL,
    visible_at     INTEGER NOT NULL,
    delivery_count INTEGER NOT NULL,
    lease_token    INTEGER NOT NULL,
    deleted        INTEGER NOT NULL
);
";

/// Version byte of `encode_states`.
const STATES_V1: u8 = 1;
/// Bytes per slot: flags, delivery count, visible at, lease token.
const SLOT_BYTES: usize = 1 + 4 + 8 + 8;

/// The state of every slot of a batch, in order: a version byte, then per slot a flags byte
/// (bit 0: in the DLQ; bits 1–2: 0 ready, 1 invisible, 2 gone), the delivery count (u32),
/// visible at and the lease token (i64), little-endian.
pub(crate) fn encode_states(slots: &[Slot]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + slots.len() * SLOT_BYTES);
    out.push(STATES_V1);
    for slot in slots {
        let phase: u8 = match slot.phase {
            Phase::Ready => 0,
            Phase::Invisible => 1,
            Phase::Gone => 2,
        };
        out.push(u8::from(slot.dlq) | phase << 1);
        out.extend_from_slice(&slot.delivery_count.to_le_bytes());
        out.extend_from_slice(&slot.visible_at.to_le_bytes());
        out.extend_from_slice(&slot.lease_token.to_le_bytes());
    }
    out
}

/// Applies what [`encode_states`] wrote to the slots of the same batch.
pub(crate) fn decode_states(bytes: &[u8], slots: &mut [Slot]) -> Result<(), String> {
    let Some((&STATES_V1, body)) = bytes.split_first() else {
        return Err(format!("unknown message state format {:?}", bytes.first()));
    };
    if body.len() != slots.len() * SLOT_BYTES {
        return Err(format!("{} bytes of message state for {} messages", body.len(), slots.len()));
    }
    for (slot, b) in slots.iter_mut().zip(body.chunks_exact(SLOT_BYTES)) {
        slot.dlq = b[0] & 1 == 1;
        slot.phase = match b[0] >> 1 {
            0 => Phase::Ready,
            1 => Phase::Invisible,
            2 => Phase::Gone,
            other => return Err(format!("unknown message phase {other}")),
        };
        let field = |at: usize, n: usize| &b[at..at + n];
        slot.delivery_count = u32::from_le_bytes(field(1, 4).try_into().unwrap_or_default());
        slot.visible_at = i64::from_le_bytes(field(5, 8).try_into().unwrap_or_default());
        slot.lease_token = i64::from_le_bytes(field(13, 8).try_into().unwrap_or_default());
    }
    Ok(())
}

/// The message layout this build writes, kept in `PRAGMA user_version` (0 in databases of
/// layouts 1 to 4, which predate it). A newer layout is refused: this build would misread it.
pub(crate) const LAYOUT: i64 = 6;

/// Whether the database holds another program's tables: some, but not Berth's `meta`.
pub(crate) fn is_foreign(conn: &Connection) -> rusqlite::Result<bool> {
    let (tables, meta): (i64, i64) = conn.query_row(
        "SELECT count(*), count(*) FILTER (WHERE name = 'meta') FROM sqlite_schema
         WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    Ok(tables > 0 && meta == 0)
}

/// The message layout recorded in the database.
pub(crate) fn layout(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
}

/// Records that the message tables are in this build's layout (once converted).
pub(crate) fn record_layout(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(&format!("PRAGMA user_version = {LAYOUT}"))
}

/// Brings a database of any earlier layout to the current one, then creates what is missing.
/// Message tables are converted only by the process that serves them (`messages_owned`).
pub(crate) fn migrate(conn: &Connection, messages_owned: bool) -> rusqlite::Result<()> {
    let separate_bodies: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'message_bodies')",
        [],
        |row| row.get(0),
    )?;
    if separate_bodies && messages_owned {
        // Layout 1 kept bodies in their own table and indexed every message by expiry.
        conn.execute_batch(
            "BEGIN IMMEDIATE;
             ALTER TABLE messages ADD COLUMN properties TEXT;
             ALTER TABLE messages ADD COLUMN content TEXT NOT NULL DEFAULT '';
             UPDATE messages SET (properties, content) =
                 (SELECT b.properties, COALESCE(b.content, '') FROM message_bodies b WHERE b.id = messages.id);
             DROP TABLE message_bodies;
             DROP INDEX IF EXISTS messages_by_expiry;
             COMMIT;",
        )?;
    }
    conn.execute_batch(SCHEMA)?;
    let rows_per_message: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'messages')",
        [],
        |row| row.get(0),
    )?;
    if rows_per_message && messages_owned {
        batch_message_rows(conn)?;
    }
    let has_sums: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info('message_batches') WHERE name = 'sums')",
        [],
        |row| row.get(0),
    )?;
    if !has_sums && messages_owned {
        // Older rows keep NULL: their bodies are served unchecked.
        conn.execute_batch("ALTER TABLE message_batches ADD COLUMN sums BLOB")?;
    }
    let has_groups: bool =
        conn.query_row("SELECT EXISTS (SELECT 1 FROM pragma_table_info('queues') WHERE name = 'parent')", [], |row| {
            row.get(0)
        })?;
    if !has_groups && messages_owned {
        conn.execute_batch(&format!("BEGIN IMMEDIATE; {CONSUMER_GROUP_COLUMNS} COMMIT;"))?;
    }
    Ok(())
}

/// The checksums of a put's contents, as `sums` keeps them.
pub(crate) fn encode_sums<'a>(contents: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    contents.flat_map(|content| crc32fast::hash(content).to_le_bytes()).collect()
}

/// The checksum of message `position` in `sums`, if the row has them.
pub(crate) fn sum_at(sums: Option<&[u8]>, position: usize) -> Option<u32> {
    let bytes = sums?.get(position * 4..position * 4 + 4)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// Layouts 1 to 3 kept a row (and index entries) per message: each becomes a batch of one,
/// with a (layout 4) state row if it ever changed, keeping its id and the id sequence.
fn batch_message_rows(conn: &Connection) -> rusqlite::Result<()> {
    // Rolled back when dropped before the commit.
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    move_message_rows(&tx)?;
    tx.commit()
}

fn move_message_rows(conn: &Connection) -> rusqlite::Result<()> {
    // Into layout 4's state rows, which the store converts when it loads them.
    conn.execute_batch(MESSAGE_STATES)?;
    let mut rows = conn.prepare(
        "SELECT id, queue, dlq, channel, leased, visible_at, delivery_count, lease_token, created_at,
                expire_at, size, properties, content FROM messages ORDER BY id",
    )?;
    let mut batch = conn.prepare(
        "INSERT INTO message_batches (id, queue, created_at, expire_at, meta, bodies) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    let mut state = conn.prepare(
        "INSERT INTO message_states (id, dlq, leased, visible_at, delivery_count, lease_token, deleted)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0)",
    )?;
    let mut rows = rows.query([])?;
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        let (dlq, leased, delivery_count): (bool, bool, u32) = (row.get(2)?, row.get(4)?, row.get(6)?);
        let properties: Option<String> = row.get(11)?;
        let content: String = row.get(12)?;
        let meta = MessageMeta {
            channel: row.get(3)?,
            size: u32::try_from(content.len()).unwrap_or(u32::MAX),
            properties: properties.and_then(|p| serde_json::from_str(&p).ok()),
            delayed_until: None,
        };
        let meta = serde_json::to_string(&[meta]).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        let (queue, created_at, expire_at): (i64, i64, i64) = (row.get(1)?, row.get(8)?, row.get(9)?);
        batch.execute(params![id, queue, created_at, expire_at, meta, content.as_bytes()])?;
        if dlq || leased || delivery_count > 0 {
            let (visible_at, token): (i64, i64) = (row.get(5)?, row.get(7)?);
            state.execute(params![id, dlq, leased, visible_at, delivery_count, token])?;
        }
    }
    // Ids deleted before the move stay used.
    conn.execute_batch(
        "DELETE FROM sqlite_sequence WHERE name = 'message_batches';
         INSERT INTO sqlite_sequence (name, seq) SELECT 'message_batches', seq FROM sqlite_sequence
             WHERE name = 'messages';
         DROP TABLE messages;",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message tables as layout 1 created them, with a ready message, a leased one,
    /// and a later id already deleted.
    const LAYOUT_1: &str = "
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT, queue INTEGER NOT NULL, dlq INTEGER NOT NULL,
            channel TEXT NOT NULL, leased INTEGER NOT NULL, visible_at INTEGER NOT NULL,
            delivery_count INTEGER NOT NULL, lease_token INTEGER NOT NULL, created_at INTEGER NOT NULL,
            expire_at INTEGER NOT NULL, size INTEGER NOT NULL);
        CREATE INDEX messages_by_expiry ON messages (expire_at);
        CREATE INDEX messages_by_channel ON messages (queue, channel);
        CREATE TABLE message_bodies (id INTEGER PRIMARY KEY, properties TEXT, content TEXT NOT NULL);
        INSERT INTO messages VALUES (7, 1, 0, 'c', 0, 0, 0, 0, 0, 99, 5);
        INSERT INTO message_bodies VALUES (7, '{\"k\":\"v\"}', 'hello');
        INSERT INTO messages VALUES (9, 1, 0, '', 1, 500, 2, 42, 0, 99, 3);
        INSERT INTO message_bodies VALUES (9, NULL, 'bye');
        INSERT INTO messages VALUES (12, 1, 0, '', 0, 0, 0, 0, 0, 99, 1);
        DELETE FROM messages WHERE id = 12;
    ";

    #[test]
    fn rows_of_earlier_layouts_become_batches_with_their_ids_and_state() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(LAYOUT_1).unwrap();
        migrate(&conn, true).unwrap();
        let batches: Vec<(i64, String, Vec<u8>)> = conn
            .prepare("SELECT id, meta, bodies FROM message_batches ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            batches,
            [
                (7, r#"[{"c":"c","s":5,"p":{"k":"v"}}]"#.to_string(), b"hello".to_vec()),
                (9, r#"[{"s":3}]"#.to_string(), b"bye".to_vec())
            ]
        );
        let states: Vec<(i64, bool, i64, u32, i64)> = conn
            .prepare("SELECT id, leased, visible_at, delivery_count, lease_token FROM message_states")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(states, [(9, true, 500, 2, 42)], "only the message that changed has a state row");
        let seq: i64 =
            conn.query_row("SELECT seq FROM sqlite_sequence WHERE name = 'message_batches'", [], |r| r.get(0)).unwrap();
        assert_eq!(seq, 12, "the deleted id 12 is never given again");
        let leftovers: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master
                 WHERE name IN ('messages', 'message_bodies', 'messages_by_expiry', 'messages_by_channel')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(leftovers, 0);
        // Running it again on the current layout changes nothing.
        migrate(&conn, true).unwrap();
        assert_eq!(conn.query_row("SELECT COUNT(*) FROM message_batches", [], |r| r.get::<_, i64>(0)).unwrap(), 2);
    }
}
