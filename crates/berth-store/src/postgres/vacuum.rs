//! Vacuuming the messages table, and the bodies of fanned-out puts, as often as their
//! churn needs.
//!
//! Every message leaves two dead row versions behind (its lease's update and its delete),
//! and autovacuum visits a database at most once a minute by default: at 20,000 messages
//! a second that is gigabytes of dead rows for a backlog of megabytes, and every scan
//! walks them. So each node's housekeeping vacuums the table itself once enough dead rows
//! piled up. `SKIP_LOCKED` makes it skip while another node's (or autovacuum's) vacuum of
//! the table runs, so nodes never queue up behind each other.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_core::error::StoreError;
use deadpool_postgres::GenericClient;

use super::{pg, sql};

/// Dead rows that make a vacuum due (autovacuum's per-table threshold in schema.rs alike).
const DEAD_ROWS: i64 = 20_000;
/// Least time between two vacuums of one node: dead rows a long transaction elsewhere keeps
/// from being removed must not keep it vacuuming back to back.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// When this node last vacuumed.
#[derive(Default)]
pub(crate) struct Vacuum {
    // std Mutex: held only to read or set the time, never across an await.
    last: Mutex<Option<Instant>>,
}

/// The tables that churn: every message, and the bodies fanned-out puts share.
const TABLES: [&str; 3] = ["messages", "bodies", "body_releases"];

impl Vacuum {
    /// Vacuums each churning table in which enough dead rows piled up.
    pub(crate) async fn if_due(&self, c: &impl GenericClient) -> Result<(), StoreError> {
        if self.last.lock().unwrap_or_else(|e| e.into_inner()).is_some_and(|at| at.elapsed() < MIN_INTERVAL) {
            return Ok(());
        }
        let due = sql::query(
            c,
            "SELECT relname::text, n_dead_tup FROM pg_stat_user_tables
             WHERE relid = ANY(SELECT to_regclass(t) FROM unnest($1::text[]) AS t) AND n_dead_tup >= $2",
            &[&TABLES.as_slice(), &DEAD_ROWS],
        )
        .await?;
        if due.is_empty() {
            return Ok(());
        }
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        for row in due {
            let (table, dead): (String, i64) = (row.get(0), row.get(1));
            // No truncation: it takes the table's exclusive lock, stalling every put and
            // get, only for the next puts to extend the table again.
            c.batch_execute(&format!("VACUUM (SKIP_LOCKED, TRUNCATE false) {table}")).await.map_err(pg)?;
            tracing::debug!(table, dead_rows = dead, "vacuumed");
        }
        Ok(())
    }
}
