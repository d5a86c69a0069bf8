//! The requests a node runs in batches (see `coalesce.rs`): puts, one transaction for a
//! batch, and deletes, one statement.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use async_trait::async_trait;
use berth_core::clock::Timestamp;
use berth_core::error::StoreError;
use berth_core::model::LeaseRef;
use berth_core::store::StoreObserver;
use deadpool_postgres::Pool;

use super::messages::{self, Put, PutRequest};
use super::{connection, pg};

pub(crate) type Observer = Arc<OnceLock<Arc<dyn StoreObserver>>>;

fn committed(observer: &Observer, writes: usize, started: Instant) {
    if let Some(observer) = observer.get() {
        observer.committed(writes, started.elapsed());
    }
}

pub(crate) struct Puts {
    pub(crate) pool: Pool,
    pub(crate) observer: Observer,
}

#[async_trait]
impl super::coalesce::Batch for Puts {
    type Request = PutRequest;
    type Output = Put;

    async fn run(&self, requests: &[PutRequest]) -> Result<Vec<Put>, StoreError> {
        let mut client = connection(&self.pool).await?;
        let tx = client.transaction().await.map_err(pg)?;
        let puts = messages::put_all(&tx, requests).await?;
        let started = Instant::now();
        tx.commit().await.map_err(pg)?;
        committed(&self.observer, requests.len(), started);
        Ok(puts)
    }
}

pub(crate) struct Deletes {
    pub(crate) pool: Pool,
    pub(crate) observer: Observer,
}

#[async_trait]
impl super::coalesce::Batch for Deletes {
    type Request = (Vec<LeaseRef>, Timestamp);
    type Output = Vec<bool>;

    async fn run(&self, requests: &[(Vec<LeaseRef>, Timestamp)]) -> Result<Vec<Vec<bool>>, StoreError> {
        let client = connection(&self.pool).await?;
        // One statement, committed on its own: its time includes the commit.
        let started = Instant::now();
        let deleted = messages::delete_all(&client, requests).await?;
        committed(&self.observer, requests.len(), started);
        Ok(deleted)
    }
}
