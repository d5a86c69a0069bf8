//! How messages leave the invisible and the live sets: ended leases and delays (back to
//! ready, to the DLQ, or past retention away), retention, purge, redrive, reclaiming a
//! deleted queue.

use super::*;

impl QueueIndex {
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
}

impl Index {
    /// Ends due leases and delays of a queue (see [`QueueIndex::settle`]).
    pub(crate) fn settle(
        &mut self,
        queue: QueueRow,
        now: i64,
        limit: u32,
        report: &mut SweepReport,
        writes: &mut Vec<Persist>,
    ) {
        let dead_letter_after = self.dead_letter_after(queue);
        if let Some(q) = self.queues.get_mut(&queue) {
            let before = (report.expired, report.dead_lettered);
            q.settle(now, dead_letter_after, limit, report, writes);
            let (expired, dead_lettered) = (report.expired - before.0, report.dead_lettered - before.1);
            if expired + dead_lettered > 0 {
                let moved = self.moved.entry(queue).or_default();
                moved.expired += expired;
                moved.dead_lettered += dead_lettered;
            }
        }
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
        if !ids.is_empty() {
            self.moved.entry(queue).or_default().expired += ids.len() as u64;
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
            writes.push(Persist::DropBatch { queue, last });
        }
        let empty = q.is_empty();
        if empty {
            self.queues.remove(&queue);
        }
        (reclaimed, empty)
    }
}
