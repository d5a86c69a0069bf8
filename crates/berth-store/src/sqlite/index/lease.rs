//! Leasing (FIFO per channel, fair across channels) and what a receipt may do with its
//! lease: extend it, end it, delete its message.

use super::*;

impl QueueIndex {
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

    /// Adds ready ids of one side (and of the channels) to `ids`, until it holds `limit`.
    pub(super) fn take_ready(&self, dlq: bool, channels: Option<&[String]>, limit: usize, ids: &mut Vec<Id>) {
        for (name, ready) in &self.ready[side(dlq)] {
            if in_channels(channels, name) {
                ids.extend(ready.iter().take(limit.saturating_sub(ids.len())));
            }
        }
    }
}

impl Index {
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
}
