//! Messages this engine moved, per queue, for metrics: monotonic since the process started
//! (each node counts its own; a scraper sums them).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What happened to a queue's messages through this engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessageTotals {
    /// Messages put.
    pub put: u64,
    /// Deliveries (leases handed out), redeliveries included.
    pub delivered: u64,
    /// Deliveries of messages delivered before (delivery count above 1).
    pub redelivered: u64,
    /// Messages deleted by their receipt.
    pub deleted: u64,
}

#[derive(Default)]
struct Tally {
    put: AtomicU64,
    delivered: AtomicU64,
    redelivered: AtomicU64,
    deleted: AtomicU64,
}

/// Per-queue tallies by queue OCID (never reused, unlike store rows); a queue's entry is
/// made on its first counted message.
#[derive(Default)]
pub(crate) struct Counters {
    // std Mutex: held only to find or make an entry, never across an await.
    queues: Mutex<HashMap<String, Arc<Tally>>>,
}

/// Which tally to add to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Counted {
    Put,
    Delivered,
    Redelivered,
    Deleted,
}

impl Counters {
    pub(crate) fn add(&self, queue_id: &str, what: Counted, n: usize) {
        if n == 0 {
            return;
        }
        let tally = {
            let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
            // Look up first: the key is allocated only for a queue's first count.
            match queues.get(queue_id) {
                Some(tally) => tally.clone(),
                None => queues.entry(queue_id.to_owned()).or_default().clone(),
            }
        };
        let counter = match what {
            Counted::Put => &tally.put,
            Counted::Delivered => &tally.delivered,
            Counted::Redelivered => &tally.redelivered,
            Counted::Deleted => &tally.deleted,
        };
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn totals(&self, queue_id: &str) -> MessageTotals {
        let queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        queues.get(queue_id).map_or_else(MessageTotals::default, |t| MessageTotals {
            put: t.put.load(Ordering::Relaxed),
            delivered: t.delivered.load(Ordering::Relaxed),
            redelivered: t.redelivered.load(Ordering::Relaxed),
            deleted: t.deleted.load(Ordering::Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_are_kept_per_queue_and_kind() {
        let counters = Counters::default();
        counters.add("q1", Counted::Put, 3);
        counters.add("q1", Counted::Put, 2);
        counters.add("q1", Counted::Delivered, 4);
        counters.add("q1", Counted::Redelivered, 1);
        counters.add("q2", Counted::Deleted, 1);
        assert_eq!(counters.totals("q1"), MessageTotals { put: 5, delivered: 4, redelivered: 1, deleted: 0 });
        assert_eq!(counters.totals("q2"), MessageTotals { deleted: 1, ..MessageTotals::default() });
        assert_eq!(counters.totals("q3"), MessageTotals::default());
    }
}
