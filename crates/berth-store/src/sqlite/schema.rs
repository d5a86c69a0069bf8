//! The SQLite schema. Message bodies live apart from the message rows so that leasing,
//! which rewrites a row, never rewrites its content.

/// Connection settings for every connection.
pub(crate) const PRAGMAS: &str = "
    PRAGMA busy_timeout = 10000;
    PRAGMA foreign_keys = OFF;
    PRAGMA temp_store = MEMORY;
";

/// Settings of the writer connection: durable commits, incremental space reclaim. The
/// writer checkpoints only as a safety net (the WAL past ~64 MiB): checkpoints normally run
/// on another connection (`SqliteStore::checkpoint`), off the writer's commit path.
pub(crate) const WRITER_PRAGMAS: &str = "
    PRAGMA auto_vacuum = INCREMENTAL;
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = FULL;
    PRAGMA wal_autocheckpoint = 16000;
";

/// Creates what is missing.
pub(crate) const SCHEMA: &str = "
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
    size           INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_ready ON messages (queue, dlq, channel, id) WHERE leased = 0;
CREATE INDEX IF NOT EXISTS messages_invisible ON messages (queue, dlq, visible_at) WHERE leased = 1;
CREATE INDEX IF NOT EXISTS messages_by_channel ON messages (queue, channel);
CREATE INDEX IF NOT EXISTS messages_by_expiry ON messages (expire_at);
CREATE TABLE IF NOT EXISTS message_bodies (
    id         INTEGER PRIMARY KEY,
    properties TEXT,
    content    TEXT NOT NULL
);
";
