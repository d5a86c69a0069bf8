//! The SQLite schema. Each index entry costs every message an insert and a delete, so
//! messages carry as few as their queries need: a message and its body are one row, and
//! retention needs no index of its own (see `messages::expired_ids`).

use rusqlite::Connection;

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
pub(crate) const WRITER_PRAGMAS: &str = "
    PRAGMA auto_vacuum = NONE;
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = FULL;
    PRAGMA wal_autocheckpoint = 16000;
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
CREATE TABLE IF NOT EXISTS retry_tokens (
    tenancy_id      TEXT NOT NULL,
    token           TEXT NOT NULL,
    digest          TEXT NOT NULL,
    work_request_id TEXT NOT NULL,
    expires_at      INTEGER NOT NULL,
    PRIMARY KEY (tenancy_id, token)
);
-- leased = 0: ready, oldest id first per channel.
-- leased = 1: invisible until visible_at (a lease, or a delivery delay when delivery_count = 0).
-- AUTOINCREMENT: ids are never reused, so clients can deduplicate by id.
CREATE TABLE IF NOT EXISTS messages (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    queue          INTEGER NOT NULL,
    dlq            INTEGER NOT NULL,
    channel        TEXT NOT NULL,
    leased         INTEGER NOT NULL,
    visible_at     INTEGER NOT NULL,
    delivery_count INTEGER NOT NULL,
    lease_token    INTEGER NOT NULL,
    created_at     INTEGER NOT NULL,
    expire_at      INTEGER NOT NULL,
    size           INTEGER NOT NULL,
    properties     TEXT,
    content        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_ready ON messages (queue, dlq, channel, id) WHERE leased = 0;
CREATE INDEX IF NOT EXISTS messages_invisible ON messages (queue, dlq, visible_at) WHERE leased = 1;
-- Named channels only, for the channel limit and ListChannels: the default channel needs no
-- registry, and most messages are in it.
CREATE INDEX IF NOT EXISTS messages_in_named_channels ON messages (queue, channel) WHERE channel != '';
";

/// Brings a database of any earlier layout to the current one, then creates what is missing.
pub(crate) fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let separate_bodies: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'message_bodies')",
        [],
        |row| row.get(0),
    )?;
    if separate_bodies {
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
    // Layouts 1 and 2 indexed every message by channel; now only named channels are.
    conn.execute_batch("DROP INDEX IF EXISTS messages_by_channel")?;
    conn.execute_batch(SCHEMA)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message tables as layout 1 created them.
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
    ";

    #[test]
    fn layout_1_moves_bodies_into_message_rows() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(LAYOUT_1).unwrap();
        migrate(&conn).unwrap();
        let row: (i64, String, Option<String>, String) = conn
            .query_row("SELECT id, channel, properties, content FROM messages", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .unwrap();
        assert_eq!(row, (7, "c".into(), Some("{\"k\":\"v\"}".into()), "hello".into()));
        let leftovers: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master
                 WHERE name IN ('message_bodies', 'messages_by_expiry', 'messages_by_channel')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(leftovers, 0);
        // Running it again on the current layout changes nothing.
        migrate(&conn).unwrap();
    }
}
