//! Message operations: the [`Index`] decides, SQLite keeps the durable copy. Each runs as a
//! writer job; [`persist`] writes what the index changed in the same transaction.

use std::collections::{HashMap, HashSet};

use berth_core::clock::Timestamp;
use berth_core::consumer_group::{route, Route};
use berth_core::delivery::Standing;
use berth_core::model::{LeaseRef, LeaseRequest, LeasedMessage, MessageToStore, PeekedMessage, PurgeTarget, QueueRow};
use berth_core::store::{Appended, Change, Leased, Settle, SweepReport};
use rusqlite::types::Type;
use rusqlite::{params, Connection, OptionalExtension};

use super::index::{self, Index, NewSlot, Persist, Pick, Picked, Slot};
use super::schema::{self, Fanout, MessageMeta};
use super::{consumer_groups, per_message_states, PutFailed};

/// Expired leases released per lease call; the sweeper handles any surplus.
const RELEASE_PER_LEASE: u32 = 256;

/// Reads every message's state into a new index.
pub(crate) fn load(conn: &Connection) -> rusqlite::Result<Index> {
    let seq: Option<i64> = conn
        .query_row("SELECT seq FROM sqlite_sequence WHERE name = 'message_batches'", [], |row| row.get(0))
        .optional()?;
    let mut index = Index::new(seq.unwrap_or(0) + 1);
    let mut legacy = per_message_states::LegacyStates::read(conn)?;
    let mut views = stream_states(conn)?;
    let mut batches = conn.prepare(
        "SELECT b.id, b.queue, b.created_at, b.expire_at, b.meta, s.states, b.fanout
         FROM message_batches b LEFT JOIN message_batch_states s ON s.id = b.id ORDER BY b.id",
    )?;
    let mut batches = batches.query([])?;
    // Most messages are in the default channel: share one name instead of allocating each.
    let default_channel: std::sync::Arc<str> = "".into();
    while let Some(batch) = batches.next()? {
        let last: i64 = batch.get(0)?;
        let meta = parse_meta(batch, 4)?;
        let first = last - meta.len() as i64 + 1;
        let (created_at, expire_at): (i64, i64) = (batch.get(2)?, batch.get(3)?);
        if let Some(fanout) = batch.get_ref(6)?.as_str_or_null()? {
            let Fanout(targets) = serde_json::from_str(fanout)
                .map_err(|e| rusqlite::Error::FromSqlConversionFailure(6, Type::Text, Box::new(e)))?;
            let news: Vec<NewSlot<'_>> = meta
                .iter()
                .map(|m| NewSlot { channel: &m.channel, size: m.size, delayed_until: m.delayed_until })
                .collect();
            for (stream, positions) in targets {
                let positions: Vec<usize> = positions.into_iter().map(|at| at as usize).collect();
                let mut slots = index::view_slots(&news, &positions, created_at);
                match views.remove(&(stream, last)) {
                    // The stream is done with this batch.
                    Some(states) if states.is_empty() => continue,
                    Some(states) => schema::decode_states(&states, &mut slots)
                        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(2, Type::Blob, e.into()))?,
                    None => {}
                }
                index.restore_view(stream, first, created_at, expire_at, slots);
            }
            continue;
        }
        // A fresh vector: collecting in place would keep the (larger) meta buffer for good.
        let mut slots: Vec<Slot> = Vec::with_capacity(meta.len());
        slots.extend(meta.into_iter().map(|m| {
            let channel = if m.channel.is_empty() { default_channel.clone() } else { m.channel.into() };
            Slot::as_put(channel, m.size, m.delayed_until, created_at)
        }));
        if let Some(states) = batch.get_ref(5)?.as_blob_or_null()? {
            schema::decode_states(states, &mut slots)
                .map_err(|e| rusqlite::Error::FromSqlConversionFailure(5, Type::Blob, e.into()))?;
        }
        if let Some(legacy) = &mut legacy {
            legacy.apply(first, last, &mut slots);
        }
        index.restore(batch.get(1)?, first, created_at, expire_at, slots);
    }
    let mut policies = conn.prepare("SELECT row, dead_letter_after FROM queues")?;
    let mut policies = policies.query([])?;
    while let Some(queue) = policies.next()? {
        index.set_dead_letter_after(queue.get(0)?, queue.get(1)?);
    }
    let parents: Vec<QueueRow> = conn
        .prepare("SELECT DISTINCT parent FROM queues WHERE parent IS NOT NULL AND state <> 'DELETED'")?
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for queue in parents {
        index.set_subscribers(queue, consumer_groups::subscribers(conn, queue)?);
    }
    Ok(index)
}

/// Each stream's stored state of each fanned-out batch it had, by (stream, last id).
fn stream_states(conn: &Connection) -> rusqlite::Result<HashMap<(QueueRow, i64), Vec<u8>>> {
    let mut statement = conn.prepare("SELECT stream, id, states FROM stream_batch_states")?;
    let rows = statement.query_map([], |row| Ok(((row.get(0)?, row.get(1)?), row.get(2)?)))?;
    rows.collect()
}

fn parse_meta(row: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<Vec<MessageMeta>> {
    let text = row.get_ref(column)?.as_str()?;
    serde_json::from_str(text).map_err(|e| rusqlite::Error::FromSqlConversionFailure(column, Type::Text, Box::new(e)))
}

/// Makes an index change and writes the rows it needs, in the same job.
fn durably<T>(
    conn: &Connection,
    index: &mut Index,
    change: impl FnOnce(&mut Index, &mut Vec<Persist>) -> T,
) -> rusqlite::Result<T> {
    let mut writes = Vec::new();
    let outcome = change(index, &mut writes);
    persist(conn, index, &writes)?;
    Ok(outcome)
}

/// Writes what index changes need: each changed batch's state row once, as the index now
/// has it, and the rows of batches gone.
pub(super) fn persist(conn: &Connection, index: &mut Index, writes: &[Persist]) -> rusqlite::Result<()> {
    if writes.is_empty() {
        return Ok(());
    }
    // Fetched once per call: looking a cached statement up hashes its whole text.
    let mut save = conn.prepare_cached(
        "INSERT INTO message_batch_states (id, states) VALUES (?1, ?2)
         ON CONFLICT (id) DO UPDATE SET states = excluded.states",
    )?;
    let mut drop_batch = conn.prepare_cached("DELETE FROM message_batches WHERE id = ?1")?;
    let mut drop_states = conn.prepare_cached("DELETE FROM message_batch_states WHERE id = ?1")?;
    let mut save_view = conn.prepare_cached(
        "INSERT INTO stream_batch_states (stream, id, states) VALUES (?1, ?2, ?3)
         ON CONFLICT (stream, id) DO UPDATE SET states = excluded.states",
    )?;
    let mut drop_views = conn.prepare_cached("DELETE FROM stream_batch_states WHERE id = ?1")?;
    let mut saved = HashSet::new();
    for write in writes {
        match *write {
            Persist::States { queue, last } => {
                // A batch dropped later in the same job is gone from the index: its rows go.
                let Some(slots) = index.batch_slots(queue, last) else { continue };
                if !saved.insert((queue, last)) {
                    continue;
                }
                if index.is_shared(last) {
                    save_view.execute(params![queue, last, schema::encode_states(slots)])?;
                } else {
                    save.execute(params![last, schema::encode_states(slots)])?;
                }
            }
            Persist::DropBatch { queue, last } => {
                if !index.is_shared(last) {
                    drop_batch.execute(params![last])?;
                    drop_states.execute(params![last])?;
                } else if index.release_view(last) {
                    drop_batch.execute(params![last])?;
                    drop_views.execute(params![last])?;
                } else {
                    // Other streams still have messages of it.
                    save_view.execute(params![queue, last, Vec::<u8>::new()])?;
                }
            }
        }
    }
    Ok(())
}

/// Where a put went: its outcome, and for a queue with consumer groups what it changed in
/// each stream that got messages (`None`: the queue itself).
pub(crate) type Put = (Appended, Option<Vec<Change>>);

/// Stores one put as one batch row, fanned out to the queue's consumer groups if it has
/// any. The index changes only once the row is written, so a failed put leaves it as it was.
pub(crate) fn put(
    conn: &Connection,
    index: &mut Index,
    queue: QueueRow,
    messages: Vec<MessageToStore>,
    max_channels: u32,
) -> Result<Put, PutFailed> {
    let Some(head) = messages.first() else { return Ok((Appended::Stored(Vec::new()), None)) };
    // The engine stamps a put's messages alike.
    let (created_at, expire_at) = (head.created_at.0, head.expire_at.0);
    if !index.knows_policy(queue) {
        let threshold: Option<u32> = conn
            .prepare_cached("SELECT dead_letter_after FROM queues WHERE row = ?1")?
            .query_row(params![queue], |row| row.get(0))
            .optional()?;
        // No row (deleted meanwhile): nothing to remember for a row that may be reused.
        if let Some(threshold) = threshold {
            index.set_dead_letter_after(queue, threshold);
        }
    }
    let targets = match route(queue, index.subscribers(queue), &messages) {
        Route::Itself => None,
        Route::Streams(streams) => Some(streams),
    };
    let channels: Vec<&str> = messages.iter().map(|m| m.message.channel.as_str()).collect();
    let fit = match &targets {
        None => index.channels_fit(queue, &channels, max_channels),
        Some(targets) => targets.iter().all(|(stream, positions)| {
            let taken: Vec<&str> = positions.iter().map(|&at| channels[at]).collect();
            index.channels_fit(*stream, &taken, max_channels)
        }),
    };
    if !fit {
        return Ok((Appended::ChannelsFull, None));
    }
    let first = index.next_id();
    let last = first + messages.len() as i64 - 1;
    let ids = Appended::Stored((first..=last).collect());
    if targets.as_ref().is_some_and(Vec::is_empty) {
        // No group takes them: dropped, as OCI does, but their ids stay used.
        // The table's sequence has no row before its first insert.
        let moved = conn
            .prepare_cached("UPDATE sqlite_sequence SET seq = max(seq, ?1) WHERE name = 'message_batches'")?
            .execute(params![last])?;
        if moved == 0 {
            conn.prepare_cached("INSERT INTO sqlite_sequence (name, seq) VALUES ('message_batches', ?1)")?
                .execute(params![last])?;
        }
        index.skip_ids(messages.len());
        return Ok((ids, Some(Vec::new())));
    }
    let sums = schema::encode_sums(messages.iter().map(|m| m.message.content.as_bytes()));
    let mut bodies = Vec::with_capacity(messages.iter().map(|m| m.message.content.len()).sum());
    let meta: Vec<MessageMeta> = messages
        .iter()
        .map(|m| {
            bodies.extend_from_slice(m.message.content.as_bytes());
            MessageMeta {
                channel: m.message.channel.clone(),
                size: u32::try_from(m.message.content.len()).unwrap_or(u32::MAX),
                properties: m.message.properties.clone(),
                delayed_until: m.delayed_until.map(|at| at.0),
            }
        })
        .collect();
    let meta_json = json(&meta)?;
    let fanout = targets
        .as_ref()
        .map(|targets| {
            let positions = |p: &Vec<usize>| p.iter().map(|&at| at as u32).collect();
            json(&Fanout(targets.iter().map(|(stream, p)| (*stream, positions(p))).collect()))
        })
        .transpose()?;
    conn.prepare_cached(
        "INSERT INTO message_batches (id, queue, created_at, expire_at, meta, bodies, sums, fanout)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .and_then(|mut s| s.execute(params![last, queue, created_at, expire_at, meta_json, bodies, sums, fanout]))?;
    let slots: Vec<NewSlot<'_>> =
        meta.iter().map(|m| NewSlot { channel: &m.channel, size: m.size, delayed_until: m.delayed_until }).collect();
    let streams = match &targets {
        None => {
            index.put(queue, &slots, created_at, expire_at);
            None
        }
        Some(targets) => {
            index.put_fanned(targets, &slots, created_at, expire_at);
            Some(Change::of_fanned_put(targets, &messages))
        }
    };
    Ok((ids, streams))
}

fn json(value: &impl serde::Serialize) -> Result<String, PutFailed> {
    serde_json::to_string(value).map_err(|e| PutFailed(berth_core::error::StoreError::Backend(e.to_string())))
}

/// Leases as the request says; also whether ended leases were settled on the way (messages
/// ready, or dead letters, that no put announced).
pub(crate) fn lease(conn: &Connection, index: &mut Index, req: &LeaseRequest) -> rusqlite::Result<(Leased, bool)> {
    let mut report = SweepReport::default();
    let pick = Pick {
        dead_letter: req.dead_letter,
        channel: req.channel.as_deref(),
        max_messages: req.max_messages as usize,
        max_bytes: req.max_bytes,
        now: req.now.0,
        visible_after: req.visible_after.0,
    };
    let picked = durably(conn, index, |index, writes| {
        index.settle(req.queue, req.now.0, RELEASE_PER_LEASE, &mut report, writes);
        index.lease(req.queue, &pick, writes)
    })?;
    let (messages, unreadable) = read_bodies(conn, &picked, req.visible_after)?;
    if !unreadable.is_empty() {
        durably(conn, index, |index, writes| {
            for (p, reason) in &unreadable {
                let to_dlq = index.quarantine(req.queue, p.id, writes);
                tracing::error!(
                    queue = req.queue,
                    message_id = p.id,
                    reason = %reason,
                    moved = if to_dlq == Some(true) { "to the DLQ" } else { "away (it was in the DLQ)" },
                    "a stored message cannot be read; taken out of the queue"
                );
            }
        })?;
    }
    let next_visible_at =
        if messages.is_empty() { index.next_visible_at(req.queue, req.dead_letter).map(Timestamp) } else { None };
    Ok((Leased { messages, next_visible_at }, report.released + report.dead_lettered > 0))
}

/// The bodies of the messages a peek shows; those that cannot be read are left out (the
/// next lease of one takes it out of the queue).
pub(crate) fn peek(conn: &Connection, shown: &[(Picked, Standing, i64)]) -> rusqlite::Result<Vec<PeekedMessage>> {
    let picked: Vec<Picked> = shown.iter().map(|(p, _, _)| p.clone()).collect();
    let (read, _) = read_bodies(conn, &picked, Timestamp(0))?;
    let mut standings = shown.iter().map(|(p, stands, visible_at)| (p.id, (*stands, *visible_at))).peekable();
    let mut messages = Vec::with_capacity(read.len());
    for m in read {
        // Both in id order; skip the unreadable ones.
        let Some((_, (standing, visible_at))) = standings.find(|(id, _)| *id == m.id) else { continue };
        messages.push(PeekedMessage {
            id: m.id,
            content: m.content,
            channel: m.channel,
            properties: m.properties,
            delivery_count: m.delivery_count,
            created_at: m.created_at,
            expire_at: m.expire_at,
            visible_at: Timestamp(visible_at),
            standing,
        });
    }
    Ok(messages)
}

/// Whether a read failed for the row itself, which no retry mends.
fn is_damage(error: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    match error {
        rusqlite::Error::QueryReturnedNoRows
        | rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::Utf8Error(..) => true,
        _ => matches!(error.sqlite_error_code(), Some(DatabaseCorrupt | NotADatabase)),
    }
}

/// A leased message whose body could not be read, and why.
type Unreadable<'a> = (&'a Picked, String);

/// The leased messages with their bodies and properties, one read per batch row; those
/// whose row is gone or damaged, whose checksum does not match, or whose content is not
/// UTF-8 come back apart, so that one bad row does not stop the queue.
fn read_bodies<'a>(
    conn: &Connection,
    picked: &'a [Picked],
    visible_after: Timestamp,
) -> rusqlite::Result<(Vec<LeasedMessage>, Vec<Unreadable<'a>>)> {
    let mut read = conn.prepare_cached("SELECT meta, bodies, sums FROM message_batches WHERE id = ?1")?;
    let mut messages = Vec::with_capacity(picked.len());
    let mut unreadable = Vec::new();
    for group in picked.chunk_by(|a, b| a.batch == b.batch) {
        let mut served = Vec::with_capacity(group.len());
        let mut bad = Vec::new();
        let read_group = read.query_row(params![group[0].batch], |row| {
            let bodies = row.get_ref(1)?.as_blob()?;
            let sums = row.get_ref(2)?.as_blob_or_null()?;
            // Most messages have no properties: parse the meta only for a batch that has some.
            let meta: Option<Vec<MessageMeta>> =
                if row.get_ref(0)?.as_str()?.contains("\"p\"") { Some(parse_meta(row, 0)?) } else { None };
            for p in group {
                let Some(bytes) = bodies.get(p.offset..p.offset + p.size as usize) else {
                    bad.push((p, "the batch row is shorter than its messages".to_owned()));
                    continue;
                };
                if schema::sum_at(sums, p.position).is_some_and(|sum| crc32fast::hash(bytes) != sum) {
                    bad.push((p, "its checksum does not match".to_owned()));
                    continue;
                }
                let content = match String::from_utf8(bytes.to_vec()) {
                    Ok(content) => content,
                    Err(e) => {
                        bad.push((p, format!("its content is not UTF-8: {e}")));
                        continue;
                    }
                };
                let properties = meta.as_ref().and_then(|m| m.get(p.position)).and_then(|m| m.properties.clone());
                served.push(LeasedMessage {
                    id: p.id,
                    content,
                    channel: p.channel.to_string(),
                    properties,
                    delivery_count: p.delivery_count,
                    created_at: Timestamp(p.created_at),
                    expire_at: Timestamp(p.expire_at),
                    visible_after,
                    lease_token: p.lease_token,
                });
            }
            Ok(())
        });
        match read_group {
            Ok(()) => {
                messages.extend(served);
                unreadable.extend(bad);
            }
            // A missing row, a damaged page, meta that does not parse: the whole batch.
            Err(e) if is_damage(&e) => {
                unreadable.extend(group.iter().map(|p| (p, format!("its batch row cannot be read: {e}"))))
            }
            // I/O, memory, a full disk: the job fails and the lease is undone; retrying may work.
            Err(e) => return Err(e),
        }
    }
    Ok((messages, unreadable))
}

pub(crate) fn extend(
    conn: &Connection,
    index: &mut Index,
    leases: &[(LeaseRef, Timestamp)],
    now: Timestamp,
) -> rusqlite::Result<Vec<bool>> {
    durably(conn, index, |index, writes| index.extend(leases, now.0, writes))
}

pub(crate) fn delete(
    conn: &Connection,
    index: &mut Index,
    leases: &[LeaseRef],
    now: Timestamp,
) -> rusqlite::Result<Vec<bool>> {
    durably(conn, index, |index, writes| index.delete(leases, now.0, writes))
}

pub(crate) fn purge(
    conn: &Connection,
    index: &mut Index,
    queue: QueueRow,
    target: PurgeTarget,
    channels: Option<&[String]>,
    to_settle: Settle,
) -> rusqlite::Result<u64> {
    durably(conn, index, |index, writes| {
        settle(index, queue, to_settle, writes);
        index.purge(queue, target, channels, to_settle.batch, writes)
    })
}

pub(crate) fn redrive(
    conn: &Connection,
    index: &mut Index,
    queue: QueueRow,
    channels: Option<&[String]>,
    to_settle: Settle,
) -> rusqlite::Result<u64> {
    durably(conn, index, |index, writes| {
        settle(index, queue, to_settle, writes);
        index.redrive(queue, channels, to_settle.batch, writes)
    })
}

/// Settles a queue's ended leases before a bulk operation, as `to_settle` says.
fn settle(index: &mut Index, queue: QueueRow, to_settle: Settle, writes: &mut Vec<Persist>) {
    let (now, limit) = (to_settle.now.0, to_settle.batch);
    index.settle(queue, now, limit, &mut SweepReport::default(), writes);
}

/// One bounded round of background work; also the queues with leases released or
/// dead-lettered, whose pollers should look again.
pub(crate) fn sweep(
    conn: &Connection,
    index: &mut Index,
    now: Timestamp,
    batch: u32,
) -> rusqlite::Result<(SweepReport, Vec<QueueRow>)> {
    let mut report = SweepReport::default();
    let mut settled = Vec::new();
    let queues: Vec<(QueueRow, String, i64)> = conn
        .prepare_cached("SELECT row, state, updated_at FROM queues")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let live: std::collections::HashSet<QueueRow> = queues.iter().map(|(row, ..)| *row).collect();
    let mut writes = Vec::new();
    for orphan in index.orphans(|queue| live.contains(&queue)) {
        report.reclaimed += index.reclaim(orphan, batch, &mut writes).0;
    }
    for (queue, state, updated_at) in queues {
        if state == "DELETED" {
            let (reclaimed, empty) = index.reclaim(queue, batch, &mut writes);
            report.reclaimed += reclaimed;
            // GetQueue still answers it as DELETED for a while.
            if empty && updated_at <= now.0 - berth_core::limits::DELETED_QUEUE_VISIBLE_MS {
                conn.execute("DELETE FROM queues WHERE row = ?1", params![queue])?;
                // SQLite may give the row to the next queue: it must not inherit this policy.
                index.forget_dead_letter_after(queue);
            }
            continue;
        }
        // One budget for retention across all queues, so that a sweep stays bounded.
        let budget = batch.saturating_sub(u32::try_from(report.expired).unwrap_or(u32::MAX));
        report.expired += index.expire(queue, now.0, budget, &mut writes);
        let ended_before = report.released + report.dead_lettered;
        index.settle(queue, now.0, batch, &mut report, &mut writes);
        if report.released + report.dead_lettered > ended_before {
            settled.push(queue);
        }
    }
    persist(conn, index, &writes)?;
    conn.execute("DELETE FROM retry_tokens WHERE expires_at <= ?1", params![now.0])?;
    report.reclaimed += conn.execute(
        "DELETE FROM work_requests WHERE rowid IN
             (SELECT rowid FROM work_requests WHERE accepted_at <= ?1 ORDER BY accepted_at LIMIT ?2)",
        params![now.0 - berth_core::limits::WORK_REQUEST_RETENTION_MS, batch],
    )? as u64;
    Ok((report, settled))
}
