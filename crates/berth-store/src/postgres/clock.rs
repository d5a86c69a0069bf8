//! [`DatabaseClock`]: the database server's clock, read through this node's.
//!
//! Lease ends, visibility and retention are compared across nodes, so every node must
//! tell the same time: each measures how far its own clock is from the database's (the
//! round trip's midpoint, best of a few) and adds that to its wall clock, checking again
//! every few seconds. Nodes then agree within a round trip, whatever their own clocks say.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_core::clock::{Clock, SystemClock, Timestamp};
use berth_core::error::StoreError;
use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

use super::{connection, pg};

/// How often the offset is measured again.
const RESYNC_EVERY: Duration = Duration::from_secs(10);
/// Round trips per measurement; the fastest one counts.
const SAMPLES: usize = 3;

/// The database's time, as this node reads it.
#[derive(Debug, Default)]
pub struct DatabaseClock {
    /// Database time minus this node's wall clock, in milliseconds.
    offset_ms: AtomicI64,
}

impl Clock for DatabaseClock {
    fn now(&self) -> Timestamp {
        Timestamp(SystemClock.now().0 + self.offset_ms.load(Ordering::Relaxed))
    }
}

impl DatabaseClock {
    /// How far this node's clock is behind the database's, in milliseconds.
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }

    /// Measures the offset now.
    pub(crate) async fn sync(&self, pool: &Pool) -> Result<(), StoreError> {
        let client = connection(pool).await?;
        let statement =
            client.prepare_cached("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint").await.map_err(pg)?;
        let mut best: Option<(i64, i64)> = None; // (round trip, offset)
        for _ in 0..SAMPLES {
            let before = SystemClock.now().0;
            let database: i64 = client.query_one(&statement, &[]).await.map_err(pg)?.get(0);
            let after = SystemClock.now().0;
            let sample = (after - before, database - (before + after) / 2);
            best = Some(best.map_or(sample, |b| b.min(sample)));
        }
        if let Some((_, offset)) = best {
            let old = self.offset_ms.swap(offset, Ordering::Relaxed);
            if (old - offset).abs() > 1_000 {
                tracing::warn!(offset_ms = offset, was_ms = old, "this node's clock moved against the database's");
            }
        }
        Ok(())
    }

    /// Measures again every few seconds until `stop` fires.
    pub(crate) async fn keep_in_sync(self: Arc<Self>, pool: Pool, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(RESYNC_EVERY) => {}
            }
            if let Err(e) = self.sync(&pool).await {
                tracing::debug!(error = %e, "cannot read the database's clock; keeping the last offset");
            }
        }
    }
}
