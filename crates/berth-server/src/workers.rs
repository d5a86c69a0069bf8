//! Background work: retention, expired leases and dead-lettering, reclaiming deleted
//! queues and space, each in bounded batches so no sweep holds the writer for long; and the
//! store's housekeeping (SQLite: WAL checkpoints; PostgreSQL: vacuum) off the commit path.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_core::Engine;
use tokio_util::sync::CancellationToken;

/// Rows per kind of work in one sweep.
const SWEEP_BATCH: u32 = 1_000;
/// How often the store's housekeeping runs.
const HOUSEKEEPING_EVERY: Duration = Duration::from_millis(500);
/// Pause between sweeps when the last one found little to do.
const IDLE_PAUSE: Duration = Duration::from_secs(1);

/// Sweeps until `shutdown` fires; sweeps again at once while there is a backlog.
pub async fn sweep(engine: Arc<Engine>, shutdown: CancellationToken) {
    let mut last_housekeeping = Instant::now();
    loop {
        let busy = match engine.sweep(SWEEP_BATCH).await {
            Ok(report) => {
                if report.total() > 0 {
                    tracing::debug!(?report, "sweep");
                }
                report.total() >= u64::from(SWEEP_BATCH)
            }
            Err(e) => {
                tracing::warn!(error = %e, "sweep failed; retrying");
                false
            }
        };
        if last_housekeeping.elapsed() >= HOUSEKEEPING_EVERY {
            if let Err(e) = engine.housekeeping().await {
                tracing::warn!(error = %e, "store housekeeping failed; retrying");
            }
            last_housekeeping = Instant::now();
        }
        let pause = if busy { Duration::from_millis(10) } else { IDLE_PAUSE.min(HOUSEKEEPING_EVERY) };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}
