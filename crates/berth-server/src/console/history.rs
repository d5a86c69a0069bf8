//! What the console's charts show: every few seconds, each live queue's totals and depth,
//! kept for the last minutes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_core::Engine;
use tokio_util::sync::CancellationToken;

/// How often queues are sampled.
pub(crate) const EVERY: Duration = Duration::from_secs(5);
/// Samples kept per queue: ten minutes.
const KEPT: usize = 120;

/// One queue at one time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) at: Instant,
    /// Messages put and delivered through this node so far.
    pub(crate) put: u64,
    pub(crate) delivered: u64,
    /// Messages in the queue (visible, in flight, delayed) and in its DLQ.
    pub(crate) depth: u64,
    pub(crate) dlq_depth: u64,
}

/// Rates between two samples, per second.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Rates {
    pub(crate) put: f64,
    pub(crate) delivered: f64,
}

pub(crate) fn rates(earlier: &Sample, later: &Sample) -> Rates {
    let secs = later.at.duration_since(earlier.at).as_secs_f64().max(0.001);
    Rates {
        put: later.put.saturating_sub(earlier.put) as f64 / secs,
        delivered: later.delivered.saturating_sub(earlier.delivered) as f64 / secs,
    }
}

#[derive(Default)]
pub(crate) struct History {
    // std Mutex: held only to copy or append, never across an await.
    by_queue: Mutex<HashMap<String, VecDeque<Sample>>>,
}

impl History {
    /// Samples every live queue each `EVERY` until `stop`.
    pub(crate) async fn sample(&self, engine: &Engine, stop: CancellationToken) {
        let mut tick = tokio::time::interval(EVERY);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            match engine.queue_metrics(false).await {
                Ok(queues) => {
                    let at = Instant::now();
                    let mut by_queue = self.by_queue.lock().unwrap_or_else(|e| e.into_inner());
                    let live: HashSet<&str> = queues.iter().map(|q| q.queue.id.as_str()).collect();
                    by_queue.retain(|id, _| live.contains(id.as_str()));
                    for q in queues {
                        let (main, dlq) = (&q.stats.queue, &q.stats.dead_letter);
                        let sample = Sample {
                            at,
                            put: q.totals.put,
                            delivered: q.totals.delivered,
                            depth: main.visible + main.in_flight + main.delayed,
                            dlq_depth: dlq.visible + dlq.in_flight + dlq.delayed,
                        };
                        let samples = by_queue.entry(q.queue.id).or_default();
                        if samples.len() == KEPT {
                            samples.pop_front();
                        }
                        samples.push_back(sample);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "the console cannot sample queues"),
            }
        }
    }

    /// A queue's samples, oldest first.
    pub(crate) fn of(&self, queue_id: &str) -> Vec<Sample> {
        let by_queue = self.by_queue.lock().unwrap_or_else(|e| e.into_inner());
        by_queue.get(queue_id).map(|s| s.iter().copied().collect()).unwrap_or_default()
    }

    /// A queue's rates over the last sampling interval.
    pub(crate) fn latest_rates(&self, queue_id: &str) -> Option<Rates> {
        let by_queue = self.by_queue.lock().unwrap_or_else(|e| e.into_inner());
        let samples = by_queue.get(queue_id)?;
        let n = samples.len();
        (n >= 2).then(|| rates(&samples[n - 2], &samples[n - 1]))
    }
}
