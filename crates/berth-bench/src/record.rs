//! What the run observed: sends, receipts, duplicates, losses and latencies. Every message
//! carries a key (producer, sequence) at the start of its body so the check does not
//! depend on server-side ids.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

const SEQ_BITS: u32 = 40;

/// A message key: producer in the high bits, sequence in the low 40.
pub(crate) fn key(producer: u64, seq: u64) -> u64 {
    (producer << SEQ_BITS) | seq
}

/// A body of `size` bytes that starts with the key.
pub(crate) fn body(key: u64, size: usize) -> String {
    let mut body = format!("{key:016x}:");
    body.push_str(&"x".repeat(size.saturating_sub(body.len())));
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
    /// Distinct messages received (a lock-free count of the `seen` flags).
    received_unique: AtomicU64,
    pub(crate) errors_put: AtomicU64,
    pub(crate) errors_get: AtomicU64,
    pub(crate) errors_delete: AtomicU64,
    /// Per producer, indexed by sequence: keys are dense, so vectors and not hash maps
    /// (which took a tenth of the load generator's CPU under W1).
    producers: Mutex<Vec<ProducerLog>>,
    latencies_us: Mutex<Vec<u64>>,
    latencies_from_send_us: Mutex<Vec<u64>>,
}

/// What happened to one producer's messages, indexed by sequence number.
#[derive(Default)]
struct ProducerLog {
    sent_at: Vec<Option<Instant>>,
    acked_at: Vec<Option<Instant>>,
    seen: Vec<bool>,
}

/// What a received message was to this run.
enum Arrival {
    /// Not a message this run sent.
    Foreign,
    Duplicate,
    First {
        sent: Instant,
        acked: Option<Instant>,
    },
}

/// Sets `slots[at]`, growing the vector as a producer's sequence grows.
fn set<T: Clone + Default>(slots: &mut Vec<T>, at: usize, value: T) {
    if slots.len() <= at {
        slots.resize(at + 1, T::default());
    }
    slots[at] = value;
}

fn split(key: u64) -> (usize, usize) {
    ((key >> SEQ_BITS) as usize, (key & ((1 << SEQ_BITS) - 1)) as usize)
}

impl Recorder {
    /// The producer is about to send these keys.
    pub(crate) fn sending(&self, keys: &[u64]) {
        self.stamp(keys, |log| &mut log.sent_at);
    }

    fn stamp(&self, keys: &[u64], slots: impl Fn(&mut ProducerLog) -> &mut Vec<Option<Instant>>) {
        let now = Some(Instant::now());
        let mut producers = self.producers.lock().expect("lock");
        for &k in keys {
            let (producer, seq) = split(k);
            if producers.len() <= producer {
                producers.resize_with(producer + 1, ProducerLog::default);
            }
            set(slots(&mut producers[producer]), seq, now);
        }
    }

    /// The producer got the server's acknowledgement for these keys.
    pub(crate) fn acked(&self, keys: &[u64]) {
        self.stamp(keys, |log| &mut log.acked_at);
        self.sent.fetch_add(keys.len() as u64, Ordering::Relaxed);
        if self.measuring.load(Ordering::Relaxed) {
            self.sent_measured.fetch_add(keys.len() as u64, Ordering::Relaxed);
        }
    }

    /// A consumer got a message. One this run did not send (no key, or a key it never
    /// used) counts as foreign.
    pub(crate) fn received(&self, body: &str) {
        let now = Instant::now();
        let (sent, acked) = match self.arrival(body) {
            Arrival::Foreign => {
                self.foreign.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Arrival::Duplicate => {
                self.duplicates.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Arrival::First { sent, acked } => (sent, acked),
        };
        self.received_unique.fetch_add(1, Ordering::Relaxed);
        if self.measuring.load(Ordering::Relaxed) {
            self.received_measured.fetch_add(1, Ordering::Relaxed);
            // Got before the producer saw its ack: zero, it was there before the ack.
            let since = |at: Option<Instant>| at.map_or(0, |at| now.saturating_duration_since(at).as_micros() as u64);
            self.latencies_us.lock().expect("lock").push(since(acked));
            self.latencies_from_send_us.lock().expect("lock").push(since(Some(sent)));
        }
    }

    /// Marks the message as seen, under the lock; the counters are updated outside it.
    fn arrival(&self, body: &str) -> Arrival {
        let mut producers = self.producers.lock().expect("lock");
        let Some((producer, seq)) = key_of(body).map(split) else { return Arrival::Foreign };
        let Some(log) = producers.get_mut(producer) else { return Arrival::Foreign };
        let Some(Some(sent)) = log.sent_at.get(seq).copied() else { return Arrival::Foreign };
        if log.seen.get(seq).copied().unwrap_or(false) {
            return Arrival::Duplicate;
        }
        set(&mut log.seen, seq, true);
        Arrival::First { sent, acked: log.acked_at.get(seq).copied().flatten() }
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
        let producers = self.producers.lock().expect("lock");
        let unseen = |log: &ProducerLog| {
            let seen = |seq: usize| log.seen.get(seq).copied().unwrap_or(false);
            log.acked_at.iter().enumerate().filter(|&(seq, acked)| acked.is_some() && !seen(seq)).count()
        };
        producers.iter().map(unseen).sum::<usize>() as u64
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
        let keys = [key(0, 1), key(0, 2), key(0, 3)];
        r.sending(&keys);
        r.acked(&keys);
        r.received(&body(key(0, 1), 32));
        r.received(&body(key(0, 1), 32));
        r.received(&body(key(0, 3), 32));
        assert_eq!((r.received_total(), r.duplicates.load(Ordering::Relaxed), r.unreceived()), (2, 1, 1));
    }

    #[test]
    fn messages_this_run_never_sent_are_foreign() {
        let r = Recorder::default();
        r.sending(&[key(1, 0)]);
        r.received(&body(key(1, 1), 32)); // a sequence producer 1 never sent
        r.received(&body(key(7, 0), 32)); // a producer this run did not have
        r.received("not a key at all");
        r.received(&body(key(1, 0), 32));
        assert_eq!((r.foreign.load(Ordering::Relaxed), r.received_total(), r.unreceived()), (3, 1, 0));
    }
}
