//! A transaction whose BEGIN goes with its first statement and whose COMMIT goes with its
//! last (pipelined: sent together, answered together), two round trips fewer than
//! `Client::transaction` and `commit`. On a busy two-core box each round trip is also two
//! context switches, and a lease is a short transaction: its time is mostly round trips.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

use berth_core::error::StoreError;
use deadpool_postgres::{GenericClient, Object};
use tokio_postgres::Row;

use super::pg;
use super::sql::Params;

pub(crate) struct Pipelined {
    client: Option<Object>,
    committed: AtomicBool,
}

impl Pipelined {
    pub(crate) fn new(client: Object) -> Pipelined {
        Pipelined { client: Some(client), committed: AtomicBool::new(false) }
    }

    pub(crate) fn client(&self) -> &Object {
        self.client.as_ref().expect("a connection until dropped")
    }

    /// Begins the transaction (`begin`: BEGIN and any SET LOCAL) with `first`, its first
    /// statement (not yet polled).
    pub(crate) async fn begin_with<T>(
        &self,
        begin: &str,
        first: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let begin = async { self.client().batch_execute(begin).await.map_err(pg) };
        // Biased: polled in this order, so BEGIN is sent first.
        let ((), out) = tokio::try_join!(biased; begin, first)?;
        Ok(out)
    }

    /// Runs the last statement and commits.
    pub(crate) async fn commit_with(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, StoreError> {
        let c = self.client();
        // Prepared first: a statement still to prepare would be sent after the COMMIT.
        let statement = c.prepare_cached(sql).await.map_err(pg)?;
        let last = async { c.query(&statement, params).await.map_err(pg) };
        // A failed statement turns the COMMIT into a rollback, and its error is returned.
        let commit = async { c.batch_execute("COMMIT").await.map_err(pg) };
        // Biased: polled in this order, so the statement is sent before the COMMIT.
        let (rows, ()) = tokio::try_join!(biased; last, commit)?;
        self.committed.store(true, Ordering::Relaxed);
        Ok(rows)
    }
}

impl Drop for Pipelined {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            if !self.committed.load(Ordering::Relaxed) {
                // Still in the transaction: the connection goes, and the server rolls back,
                // rather than back to the pool mid-transaction.
                drop(Object::take(client));
            }
        }
    }
}
