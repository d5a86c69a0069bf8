//! Message operations, each run inside the caller's transaction.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Instant;

use berth_core::clock::Timestamp;
use berth_core::consumer_group::{route, Route};
use berth_core::delivery::{after_lease, standing, AfterLease, Ended, Held};
use berth_core::error::StoreError;
use berth_core::model::{
    LeaseRef, LeaseRequest, LeasedMessage, MessageToStore, PeekRequest, PeekedMessage, PurgeTarget, QueueRow,
    QueueStats,
};
use berth_core::store::{Appended, Leased};
use deadpool_postgres::GenericClient;

use super::floors::{Floors, Pick, Scan};
use super::{consumer_groups, from_json, json, sql};

/// A message's content and properties: its own, or those of its fanned-out put's body.
macro_rules! body_columns {
    () => {
        "coalesce(content, (SELECT b.content FROM bodies b WHERE b.id = messages.id)),
         CASE WHEN content IS NULL THEN (SELECT b.properties FROM bodies b WHERE b.id = messages.id)
              ELSE properties END"
    };
}

/// Named channels of the put that have no message in the queue yet.
const UNSEEN_CHANNELS: &str = "
    SELECT c FROM unnest($2::text[]) AS c
    WHERE NOT EXISTS (SELECT 1 FROM messages m
                      WHERE m.queue = $1 AND NOT m.leased AND m.dlq = ANY(ARRAY[false, true]) AND m.channel = c)
      AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.queue = $1 AND m.leased AND m.channel = c)";

/// Every channel with a message in the queue: ready ones by a skip scan of the ready index
/// (one probe per channel and side, not per message), plus those of invisible messages.
const QUEUE_CHANNELS: &str = "
    WITH RECURSIVE ready AS (
        (SELECT dlq, channel FROM messages WHERE queue = $1 AND NOT leased ORDER BY dlq, channel LIMIT 1)
        UNION ALL
        SELECT n.dlq, n.channel FROM ready r CROSS JOIN LATERAL (
            SELECT dlq, channel FROM messages
            WHERE queue = $1 AND NOT leased AND (dlq, channel) > (r.dlq, r.channel)
            ORDER BY dlq, channel LIMIT 1) n
    )
    SELECT channel FROM ready
    UNION
    SELECT channel FROM messages WHERE queue = $1 AND leased";

/// Where a put went: its outcome, and for a queue with consumer groups each stream that
/// got messages with their positions in the put (`None`: the queue itself).
pub(crate) type Put = (Appended, Option<Vec<(QueueRow, Vec<usize>)>>);

/// Appends a put's messages in order, fanned out to the queue's consumer groups if it has
/// any, unless a new channel would exceed `max_channels` in a stream.
pub(crate) async fn put(
    c: &impl GenericClient,
    queue: QueueRow,
    messages: &[MessageToStore],
    max_channels: u32,
) -> Result<Put, StoreError> {
    let Some(head) = messages.first() else { return Ok((Appended::Stored(Vec::new()), None)) };
    let mut subscribers = consumer_groups::subscribers(c, queue).await?;
    if subscribers.is_some() {
        // Groups are made and changed holding the queue's group lock: read again sharing it,
        // so that a put answered after a group was fans out to it. (A queue without groups
        // has none to miss: a put to it goes to its own stream, its primary group's.)
        consumer_groups::share_group_lock(c, queue).await?;
        subscribers = consumer_groups::subscribers(c, queue).await?;
    }
    let Route::Streams(targets) = route(queue, subscribers.as_deref(), messages) else {
        if !channels_fit(c, queue, messages.iter(), max_channels).await? {
            return Ok((Appended::ChannelsFull, None));
        }
        let ids = append(c, &[(queue, messages)]).await?.pop().unwrap_or_default();
        return Ok((Appended::Stored(ids), None));
    };
    for (stream, positions) in &targets {
        if !channels_fit(c, *stream, positions.iter().map(|&at| &messages[at]), max_channels).await? {
            return Ok((Appended::ChannelsFull, None));
        }
    }
    // Ids drawn as the table draws them, shared by every stream's copy.
    let rows = sql::query(
        c,
        "SELECT nextval(pg_get_serial_sequence('messages', 'id')) FROM generate_series(1, $1::bigint)",
        &[&(messages.len() as i64)],
    )
    .await?;
    let mut ids: Vec<i64> = rows.iter().map(|row| row.get(0)).collect();
    ids.sort_unstable();
    let mut holders = vec![0i32; messages.len()];
    for (_, positions) in &targets {
        for &at in positions {
            holders[at] += 1;
        }
    }
    let held: Vec<usize> = (0..messages.len()).filter(|&at| holders[at] > 0).collect();
    if held.is_empty() {
        // No group takes them: dropped, as OCI does; their ids stay used.
        return Ok((Appended::Stored(ids), Some(targets)));
    }
    let contents: Vec<&str> = held.iter().map(|&at| messages[at].message.content.as_str()).collect();
    let properties = held
        .iter()
        .map(|&at| messages[at].message.properties.as_ref().map(json).transpose())
        .collect::<Result<Vec<_>, _>>()?;
    let body_ids: Vec<i64> = held.iter().map(|&at| ids[at]).collect();
    let refs: Vec<i32> = held.iter().map(|&at| holders[at]).collect();
    sql::execute(
        c,
        "INSERT INTO bodies (id, content, properties, refs)
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::int[])",
        &[&body_ids, &contents, &properties, &refs],
    )
    .await?;
    let (mut copy_ids, mut copy_streams, mut channels, mut sizes, mut delays) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (stream, positions) in &targets {
        for &at in positions {
            let m = &messages[at];
            copy_ids.push(ids[at]);
            copy_streams.push(*stream);
            channels.push(m.message.channel.as_str());
            sizes.push(m.message.content.len() as i64);
            delays.push(m.delayed_until.map(|at| at.0));
        }
    }
    sql::execute(
        c,
        "INSERT INTO messages (id, queue, channel, leased, visible_at, created_at, expire_at, size)
         OVERRIDING SYSTEM VALUE
         SELECT u.id, u.queue, u.channel, u.delayed IS NOT NULL, coalesce(u.delayed, $1), $1, $2, u.size
         FROM unnest($3::bigint[], $4::bigint[], $5::text[], $6::bigint[], $7::bigint[])
              AS u(id, queue, channel, size, delayed)",
        &[&head.created_at.0, &head.expire_at.0, &copy_ids, &copy_streams, &channels, &sizes, &delays],
    )
    .await?;
    Ok((Appended::Stored(ids), Some(targets)))
}

/// A put, as a batch of them takes it.
pub(crate) struct PutRequest {
    pub(crate) queue: QueueRow,
    pub(crate) messages: Vec<MessageToStore>,
    pub(crate) max_channels: u32,
}

/// Runs puts in the caller's transaction, each queue's in their order. Those to queues
/// without groups go in one INSERT (one that adds a channel, once its channels are
/// counted); those to queues with groups go as [`put`] does.
pub(crate) async fn put_all(c: &impl GenericClient, puts: &[PutRequest]) -> Result<Vec<Put>, StoreError> {
    let queues: Vec<QueueRow> = puts.iter().map(|p| p.queue).collect();
    let grouped = consumer_groups::with_groups(c, &queues).await?;
    let mut order: Vec<usize> = (0..puts.len()).collect();
    // Queue by queue, so that batches on different nodes lock queue rows in one order.
    order.sort_by_key(|&at| puts[at].queue);
    let mut done: Vec<Option<Put>> = puts.iter().map(|_| None).collect();
    let mut plain = Vec::new();
    for at in order {
        let p = &puts[at];
        if grouped.contains(&p.queue) {
            // The plain ones before it first: ids rise in each queue's put order.
            append_plain(c, puts, &mut plain, &mut done).await?;
            done[at] = Some(put(c, p.queue, &p.messages, p.max_channels).await?);
            continue;
        }
        let named = named_channels(p.messages.iter());
        if all_seen(c, p.queue, &named).await? {
            plain.push(at);
        } else if new_channels_fit(c, p.queue, &named, p.max_channels).await? {
            // Stored before the next put of the batch counts its channels.
            plain.push(at);
            append_plain(c, puts, &mut plain, &mut done).await?;
        } else {
            done[at] = Some((Appended::ChannelsFull, None));
        }
    }
    append_plain(c, puts, &mut plain, &mut done).await?;
    done.into_iter().map(|put| put.ok_or_else(|| StoreError::Backend("a put went unanswered".into()))).collect()
}

/// Appends the puts at `plain` (taking them) and records them done.
async fn append_plain(
    c: &impl GenericClient,
    puts: &[PutRequest],
    plain: &mut Vec<usize>,
    done: &mut [Option<Put>],
) -> Result<(), StoreError> {
    if plain.is_empty() {
        return Ok(());
    }
    let each: Vec<(QueueRow, &[MessageToStore])> =
        plain.iter().map(|&at| (puts[at].queue, &*puts[at].messages)).collect();
    for (at, ids) in plain.drain(..).zip(append(c, &each).await?) {
        done[at] = Some((Appended::Stored(ids), None));
    }
    Ok(())
}

/// Named channels of these messages, without duplicates.
fn named_channels<'a>(messages: impl Iterator<Item = &'a MessageToStore>) -> Vec<String> {
    let named: BTreeSet<&str> = messages.map(|m| m.message.channel.as_str()).filter(|c| !c.is_empty()).collect();
    named.into_iter().map(str::to_owned).collect()
}

/// Whether every one of these named channels has messages in the stream already.
async fn all_seen(c: &impl GenericClient, queue: QueueRow, named: &[String]) -> Result<bool, StoreError> {
    Ok(named.is_empty() || sql::query(c, UNSEEN_CHANNELS, &[&queue, &named]).await?.is_empty())
}

/// Whether these messages keep the stream within `max_channels` non-empty named channels.
async fn channels_fit<'a>(
    c: &impl GenericClient,
    queue: QueueRow,
    messages: impl Iterator<Item = &'a MessageToStore>,
    max_channels: u32,
) -> Result<bool, StoreError> {
    let named = named_channels(messages);
    Ok(all_seen(c, queue, &named).await? || new_channels_fit(c, queue, &named, max_channels).await?)
}

/// Whether these named channels, some of them new to the stream, keep it within
/// `max_channels`: counted under the queue row's lock, so that puts adding channels at the
/// same time cannot pass the limit together.
async fn new_channels_fit(
    c: &impl GenericClient,
    queue: QueueRow,
    named: &[String],
    max_channels: u32,
) -> Result<bool, StoreError> {
    sql::execute(c, "SELECT 1 FROM queues WHERE row = $1 FOR UPDATE", &[&queue]).await?;
    let existing: HashSet<String> =
        sql::query(c, QUEUE_CHANNELS, &[&queue]).await?.iter().map(|row| row.get(0)).collect();
    let existing_named = existing.iter().filter(|c| !c.is_empty()).count();
    let new = named.iter().filter(|c| !existing.contains(*c)).count();
    Ok(new == 0 || existing_named + new <= max_channels as usize)
}

/// Appends puts to their queues themselves, bodies in their rows, in one statement: the
/// ids of each put, in order.
async fn append(c: &impl GenericClient, puts: &[(QueueRow, &[MessageToStore])]) -> Result<Vec<Vec<i64>>, StoreError> {
    let rows = puts.iter().map(|(_, messages)| messages.len()).sum();
    let mut queues = Vec::with_capacity(rows);
    let mut channels = Vec::with_capacity(rows);
    let mut contents = Vec::with_capacity(rows);
    let mut properties = Vec::with_capacity(rows);
    let mut delays = Vec::with_capacity(rows);
    let mut created = Vec::with_capacity(rows);
    let mut expires = Vec::with_capacity(rows);
    for &(queue, messages) in puts {
        for m in messages {
            queues.push(queue);
            channels.push(m.message.channel.as_str());
            contents.push(m.message.content.as_str());
            properties.push(m.message.properties.as_ref().map(json).transpose()?);
            delays.push(m.delayed_until.map(|at| at.0));
            created.push(m.created_at.0);
            expires.push(m.expire_at.0);
        }
    }
    let rows = sql::query(
        c,
        "INSERT INTO messages (queue, channel, leased, visible_at, created_at, expire_at, size, content, properties)
         SELECT u.queue, u.channel, u.delayed IS NOT NULL, coalesce(u.delayed, u.created), u.created, u.expire,
                octet_length(u.content), u.content, u.properties
         FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[])
              WITH ORDINALITY AS u(queue, channel, content, properties, delayed, created, expire, n)
         ORDER BY u.n
         RETURNING id",
        &[&queues, &channels, &contents, &properties, &delays, &created, &expires],
    )
    .await?;
    // Ids are drawn in insert order; RETURNING's order is not promised.
    let mut ids: Vec<i64> = rows.iter().map(|row| row.get(0)).collect();
    ids.sort_unstable();
    let mut ids = ids.into_iter();
    Ok(puts.iter().map(|(_, messages)| ids.by_ref().take(messages.len()).collect()).collect())
}

/// The channels of the side with ready messages, by a skip scan of the ready index.
const READY_CHANNELS: &str = "
    WITH RECURSIVE channels AS (
        (SELECT channel FROM messages WHERE queue = $1 AND dlq = $2 AND NOT leased ORDER BY channel LIMIT 1)
        UNION ALL
        SELECT n.channel FROM channels c CROSS JOIN LATERAL (
            SELECT channel FROM messages
            WHERE queue = $1 AND dlq = $2 AND NOT leased AND channel > c.channel
            ORDER BY channel LIMIT 1) n
    )
    SELECT channel FROM channels";

/// Up to `$5` ready messages of the scan's channels, each channel from its floor and
/// oldest first, the channels in random order: over many gets every busy channel comes
/// first equally often.
const PICK: &str = "
    SELECT p.id, p.size, c.channel
    FROM (SELECT * FROM unnest($3::text[], $4::bigint[]) AS u(channel, floor) ORDER BY random()) c
    CROSS JOIN LATERAL (
        SELECT id, size FROM messages m
        WHERE m.queue = $1 AND m.dlq = $2 AND m.channel = c.channel AND NOT m.leased AND m.id >= c.floor
          AND m.expire_at > $6
        ORDER BY m.id LIMIT $5 FOR UPDATE SKIP LOCKED) p
    LIMIT $5";

/// What one pick chose for requests of one queue, side and channel: the rows each takes,
/// as the columns of [`TAKE`].
pub(crate) struct Picked {
    pub(crate) ids: Vec<i64>,
    pub(crate) untils: Vec<i64>,
    pub(crate) tokens: Vec<i64>,
    /// The request (its position) each row goes to.
    owners: Vec<usize>,
    /// What to record in `floors` once committed.
    pub(crate) pick: Pick,
}

impl Picked {
    /// Whether a request got no row (its answer says when the next message becomes visible).
    pub(crate) fn leaves_any_empty(&self, requests: usize) -> bool {
        (0..requests).any(|at| !self.owners.contains(&at))
    }
}

/// Leases the picked rows: `$1` ids, `$2` ends, `$3` tokens, `$4` the queue.
pub(crate) const TAKE: &str = concat!(
    "UPDATE messages SET leased = true, visible_at = u.until, delivery_count = delivery_count + 1,
            lease_token = u.token
     FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS u(id, until, token)
     WHERE messages.queue = $4 AND messages.id = ANY($1) AND messages.id = u.id
     RETURNING messages.id, ",
    body_columns!(),
    ", channel, delivery_count, created_at, expire_at, visible_at, lease_token"
);

/// When the queue's next leased or delayed message becomes visible (`$1` queue, `$2` the
/// DLQ side). A message due for the DLQ becomes visible there: the DLQ side watches both.
pub(crate) const NEXT_VISIBLE: &str =
    "SELECT min(visible_at) FROM messages WHERE queue = $1 AND leased AND (NOT dlq OR $2)";

/// The time a batch of leases goes by: its latest request's.
pub(crate) fn batch_now(requests: &[LeaseRequest]) -> Timestamp {
    requests.iter().map(|r| r.now).max().unwrap_or(Timestamp(0))
}

/// How many messages a batch of leases asks for in all.
fn batch_limit(requests: &[LeaseRequest]) -> i64 {
    requests.iter().map(|r| i64::from(r.max_messages)).sum()
}

/// Where requests of one queue, side and channel would start their pick: from the
/// floors, if any skips anything (else a pick from the start is due anyway).
pub(crate) fn hinted_scan(requests: &[LeaseRequest], floors: &Floors) -> Option<Scan> {
    let req = requests.first()?;
    floors.scan(req.queue, req.dead_letter, req.channel.as_deref(), Instant::now()).filter(Scan::skips)
}

/// Candidates of a scan for requests of one queue, side and channel.
pub(crate) async fn candidates(
    c: &impl GenericClient,
    requests: &[LeaseRequest],
    scan: Scan,
) -> Result<(Scan, Vec<tokio_postgres::Row>), StoreError> {
    let Some(req) = requests.first() else { return Ok((scan, Vec::new())) };
    let (now, limit) = (batch_now(requests), batch_limit(requests));
    let rows =
        sql::query(c, PICK, &[&req.queue, &req.dead_letter, &scan.channels, &scan.floors, &limit, &now.0]).await?;
    Ok((scan, rows))
}

/// Picks for requests of one queue, side and channel, in their order (ended leases
/// already settled): one pick for all, each request taking the next candidates as its
/// count and byte limits allow. `hinted` is the pick from the floors, if one was made;
/// it is made again from the start if it found too few, or if settling released any
/// messages (`rescan`: they lie below the floors).
pub(crate) async fn pick(
    c: &impl GenericClient,
    requests: &[LeaseRequest],
    floors: &Floors,
    hinted: Option<(Scan, Vec<tokio_postgres::Row>)>,
    rescan: bool,
) -> Result<Picked, StoreError> {
    let Some(req) = requests.first() else { return Err(StoreError::Backend("a lease of no requests".into())) };
    let limit = batch_limit(requests);
    let mut above_floors = None;
    // Rows a discarded pick locked: ready again at the commit unless chosen after all.
    let mut locked_before = Vec::new();
    if let Some((scan, rows)) = hinted {
        if !rescan && rows.len() as i64 >= limit {
            above_floors = Some((scan, rows));
        } else {
            locked_before = rows.iter().map(|row| row.get::<_, i64>(0)).collect();
        }
    }
    let full = above_floors.is_none();
    let (scan, candidates) = match above_floors {
        Some(found) => found,
        None => {
            let scan = floors.full_scan(req.queue);
            let channels = match &req.channel {
                Some(channel) => vec![channel.clone()],
                None => sql::query(c, READY_CHANNELS, &[&req.queue, &req.dead_letter])
                    .await?
                    .iter()
                    .map(|row| row.get(0))
                    .collect(),
            };
            candidates(c, requests, scan.of(channels)).await?
        }
    };
    // Each request takes the next candidates: at least one, then while they fit its bytes.
    let (mut ids, mut untils, mut tokens, mut owners) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut taken: HashMap<String, i64> = HashMap::new();
    let mut rest = candidates.iter().peekable();
    for (at, request) in requests.iter().enumerate() {
        let token = rand::random::<i64>();
        let (mut count, mut bytes) = (0u32, 0usize);
        while let Some(row) = rest.peek() {
            let size = usize::try_from(row.get::<_, i64>(1)).unwrap_or(usize::MAX);
            if count == request.max_messages || (count > 0 && bytes.saturating_add(size) > request.max_bytes) {
                break;
            }
            let id: i64 = row.get(0);
            (count, bytes) = (count + 1, bytes.saturating_add(size));
            ids.push(id);
            untils.push(request.visible_after.0);
            tokens.push(token);
            owners.push(at);
            let highest = taken.entry(row.get(2)).or_insert(id);
            *highest = (*highest).max(id);
            rest.next();
        }
    }
    let gave_back = ids.len() < candidates.len() || locked_before.iter().any(|id| !ids.contains(id));
    let exhausted = (candidates.len() as i64) < limit;
    let pick = Pick { scan, listed: full && req.channel.is_none(), exhausted, taken, gave_back };
    Ok(Picked { ids, untils, tokens, owners, pick })
}

/// Each request's leases from the rows [`TAKE`] returned, and the ids of rows whose body
/// cannot be read (to [`quarantine`]; announced as a give-back, so pollers look again).
pub(crate) fn leased(
    requests: &[LeaseRequest],
    picked: &mut Picked,
    taken: Vec<tokio_postgres::Row>,
    next_visible_at: Option<Timestamp>,
) -> (Vec<Leased>, Vec<i64>) {
    let mut by_id = HashMap::with_capacity(taken.len());
    let mut unreadable = Vec::new();
    for row in taken {
        let id: i64 = row.get(0);
        let (content, properties) = match readable_body(&row, 1, 2) {
            Ok(body) => body,
            Err(reason) => {
                tracing::error!(queue = requests[0].queue, message_id = id, %reason, "a stored message cannot be read; taken out of the queue");
                unreadable.push(id);
                continue;
            }
        };
        let message = LeasedMessage {
            id,
            content,
            channel: row.get(3),
            properties,
            delivery_count: u32::try_from(row.get::<_, i64>(4)).unwrap_or(u32::MAX),
            created_at: Timestamp(row.get(5)),
            expire_at: Timestamp(row.get(6)),
            visible_after: Timestamp(row.get(7)),
            lease_token: row.get(8),
        };
        by_id.insert(id, message);
    }
    if !unreadable.is_empty() {
        // This lease may answer with nothing while messages stand behind those, and the
        // DLQ's floors must let the moved ones in.
        picked.pick.gave_back = true;
    }
    let mut leased: Vec<Leased> = requests.iter().map(|_| Leased { messages: Vec::new(), next_visible_at }).collect();
    for (id, &at) in picked.ids.iter().zip(&picked.owners) {
        leased[at].messages.extend(by_id.remove(id));
    }
    for served in leased.iter_mut().filter(|l| !l.messages.is_empty()) {
        served.next_visible_at = None;
    }
    (leased, unreadable)
}

/// A row's body (content, properties) at these columns, or why it cannot be read.
fn readable_body(
    row: &tokio_postgres::Row,
    content: usize,
    properties: usize,
) -> Result<(String, Option<BTreeMap<String, String>>), String> {
    let content: Option<String> = row.try_get(content).map_err(|e| e.to_string())?;
    let content = content.ok_or("its body is missing")?;
    let properties: Option<String> = row.try_get(properties).map_err(|e| e.to_string())?;
    let properties = properties.as_deref().map(from_json).transpose().map_err(|e| format!("its properties: {e}"))?;
    Ok((content, properties))
}

/// Takes just-leased messages whose body cannot be read out of the way, as the SQLite
/// store does: from the queue to its DLQ (ready there, delivery count kept), from the DLQ
/// away. One bad row must not stop its queue.
pub(crate) async fn quarantine(
    c: &impl GenericClient,
    req: &LeaseRequest,
    now: Timestamp,
    ids: &[i64],
) -> Result<(), StoreError> {
    if req.dead_letter {
        sql::execute(c, "DELETE FROM messages WHERE queue = $1 AND id = ANY($2)", &[&req.queue, &ids]).await?;
    } else {
        sql::execute(
            c,
            "UPDATE messages SET leased = false, dlq = true, visible_at = $3, delivery_count = delivery_count - 1
             WHERE queue = $1 AND id = ANY($2)",
            &[&req.queue, &ids, &now.0],
        )
        .await?;
    }
    Ok(())
}

/// The columns of each lease as arrays, for `unnest`.
struct Leases {
    ids: Vec<i64>,
    queues: Vec<i64>,
    tokens: Vec<i64>,
    dead_letter: Vec<bool>,
}

impl Leases {
    fn of<'a>(leases: impl Iterator<Item = &'a LeaseRef>) -> Leases {
        let mut out = Leases { ids: Vec::new(), queues: Vec::new(), tokens: Vec::new(), dead_letter: Vec::new() };
        for lease in leases {
            out.ids.push(lease.message_id);
            out.queues.push(lease.queue);
            out.tokens.push(lease.lease_token);
            out.dead_letter.push(lease.dead_letter);
        }
        out
    }
}

/// The condition of a current lease, on `m` and the unnested lease `u`, as of `$now`.
macro_rules! current_lease {
    ($now:literal) => {
        concat!(
            "m.id = u.id AND m.queue = u.queue AND m.lease_token = u.token AND m.dlq = u.dlq AND m.leased
             AND m.visible_at > ",
            $now,
            " AND m.expire_at > ",
            $now
        )
    };
}

pub(crate) async fn extend(
    c: &impl GenericClient,
    leases: &[(LeaseRef, Timestamp)],
    now: Timestamp,
) -> Result<Vec<bool>, StoreError> {
    let arrays = Leases::of(leases.iter().map(|(lease, _)| lease));
    let until: Vec<i64> = leases.iter().map(|(_, until)| until.0).collect();
    let rows = sql::query(
        c,
        concat!(
            "UPDATE messages m SET visible_at = u.until
             FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bool[], $5::bigint[])
                  AS u(id, queue, token, dlq, until)
             WHERE ",
            current_lease!("$6"),
            " RETURNING m.id, m.lease_token"
        ),
        &[&arrays.ids, &arrays.queues, &arrays.tokens, &arrays.dead_letter, &until, &now.0],
    )
    .await?;
    let done: HashSet<(i64, i64)> = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    Ok(leases.iter().map(|(lease, _)| done.contains(&(lease.message_id, lease.lease_token))).collect())
}

/// Deletes the leased messages of several requests in one statement, each request's
/// leases as of its own time: for each request, whether each of its leases was current.
pub(crate) async fn delete_all(
    c: &impl GenericClient,
    requests: &[(Vec<LeaseRef>, Timestamp)],
) -> Result<Vec<Vec<bool>>, StoreError> {
    let arrays = Leases::of(requests.iter().flat_map(|(leases, _)| leases));
    let nows: Vec<i64> = requests.iter().flat_map(|(leases, now)| leases.iter().map(|_| now.0)).collect();
    let rows = sql::query(
        c,
        concat!(
            "DELETE FROM messages m
             USING unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bool[], $5::bigint[]) AS u(id, queue, token, dlq, now)
             WHERE ",
            current_lease!("u.now"),
            " RETURNING m.id, m.lease_token"
        ),
        &[&arrays.ids, &arrays.queues, &arrays.tokens, &arrays.dead_letter, &nows],
    )
    .await?;
    // A receipt given twice deletes once.
    let mut done: HashSet<(i64, i64)> = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    Ok(requests
        .iter()
        .map(|(leases, _)| leases.iter().map(|lease| done.remove(&(lease.message_id, lease.lease_token))).collect())
        .collect())
}

/// Counts as GetStats reports them: an ended lease counts where settling it will put it;
/// messages past retention do not count; delayed messages count no bytes.
pub(crate) async fn stats(
    c: &impl GenericClient,
    queue: QueueRow,
    channel: Option<&str>,
    now: Timestamp,
) -> Result<QueueStats, StoreError> {
    let threshold = sql::query_opt(c, "SELECT dead_letter_after FROM queues WHERE row = $1", &[&queue])
        .await?
        .map_or(0, |row| u32::try_from(row.get::<_, i64>(0)).unwrap_or(0));
    let ready = sql::query(
        c,
        "SELECT dlq, count(*), coalesce(sum(size), 0)::bigint FROM messages
         WHERE queue = $1 AND NOT leased AND expire_at > $2 AND ($3::text IS NULL OR channel = $3)
         GROUP BY dlq",
        &[&queue, &now.0, &channel],
    )
    .await?;
    let invisible = sql::query(
        c,
        "SELECT dlq, visible_at <= $2, delivery_count, count(*), coalesce(sum(size), 0)::bigint FROM messages
         WHERE queue = $1 AND leased AND expire_at > $2 AND ($3::text IS NULL OR channel = $3)
         GROUP BY 1, 2, 3",
        &[&queue, &now.0, &channel],
    )
    .await?;
    let mut stats = QueueStats::default();
    for row in &ready {
        let (dlq, n, bytes): (bool, i64, i64) = (row.get(0), row.get(1), row.get(2));
        let counts = if dlq { &mut stats.dead_letter } else { &mut stats.queue };
        counts.visible += n as u64;
        counts.size_bytes += bytes as u64;
    }
    for row in &invisible {
        let (dlq, ended, delivery_count, n, bytes): (bool, bool, i64, i64, i64) =
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        let delivery_count = u32::try_from(delivery_count).unwrap_or(u32::MAX);
        let (n, bytes) = (n as u64, bytes as u64);
        if ended {
            // Not past retention (filtered above): redelivered on its side, or dead-lettered.
            let ended = Ended { delivery_count, in_dead_letter_queue: dlq, expire_at: Timestamp(i64::MAX) };
            let fate = after_lease(ended, threshold, now);
            let counts = if dlq || fate == AfterLease::DeadLetter { &mut stats.dead_letter } else { &mut stats.queue };
            counts.visible += n;
            counts.size_bytes += bytes;
        } else {
            let counts = if dlq { &mut stats.dead_letter } else { &mut stats.queue };
            if delivery_count == 0 {
                counts.delayed += n;
            } else {
                counts.in_flight += n;
                counts.size_bytes += bytes;
            }
        }
    }
    Ok(stats)
}

/// Named channels with messages, starting with `prefix`, after `after`, sorted.
pub(crate) async fn channels(
    c: &impl GenericClient,
    queue: QueueRow,
    prefix: &str,
    after: &str,
    limit: u32,
) -> Result<Vec<String>, StoreError> {
    let rows = sql::query(c, QUEUE_CHANNELS, &[&queue]).await?;
    let found: BTreeSet<String> = rows
        .iter()
        .map(|row| row.get::<_, String>(0))
        .filter(|name| !name.is_empty() && name.starts_with(prefix) && name.as_str() > after)
        .collect();
    Ok(found.into_iter().take(limit as usize).collect())
}

/// Rows a peek may show, in id order: those on its side and, for the DLQ, ended leases of
/// the main side (settling may move them there); [`standing`] decides.
const PEEK_CANDIDATES: &str = concat!(
    r#"
    SELECT id, channel, dlq, leased, visible_at, delivery_count, created_at, expire_at, "#,
    body_columns!(),
    r#"
    FROM messages
    WHERE queue = $1 AND id > $2 AND ($3::text IS NULL OR channel = $3) AND expire_at > $5
      AND (dlq = $4 OR ($4 AND leased AND visible_at <= $5))
      AND (NOT leased OR visible_at <= $5 OR $6)
    ORDER BY id LIMIT $7"#
);

/// Messages of one side of a queue where they stand now, read without locking them.
pub(crate) async fn peek(c: &impl GenericClient, request: &PeekRequest) -> Result<Vec<PeekedMessage>, StoreError> {
    let threshold = sql::query_opt(c, "SELECT dead_letter_after FROM queues WHERE row = $1", &[&request.queue])
        .await?
        .map_or(0, |row| u32::try_from(row.get::<_, i64>(0)).unwrap_or(0));
    let (now, limit) = (request.now, i64::from(request.limit));
    let invisible_too = request.in_flight || request.delayed;
    let mut shown = Vec::new();
    let mut after = request.after;
    loop {
        let params: sql::Params<'_> =
            &[&request.queue, &after, &request.channel, &request.dead_letter, &now.0, &invisible_too, &limit];
        let rows = sql::query(c, PEEK_CANDIDATES, params).await?;
        for row in &rows {
            let held = Held {
                invisible: row.get(3),
                visible_at: Timestamp(row.get(4)),
                delivery_count: u32::try_from(row.get::<_, i64>(5)).unwrap_or(u32::MAX),
                in_dead_letter_queue: row.get(2),
                expire_at: Timestamp(row.get(7)),
            };
            let Some((stands, dlq)) = standing(held, threshold, now) else { continue };
            if !request.shows(stands, dlq) {
                continue;
            }
            // An unreadable one is left out; its next lease takes it out of the queue.
            let Ok((content, properties)) = readable_body(row, 8, 9) else { continue };
            shown.push(PeekedMessage {
                id: row.get(0),
                content,
                channel: row.get(1),
                properties,
                delivery_count: held.delivery_count,
                created_at: Timestamp(row.get(6)),
                expire_at: held.expire_at,
                visible_at: held.visible_at,
                standing: stands,
            });
            if shown.len() as i64 == limit {
                return Ok(shown);
            }
        }
        match rows.last() {
            Some(last) if rows.len() as i64 == limit => after = last.get(0),
            _ => return Ok(shown),
        }
    }
}

/// Deletes up to `limit` messages of the target sides (and channels), in any state.
pub(crate) async fn purge(
    c: &impl GenericClient,
    queue: QueueRow,
    target: PurgeTarget,
    channels: Option<&[String]>,
    limit: u32,
) -> Result<u64, StoreError> {
    let sides: Vec<bool> = match target {
        PurgeTarget::Normal => vec![false],
        PurgeTarget::DeadLetter => vec![true],
        PurgeTarget::Both => vec![false, true],
    };
    let channels: Option<Vec<&str>> = channels.map(|c| c.iter().map(String::as_str).collect());
    let mut deleted = 0;
    for leased in [false, true] {
        let left = i64::from(limit) - deleted as i64;
        if left <= 0 {
            break;
        }
        deleted += sql::execute(
            c,
            "DELETE FROM messages WHERE queue = $1 AND id IN (
                 SELECT id FROM messages
                 WHERE queue = $1 AND leased = $2 AND dlq = ANY($3) AND ($4::text[] IS NULL OR channel = ANY($4))
                 LIMIT $5)",
            &[&queue, &leased, &sides, &channels, &left],
        )
        .await?;
    }
    Ok(deleted)
}

/// Moves up to `limit` ready DLQ messages (of the channels) back to the queue with
/// delivery count 0; DLQ messages being consumed keep their leases.
pub(crate) async fn redrive(
    c: &impl GenericClient,
    queue: QueueRow,
    channels: Option<&[String]>,
    limit: u32,
) -> Result<u64, StoreError> {
    let channels: Option<Vec<&str>> = channels.map(|c| c.iter().map(String::as_str).collect());
    sql::execute(
        c,
        "UPDATE messages SET dlq = false, delivery_count = 0 WHERE queue = $1 AND id IN (
             SELECT id FROM messages
             WHERE queue = $1 AND dlq AND NOT leased AND ($2::text[] IS NULL OR channel = ANY($2))
             ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED)",
        &[&queue, &channels, &i64::from(limit)],
    )
    .await
}
