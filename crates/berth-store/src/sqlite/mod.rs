//! [`SqliteStore`]: SQLite in WAL mode with `synchronous = FULL`.
//!
//! SQLite calls block, so none runs on the async workers: writes go to one writer thread
//! that commits every job waiting at that moment in a single transaction (group commit);
//! reads run on `spawn_blocking` with pooled connections.
//! A job is answered only after its transaction is on disk.
//!
//! Message state lives in an in-memory [`index::Index`] that write jobs change along with
//! SQLite, so one process at a time serves a database's messages: it holds a lock on
//! `<database>.lock` ([`SqliteStore::owns_messages`]). Tools that manage only tenancies and
//! users open it with [`SqliteStore::open_without_messages`] and take no lock.

mod consumer_groups;
mod identity;
mod index;
mod messages;
mod per_message_states;
mod queues;
mod room;
mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use berth_core::error::StoreError;
use berth_core::store::{Change, StoreObserver, CHANGE_FEED_CAPACITY};
use rusqlite::{Connection, OpenFlags};
use tokio::sync::broadcast;

use writer::Writer;

/// Prepared statements kept per connection (more than the store uses, so none is re-parsed).
const STATEMENT_CACHE: usize = 64;
/// Room (bytes) puts leave on the disk unless told otherwise.
pub const DEFAULT_MIN_FREE_SPACE: u64 = 64 << 20;
/// Most idle read connections kept open.
const MAX_IDLE_READERS: usize = 8;

/// The embedded store.
pub struct SqliteStore {
    writer: Arc<Writer>,
    readers: Arc<Readers>,
    /// A connection of its own for WAL checkpoints (std Mutex: used only on blocking threads).
    checkpointer: Arc<Mutex<Connection>>,
    /// Every message's state (std Mutex: locked by write jobs on the writer thread, and
    /// briefly by stats and channel reads; never across an await).
    index: Arc<Mutex<Shared>>,
    /// Held while this store serves the database's messages; `None` in a store that does not.
    owner: Option<std::fs::File>,
    /// Made when the database was created; the data dir records it.
    store_id: String,
    /// The disk space puts must leave for everything else.
    room: Arc<room::Room>,
    /// The change feed: sent after each commit that made messages ready (one process
    /// serves the messages, so this is every node's feed).
    changes: broadcast::Sender<Change>,
    /// Told of each commit, on the writer thread.
    observer: Arc<OnceLock<Arc<dyn StoreObserver>>>,
}

/// The index and whether it may disagree with the database.
struct Shared {
    index: index::Index,
    /// Set when a job failed after changing the index: the next job reads the index back
    /// from the database first. After a rollback the writer reads it back at once.
    stale: bool,
}

impl Shared {
    fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
        shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the index back from the database; it stays stale if that fails.
    fn reload(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        self.stale = true;
        self.index = messages::load(conn)?;
        self.stale = false;
        Ok(())
    }
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
        Self::open_as(path, true)
    }

    /// Opens the database for tenancies, users and queues only: it never serves messages,
    /// so it neither waits for nor holds the lock a server takes (`berth credentials create`).
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub fn open_without_messages(path: &Path) -> Result<Self, StoreError> {
        Self::open_as(path, false)
    }

    fn open_as(path: &Path, serve_messages: bool) -> Result<Self, StoreError> {
        let owner = if serve_messages { lock_messages(path)? } else { None };
        let conn = Connection::open(path).map_err(backend)?;
        configure(&conn)?;
        // Before the writer's settings, which would turn another program's database to WAL.
        if schema::is_foreign(&conn).map_err(backend)? {
            return Err(StoreError::Backend(format!(
                "{} is not a Berth database: it holds tables, but not Berth's",
                path.display()
            )));
        }
        conn.execute_batch(schema::WRITER_PRAGMAS).map_err(backend)?;
        let layout = schema::layout(&conn).map_err(backend)?;
        if layout > schema::LAYOUT {
            return Err(StoreError::Backend(format!(
                "{} was written by a newer Berth (message layout {layout}; this build reads up to {})",
                path.display(),
                schema::LAYOUT
            )));
        }
        // Only the process that serves the messages may convert their tables.
        schema::migrate(&conn, owner.is_some()).map_err(backend)?;
        identity::ensure_receipt_secret(&conn).map_err(backend)?;
        let store_id = identity::ensure_store_id(&conn).map_err(backend)?;
        let index = match owner {
            Some(_) => {
                let mut index = messages::load(&conn).map_err(backend)?;
                per_message_states::convert(&conn, &mut index).map_err(backend)?;
                schema::record_layout(&conn).map_err(backend)?;
                index
            }
            None => index::Index::new(0),
        };
        let index = Arc::new(Mutex::new(Shared { index, stale: false }));
        let on_rollback: writer::OnRollback = {
            let (index, serves_messages) = (index.clone(), owner.is_some());
            // Read back at once, so that reads of the index (GetStats) never show what was
            // rolled back.
            Box::new(move |conn| {
                if serves_messages {
                    // On failure the next message job tries again.
                    let _ = Shared::lock(&index).reload(conn);
                }
            })
        };
        let observer = Arc::new(OnceLock::<Arc<dyn StoreObserver>>::new());
        let on_commit: writer::OnCommit = {
            let (index, observer) = (index.clone(), observer.clone());
            Box::new(move |writes, took| {
                let Some(observer) = observer.get() else { return };
                observer.committed(writes, took);
                for (queue, moved) in Shared::lock(&index).index.take_moved() {
                    observer.settled(queue, moved);
                }
            })
        };
        let writer = Arc::new(Writer::spawn(conn, writer::Hooks { on_rollback, on_commit })?);
        let readers = Arc::new(Readers { path: path.to_owned(), idle: Mutex::new(Vec::new()) });
        let checkpointer = Connection::open(path).map_err(backend)?;
        configure(&checkpointer)?;
        Ok(SqliteStore {
            writer,
            readers,
            checkpointer: Arc::new(Mutex::new(checkpointer)),
            index,
            owner,
            store_id,
            room: Arc::new(room::Room::new(path, DEFAULT_MIN_FREE_SPACE)),
            changes: broadcast::channel(CHANGE_FEED_CAPACITY).0,
            observer,
        })
    }

    /// Refuses puts (`StoreError::Full`) while less than `bytes` are free on the
    /// database's disk and in its free pages together; 0 never refuses.
    pub fn with_min_free_space(mut self, bytes: u64) -> Self {
        self.room = Arc::new(room::Room::new(&self.readers.path, bytes));
        self
    }

    /// The random id made when this database was created.
    pub fn store_id(&self) -> &str {
        &self.store_id
    }

    /// Whether this store serves messages. Only one process at a time does; a store opened
    /// while another process serves the database holds no message state and refuses
    /// message writes with `Unavailable`.
    pub fn owns_messages(&self) -> bool {
        self.owner.is_some()
    }

    /// Write transactions committed since the store was opened; each is one WAL fsync.
    /// Fewer commits than write requests means requests shared commits.
    pub fn commits(&self) -> u64 {
        self.writer.commits()
    }

    /// Copies committed WAL frames into the database from a connection other than the
    /// writer's, so that the writer's commits do not pay for it. When disk space is short, it
    /// also truncates the WAL, giving its space back (this one waits for readers and writers).
    async fn checkpoint_wal(&self) -> Result<(), StoreError> {
        let (checkpointer, room) = (self.checkpointer.clone(), self.room.clone());
        tokio::task::spawn_blocking(move || {
            let conn = checkpointer.lock().unwrap_or_else(|e| e.into_inner());
            let mode = if room.is_tight() { "TRUNCATE" } else { "PASSIVE" };
            conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(())).map_err(backend)
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

    /// Runs a message job in the next group commit with the index; answers after the commit.
    /// A job that fails with a storage error may have changed the index without writing its
    /// rows, so the index is then read back from the database before the next job.
    /// `changes` says what a successful result announces on the change feed, sent once it is
    /// committed (on the writer thread, so a caller that stops waiting cannot lose it).
    async fn write_messages<T, E, F, C>(&self, f: F, changes: C) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Connection, &mut index::Index) -> Result<T, E> + Send + 'static,
        C: FnOnce(&T) -> Vec<Change> + Send + 'static,
        Result<T, E>: Failure,
    {
        if !self.owns_messages() {
            return Err(E::from(StoreError::Unavailable("another process serves this database's messages".into())));
        }
        let (shared, feed) = (self.index.clone(), self.changes.clone());
        let job = move |conn: &Connection| {
            let mut shared = Shared::lock(&shared);
            if shared.stale {
                shared.reload(conn).map_err(backend)?;
            }
            let result = f(conn, &mut shared.index);
            shared.stale = result.is_storage_failure();
            result
        };
        let announce = move |value: &T| {
            for change in changes(value) {
                // No follower is fine.
                let _ = feed.send(change);
            }
        };
        self.writer.run_then(job, announce).await
    }

    /// Reads the index off the async workers: a write job holds it while it runs.
    async fn read_index<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&index::Index) -> T + Send + 'static,
    {
        let shared = self.index.clone();
        tokio::task::spawn_blocking(move || f(&Shared::lock(&shared).index))
            .await
            .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))
    }
}

/// Which failed jobs may have left the index ahead of the database.
trait Failure {
    fn is_storage_failure(&self) -> bool;
}

impl<T> Failure for Result<T, StoreError> {
    fn is_storage_failure(&self) -> bool {
        self.is_err()
    }
}

/// A failed put. A put changes the index only after its row is written: one that failed
/// for want of room (the room check's or SQLite's own full disk) left the index as it was,
/// and reading a million messages back for each refused put would stall the writer.
pub(crate) struct PutFailed(pub(crate) StoreError);

impl From<StoreError> for PutFailed {
    fn from(error: StoreError) -> Self {
        PutFailed(error)
    }
}

impl From<rusqlite::Error> for PutFailed {
    fn from(error: rusqlite::Error) -> Self {
        PutFailed(backend(error))
    }
}

impl<T> Failure for Result<T, PutFailed> {
    fn is_storage_failure(&self) -> bool {
        matches!(self, Err(PutFailed(e)) if !matches!(e, StoreError::Full(_)))
    }
}

/// Takes the lock that makes this process the one serving the database's messages, if free.
fn lock_messages(path: &Path) -> Result<Option<std::fs::File>, StoreError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let failed =
        |e: std::io::Error| StoreError::Backend(format!("cannot lock {}: {e}", Path::new(&lock_path).display()));
    let file = std::fs::File::options().create(true).truncate(false).write(true).open(&lock_path).map_err(failed)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(failed(e)),
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

/// Maps SQLite errors: a busy or locked database and a full disk are retryable, the rest is not.
pub(crate) fn backend(error: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked, DiskFull};
    match error.sqlite_error_code() {
        Some(DatabaseBusy | DatabaseLocked) => StoreError::Unavailable(error.to_string()),
        Some(DiskFull) => StoreError::Full(error.to_string()),
        _ => StoreError::Backend(error.to_string()),
    }
}

mod store_impl;

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite_error(code: std::ffi::c_int) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn a_full_disk_is_retryable_and_named_so() {
        assert!(matches!(backend(sqlite_error(rusqlite::ffi::SQLITE_FULL)), StoreError::Full(_)));
        assert!(matches!(backend(sqlite_error(rusqlite::ffi::SQLITE_BUSY)), StoreError::Unavailable(_)));
        assert!(matches!(backend(sqlite_error(rusqlite::ffi::SQLITE_CORRUPT)), StoreError::Backend(_)));
    }
}
