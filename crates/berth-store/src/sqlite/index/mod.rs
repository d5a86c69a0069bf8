//! The message index: the state of every live message, kept in memory by the SQLite store.
//!
//! SQLite keeps the durable copy (a row per put with the bodies, and once one of its
//! messages changed, a small row with the state of each, see `schema.rs`); this index
//! decides which message a lease takes, whether a receipt names the current lease, and the
//! counts, so that no message costs a secondary index entry in SQLite. Every change returns
//! the [`Persist`] writes that make it durable; the caller does them in the same
//! transaction. No I/O, no clock.
//!
//! This module holds the state and putting; [`lease`] leasing and what receipts do,
//! [`settle`] how messages leave (ended leases, retention, purge, redrive, reclaiming),
//! [`stats`] the counts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use berth_core::clock::Timestamp;
use berth_core::consumer_group::Subscriber;
use berth_core::delivery::{after_lease, AfterLease, Ended};
use berth_core::model::{LeaseRef, MessageCounts, PurgeTarget, QueueRow, QueueStats};
use berth_core::store::{Moved, SweepReport};

mod lease;
mod peek;
mod settle;
mod stats;

use stats::tally;

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
    /// Every message of the queue's batch ending at `last` is gone: drop its rows (of a
    /// fanned-out batch, the queue's state; the batch row with the last stream's).
    DropBatch { queue: QueueRow, last: Id },
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
    /// Each queue's dead-letter threshold (`deadLetterQueueDeliveryCount`), changed in the
    /// same transaction as its row, so that settling and counts follow the stored policy.
    dead_letter_after: HashMap<QueueRow, u32>,
    /// What retention and the dead-letter rule moved since the last commit was reported.
    moved: HashMap<QueueRow, Moved>,
    /// Where puts to a queue with consumer groups go (no entry: to the queue itself).
    subscribers: HashMap<QueueRow, Vec<Subscriber>>,
    /// Fanned-out batch rows (by last id): how many streams still have a message of them.
    shared: HashMap<Id, u32>,
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
            return Some(Persist::DropBatch { queue: self.row, last });
        }
        Some(Persist::States { queue: self.row, last })
    }

    fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }
}

/// A stream's slots of a fanned-out put: its positions as put, the others gone.
pub(crate) fn view_slots(messages: &[NewSlot<'_>], positions: &[usize], created_at: i64) -> Vec<Slot> {
    let mut slots: Vec<Slot> = messages
        .iter()
        .map(|m| {
            let mut slot = Slot::as_put(Arc::from(m.channel), m.size, m.delayed_until, created_at);
            slot.phase = Phase::Gone;
            slot
        })
        .collect();
    for &at in positions {
        if let (Some(slot), Some(m)) = (slots.get_mut(at), messages.get(at)) {
            *slot = Slot::as_put(Arc::from(m.channel), m.size, m.delayed_until, created_at);
        }
    }
    slots
}

/// Whether `channel` is one of `only` (every channel when `None`).
fn in_channels(only: Option<&[String]>, channel: &str) -> bool {
    only.is_none_or(|only| only.iter().any(|c| c == channel))
}
impl Index {
    /// An empty index whose first message id is `next_id`.
    pub(crate) fn new(next_id: Id) -> Self {
        Index {
            queues: HashMap::new(),
            next_id,
            dead_letter_after: HashMap::new(),
            moved: HashMap::new(),
            subscribers: HashMap::new(),
            shared: HashMap::new(),
        }
    }

    /// What retention and the dead-letter rule moved since the last call (for metrics, once
    /// committed).
    pub(crate) fn take_moved(&mut self) -> HashMap<QueueRow, Moved> {
        std::mem::take(&mut self.moved)
    }

    /// Records a queue's dead-letter threshold (0 = no DLQ).
    pub(crate) fn set_dead_letter_after(&mut self, queue: QueueRow, deliveries: u32) {
        self.dead_letter_after.insert(queue, deliveries);
    }

    /// Forgets the threshold of a queue whose row is removed.
    pub(crate) fn forget_dead_letter_after(&mut self, queue: QueueRow) {
        self.dead_letter_after.remove(&queue);
    }

    /// Whether the queue's threshold is known (read when its first message is put).
    pub(crate) fn knows_policy(&self, queue: QueueRow) -> bool {
        self.dead_letter_after.contains_key(&queue)
    }

    fn dead_letter_after(&self, queue: QueueRow) -> u32 {
        self.dead_letter_after.get(&queue).copied().unwrap_or(0)
    }

    fn queue(&self, queue: QueueRow) -> Option<&QueueIndex> {
        self.queues.get(&queue)
    }

    /// The slots of a queue's batch ending at `last`, if any of its messages is live.
    pub(crate) fn batch_slots(&self, queue: QueueRow, last: Id) -> Option<&[Slot]> {
        self.queue(queue)?.batches.get(&last).map(|batch| batch.slots.as_slice())
    }

    /// Adds a put's messages: read back from storage with their stored state, or new.
    /// Returns whether any of them is live.
    pub(crate) fn restore(
        &mut self,
        queue: QueueRow,
        first: Id,
        created_at: i64,
        expire_at: i64,
        slots: Vec<Slot>,
    ) -> bool {
        let last = first + slots.len() as Id - 1;
        let mut batch = Batch { first, created_at, expire_at, live: 0, slots };
        let q = self.queues.entry(queue).or_insert_with(|| QueueIndex::new(queue));
        for slot in &mut batch.slots {
            slot.channel = q.intern(&slot.channel);
        }
        batch.live = batch.slots.iter().filter(|s| s.phase != Phase::Gone).count() as u32;
        self.next_id = self.next_id.max(last + 1);
        if batch.live == 0 {
            return false;
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
        true
    }

    /// Adds one stream's view of a fanned-out batch row: read back, or new.
    pub(crate) fn restore_view(
        &mut self,
        stream: QueueRow,
        first: Id,
        created_at: i64,
        expire_at: i64,
        slots: Vec<Slot>,
    ) {
        let last = first + slots.len() as Id - 1;
        if self.restore(stream, first, created_at, expire_at, slots) {
            *self.shared.entry(last).or_default() += 1;
        }
    }

    /// Whether the batch row ending at `last` is fanned out to streams.
    pub(crate) fn is_shared(&self, last: Id) -> bool {
        self.shared.contains_key(&last)
    }

    /// A stream is done with a fanned-out batch row: whether it was the last one.
    pub(crate) fn release_view(&mut self, last: Id) -> bool {
        let Some(views) = self.shared.get_mut(&last) else { return true };
        *views -= 1;
        if *views > 0 {
            return false;
        }
        self.shared.remove(&last);
        true
    }

    /// Where puts to the queue go now (`None`: to the queue itself).
    pub(crate) fn subscribers(&self, queue: QueueRow) -> Option<&[Subscriber]> {
        self.subscribers.get(&queue).map(Vec::as_slice)
    }

    /// Records where puts to the queue go (`None`: it has no consumer groups).
    pub(crate) fn set_subscribers(&mut self, queue: QueueRow, subscribers: Option<Vec<Subscriber>>) {
        match subscribers {
            Some(subscribers) => self.subscribers.insert(queue, subscribers),
            None => self.subscribers.remove(&queue),
        };
    }

    /// Ids taken by a put that no stream took.
    pub(crate) fn skip_ids(&mut self, count: usize) {
        self.next_id += count as Id;
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

    /// Appends one put fanned out to streams, each with the positions it takes (check
    /// [`Index::channels_fit`] for each first); returns the first id, as [`Index::put`].
    pub(crate) fn put_fanned(
        &mut self,
        targets: &[(QueueRow, Vec<usize>)],
        messages: &[NewSlot<'_>],
        created_at: i64,
        expire_at: i64,
    ) -> Id {
        let first = self.next_id;
        for (stream, positions) in targets {
            let slots = view_slots(messages, positions, created_at);
            self.restore_view(*stream, first, created_at, expire_at, slots);
        }
        self.next_id = self.next_id.max(first + messages.len() as Id);
        first
    }

    /// The next id a put will get.
    pub(crate) fn next_id(&self) -> Id {
        self.next_id
    }
    /// Queues with messages but no queue row (a put that raced the removal of its deleted
    /// queue): their messages are reclaimed like those of a deleted queue.
    pub(crate) fn orphans(&self, live: impl Fn(QueueRow) -> bool) -> Vec<QueueRow> {
        self.queues.keys().copied().filter(|queue| !live(*queue)).collect()
    }
}
