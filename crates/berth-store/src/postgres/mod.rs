//! [`PostgresStore`]: several stateless Berth nodes on one PostgreSQL database.
//!
//! Every message is a row and every rule runs in SQL transactions, so any node may answer
//! any request: leases take rows with `FOR UPDATE SKIP LOCKED` (a message is never leased
//! to two consumers at once), and what happens when a lease ends is decided by
//! [`berth_core::delivery::after_lease`] on the rows the transaction locked.
//! Background sweeps run on one node at a time (an advisory lock). Time comes from the
//! database ([`DatabaseClock`]), so leases read alike on nodes whose clocks differ.
//! Wakeups cross nodes by LISTEN/NOTIFY, sent after the commit (`feed.rs`). Requests that
//! arrive together share a transaction (`coalesce.rs`).

mod batches;
mod clock;
mod coalesce;
mod consumer_groups;
mod feed;
mod floors;
mod identity;
mod messages;
mod node;
mod pipelined;
mod queues;
mod schema;
mod settle;
mod sql;
mod store_impl;
mod sweep;
mod tls;
mod vacuum;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use berth_core::error::StoreError;
use berth_core::store::CHANGE_FEED_CAPACITY;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

pub use clock::DatabaseClock;

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// A libpq-style URL or key=value string, e.g. `postgres://berth@127.0.0.1/berth`.
    pub url: String,
    /// Most connections this node holds for requests (one more listens for changes).
    pub pool_size: usize,
}

/// Longest a request waits for a connection, or for one to be made, before it is answered
/// 503 (the database is down or every connection is busy).
const CONNECTION_WAIT: Duration = Duration::from_secs(5);

/// The PostgreSQL store.
pub struct PostgresStore {
    pool: Pool,
    store_id: String,
    /// Advisory lock key of this store's sweeps.
    sweep_lock: i64,
    /// What this node tells once a transaction committed.
    node: Arc<node::Node>,
    vacuum: vacuum::Vacuum,
    clock: Arc<DatabaseClock>,
    stop: CancellationToken,
    /// Puts, deletes and leases, run in batches.
    puts: coalesce::Coalescer<batches::Puts>,
    deletes: coalesce::Coalescer<batches::Deletes>,
    leases: coalesce::Coalescer<batches::Leases>,
}

impl PostgresStore {
    /// Connects, creates or checks the schema, and starts the change feed and the clock.
    ///
    /// # Errors
    /// A bad URL, a database that cannot be reached, or a schema this build cannot read.
    pub async fn open(options: &PostgresOptions) -> Result<PostgresStore, StoreError> {
        let tls::Connection { mut config, tls } = tls::connection(&options.url)?;
        config.connect_timeout(CONNECTION_WAIT);
        if config.get_application_name().is_none() {
            config.application_name("berth");
        }
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECTION_WAIT))
            .create_timeout(Some(CONNECTION_WAIT))
            .recycle_timeout(Some(CONNECTION_WAIT))
            .build()
            .map_err(|e| StoreError::Backend(format!("cannot make the connection pool: {e}")))?;
        let store_id = {
            let mut client = connection(&pool).await?;
            schema::prepare(&mut client).await?
        };
        let stop = CancellationToken::new();
        let (changes, _) = broadcast::channel(CHANGE_FEED_CAPACITY);
        let node = format!("{:016x}", rand::random::<u64>());
        let channel = feed::channel_of(&store_id);
        let feed = Arc::new(feed::Notifier::new(node.clone(), channel.clone()));
        tokio::spawn(feed.clone().send(pool.clone(), stop.clone()));
        let floors = Arc::new(floors::Floors::default());
        tokio::spawn(feed::listen(config, tls, node, channel, changes.clone(), floors.clone(), stop.clone()));
        let clock = Arc::new(DatabaseClock::default());
        clock.sync(&pool).await?;
        tokio::spawn(clock.clone().keep_in_sync(pool.clone(), stop.clone()));
        // Stores that share a database (in schemas of their own) sweep apart.
        let sweep_lock = i64::from_str_radix(&store_id[..15.min(store_id.len())], 16).unwrap_or(0);
        let vacuum = vacuum::Vacuum::default();
        let node = Arc::new(node::Node { changes, feed, floors, observer: OnceLock::new() });
        let puts = coalesce::Coalescer::new(batches::Puts { pool: pool.clone(), node: node.clone() });
        let deletes = coalesce::Coalescer::new(batches::Deletes { pool: pool.clone(), node: node.clone() });
        let leases = coalesce::Coalescer::new(batches::Leases { pool: pool.clone(), node: node.clone() });
        Ok(PostgresStore { pool, store_id, sweep_lock, node, vacuum, clock, stop, puts, deletes, leases })
    }

    /// The database's id, made when Berth first created its schema there.
    pub fn store_id(&self) -> &str {
        &self.store_id
    }

    /// The database's clock, as this node reads it (every node's engine should use it).
    pub fn clock(&self) -> Arc<DatabaseClock> {
        self.clock.clone()
    }

    async fn client(&self) -> Result<Object, StoreError> {
        connection(&self.pool).await
    }
}

async fn connection(pool: &Pool) -> Result<Object, StoreError> {
    pool.get().await.map_err(|e| match e {
        deadpool_postgres::PoolError::Backend(e) => pg(e),
        other => StoreError::Unavailable(format!("no PostgreSQL connection: {other}")),
    })
}

/// Maps a driver error to the store's: what retrying may mend (the server is down,
/// restarting, out of connections, or a transaction lost a race) is `Unavailable`, a full
/// disk is `Full`, the rest is a `Backend` fault.
pub(crate) fn pg(error: tokio_postgres::Error) -> StoreError {
    let Some(db) = error.as_db_error() else {
        // No answer from the server: the connection broke or could not be made.
        return StoreError::Unavailable(format!("PostgreSQL: {}", with_causes(&error)));
    };
    let code = db.code().code();
    let text = format!("PostgreSQL {code}: {}", db.message());
    match code {
        "53100" => StoreError::Full(text),
        "40001" | "40P01" | "55P03" | "57014" => StoreError::Unavailable(text),
        _ if code.starts_with("08") || code.starts_with("57P") || code.starts_with("53") => {
            StoreError::Unavailable(text)
        }
        _ => StoreError::Backend(text),
    }
}

/// An error and what caused it, as one line: the driver's own text names only its kind
/// ("error performing TLS handshake"), its cause says why.
pub(crate) fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        text.push_str(&format!(": {next}"));
        cause = next.source();
    }
    text
}

/// A value that must fit a column, or a backend fault.
pub(crate) fn json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Backend(e.to_string()))
}

/// A stored JSON column read back.
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Backend(format!("a stored value does not parse: {e}")))
}
