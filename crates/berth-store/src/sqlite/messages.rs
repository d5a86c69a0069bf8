//! Message rows: put, lease, extend, delete, stats, channels, purge, redrive, sweep.
//! Every query walks an index, so its cost does not grow with the backlog.

use std::collections::{BTreeMap, HashMap, HashSet};

use berth_core::clock::Timestamp;
use berth_core::delivery::{after_lease, AfterLease};
use berth_core::error::QueueError;
use berth_core::model::{
    LeaseRef, LeaseRequest, LeasedMessage, MessageCounts, MessageToStore, PurgeTarget, QueueRow, QueueStats,
};
use berth_core::store::{Leased, Settle, SweepReport};
use rusqlite::{params, Connection, OptionalExtension};

use super::sql;

/// The lease token of a message not leased yet. Random lease tokens take 8 bytes in a row,
/// and so does this one: the first lease then leaves the row's size unchanged, and SQLite
/// rewrites a row of unchanged size in place instead of deleting and reinserting it.
const NEVER_LEASED: i64 = i64::MIN;

/// Expired leases released per lease call; the sweeper handles any surplus.
const RELEASE_PER_LEASE: u32 = 256;

/// What the writer remembers between jobs to skip queries that would find nothing. Each
/// entry is a lower bound on when there is work; all are lost on restart, which costs a query.
#[derive(Debug, Default)]
pub(crate) struct Watch {
    /// When each queue's oldest message expires, as far as the last sweep saw: queues not
    /// due are skipped by retention.
    expiry: HashMap<QueueRow, Timestamp>,
    /// Before when none of a queue's leases or delivery delays ends: lease calls settle
    /// only after it. Lowered by every write that starts a lease or delay, recomputed when
    /// settling, and forgotten at every sweep, so that a rolled-back transaction cannot
    /// leave one too late for longer than a sweep interval.
    lease_ends: HashMap<QueueRow, Timestamp>,
}

impl Watch {
    /// A lease or delay of `queue` now ends at `at`.
    fn lease_until(&mut self, queue: QueueRow, at: Timestamp) {
        if let Some(known) = self.lease_ends.get_mut(&queue) {
            *known = (*known).min(at);
        }
    }
}

pub(crate) fn put(
    conn: &Connection,
    queue: QueueRow,
    messages: Vec<MessageToStore>,
    max_channels: u32,
    watch: &mut Watch,
) -> Result<Vec<i64>, QueueError> {
    check_channel_limit(conn, queue, &messages, max_channels)?;
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO messages (queue, dlq, channel, leased, visible_at, delivery_count, lease_token, created_at,
                                   expire_at, size, properties, content)
             VALUES (?1, 0, ?2, ?3, ?4, 0, ?10, ?5, ?6, ?7, ?8, ?9)",
        )
        .map_err(sql)?;
    let mut ids = Vec::with_capacity(messages.len());
    for m in messages {
        let (leased, visible_at) = match m.delayed_until {
            Some(at) => {
                watch.lease_until(queue, at);
                (1, at.0)
            }
            None => (0, m.created_at.0),
        };
        let properties = m.message.properties.as_ref().map(|p| serde_json::to_string(p).unwrap_or_default());
        insert
            .execute(params![
                queue,
                m.message.channel,
                leased,
                visible_at,
                m.created_at.0,
                m.expire_at.0,
                m.message.content.len() as i64,
                properties,
                m.message.content,
                NEVER_LEASED
            ])
            .map_err(sql)?;
        ids.push(conn.last_insert_rowid());
    }
    Ok(ids)
}

/// Fails if the messages would bring the queue above `max_channels` non-empty channels.
fn check_channel_limit(
    conn: &Connection,
    queue: QueueRow,
    messages: &[MessageToStore],
    max_channels: u32,
) -> Result<(), QueueError> {
    let mut new_channels = Vec::new();
    for m in messages {
        let channel = &m.message.channel;
        if channel.is_empty() || new_channels.contains(channel) {
            continue;
        }
        let exists = conn
            .prepare_cached("SELECT 1 FROM messages WHERE queue = ?1 AND channel = ?2 AND channel != '' LIMIT 1")
            .and_then(|mut s| s.query_row(params![queue, channel], |_| Ok(())).optional())
            .map_err(sql)?;
        if exists.is_none() {
            new_channels.push(channel.clone());
        }
    }
    if new_channels.is_empty() {
        return Ok(());
    }
    let existing = channels(conn, queue, None, None, max_channels + 1).map_err(sql)?.len();
    if existing + new_channels.len() > max_channels as usize {
        return Err(QueueError::LimitExceeded(format!("a queue holds at most {max_channels} non-empty channels")));
    }
    Ok(())
}

/// Returns expired leases and due delays of one queue side to the ready state, moving
/// messages that used up their deliveries to the dead letter queue and deleting messages
/// past retention (retention sweeps only ready messages, see `expired_ids`).
fn release_expired(
    conn: &Connection,
    queue: QueueRow,
    dead_letter: bool,
    now: Timestamp,
    dead_letter_after: u32,
    limit: u32,
    report: &mut SweepReport,
) -> rusqlite::Result<()> {
    let due: Vec<(i64, u32, i64)> = conn
        .prepare_cached(
            "SELECT id, delivery_count, expire_at FROM messages
             WHERE queue = ?1 AND dlq = ?2 AND leased = 1 AND visible_at <= ?3 ORDER BY visible_at LIMIT ?4",
        )?
        .query_map(params![queue, dead_letter, now.0, limit], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut ready = conn.prepare_cached("UPDATE messages SET leased = 0 WHERE id = ?1")?;
    let mut dead = conn.prepare_cached("UPDATE messages SET leased = 0, dlq = 1 WHERE id = ?1")?;
    let mut gone = conn.prepare_cached("DELETE FROM messages WHERE id = ?1")?;
    for (id, delivery_count, expire_at) in due {
        if expire_at <= now.0 {
            gone.execute(params![id])?;
            report.expired += 1;
            continue;
        }
        match after_lease(delivery_count, dead_letter_after, dead_letter) {
            AfterLease::Redeliver => {
                ready.execute(params![id])?;
                report.released += 1;
            }
            AfterLease::DeadLetter => {
                dead.execute(params![id])?;
                report.dead_lettered += 1;
            }
        }
    }
    Ok(())
}

/// The next named channel after `after` holding messages (`ready_side`: ready messages of
/// that side).
fn next_channel(
    conn: &Connection,
    queue: QueueRow,
    ready_side: Option<bool>,
    after: &str,
) -> rusqlite::Result<Option<String>> {
    match ready_side {
        Some(dead_letter) => conn
            .prepare_cached(
                "SELECT channel FROM messages WHERE queue = ?1 AND dlq = ?2 AND leased = 0 AND channel > ?3
                 ORDER BY channel LIMIT 1",
            )?
            .query_row(params![queue, dead_letter, after], |row| row.get(0))
            .optional(),
        None => conn
            .prepare_cached(
                "SELECT channel FROM messages WHERE queue = ?1 AND channel > ?2 AND channel != ''
                 ORDER BY channel LIMIT 1",
            )?
            .query_row(params![queue, after], |row| row.get(0))
            .optional(),
    }
}

/// Releases the expired leases of both sides of a queue. Dead-lettering moves rows from the
/// main side to the DLQ side, so anything reading either side settles both first.
/// Returns how many leases it ended.
fn settle(
    conn: &Connection,
    queue: QueueRow,
    now: Timestamp,
    dead_letter_after: u32,
    limit: u32,
) -> rusqlite::Result<u64> {
    let mut report = SweepReport::default();
    for dead_letter in [false, true] {
        release_expired(conn, queue, dead_letter, now, dead_letter_after, limit, &mut report)?;
    }
    Ok(report.released + report.dead_lettered)
}

pub(crate) fn lease(conn: &Connection, req: &LeaseRequest, watch: &mut Watch) -> rusqlite::Result<Leased> {
    let settled = match watch.lease_ends.get(&req.queue) {
        Some(ends) if req.now < *ends => 0,
        _ => {
            let settled = settle(conn, req.queue, req.now, req.dead_letter_after, RELEASE_PER_LEASE)?;
            // Both sides: leases of the main side end on the DLQ side when dead-lettered.
            let ends = next_visible_at(conn, req.queue, true)?.unwrap_or(Timestamp(i64::MAX));
            watch.lease_ends.insert(req.queue, ends);
            settled
        }
    };
    let channels = match &req.channel {
        Some(channel) => vec![channel.clone()],
        None => ready_channels_fair(conn, req.queue, req.dead_letter)?,
    };
    let mut picked: Vec<LeasedMessage> = Vec::new();
    let mut bytes = 0usize;
    let mut pick = conn.prepare_cached(
        "SELECT id, delivery_count, created_at, expire_at, size, properties, content FROM messages
         WHERE queue = ?1 AND dlq = ?2 AND leased = 0 AND channel = ?3 AND expire_at > ?4
         ORDER BY id LIMIT ?5",
    )?;
    'channels: for channel in channels {
        let wanted = req.max_messages as usize - picked.len();
        let mut rows = pick.query(params![req.queue, req.dead_letter, channel, req.now.0, wanted as i64])?;
        while let Some(row) = rows.next()? {
            let size = row.get::<_, i64>(4)? as usize;
            if !picked.is_empty() && bytes + size > req.max_bytes {
                break 'channels;
            }
            bytes += size;
            let properties: Option<String> = row.get(5)?;
            picked.push(LeasedMessage {
                id: row.get(0)?,
                content: row.get(6)?,
                channel: channel.clone(),
                properties: properties.and_then(|p| serde_json::from_str::<BTreeMap<String, String>>(&p).ok()),
                delivery_count: row.get::<_, u32>(1)? + 1,
                created_at: Timestamp(row.get(2)?),
                expire_at: Timestamp(row.get(3)?),
                visible_after: req.visible_after,
                lease_token: rand::random(),
            });
        }
        if picked.len() >= req.max_messages as usize {
            break;
        }
    }
    let mut take = conn.prepare_cached(
        "UPDATE messages SET leased = 1, visible_at = ?2, delivery_count = delivery_count + 1, lease_token = ?3
         WHERE id = ?1",
    )?;
    for m in &picked {
        take.execute(params![m.id, req.visible_after.0, m.lease_token])?;
    }
    if !picked.is_empty() {
        watch.lease_until(req.queue, req.visible_after);
    }
    let next_visible_at = if picked.is_empty() { next_visible_at(conn, req.queue, req.dead_letter)? } else { None };
    Ok(Leased { messages: picked, settled, next_visible_at })
}

/// Channels with ready messages, rotated from a random start so that over many gets
/// every non-empty channel is served first equally often.
fn ready_channels_fair(conn: &Connection, queue: QueueRow, dead_letter: bool) -> rusqlite::Result<Vec<String>> {
    let mut found = Vec::new();
    let mut after = String::new();
    while let Some(channel) = next_channel(conn, queue, Some(dead_letter), &after)? {
        after.clone_from(&channel);
        found.push(channel);
    }
    if found.is_empty() {
        // Only the default channel can hold ready messages: the lease's own query finds out.
        return Ok(vec![String::new()]);
    }
    // The default channel is "" and sorts first, so `next_channel` never returns it.
    let default_ready = conn
        .prepare_cached("SELECT 1 FROM messages WHERE queue = ?1 AND dlq = ?2 AND leased = 0 AND channel = '' LIMIT 1")?
        .query_row(params![queue, dead_letter], |_| Ok(()))
        .optional()?;
    if default_ready.is_some() {
        found.push(String::new());
    }
    if found.len() > 1 {
        let start = rand::random::<usize>() % found.len();
        found.rotate_left(start);
    }
    Ok(found)
}

pub(crate) fn extend(
    conn: &Connection,
    leases: &[(LeaseRef, Timestamp)],
    now: Timestamp,
    watch: &mut Watch,
) -> rusqlite::Result<Vec<bool>> {
    let mut stmt = conn.prepare_cached(
        "UPDATE messages SET visible_at = ?1
         WHERE id = ?2 AND queue = ?3 AND dlq = ?4 AND leased = 1 AND lease_token = ?5 AND visible_at > ?6
           AND expire_at > ?6",
    )?;
    leases
        .iter()
        .map(|(l, until)| {
            watch.lease_until(l.queue, *until);
            stmt.execute(params![until.0, l.message_id, l.queue, l.dead_letter, l.lease_token, now.0]).map(|n| n == 1)
        })
        .collect()
}

pub(crate) fn delete(conn: &Connection, leases: &[LeaseRef], now: Timestamp) -> rusqlite::Result<Vec<bool>> {
    let mut row = conn.prepare_cached(
        "DELETE FROM messages
         WHERE id = ?1 AND queue = ?2 AND dlq = ?3 AND leased = 1 AND lease_token = ?4 AND visible_at > ?5
           AND expire_at > ?5",
    )?;
    leases
        .iter()
        .map(|l| Ok(row.execute(params![l.message_id, l.queue, l.dead_letter, l.lease_token, now.0])? == 1))
        .collect()
}

/// The earliest time a leased or delayed message of one side becomes visible. A message
/// due to be dead-lettered becomes visible on the DLQ side, so the DLQ side also watches
/// the main side's leases.
fn next_visible_at(conn: &Connection, queue: QueueRow, dead_letter: bool) -> rusqlite::Result<Option<Timestamp>> {
    // One MIN per side: each is a single index probe, where `dlq IN (0, ?)` made SQLite
    // build a temporary table on every call.
    let mut earliest =
        conn.prepare_cached("SELECT MIN(visible_at) FROM messages WHERE queue = ?1 AND dlq = ?2 AND leased = 1")?;
    let mut next: Option<i64> = None;
    for side in if dead_letter { &[false, true][..] } else { &[false][..] } {
        let at: Option<i64> = earliest.query_row(params![queue, side], |row| row.get(0))?;
        next = next.into_iter().chain(at).min();
    }
    Ok(next.map(Timestamp))
}

pub(crate) fn stats(
    conn: &Connection,
    queue: QueueRow,
    channel: Option<&str>,
    now: Timestamp,
    dead_letter_after: u32,
) -> rusqlite::Result<QueueStats> {
    // A lease that ended undeleted counts where the next lease call will put it. The rows
    // are read through the two partial indexes, ready and leased, which cover every message.
    let mut stmt = conn.prepare_cached(
        "SELECT CASE WHEN leased = 1 AND visible_at <= ?2 AND dlq = 0 AND ?3 > 0 AND delivery_count >= ?3
                     THEN 1 ELSE dlq END AS side,
                SUM(leased = 0 OR visible_at <= ?2),
                SUM(leased = 1 AND visible_at > ?2 AND delivery_count > 0),
                SUM(leased = 1 AND visible_at > ?2 AND delivery_count = 0),
                SUM(CASE WHEN leased = 0 OR visible_at <= ?2 OR delivery_count > 0 THEN size ELSE 0 END)
         FROM (SELECT leased, dlq, visible_at, delivery_count, size FROM messages
               WHERE queue = ?1 AND leased = 0 AND (?4 IS NULL OR channel = ?4) AND expire_at > ?2
               UNION ALL
               SELECT leased, dlq, visible_at, delivery_count, size FROM messages
               WHERE queue = ?1 AND leased = 1 AND (?4 IS NULL OR channel = ?4) AND expire_at > ?2)
         GROUP BY side",
    )?;
    let mut stats = QueueStats::default();
    let rows = stmt.query_map(params![queue, now.0, dead_letter_after, channel], |row| {
        let counts = MessageCounts {
            visible: row.get::<_, i64>(1)? as u64,
            in_flight: row.get::<_, i64>(2)? as u64,
            delayed: row.get::<_, i64>(3)? as u64,
            size_bytes: row.get::<_, i64>(4)? as u64,
        };
        Ok((row.get::<_, i64>(0)? == 1, counts))
    })?;
    for row in rows {
        let (dead_letter, counts) = row?;
        if dead_letter {
            stats.dead_letter = counts;
        } else {
            stats.queue = counts;
        }
    }
    Ok(stats)
}

/// Non-empty named channels after `after` that start with `prefix`, at most `limit`.
pub(crate) fn channels(
    conn: &Connection,
    queue: QueueRow,
    prefix: Option<&str>,
    after: Option<&str>,
    limit: u32,
) -> rusqlite::Result<Vec<String>> {
    let prefix = prefix.unwrap_or("");
    let mut cursor = after.unwrap_or("").to_owned();
    if prefix > cursor.as_str() {
        // Start below the prefix: the prefix minus its last character sorts before every
        // string that starts with the prefix.
        let cut = prefix.char_indices().last().map_or(0, |(at, _)| at);
        cursor = prefix[..cut].to_owned();
    }
    let mut found = Vec::new();
    while found.len() < limit as usize {
        let Some(channel) = next_channel(conn, queue, None, &cursor)? else { break };
        if !channel.starts_with(prefix) {
            if channel.as_str() > prefix {
                break;
            }
        } else {
            found.push(channel.clone());
        }
        cursor = channel;
    }
    Ok(found)
}

fn delete_ids(conn: &Connection, ids: &[i64]) -> rusqlite::Result<()> {
    let mut row = conn.prepare_cached("DELETE FROM messages WHERE id = ?1")?;
    for id in ids {
        row.execute(params![id])?;
    }
    Ok(())
}

fn ids_of(conn: &Connection, sql: &str, args: impl rusqlite::Params) -> rusqlite::Result<Vec<i64>> {
    conn.prepare_cached(sql)?.query_map(args, |row| row.get(0))?.collect()
}

pub(crate) fn purge(
    conn: &Connection,
    queue: QueueRow,
    target: PurgeTarget,
    channels: Option<&[String]>,
    to_settle: Settle,
) -> rusqlite::Result<u64> {
    let batch = to_settle.batch;
    settle(conn, queue, to_settle.now, to_settle.dead_letter_after, batch)?;
    let (min_side, max_side) = match target {
        PurgeTarget::Normal => (0, 0),
        PurgeTarget::DeadLetter => (1, 1),
        PurgeTarget::Both => (0, 1),
    };
    let ids = match channels {
        None => ids_of(
            conn,
            "SELECT id FROM messages WHERE queue = ?1 AND leased = 0 AND dlq BETWEEN ?2 AND ?3
             UNION ALL
             SELECT id FROM messages WHERE queue = ?1 AND leased = 1 AND dlq BETWEEN ?2 AND ?3
             LIMIT ?4",
            params![queue, min_side, max_side, batch],
        )?,
        Some(channels) => {
            let mut ids = Vec::new();
            for channel in channels {
                let left = batch as usize - ids.len();
                ids.extend(ids_of(
                    conn,
                    "SELECT id FROM messages WHERE queue = ?1 AND leased = 0 AND channel = ?2 AND dlq BETWEEN ?3 AND ?4
                     UNION ALL
                     SELECT id FROM messages WHERE queue = ?1 AND leased = 1 AND channel = ?2 AND dlq BETWEEN ?3 AND ?4
                     LIMIT ?5",
                    params![queue, channel, min_side, max_side, left as i64],
                )?);
            }
            ids
        }
    };
    delete_ids(conn, &ids)?;
    Ok(ids.len() as u64)
}

pub(crate) fn redrive(
    conn: &Connection,
    queue: QueueRow,
    channels: Option<&[String]>,
    to_settle: Settle,
) -> rusqlite::Result<u64> {
    let batch = to_settle.batch;
    settle(conn, queue, to_settle.now, to_settle.dead_letter_after, batch)?;
    let ids = match channels {
        None => ids_of(
            conn,
            "SELECT id FROM messages WHERE queue = ?1 AND dlq = 1 AND leased = 0 LIMIT ?2",
            params![queue, batch],
        )?,
        Some(channels) => {
            let mut ids = Vec::new();
            for channel in channels {
                let left = batch as usize - ids.len();
                ids.extend(ids_of(
                    conn,
                    "SELECT id FROM messages WHERE queue = ?1 AND channel = ?2 AND dlq = 1 AND leased = 0 LIMIT ?3",
                    params![queue, channel, left as i64],
                )?);
            }
            ids
        }
    };
    // Only ready DLQ messages move (expired leases were settled above): a DLQ consumer's
    // current leases stay valid.
    let mut back =
        conn.prepare_cached("UPDATE messages SET dlq = 0, delivery_count = 0, lease_token = ?2 WHERE id = ?1")?;
    for id in &ids {
        back.execute(params![id, NEVER_LEASED])?;
    }
    Ok(ids.len() as u64)
}

pub(crate) fn sweep(conn: &Connection, now: Timestamp, batch: u32, watch: &mut Watch) -> rusqlite::Result<SweepReport> {
    let mut report = SweepReport::default();
    watch.lease_ends.clear();
    let queues: Vec<(QueueRow, u32, String)> = conn
        .prepare_cached("SELECT row, dead_letter_after, state FROM queues")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let live: HashSet<QueueRow> = queues.iter().map(|(queue, _, _)| *queue).collect();
    watch.expiry.retain(|queue, _| live.contains(queue));
    for (queue, dead_letter_after, state) in queues {
        if state == "DELETED" {
            let ids = ids_of(
                conn,
                "SELECT id FROM messages WHERE queue = ?1 AND leased = 0
                 UNION ALL
                 SELECT id FROM messages WHERE queue = ?1 AND leased = 1
                 LIMIT ?2",
                params![queue, batch],
            )?;
            delete_ids(conn, &ids)?;
            report.reclaimed += ids.len() as u64;
            if ids.is_empty() {
                conn.execute("DELETE FROM queues WHERE row = ?1", params![queue])?;
            }
            continue;
        }
        // One budget for retention across all queues, so that a sweep stays bounded.
        let budget = batch.saturating_sub(u32::try_from(report.expired).unwrap_or(u32::MAX));
        if budget > 0 && watch.expiry.get(&queue).is_none_or(|due| *due <= now) {
            let (expired, next_due) = expired_ids(conn, queue, now, budget)?;
            delete_ids(conn, &expired)?;
            report.expired += expired.len() as u64;
            watch.expiry.insert(queue, next_due);
        }
        let ended_before = report.released + report.dead_lettered;
        for dead_letter in [false, true] {
            release_expired(conn, queue, dead_letter, now, dead_letter_after, batch, &mut report)?;
        }
        if report.released + report.dead_lettered > ended_before {
            report.settled_queues.push(queue);
        }
    }
    conn.execute("DELETE FROM retry_tokens WHERE expires_at <= ?1", params![now.0])?;
    Ok(report)
}

/// Up to `batch` ready messages of a queue past retention, and when to look again. A
/// queue's retention is fixed, so within a channel a later id never expires earlier (up to
/// the milliseconds between stamping and committing a put): only the oldest ready messages
/// of each channel and side need a look, in the ready index's id order. Leased and delayed
/// messages past retention go when their lease or delay ends (`release_expired`); until
/// then no query returns them. This spares every message an expiry index entry.
fn expired_ids(
    conn: &Connection,
    queue: QueueRow,
    now: Timestamp,
    batch: u32,
) -> rusqlite::Result<(Vec<i64>, Timestamp)> {
    let mut oldest = conn.prepare_cached(
        "SELECT id, expire_at FROM messages WHERE queue = ?1 AND dlq = ?2 AND leased = 0 AND channel = ?3
         ORDER BY id LIMIT ?4",
    )?;
    let mut expired = Vec::new();
    // A queue found empty gets no message that expires before the shortest retention.
    let mut next_due = now.plus_secs(berth_core::limits::RETENTION_SECS.0.into());
    for dead_letter in [false, true] {
        let mut channel = String::new();
        loop {
            let left = batch as usize - expired.len();
            let mut rows = oldest.query(params![queue, dead_letter, channel, left as i64 + 1])?;
            while let Some(row) = rows.next()? {
                let expire_at = Timestamp(row.get(1)?);
                if expire_at > now {
                    next_due = next_due.min(expire_at);
                    break;
                }
                if expired.len() == batch as usize {
                    // More may wait: look again at the next sweep.
                    return Ok((expired, now));
                }
                expired.push(row.get(0)?);
            }
            match next_channel(conn, queue, Some(dead_letter), &channel)? {
                Some(next) => channel = next,
                None => break,
            }
        }
    }
    Ok((expired, next_due))
}
