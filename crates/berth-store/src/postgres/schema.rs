//! The PostgreSQL schema, created on first start and versioned in `berth_meta`.
//!
//! A message is a row. `leased` says it is invisible until `visible_at` (a lease, or a
//! delay when `delivery_count` = 0); an ended one is settled by the next lease call or the
//! sweep. Partial indexes keep each access path small: ready rows by (queue, side,
//! channel, id) for leasing in order, invisible rows by (queue, visible_at) for settling,
//! ready rows by expiry for retention.

use berth_core::error::StoreError;
use deadpool_postgres::Object;

use super::pg;

/// The layout this build reads and writes: layout N is the first N of [`MIGRATIONS`]. A
/// database with a newer one is refused; an older one gets the migrations it lacks.
pub(crate) const LAYOUT: i64 = MIGRATIONS.len() as i64;

const MIGRATIONS: [&str; 3] = [SCHEMA, CONSUMER_GROUPS, QUEUE_FIRST_KEY];

/// Advisory lock key held while the schema is made, so that nodes starting at once do not race.
const SCHEMA_LOCK: i64 = 0x6265_7274_6801; // "berth" + 1

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS berth_meta (
    key   text PRIMARY KEY,
    value bytea NOT NULL
);
CREATE TABLE IF NOT EXISTS tenancies (
    id   text PRIMARY KEY,
    name text NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS users (
    id                    text PRIMARY KEY,
    tenancy_id            text NOT NULL,
    name                  text NOT NULL,
    fingerprint           text NOT NULL,
    public_key            bytea NOT NULL,
    stomp_passcode_sha256 text NOT NULL,
    UNIQUE (tenancy_id, name)
);
-- Identity rows are never reused, so a new queue never inherits an old one's messages.
CREATE TABLE IF NOT EXISTS queues (
    row               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id                text NOT NULL UNIQUE,
    tenancy_id        text NOT NULL,
    compartment_id    text NOT NULL,
    display_name      text NOT NULL,
    state             text NOT NULL,
    created_at        bigint NOT NULL,
    updated_at        bigint NOT NULL,
    version           bigint NOT NULL,
    dead_letter_after bigint NOT NULL,
    spec              text NOT NULL
);
CREATE INDEX IF NOT EXISTS queues_by_tenancy ON queues (tenancy_id, created_at);
CREATE TABLE IF NOT EXISTS work_requests (
    seq            bigint GENERATED ALWAYS AS IDENTITY,
    id             text PRIMARY KEY,
    tenancy_id     text NOT NULL,
    compartment_id text NOT NULL,
    accepted_at    bigint NOT NULL,
    body           text NOT NULL
);
CREATE INDEX IF NOT EXISTS work_requests_by_tenancy ON work_requests (tenancy_id, accepted_at);
CREATE INDEX IF NOT EXISTS work_requests_by_age ON work_requests (accepted_at);
CREATE TABLE IF NOT EXISTS retry_tokens (
    tenancy_id      text NOT NULL,
    token           text NOT NULL,
    digest          text NOT NULL,
    work_request_id text NOT NULL,
    expires_at      bigint NOT NULL,
    PRIMARY KEY (tenancy_id, token)
);
-- Ids rise in put order and are never reused (clients deduplicate by id).
CREATE TABLE IF NOT EXISTS messages (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue          bigint NOT NULL,
    channel        text NOT NULL,
    dlq            boolean NOT NULL DEFAULT false,
    leased         boolean NOT NULL,
    visible_at     bigint NOT NULL,
    delivery_count bigint NOT NULL DEFAULT 0,
    lease_token    bigint NOT NULL DEFAULT 0,
    created_at     bigint NOT NULL,
    expire_at      bigint NOT NULL,
    size           bigint NOT NULL,
    content        text NOT NULL,
    properties     text
);
CREATE INDEX IF NOT EXISTS messages_ready ON messages (queue, dlq, channel, id) WHERE NOT leased;
CREATE INDEX IF NOT EXISTS messages_invisible ON messages (queue, visible_at) WHERE leased;
CREATE INDEX IF NOT EXISTS messages_expiry ON messages (expire_at) WHERE NOT leased;
-- Every message is inserted, updated at each lease and deleted: vacuum by dead rows, not by
-- table size (whose default 20 % lets a busy queue's table grow with its churn), unthrottled.
ALTER TABLE messages SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 20000,
                          autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 20000,
                          autovacuum_vacuum_cost_delay = 0, vacuum_truncate = false);
";

/// Layout 2: consumer groups. A group is a `queues` row with its queue's row in `parent`
/// and in `stream` the row its messages live in (NULL: its own; the primary group's is its
/// queue's). A put fanned out to several streams is one row per stream with the same id and
/// no content, and one `bodies` row with the content and how many streams hold it; each
/// such row deleted leaves its id in `body_releases` (append-only, so that groups deleting
/// copies of the same messages never wait for each other), which the sweeper folds into
/// `refs`, deleting a body once no stream holds it.
const CONSUMER_GROUPS: &str = "
ALTER TABLE queues ADD COLUMN IF NOT EXISTS parent bigint;
ALTER TABLE queues ADD COLUMN IF NOT EXISTS stream bigint;
CREATE INDEX IF NOT EXISTS queues_by_parent ON queues (parent) WHERE parent IS NOT NULL;
ALTER TABLE messages ALTER COLUMN content DROP NOT NULL;
ALTER TABLE messages DROP CONSTRAINT messages_pkey;
ALTER TABLE messages ADD PRIMARY KEY (id, queue);
CREATE TABLE IF NOT EXISTS bodies (
    id         bigint PRIMARY KEY,
    content    text NOT NULL,
    properties text,
    refs       integer NOT NULL
);
CREATE TABLE IF NOT EXISTS body_releases (
    id bigint NOT NULL
);
CREATE OR REPLACE FUNCTION berth_release_body() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO body_releases (id) VALUES (OLD.id);
    RETURN NULL;
END $$;
CREATE TRIGGER messages_release_body AFTER DELETE ON messages
    FOR EACH ROW WHEN (OLD.content IS NULL) EXECUTE FUNCTION berth_release_body();
-- They churn with the fanned-out messages: vacuumed as messages is.
ALTER TABLE bodies SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 20000,
                        autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 20000,
                        autovacuum_vacuum_cost_delay = 0, vacuum_truncate = false);
ALTER TABLE body_releases SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 20000,
                               autovacuum_vacuum_insert_scale_factor = 0,
                               autovacuum_vacuum_insert_threshold = 20000, autovacuum_vacuum_cost_delay = 0,
                               vacuum_truncate = false);
";

/// Layout 3: the primary key leads with the queue. Led by the id, it was the planner's pick
/// for a lease whenever the table held several queues of like size (its order by id looked
/// cheaper than the ready index's scattered rows), and a lease of a queue with nothing
/// ready then walked the whole table's keys: 22–26 ms instead of 0.07–0.11 for 400,000 rows
/// in 10 queues (docs/BENCHMARKS.md, scripts/pg-pick-plan.sql). Older nodes' statements
/// work with either key.
const QUEUE_FIRST_KEY: &str = "
ALTER TABLE messages DROP CONSTRAINT messages_pkey, ADD PRIMARY KEY (queue, id);
";

/// The layout of the schema found; 0 if Berth made none here.
async fn layout(tx: &deadpool_postgres::Transaction<'_>) -> Result<i64, StoreError> {
    let made: bool = tx.query_one("SELECT to_regclass('berth_meta') IS NOT NULL", &[]).await.map_err(pg)?.get(0);
    if !made {
        return Ok(0);
    }
    let row = tx
        .query_opt("SELECT convert_from(value, 'UTF8') FROM berth_meta WHERE key = 'layout'", &[])
        .await
        .map_err(pg)?;
    let Some(found) = row.map(|row| row.get::<_, String>(0)) else { return Ok(0) };
    match found.parse() {
        Ok(layout) if layout >= 1 => Ok(layout),
        _ => Err(StoreError::Backend(format!("unknown schema layout {found:?}"))),
    }
}

/// An upgrade changes how rows are addressed, which nodes of the older release would get
/// wrong: it waits until no other session of this application name is connected, except
/// nodes starting at once (waiting for the schema lock, they read the new layout after).
async fn refuse_while_older_nodes_run(tx: &deadpool_postgres::Transaction<'_>) -> Result<(), StoreError> {
    let others = tx
        .query(
            "SELECT pid FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()
               AND application_name = current_setting('application_name')
               AND (wait_event_type IS DISTINCT FROM 'Lock' OR wait_event IS DISTINCT FROM 'advisory')",
            &[],
        )
        .await
        .map_err(pg)?;
    if others.is_empty() {
        return Ok(());
    }
    let pids: Vec<String> = others.iter().map(|row| row.get::<_, i32>(0).to_string()).collect();
    Err(StoreError::Backend(format!(
        "the database has Berth schema layout 1, which this build upgrades to {LAYOUT}, but other Berth sessions \
         are connected (server pids {}): stop every node of the older release, then start this one",
        pids.join(", ")
    )))
}

/// Makes or checks the schema, and returns the store's id.
pub(crate) async fn prepare(client: &mut Object) -> Result<String, StoreError> {
    let tx = client.transaction().await.map_err(pg)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK]).await.map_err(pg)?;
    // A schema made already takes no DDL: that would lock tables that other nodes' puts,
    // gets and vacuums are using.
    let found = layout(&tx).await?;
    if found == 1 {
        refuse_while_older_nodes_run(&tx).await?;
    }
    if found < LAYOUT {
        for migration in &MIGRATIONS[found as usize..] {
            tx.batch_execute(migration).await.map_err(pg)?;
        }
        tx.execute(
            "INSERT INTO berth_meta (key, value) VALUES ('layout', convert_to($1, 'UTF8'))
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            &[&LAYOUT.to_string()],
        )
        .await
        .map_err(pg)?;
    }
    if found > LAYOUT {
        return Err(StoreError::Backend(format!(
            "the database has Berth schema layout {found}, newer than this build's {LAYOUT}: \
             run a newer berth, or restore the database it had"
        )));
    }
    let mut secret = [0u8; 32];
    rand::Rng::fill(&mut rand::rngs::OsRng, &mut secret[..]);
    let id = format!("{:032x}", rand::Rng::gen::<u128>(&mut rand::rngs::OsRng));
    tx.execute(
        "INSERT INTO berth_meta (key, value) VALUES ('receipt_secret', $1), ('store_id', convert_to($2, 'UTF8'))
         ON CONFLICT DO NOTHING",
        &[&&secret[..], &id],
    )
    .await
    .map_err(pg)?;
    let store_id: String = tx
        .query_one("SELECT convert_from(value, 'UTF8') FROM berth_meta WHERE key = 'store_id'", &[])
        .await
        .map_err(pg)?
        .get(0);
    tx.commit().await.map_err(pg)?;
    Ok(store_id)
}
