-- How the lease's pick is planned with the messages table's primary key led by the id
-- (layout 2) or by the queue (layout 3), in a scratch schema of its own:
--   psql URL -v key='id, queue' -v queues=10 -v rows=400000 -f scripts/pg-pick-plan.sql
--   psql URL -v key='queue, id' -v queues=10 -v rows=400000 -f scripts/pg-pick-plan.sql
-- :rows messages in :queues queues of like size, interleaved by id, every tenth message
-- leased; with 10 queues, queue 1 holds only leased ones, so its pick finds nothing.
-- The columns and the pick are those of crates/berth-store/src/postgres (schema.rs, PICK).
\set ON_ERROR_STOP on
DROP SCHEMA IF EXISTS berth_pick_plan CASCADE;
CREATE SCHEMA berth_pick_plan;
SET search_path = berth_pick_plan;
CREATE TABLE messages (
    id bigint GENERATED ALWAYS AS IDENTITY, queue bigint NOT NULL, channel text NOT NULL,
    dlq boolean NOT NULL DEFAULT false, leased boolean NOT NULL, visible_at bigint NOT NULL,
    delivery_count bigint NOT NULL DEFAULT 0, lease_token bigint NOT NULL DEFAULT 0,
    created_at bigint NOT NULL, expire_at bigint NOT NULL, size bigint NOT NULL, content text, properties text,
    PRIMARY KEY (:key));
CREATE INDEX messages_ready ON messages (queue, dlq, channel, id) WHERE NOT leased;
CREATE INDEX messages_invisible ON messages (queue, visible_at) WHERE leased;
CREATE INDEX messages_expiry ON messages (expire_at) WHERE NOT leased;
INSERT INTO messages (queue, channel, leased, visible_at, created_at, expire_at, size, content)
SELECT (g % :queues) + 1, '', g % 10 = 0, 0, 0, 9e15, 100, repeat('x', 100) FROM generate_series(1, :rows) g;
ANALYZE messages;
PREPARE pick(bigint, boolean, text[], bigint[], bigint, bigint) AS
    SELECT p.id, p.size, c.channel
    FROM (SELECT * FROM unnest($3::text[], $4::bigint[]) AS u(channel, floor) ORDER BY random()) c
    CROSS JOIN LATERAL (
        SELECT id, size FROM messages m
        WHERE m.queue = $1 AND m.dlq = $2 AND m.channel = c.channel AND NOT m.leased AND m.id >= c.floor
          AND m.expire_at > $6
        ORDER BY m.id LIMIT $5 FOR UPDATE SKIP LOCKED) p
    LIMIT $5;
-- Berth's statements are prepared, so after five runs PostgreSQL may plan them generically.
SET plan_cache_mode = force_generic_plan;
\echo 'queue 1 (nothing ready), from id 0:'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE pick(1, false, ARRAY[''], ARRAY[0::bigint], 20, 0);
\echo 'queue 3 (ready messages), from id 0:'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE pick(3, false, ARRAY[''], ARRAY[0::bigint], 20, 0);
DROP SCHEMA berth_pick_plan CASCADE;
