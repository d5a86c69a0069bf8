//! [`SqliteStore`]: SQLite in WAL mode with `synchronous = FULL`.
//!
//! SQLite calls block, so none runs on the async workers: writes go to one writer thread
//! that commits every job waiting at that moment in a single transaction (group commit),
//! each job inside its own savepoint; reads run on `spawn_blocking` with pooled connections.
//! A job is answered only after its transaction is on disk.

mod identity;
mod messages;
mod queues;
mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use berth_core::error::{QueueError, StoreError};
use rusqlite::{Connection, OpenFlags};

use writer::Writer;

/// Prepared statements kept per connection (more than the store uses, so none is re-parsed).
const STATEMENT_CACHE: usize = 64;
/// Most idle read connections kept open.
const MAX_IDLE_READERS: usize = 8;

/// The embedded store.
pub struct SqliteStore {
    writer: Arc<Writer>,
    readers: Arc<Readers>,
    /// A connection of its own for WAL checkpoints (std Mutex: used only on blocking threads).
    checkpointer: Arc<Mutex<Connection>>,
    /// Kept by write jobs (std Mutex: locked on the writer thread only, never contended).
    watch: Arc<Mutex<messages::Watch>>,
}

struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    fn take(&self) -> Result<Connection, StoreError> {
        if let Some(conn) = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(conn);
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags).map_err(backend)?;
        configure(&conn)?;
        Ok(conn)
    }

    fn give(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    ///
    /// # Errors
    /// When the file cannot be opened or migrated.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(backend)?;
        configure(&conn)?;
        conn.execute_batch(schema::WRITER_PRAGMAS).map_err(backend)?;
        schema::migrate(&conn).map_err(backend)?;
        identity::ensure_receipt_secret(&conn).map_err(backend)?;
        let writer = Arc::new(Writer::spawn(conn)?);
        let readers = Arc::new(Readers { path: path.to_owned(), idle: Mutex::new(Vec::new()) });
        let checkpointer = Connection::open(path).map_err(backend)?;
        configure(&checkpointer)?;
        Ok(SqliteStore { writer, readers, checkpointer: Arc::new(Mutex::new(checkpointer)), watch: Arc::default() })
    }

    /// Write transactions committed since the store was opened; each is one WAL fsync.
    /// Fewer commits than write requests means requests shared commits.
    pub fn commits(&self) -> u64 {
        self.writer.commits()
    }

    /// Copies committed WAL frames into the database from a connection other than the
    /// writer's, so that the writer's commits do not pay for it.
    async fn checkpoint_wal(&self) -> Result<(), StoreError> {
        let checkpointer = self.checkpointer.clone();
        tokio::task::spawn_blocking(move || {
            let conn = checkpointer.lock().unwrap_or_else(|e| e.into_inner());
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())).map_err(backend)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("checkpoint task failed: {e}")))?
    }

    /// Waits for queued writes, checkpoints the WAL and stops the writer.
    async fn close_writer(&self) -> Result<(), StoreError> {
        let writer = self.writer.clone();
        tokio::task::spawn_blocking(move || writer.close())
            .await
            .map_err(|e| StoreError::Backend(format!("close failed: {e}")))
    }

    /// Runs a read on a pooled connection off the async workers.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let conn = readers.take()?;
            let result = f(&conn).map_err(backend);
            readers.give(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?
    }

    /// Runs a write in the next group commit; answers after the commit.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.writer.run(move |conn| f(conn).map_err(backend)).await
    }

    /// Like [`Self::write`] for jobs that keep the writer's [`messages::Watch`].
    async fn write_watched<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &mut messages::Watch) -> rusqlite::Result<T> + Send + 'static,
    {
        let watch = self.watch.clone();
        self.write(move |conn| f(conn, &mut watch.lock().unwrap_or_else(|e| e.into_inner()))).await
    }

    /// Like [`Self::write_watched`] for jobs that can fail with a client error.
    async fn write_checked<T, F>(&self, f: F) -> Result<T, QueueError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &mut messages::Watch) -> Result<T, QueueError> + Send + 'static,
    {
        let watch = self.watch.clone();
        self.writer.run(move |conn| f(conn, &mut watch.lock().unwrap_or_else(|e| e.into_inner()))).await
    }
}

/// Settings every connection gets.
fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(schema::PRAGMAS).map_err(backend)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // Without the query planner stability guarantee, SQLite (built with STAT4) re-plans a
    // cached statement whenever a bound value in a range condition changes: 5% of the
    // writer's time in profiles.
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true).map_err(backend)?;
    Ok(())
}

/// Maps SQLite errors: a busy or locked database is retryable, the rest is not.
pub(crate) fn backend(error: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked};
    match error.sqlite_error_code() {
        Some(DatabaseBusy | DatabaseLocked) => StoreError::Unavailable(error.to_string()),
        _ => StoreError::Backend(error.to_string()),
    }
}

/// Lets `?` lift SQLite errors inside jobs that return `QueueError`.
pub(crate) fn sql(error: rusqlite::Error) -> QueueError {
    QueueError::Store(backend(error))
}

mod store_impl;
