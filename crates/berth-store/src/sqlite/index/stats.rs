//! What GetStats and ListChannels report.

use super::*;

/// Adds (`up`) or takes away a message's share of `counts` as GetStats reports it: ready
/// messages are visible, leased ones in flight, delayed ones (never delivered) count no bytes.
pub(super) fn tally(counts: &mut MessageCounts, slot: &Slot, up: bool) {
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
pub(super) fn side_of(stats: &mut QueueStats, dlq: bool) -> &mut MessageCounts {
    if dlq {
        &mut stats.dead_letter
    } else {
        &mut stats.queue
    }
}

impl Index {
    /// Counts of the queue and its DLQ (optionally of one channel) as of `now`: a lease that
    /// ended undeleted counts where the next lease call will put it; messages past
    /// retention do not count.
    pub(crate) fn stats(&self, queue: QueueRow, channel: Option<&str>, now: i64) -> QueueStats {
        let dead_letter_after = self.dead_letter_after(queue);
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
}
