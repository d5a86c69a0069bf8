//! What the run observed: sends, receipts, duplicates, losses and latencies. Every message
//! carries a key (producer, sequence) at the start of its body so the check does not
//! depend on server-side ids.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// A message key: producer in the high bits, sequence in the low 40.
pub(crate) fn key(producer: u64, seq: u64) -> u64 {
    (producer << 40) | seq
}

/// A body of `size` bytes that starts with the key.
pub(crate) fn body(key: u64, size: usize) -> String {
    let mut body = format!("{key:016x}:");
    while body.len() < size {
        body.push('x');
    }
    body
}

/// The key at the start of a body.
pub(crate) fn key_of(body: &str) -> Option<u64> {
    u64::from_str_radix(body.get(..16)?, 16).ok()
}

#[derive(Default)]
pub(crate) struct Recorder {
    /// Messages count toward rates and latencies only while this is set.
    pub(crate) measuring: AtomicBool,
    pub(crate) sent: AtomicU64,
    pub(crate) sent_measured: AtomicU64,
    pub(crate) received_measured: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    /// Messages not sent by this run (e.g. left in the queue by an earlier one).
    pub(crate) foreign: AtomicU64,
    /// Distinct messages received (a lock-free copy of the size of `seen`).
    received_unique: AtomicU64,
    pub(crate) errors_put: AtomicU64,
    pub(crate) errors_get: AtomicU64,
    pub(crate) errors_delete: AtomicU64,
    sent_at: Mutex<HashMap<u64, Instant>>,
    acked_at: Mutex<HashMap<u64, Instant>>,
    seen: Mutex<HashSet<u64>>,
    latencies_us: Mutex<Vec<u64>>,
    latencies_from_send_us: Mutex<Vec<u64>>,
}

impl Recorder {
    /// The producer is about to send these keys.
    pub(crate) fn sending(&self, keys: &[u64]) {
        let now = Instant::now();
        let mut sent = self.sent_at.lock().expect("lock");
        for k in keys {
            sent.insert(*k, now);
        }
    }

    /// The producer got the server's acknowledgement for these keys.
    pub(crate) fn acked(&self, keys: &[u64]) {
        let now = Instant::now();
        let mut acked = self.acked_at.lock().expect("lock");
        for k in keys {
            acked.insert(*k, now);
        }
        self.sent.fetch_add(keys.len() as u64, Ordering::Relaxed);
        if self.measuring.load(Ordering::Relaxed) {
            self.sent_measured.fetch_add(keys.len() as u64, Ordering::Relaxed);
        }
    }

    /// A consumer got a message.
    pub(crate) fn received(&self, body: &str) {
        let now = Instant::now();
        let Some(k) = key_of(body) else {
            self.foreign.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if !self.seen.lock().expect("lock").insert(k) {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.received_unique.fetch_add(1, Ordering::Relaxed);
        if self.measuring.load(Ordering::Relaxed) {
            self.received_measured.fetch_add(1, Ordering::Relaxed);
            // Got before the producer saw its ack: zero, it was there before the ack.
            let since = |at: Option<Instant>| at.map_or(0, |at| now.saturating_duration_since(at).as_micros() as u64);
            let acked = self.acked_at.lock().expect("lock").get(&k).copied();
            self.latencies_us.lock().expect("lock").push(since(acked));
            let sent = self.sent_at.lock().expect("lock").get(&k).copied();
            self.latencies_from_send_us.lock().expect("lock").push(since(sent));
        }
    }

    pub(crate) fn received_total(&self) -> u64 {
        self.received_unique.load(Ordering::Relaxed)
    }

    /// Acknowledged but not yet received.
    pub(crate) fn outstanding(&self) -> u64 {
        self.sent.load(Ordering::Relaxed).saturating_sub(self.received_total())
    }

    /// Acknowledged keys not received (yet).
    pub(crate) fn unreceived(&self) -> u64 {
        let seen = self.seen.lock().expect("lock");
        self.acked_at.lock().expect("lock").keys().filter(|k| !seen.contains(k)).count() as u64
    }

    /// Acknowledged → received: p50, p90, p99, max in milliseconds.
    pub(crate) fn latency_ms(&self) -> [f64; 4] {
        percentiles(self.latencies_us.lock().expect("lock").clone())
    }

    /// Send started → received: p50, p90, p99, max in milliseconds.
    pub(crate) fn latency_from_send_ms(&self) -> [f64; 4] {
        percentiles(self.latencies_from_send_us.lock().expect("lock").clone())
    }
}

/// p50, p90, p99 and max of microsecond samples, in milliseconds.
fn percentiles(mut all: Vec<u64>) -> [f64; 4] {
    if all.is_empty() {
        return [0.0; 4];
    }
    all.sort_unstable();
    let at = |q: f64| all[((all.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
    [at(0.5), at(0.9), at(0.99), at(1.0)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_carries_its_key() {
        let k = key(3, 12345);
        let b = body(k, 1024);
        assert_eq!(b.len(), 1024);
        assert_eq!(key_of(&b), Some(k));
    }

    #[test]
    fn duplicates_and_losses_are_counted_not_assumed() {
        let r = Recorder::default();
        r.acked(&[key(0, 1), key(0, 2), key(0, 3)]);
        r.received(&body(key(0, 1), 32));
        r.received(&body(key(0, 1), 32));
        r.received(&body(key(0, 3), 32));
        assert_eq!((r.received_total(), r.duplicates.load(Ordering::Relaxed), r.unreceived()), (2, 1, 1));
    }
}
