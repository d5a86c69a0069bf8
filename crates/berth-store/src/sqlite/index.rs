//! The message index: the state of every live message, kept in memory by the SQLite store.
//!
//! SQLite keeps the durable copy (a row per put with the bodies, and once one of its
//! messages changed, a small row with the state of each, see `schema.rs`); this index
//! decides which message a lease takes, whether a receipt names the current lease, and the
//! counts, so that no message costs a secondary index entry in SQLite. Every change returns
//! the [`Persist`] writes that make it durable; the caller does them in the same
//! transaction. No I/O, no clock.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use berth_core::clock::Timestamp;
use berth_core::delivery::{after_lease, AfterLease, Ended};
use berth_core::model::{LeaseRef, MessageCounts, PurgeTarget, QueueRow, QueueStats};
use berth_core::store::SweepReport;

/// A message id.
pub(crate) type Id = i64;

/// The lease token of a message not leased yet.
pub(crate) const NEVER_LEASED: i64 = i64::MIN;

/// Where a message is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Visible: the next lease may take it.
    Ready,
    /// Leased, or delayed (delivery count 0), until `visible_at`.
    Invisible,
    /// Deleted, expired or purged.
    Gone,
}

/// One message of a batch.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub(crate) channel: Arc<str>,
    pub(crate) size: u32,
    pub(crate) dlq: bool,
    pub(crate) phase: Phase,
    pub(crate) visible_at: i64,
    pub(crate) delivery_count: u32,
    pub(crate) lease_token: i64,
}

impl Slot {
    /// A message as its put left it: ready, or invisible until its delay ends.
    pub(crate) fn as_put(channel: Arc<str>, size: u32, delayed_until: Option<i64>, created_at: i64) -> Slot {
        Slot {
            channel,
            size,
            dlq: false,
            phase: if delayed_until.is_some() { Phase::Invisible } else { Phase::Ready },
            visible_at: delayed_until.unwrap_or(created_at),
            delivery_count: 0,
            lease_token: NEVER_LEASED,
        }
    }
}

/// The messages of one put: ids `first ..= last` (the map key).
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) first: Id,
    pub(crate) created_at: i64,
    pub(crate) expire_at: i64,
    /// Slots not gone.
    live: u32,
    pub(crate) slots: Vec<Slot>,
}

/// A durable write that an index change needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Persist {
    /// Write the state row of the batch ending at `last` as its slots now are.
    States { queue: QueueRow, last: Id },
    /// Every message of the batch ending at `last` is gone: drop its rows.
    DropBatch { last: Id },
}

/// A message a lease took: where its body is, and what to answer.
#[derive(Debug, Clone)]
pub(crate) struct Picked {
    pub(crate) id: Id,
    /// The batch row holding its body.
    pub(crate) batch: Id,
    /// Byte offset of its body among the batch's bodies.
    pub(crate) offset: usize,
    /// Position in the batch (for its properties).
    pub(crate) position: usize,
    pub(crate) size: u32,
    pub(crate) channel: Arc<str>,
    pub(crate) delivery_count: u32,
    pub(crate) created_at: i64,
    pub(crate) expire_at: i64,
    pub(crate) lease_token: i64,
}

/// A message of a put, as the index needs it.
#[derive(Debug, Clone)]
pub(crate) struct NewSlot<'a> {
    pub(crate) channel: &'a str,
    pub(crate) size: u32,
    pub(crate) delayed_until: Option<i64>,
}

/// What a lease asks for.
#[derive(Debug, Clone)]
pub(crate) struct Pick<'a> {
    pub(crate) dead_letter: bool,
    pub(crate) channel: Option<&'a str>,
    pub(crate) max_messages: usize,
    pub(crate) max_bytes: usize,
    pub(crate) now: i64,
    pub(crate) visible_after: i64,
}

/// One queue's messages.
#[derive(Debug)]
struct QueueIndex {
    /// The queue's row id.
    row: QueueRow,
    /// Every batch with a live message, by last id (so, oldest first).
    batches: BTreeMap<Id, Batch>,
    /// Ready ids per side (main, DLQ) and channel; no empty sets.
    ready: [BTreeMap<Arc<str>, BTreeSet<Id>>; 2],
    /// Invisible messages per side by the time they become visible.
    invisible: [BTreeSet<(i64, Id)>; 2],
    /// GetStats counts per side and channel; no empty entries.
    counts: [HashMap<Arc<str>, MessageCounts>; 2],
    /// Live messages per named channel (either side): the non-empty channels.
    named: BTreeMap<Arc<str>, u64>,
    /// The default channel's name, shared by its slots.
    default_channel: Arc<str>,
}

/// Every queue's messages, and the next message id.
#[derive(Debug)]
pub(crate) struct Index {
    queues: HashMap<QueueRow, QueueIndex>,
    next_id: Id,
}

fn side(dlq: bool) -> usize {
    usize::from(dlq)
}

impl QueueIndex {
    fn new(row: QueueRow) -> Self {
        QueueIndex {
            row,
            batches: BTreeMap::new(),
            ready: Default::default(),
            invisible: Default::default(),
            counts: Default::default(),
            named: BTreeMap::new(),
            default_channel: "".into(),
        }
    }

    fn slot(&self, id: Id) -> Option<(Id, &Batch, usize)> {
        let (last, batch) = self.batches.range(id..).next()?;
        (id >= batch.first).then(|| (*last, batch, (id - batch.first) as usize))
    }

    fn slot_mut(&mut self, id: Id) -> Option<(Id, &mut Batch, usize)> {
        let (last, batch) = self.batches.range_mut(id..).next()?;
        let first = batch.first;
        (id >= first).then(|| (*last, batch, (id - first) as usize))
    }

    /// The shared name of a channel that has, or is getting, a live message.
    fn intern(&self, channel: &str) -> Arc<str> {
        if channel.is_empty() {
            return self.default_channel.clone();
        }
        match self.named.get_key_value(channel) {
            Some((name, _)) => name.clone(),
            None => Arc::from(channel),
        }
    }

    /// Adds (`up`) or removes a slot's share of the tallies and of the ready and invisible sets.
    fn account(&mut self, id: Id, slot: &Slot, up: bool) {
        if slot.phase == Phase::Gone {
            return;
        }
        let s = side(slot.dlq);
        let counts = match self.counts[s].get_mut(&slot.channel) {
            Some(counts) => counts,
            None => self.counts[s].entry(slot.channel.clone()).or_default(),
        };
        tally(counts, slot, up);
        if *counts == MessageCounts::default() {
            self.counts[s].remove(&slot.channel);
        }
        match slot.phase {
            Phase::Ready if up => match self.ready[s].get_mut(&slot.channel) {
                Some(ids) => {
                    ids.insert(id);
                }
                None => {
                    self.ready[s].insert(slot.channel.clone(), BTreeSet::from([id]));
                }
            },
            Phase::Ready => {
                if let Some(ids) = self.ready[s].get_mut(&slot.channel) {
                    ids.remove(&id);
                    if ids.is_empty() {
                        self.ready[s].remove(&slot.channel);
                    }
                }
            }
            Phase::Invisible if up => {
                self.invisible[s].insert((slot.visible_at, id));
            }
            Phase::Invisible => {
                self.invisible[s].remove(&(slot.visible_at, id));
            }
            Phase::Gone => {}
        }
    }

    /// Changes one message with `change`, keeping tallies and sets in step. Returns the
    /// write that makes it durable, or `None` if there is no such live message.
    fn update(&mut self, id: Id, change: impl FnOnce(&mut Slot)) -> Option<Persist> {
        let (last, batch, at) = self.slot_mut(id)?;
        let before = batch.slots[at].clone();
        if before.phase == Phase::Gone {
            return None;
        }
        change(&mut batch.slots[at]);
        let after = batch.slots[at].clone();
        self.account(id, &before, false);
        self.account(id, &after, true);
        Some(Persist::States { queue: self.row, last })
    }

    /// Moves one live message to the DLQ, ready there; returns what makes that durable.
    fn dead_letter(&mut self, id: Id) -> Option<Persist> {
        self.update(id, |slot| {
            slot.phase = Phase::Ready;
            slot.dlq = true;
        })
    }

    /// Removes one live message; returns what makes that durable.
    fn remove(&mut self, id: Id) -> Option<Persist> {
        let (last, batch, at) = self.slot_mut(id)?;
        let before = batch.slots[at].clone();
        if before.phase == Phase::Gone {
            return None;
        }
        batch.slots[at].phase = Phase::Gone;
        batch.live -= 1;
        let emptied = batch.live == 0;
        self.account(id, &before, false);
        if !before.channel.is_empty() {
            if let Some(n) = self.named.get_mut(&before.channel) {
                *n -= 1;
                if *n == 0 {
                    self.named.remove(&before.channel);
                }
            }
        }
        if emptied {
            self.batches.remove(&last);
            return Some(Persist::DropBatch { last });
        }
        Some(Persist::States { queue: self.row, last })
    }

    /// Ends the invisibility of messages whose lease or delay ended by `now`, oldest first,
    /// at most `limit` per side: each goes back to ready, to the DLQ, or, past retention, away.
    fn settle(
        &mut self,
        now: i64,
        dead_letter_after: u32,
        limit: u32,
        report: &mut SweepReport,
        writes: &mut Vec<Persist>,
    ) {
        for dlq in [false, true] {
            let due: Vec<Id> =
                self.invisible[side(dlq)].range(..=(now, Id::MAX)).take(limit as usize).map(|(_, id)| *id).collect();
            for id in due {
                let Some((_, batch, at)) = self.slot(id) else { continue };
                let ended = Ended {
                    delivery_count: batch.slots[at].delivery_count,
                    in_dead_letter_queue: dlq,
                    expire_at: Timestamp(batch.expire_at),
                };
                match after_lease(ended, dead_letter_after, Timestamp(now)) {
                    AfterLease::Expire => {
                        writes.extend(self.remove(id));
                        report.expired += 1;
                    }
                    AfterLease::Redeliver => {
                        let delivered = batch.slots[at].delivery_count > 0;
                        let write = self.update(id, |slot| slot.phase = Phase::Ready);
                        // An ended lease is written down, so that a restart does not decide
                        // its fate again under a changed dead-letter threshold or clock. An
                        // ended delay needs no write: read back, it ends the same way.
                        if delivered {
                            writes.extend(write);
                        }
                        report.released += 1;
                    }
                    AfterLease::DeadLetter => {
                        writes.extend(self.dead_letter(id));
                        report.dead_lettered += 1;
                    }
                }
            }
        }
    }

    /// Channels with ready messages on one side, rotated from a random start so that over
    /// many gets every busy channel is served first equally often.
    fn ready_channels_fair(&self, dlq: bool) -> Vec<Arc<str>> {
        let mut found: Vec<Arc<str>> = self.ready[side(dlq)].keys().cloned().collect();
        if found.len() > 1 {
            let start = rand::random::<usize>() % found.len();
            found.rotate_left(start);
        }
        found
    }

    /// The earliest time an invisible message of one side becomes visible. A message due to
    /// be dead-lettered becomes visible on the DLQ side, so the DLQ side also watches the main side.
    fn next_visible_at(&self, dlq: bool) -> Option<i64> {
        let main = self.invisible[0].first().map(|(at, _)| *at);
        if !dlq {
            return main;
        }
        main.into_iter().chain(self.invisible[1].first().map(|(at, _)| *at)).min()
    }

    fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Adds ready ids of one side (and of the channels) to `ids`, until it holds `limit`.
    fn take_ready(&self, dlq: bool, channels: Option<&[String]>, limit: usize, ids: &mut Vec<Id>) {
        for (name, ready) in &self.ready[side(dlq)] {
            if in_channels(channels, name) {
                ids.extend(ready.iter().take(limit.saturating_sub(ids.len())));
            }
        }
    }
}

/// Adds (`up`) or takes away a message's share of `counts` as GetStats reports it: ready
/// messages are visible, leased ones in flight, delayed ones (never delivered) count no bytes.
fn tally(counts: &mut MessageCounts, slot: &Slot, up: bool) {
    let delayed = slot.phase == Phase::Invisible && slot.delivery_count == 0;
    let bytes = if delayed { 0 } else { u64::from(slot.size) };
    let n = match slot.phase {
        Phase::Ready => &mut counts.visible,
        Phase::Invisible if delayed => &mut counts.delayed,
        Phase::Invisible => &mut counts.in_flight,
        Phase::Gone => return,
    };
    if up {
        *n += 1;
        counts.size_bytes += bytes;
    } else {
        *n = n.saturating_sub(1);
        counts.size_bytes = counts.size_bytes.saturating_sub(bytes);
    }
}

/// The counts of one side of a queue.
fn side_of(stats: &mut QueueStats, dlq: bool) -> &mut MessageCounts {
    if dlq {
        &mut stats.dead_letter
    } else {
        &mut stats.queue
    }
}

/// Whether `channel` is one of `only` (every channel when `None`).
fn in_channels(only: Option<&[String]>, channel: &str) -> bool {
    only.is_none_or(|only| only.iter().any(|c| c == channel))
}

impl Index {
    /// An empty index whose first message id is `next_id`.
    pub(crate) fn new(next_id: Id) -> Self {
        Index { queues: HashMap::new(), next_id }
    }

    fn queue(&self, queue: QueueRow) -> Option<&QueueIndex> {
        self.queues.get(&queue)
    }

    /// The slots of a queue's batch ending at `last`, if any of its messages is live.
    pub(crate) fn batch_slots(&self, queue: QueueRow, last: Id) -> Option<&[Slot]> {
        self.queue(queue)?.batches.get(&last).map(|batch| batch.slots.as_slice())
    }

    /// Adds a put's messages: read back from storage with their stored state, or new.
    pub(crate) fn restore(&mut self, queue: QueueRow, first: Id, created_at: i64, expire_at: i64, slots: Vec<Slot>) {
        let last = first + slots.len() as Id - 1;
        let mut batch = Batch { first, created_at, expire_at, live: 0, slots };
        let q = self.queues.entry(queue).or_insert_with(|| QueueIndex::new(queue));
        for slot in &mut batch.slots {
            slot.channel = q.intern(&slot.channel);
        }
        batch.live = batch.slots.iter().filter(|s| s.phase != Phase::Gone).count() as u32;
        self.next_id = self.next_id.max(last + 1);
        if batch.live == 0 {
            return;
        }
        for (at, slot) in batch.slots.iter().enumerate() {
            if slot.phase != Phase::Gone {
                q.account(batch.first + at as Id, slot, true);
                if !slot.channel.is_empty() {
                    *q.named.entry(slot.channel.clone()).or_default() += 1;
                }
            }
        }
        q.batches.insert(last, batch);
    }

    /// Whether the messages of a put keep the queue within `max_channels` non-empty named channels.
    pub(crate) fn channels_fit(&self, queue: QueueRow, channels: &[&str], max_channels: u32) -> bool {
        let named = self.queue(queue).map(|q| &q.named);
        let mut new: Vec<&str> = channels
            .iter()
            .copied()
            .filter(|c| !c.is_empty() && named.is_none_or(|named| !named.contains_key(*c)))
            .collect();
        new.sort_unstable();
        new.dedup();
        new.is_empty() || named.map_or(0, BTreeMap::len) + new.len() <= max_channels as usize
    }

    /// Appends one put's messages (check [`Index::channels_fit`] first); returns the first
    /// id, the rest follow in order. The caller stores the batch row; a batch needs no
    /// state row until one of its messages changes.
    pub(crate) fn put(&mut self, queue: QueueRow, messages: &[NewSlot<'_>], created_at: i64, expire_at: i64) -> Id {
        let first = self.next_id;
        let q = self.queues.entry(queue).or_insert_with(|| QueueIndex::new(queue));
        let slots =
            messages.iter().map(|m| Slot::as_put(q.intern(m.channel), m.size, m.delayed_until, created_at)).collect();
        self.restore(queue, first, created_at, expire_at, slots);
        first
    }

    /// The next id a put will get.
    pub(crate) fn next_id(&self) -> Id {
        self.next_id
    }

    /// Ends due leases and delays of a queue (see [`QueueIndex::settle`]).
    pub(crate) fn settle(
        &mut self,
        queue: QueueRow,
        now: i64,
        dead_letter_after: u32,
        limit: u32,
        report: &mut SweepReport,
        writes: &mut Vec<Persist>,
    ) {
        if let Some(q) = self.queues.get_mut(&queue) {
            q.settle(now, dead_letter_after, limit, report, writes);
        }
    }

    /// Leases up to `pick.max_messages` ready, unexpired messages of one side, oldest first
    /// per channel, within `pick.max_bytes` (the first message always fits).
    pub(crate) fn lease(&mut self, queue: QueueRow, pick: &Pick<'_>, writes: &mut Vec<Persist>) -> Vec<Picked> {
        let Some(q) = self.queues.get_mut(&queue) else { return Vec::new() };
        let s = side(pick.dead_letter);
        let channels = match pick.channel {
            Some(channel) => vec![q.intern(channel)],
            None => q.ready_channels_fair(pick.dead_letter),
        };
        let mut chosen: Vec<Id> = Vec::new();
        let mut bytes = 0usize;
        'channels: for channel in channels {
            let Some(ids) = q.ready[s].get(&channel) else { continue };
            for id in ids {
                if chosen.len() == pick.max_messages {
                    break 'channels;
                }
                let Some((_, batch, at)) = q.slot(*id) else { continue };
                if batch.expire_at <= pick.now {
                    continue; // past retention: the sweep removes it
                }
                let size = batch.slots[at].size as usize;
                if !chosen.is_empty() && bytes + size > pick.max_bytes {
                    break 'channels;
                }
                bytes += size;
                chosen.push(*id);
            }
        }
        let mut picked = Vec::with_capacity(chosen.len());
        for id in chosen {
            let token = rand::random::<i64>();
            writes.extend(q.update(id, |slot| {
                slot.phase = Phase::Invisible;
                slot.visible_at = pick.visible_after;
                slot.delivery_count += 1;
                slot.lease_token = token;
            }));
            let Some((last, batch, at)) = q.slot(id) else { continue };
            let slot = &batch.slots[at];
            picked.push(Picked {
                id,
                batch: last,
                offset: batch.slots[..at].iter().map(|s| s.size as usize).sum(),
                position: at,
                size: slot.size,
                channel: slot.channel.clone(),
                delivery_count: slot.delivery_count,
                created_at: batch.created_at,
                expire_at: batch.expire_at,
                lease_token: token,
            });
        }
        picked
    }

    /// Takes a message whose body cannot be read out of the way: from the queue to its
    /// DLQ (ready there, delivery count kept), and from the DLQ away. Returns whether it
    /// went to the DLQ, or `None` if no such live message.
    pub(crate) fn quarantine(&mut self, queue: QueueRow, id: Id, writes: &mut Vec<Persist>) -> Option<bool> {
        let q = self.queues.get_mut(&queue)?;
        let (_, batch, at) = q.slot(id)?;
        if batch.slots[at].dlq {
            writes.push(q.remove(id)?);
            return Some(false);
        }
        writes.push(q.dead_letter(id)?);
        Some(true)
    }

    /// The queue of a receipt's lease if that lease is the message's current one at `now`.
    fn leased_in(&mut self, lease: &LeaseRef, now: i64) -> Option<&mut QueueIndex> {
        let q = self.queues.get_mut(&lease.queue)?;
        let (_, batch, at) = q.slot(lease.message_id)?;
        let slot = &batch.slots[at];
        let current = slot.phase == Phase::Invisible
            && slot.dlq == lease.dead_letter
            && slot.lease_token == lease.lease_token
            && slot.visible_at > now
            && batch.expire_at > now;
        current.then_some(q)
    }

    /// When the next invisible message of a side becomes visible.
    pub(crate) fn next_visible_at(&self, queue: QueueRow, dead_letter: bool) -> Option<i64> {
        self.queue(queue)?.next_visible_at(dead_letter)
    }

    /// Moves each current lease's end to its new time; false where the lease is not current.
    pub(crate) fn extend(
        &mut self,
        leases: &[(LeaseRef, Timestamp)],
        now: i64,
        writes: &mut Vec<Persist>,
    ) -> Vec<bool> {
        leases
            .iter()
            .map(|(lease, until)| {
                let Some(q) = self.leased_in(lease, now) else { return false };
                writes.extend(q.update(lease.message_id, |slot| slot.visible_at = until.0));
                true
            })
            .collect()
    }

    /// Deletes each message whose lease is current; false where it is not.
    pub(crate) fn delete(&mut self, leases: &[LeaseRef], now: i64, writes: &mut Vec<Persist>) -> Vec<bool> {
        leases
            .iter()
            .map(|lease| {
                let Some(q) = self.leased_in(lease, now) else { return false };
                writes.extend(q.remove(lease.message_id));
                true
            })
            .collect()
    }

    /// Counts of the queue and its DLQ (optionally of one channel) as of `now`: a lease that
    /// ended undeleted counts where the next lease call will put it; messages past
    /// retention do not count.
    pub(crate) fn stats(&self, queue: QueueRow, channel: Option<&str>, now: i64, dead_letter_after: u32) -> QueueStats {
        let mut stats = QueueStats::default();
        let Some(q) = self.queue(queue) else { return stats };
        let wanted = |c: &str| channel.is_none_or(|only| only == c);
        for dlq in [false, true] {
            let out = side_of(&mut stats, dlq);
            for (name, c) in &q.counts[side(dlq)] {
                if wanted(name) {
                    out.visible += c.visible;
                    out.in_flight += c.in_flight;
                    out.delayed += c.delayed;
                    out.size_bytes += c.size_bytes;
                }
            }
        }
        // Take back what the tallies say of messages past retention, and of ended leases.
        for batch in q.batches.values().take_while(|b| b.expire_at <= now) {
            for slot in batch.slots.iter().filter(|s| wanted(&s.channel)) {
                tally(side_of(&mut stats, slot.dlq), slot, false);
            }
        }
        for dlq in [false, true] {
            for (_, id) in q.invisible[side(dlq)].range(..=(now, Id::MAX)) {
                let Some((_, batch, at)) = q.slot(*id) else { continue };
                let slot = &batch.slots[at];
                let ended = Ended {
                    delivery_count: slot.delivery_count,
                    in_dead_letter_queue: dlq,
                    expire_at: Timestamp(batch.expire_at),
                };
                let fate = after_lease(ended, dead_letter_after, Timestamp(now));
                if fate == AfterLease::Expire || !wanted(&slot.channel) {
                    continue;
                }
                tally(side_of(&mut stats, dlq), slot, false);
                let out = side_of(&mut stats, dlq || fate == AfterLease::DeadLetter);
                out.visible += 1;
                out.size_bytes += u64::from(slot.size);
            }
        }
        stats
    }

    /// Non-empty named channels after `after` that start with `prefix`, at most `limit`, sorted.
    pub(crate) fn channels(&self, queue: QueueRow, prefix: &str, after: &str, limit: u32) -> Vec<String> {
        let Some(q) = self.queue(queue) else { return Vec::new() };
        let from = if prefix > after { Bound::Included(prefix) } else { Bound::Excluded(after) };
        q.named
            .range::<str, _>((from, Bound::Unbounded))
            .map(|(name, _)| name)
            .take_while(|name| name.starts_with(prefix))
            .take(limit as usize)
            .map(|name| name.to_string())
            .collect()
    }

    /// Deletes up to `limit` messages of the target sides (and channels), in any state.
    pub(crate) fn purge(
        &mut self,
        queue: QueueRow,
        target: PurgeTarget,
        channels: Option<&[String]>,
        limit: u32,
        writes: &mut Vec<Persist>,
    ) -> u64 {
        let Some(q) = self.queues.get_mut(&queue) else { return 0 };
        let sides: &[bool] = match target {
            PurgeTarget::Normal => &[false],
            PurgeTarget::DeadLetter => &[true],
            PurgeTarget::Both => &[false, true],
        };
        let limit = limit as usize;
        let mut ids = Vec::new();
        for &dlq in sides {
            q.take_ready(dlq, channels, limit, &mut ids);
            for (_, id) in &q.invisible[side(dlq)] {
                if ids.len() == limit {
                    break;
                }
                if q.slot(*id).is_some_and(|(_, batch, at)| in_channels(channels, &batch.slots[at].channel)) {
                    ids.push(*id);
                }
            }
        }
        ids.truncate(limit);
        for id in &ids {
            writes.extend(q.remove(*id));
        }
        ids.len() as u64
    }

    /// Moves up to `limit` ready DLQ messages (of the channels) back to the queue with
    /// delivery count 0. DLQ messages being consumed keep their leases.
    pub(crate) fn redrive(
        &mut self,
        queue: QueueRow,
        channels: Option<&[String]>,
        limit: u32,
        writes: &mut Vec<Persist>,
    ) -> u64 {
        let Some(q) = self.queues.get_mut(&queue) else { return 0 };
        let mut ids: Vec<Id> = Vec::new();
        q.take_ready(true, channels, limit as usize, &mut ids);
        for id in &ids {
            writes.extend(q.update(*id, |slot| {
                slot.dlq = false;
                slot.delivery_count = 0;
                slot.lease_token = NEVER_LEASED;
            }));
        }
        ids.len() as u64
    }

    /// Removes up to `limit` ready messages past retention, oldest first. Invisible ones go
    /// when their lease or delay ends ([`Index::settle`]); until then nothing leases them.
    pub(crate) fn expire(&mut self, queue: QueueRow, now: i64, limit: u32, writes: &mut Vec<Persist>) -> u64 {
        let Some(q) = self.queues.get_mut(&queue) else { return 0 };
        let ids: Vec<Id> = q
            .batches
            .values()
            .take_while(|b| b.expire_at <= now)
            .flat_map(|b| {
                b.slots.iter().enumerate().filter(|(_, s)| s.phase == Phase::Ready).map(|(at, _)| b.first + at as Id)
            })
            .take(limit as usize)
            .collect();
        for id in &ids {
            writes.extend(q.remove(*id));
        }
        ids.len() as u64
    }

    /// Drops whole batches of a deleted queue, about `limit` messages; returns how many
    /// messages went and whether the queue is now empty.
    pub(crate) fn reclaim(&mut self, queue: QueueRow, limit: u32, writes: &mut Vec<Persist>) -> (u64, bool) {
        let Some(q) = self.queues.get_mut(&queue) else { return (0, true) };
        let mut reclaimed = 0u64;
        while reclaimed < u64::from(limit) {
            let Some((last, batch)) = q.batches.pop_first() else { break };
            reclaimed += u64::from(batch.live);
            writes.push(Persist::DropBatch { last });
        }
        let empty = q.is_empty();
        if empty {
            self.queues.remove(&queue);
        }
        (reclaimed, empty)
    }

    /// Queues with messages but no queue row (a put that raced the removal of its deleted
    /// queue): their messages are reclaimed like those of a deleted queue.
    pub(crate) fn orphans(&self, live: impl Fn(QueueRow) -> bool) -> Vec<QueueRow> {
        self.queues.keys().copied().filter(|queue| !live(*queue)).collect()
    }
}
