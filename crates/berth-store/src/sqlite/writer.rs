//! The single writer thread and its group commit.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread;

use berth_core::error::StoreError;
use rusqlite::Connection;
use tokio::sync::oneshot;

/// Most jobs in one transaction: bounds the latency a commit adds to the first job.
const MAX_JOBS_PER_COMMIT: usize = 256;
/// Jobs waiting for the writer before callers wait to enqueue (back-pressure).
const QUEUE_DEPTH: usize = 4096;

/// A job returns whether it succeeded plus its reply, which is sent only once the commit
/// outcome is known.
type Job = Box<dyn FnOnce(&Connection) -> (bool, Reply) + Send>;
type Reply = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// Called on the writer thread, with its connection, after a transaction was rolled back.
pub(crate) type OnRollback = Box<dyn Fn(&Connection) + Send>;
/// Called on the writer thread after a commit: how many jobs it carried, how long COMMIT took.
pub(crate) type OnCommit = Box<dyn Fn(usize, std::time::Duration) + Send>;

/// What the store does around the writer's transactions.
pub(crate) struct Hooks {
    pub(crate) on_rollback: OnRollback,
    pub(crate) on_commit: OnCommit,
}

pub(crate) struct Writer {
    state: Arc<State>,
    // std Mutexes: held only to clone or take, never across an await.
    jobs: Mutex<Option<SyncSender<Job>>>,
    thread: Mutex<Option<thread::JoinHandle<()>>>,
}

/// What the writer thread reports.
#[derive(Default)]
struct State {
    /// Transactions committed so far (each is one fsync of the WAL); rolled back ones do not count.
    commits: AtomicU64,
    /// Set when a transaction could not be rolled back: no later one can begin.
    stuck: AtomicBool,
    /// Whether the last attempt to begin a transaction failed (cleared by the next that works).
    cannot_begin: AtomicBool,
}

impl Writer {
    pub(crate) fn spawn(conn: Connection, hooks: Hooks) -> Result<Self, StoreError> {
        let (tx, rx) = sync_channel::<Job>(QUEUE_DEPTH);
        let state = Arc::new(State::default());
        let reported = state.clone();
        let thread = thread::Builder::new()
            .name("berth-sqlite-writer".into())
            .spawn(move || run_writer(conn, rx, &reported, &hooks))
            .map_err(|e| StoreError::Backend(format!("cannot start writer thread: {e}")))?;
        Ok(Writer { state, jobs: Mutex::new(Some(tx)), thread: Mutex::new(Some(thread)) })
    }

    /// Transactions committed so far.
    pub(crate) fn commits(&self) -> u64 {
        self.state.commits.load(Ordering::Relaxed)
    }

    /// Whether writes can still be carried out: the thread runs, is not stuck, and its last
    /// transaction could begin.
    pub(crate) fn can_write(&self) -> bool {
        let running = self.thread.lock().unwrap_or_else(|e| e.into_inner()).as_ref().is_some_and(|t| !t.is_finished());
        running && !self.state.stuck.load(Ordering::Relaxed) && !self.state.cannot_begin.load(Ordering::Relaxed)
    }

    /// Runs `f` in the next transaction and returns its result once committed.
    pub(crate) async fn run<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        self.run_then(f, |_| {}).await
    }

    /// Like [`Writer::run`]; `after_commit` sees a successful result on the writer thread once
    /// it is committed, even if the caller has stopped waiting for it.
    pub(crate) async fn run_then<T, E, F, A>(&self, f: F, after_commit: A) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
        A: FnOnce(&T) + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T, E>>();
        let job: Job = Box::new(move |conn| {
            let result = f(conn);
            let ok = result.is_ok();
            let reply: Reply = Box::new(move |committed| {
                let _ = tx.send(match committed {
                    Ok(()) => {
                        if let Ok(value) = &result {
                            after_commit(value);
                        }
                        result
                    }
                    Err(e) => Err(E::from(e)),
                });
            });
            (ok, reply)
        });
        let closed =
            || E::from(StoreError::Unavailable("the write was not carried out (store closing or failing)".into()));
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner()).clone().ok_or_else(closed)?;
        let mut job = job;
        // Never block an async worker: when the queue is full, wait a little and retry.
        loop {
            match jobs.try_send(job) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) => {
                    job = back;
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                Err(TrySendError::Disconnected(_)) => return Err(closed()),
            }
        }
        rx.await.unwrap_or_else(|_| Err(closed()))
    }

    /// Lets queued jobs finish, then stops the thread (blocking).
    pub(crate) fn close(&self) {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.close();
    }
}

fn run_writer(conn: Connection, jobs: Receiver<Job>, state: &State, hooks: &Hooks) {
    while let Ok(first) = jobs.recv() {
        commit_batch(&conn, first, &jobs, state, hooks);
    }
    let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
}

/// Runs `first` and the jobs queued behind it in one transaction and commits it. Jobs that
/// arrive while earlier ones run join the same commit (up to `MAX_JOBS_PER_COMMIT`), so
/// they share its fsync instead of waiting for it and then paying for their own.
///
/// Jobs run without savepoints: a savepoint per job made SQLite copy every page a job
/// touched into a sub-journal, up to a fifth of the bare SQLite cost of W1's cycle
/// (`examples/sqlite_floor.rs`, docs/BENCHMARKS.md). A job that fails without having changed a row leaves
/// nothing to undo. One that fails after changing rows, or with an error after which SQLite
/// rolled back by itself (a full disk, an I/O error), is undone with the whole transaction:
/// the jobs before it in the batch fail too (retryable), and the rest run in a new one.
/// A job that panics (a bug) is treated the same way; its caller gets `Unavailable`.
fn commit_batch(conn: &Connection, first: Job, queued: &Receiver<Job>, state: &State, hooks: &Hooks) {
    let on_rollback = &hooks.on_rollback;
    // Cached statements: parsing these on every commit showed up in profiles.
    let run = |sql: &str| conn.prepare_cached(sql).and_then(|mut statement| statement.execute([])).map(|_| ());
    let begin = || {
        let begun = run("BEGIN IMMEDIATE").map_err(|e| {
            // A job not yet run is dropped with its reply channel (its caller gets
            // Unavailable); the ones still queued wait for the next transaction.
            tracing::error!(error = %e, "cannot begin a transaction");
        });
        state.cannot_begin.store(begun.is_err(), Ordering::Relaxed);
        begun
    };
    if begin().is_err() {
        return;
    }
    let mut replies: Vec<Reply> = Vec::new();
    let mut job = first;
    for ran in 1.. {
        let changes = conn.total_changes();
        let outcome = catch_unwind(AssertUnwindSafe(|| job(conn)));
        match outcome {
            // After some errors SQLite has already rolled the transaction back (autocommit again).
            Ok((ok, reply)) if ok || (conn.total_changes() == changes && !conn.is_autocommit()) => {
                replies.push(reply);
            }
            failed => {
                // A panicking job took its reply channel with it: its caller sees the write not carried out.
                let reply = match failed {
                    Ok((_, reply)) => Some(reply),
                    Err(panic) => {
                        let detail = panic
                            .downcast_ref::<String>()
                            .map(String::as_str)
                            .or_else(|| panic.downcast_ref::<&str>().copied())
                            .unwrap_or("unknown panic");
                        tracing::error!(panic = detail, "a write job panicked");
                        None
                    }
                };
                tracing::error!(undone = replies.len(), "a write failed halfway; rolling back its transaction");
                let undone =
                    StoreError::Unavailable("rolled back with a failed write in the same transaction; retry".into());
                abort(conn, &mut replies, &undone, state, on_rollback);
                if let Some(reply) = reply {
                    reply(Ok(())); // sends the job's own error, not the rollback's
                }
                if begin().is_err() {
                    return;
                }
            }
        }
        if ran == MAX_JOBS_PER_COMMIT {
            break;
        }
        match queued.try_recv() {
            Ok(more) => job = more,
            Err(_) => break,
        }
    }
    if replies.is_empty() {
        // Only a failed job since the last rollback: nothing to commit.
        let _ = run("ROLLBACK");
        return;
    }
    let started = std::time::Instant::now();
    if let Err(e) = run("COMMIT") {
        tracing::error!(error = %e, "commit failed; rolling back the batch");
        abort(conn, &mut replies, &super::backend(e), state, on_rollback);
        return;
    }
    state.commits.fetch_add(1, Ordering::Relaxed);
    (hooks.on_commit)(replies.len(), started.elapsed());
    for reply in replies {
        reply(Ok(()));
    }
}

/// Rolls back the open transaction: the jobs that ran in it fail with `error`.
fn abort(conn: &Connection, replies: &mut Vec<Reply>, error: &StoreError, state: &State, on_rollback: &OnRollback) {
    // SQLite may already have rolled back (after an I/O error): then this fails harmlessly.
    if let Err(e) = conn.execute_batch("ROLLBACK") {
        if !conn.is_autocommit() {
            // Still inside the transaction: every later BEGIN would fail. Nothing else to try.
            tracing::error!(error = %e, "cannot roll back; the store cannot write until restarted");
            state.stuck.store(true, Ordering::Relaxed);
        }
    }
    on_rollback(conn);
    for reply in replies.drain(..) {
        reply(Err(error.clone()));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    type TestJob = Box<dyn FnOnce(&Connection) -> Result<(), StoreError> + Send>;

    /// A writer on a fresh database with a table `t (x)`, and how many rollbacks it saw.
    fn writer(dir: &tempfile::TempDir) -> (Arc<Writer>, Arc<AtomicUsize>) {
        let conn = Connection::open(dir.path().join("db")).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x INTEGER PRIMARY KEY)").unwrap();
        conn.busy_timeout(Duration::from_millis(100)).unwrap();
        let rollbacks = Arc::new(AtomicUsize::new(0));
        let seen = rollbacks.clone();
        let on_rollback: OnRollback = Box::new(move |_| {
            seen.fetch_add(1, Ordering::Relaxed);
        });
        let hooks = Hooks { on_rollback, on_commit: Box::new(|_, _| {}) };
        (Arc::new(Writer::spawn(conn, hooks).unwrap()), rollbacks)
    }

    fn insert(x: i64, then_fail: bool) -> impl FnOnce(&Connection) -> Result<(), StoreError> + Send + 'static {
        move |conn| {
            conn.execute("INSERT INTO t (x) VALUES (?1)", [x]).map_err(super::super::backend)?;
            if then_fail {
                return Err(StoreError::Backend("failed after writing".into()));
            }
            Ok(())
        }
    }

    /// Runs `jobs` in one batch: they queue, in order, while a first job (which writes
    /// nothing) holds the writer, and so join its transaction. Returns the first job's
    /// result, then theirs. Needs the single-threaded test runtime, which polls spawned
    /// tasks in order.
    async fn in_one_batch(writer: &Arc<Writer>, jobs: Vec<TestJob>) -> Vec<Result<(), StoreError>> {
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let (started, running) = tokio::sync::oneshot::channel::<()>();
        let first = {
            let writer = writer.clone();
            tokio::spawn(async move {
                writer
                    .run(move |_| {
                        let _ = started.send(());
                        let _ = hold.recv_timeout(Duration::from_secs(10));
                        Ok::<_, StoreError>(())
                    })
                    .await
            })
        };
        running.await.unwrap();
        let queued: Vec<_> = jobs
            .into_iter()
            .map(|job| {
                let writer = writer.clone();
                tokio::spawn(async move { writer.run(job).await })
            })
            .collect();
        // One runtime thread: yielding lets each spawned task run to its first await, by
        // which its job is queued.
        for _ in 0..queued.len() {
            tokio::task::yield_now().await;
        }
        release.send(()).unwrap();
        let mut results = vec![first.await.unwrap()];
        for job in queued {
            results.push(job.await.unwrap());
        }
        results
    }

    fn rows(dir: &tempfile::TempDir) -> Vec<i64> {
        let conn = Connection::open(dir.path().join("db")).unwrap();
        let mut select = conn.prepare("SELECT x FROM t ORDER BY x").unwrap();
        select.query_map([], |row| row.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
    }

    #[tokio::test]
    async fn a_job_failing_halfway_is_undone_with_the_jobs_before_it_and_the_rest_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, rollbacks) = writer(&dir);
        let results = in_one_batch(
            &writer,
            vec![Box::new(insert(1, false)), Box::new(insert(2, true)), Box::new(insert(3, false))],
        )
        .await;
        assert!(results[..2].iter().all(|r| matches!(r, Err(StoreError::Unavailable(_)))), "{results:?}");
        assert!(matches!(results[2], Err(StoreError::Backend(_))), "{:?}", results[2]);
        assert!(results[3].is_ok(), "{:?}", results[3]);
        assert_eq!(rows(&dir), [3], "neither the failed job's row nor the undone one's is kept");
        assert_eq!(rollbacks.load(Ordering::Relaxed), 1);
        assert_eq!(writer.commits(), 1, "the job after the failed one, in a new transaction");
    }

    #[tokio::test]
    async fn a_job_after_which_sqlite_rolled_back_by_itself_is_treated_as_failing_halfway() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, rollbacks) = writer(&dir);
        // As SQLite does after a full disk or an I/O error: the transaction is gone, and no
        // row change is counted.
        let rolled_back: TestJob = Box::new(|conn| {
            conn.execute_batch("ROLLBACK").map_err(super::super::backend)?;
            Err(StoreError::Backend("disk full".into()))
        });
        let results =
            in_one_batch(&writer, vec![Box::new(insert(1, false)), rolled_back, Box::new(insert(2, false))]).await;
        assert!(results[..2].iter().all(|r| matches!(r, Err(StoreError::Unavailable(_)))), "{results:?}");
        assert!(results[2].is_err());
        assert!(results[3].is_ok(), "{:?}", results[3]);
        assert_eq!(rows(&dir), [2]);
        assert_eq!(rollbacks.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_job_failing_before_writing_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, rollbacks) = writer(&dir);
        let refuse: TestJob = Box::new(|_| Err(StoreError::Backend("refused".into())));
        // A constraint error: SQLite undoes the statement itself, so no row changed.
        let results = in_one_batch(
            &writer,
            vec![Box::new(insert(1, false)), refuse, Box::new(insert(1, false)), Box::new(insert(2, false))],
        )
        .await;
        assert!(results[0].is_ok() && results[1].is_ok());
        assert!(results[2].is_err());
        assert!(results[3].is_err(), "a duplicate key");
        assert!(results[4].is_ok());
        assert_eq!(rows(&dir), [1, 2]);
        assert_eq!(rollbacks.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn jobs_queued_while_a_transaction_runs_share_its_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, _) = writer(&dir);
        let jobs: Vec<TestJob> = (1..=3).map(|x| Box::new(insert(x, false)) as TestJob).collect();
        let results = in_one_batch(&writer, jobs).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(rows(&dir), [1, 2, 3]);
        assert_eq!(writer.commits(), 1, "one fsync for the job that held the writer and the three queued behind it");
    }

    #[tokio::test]
    async fn a_commit_takes_at_most_its_bound_of_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, _) = writer(&dir);
        // With the job that holds the writer, one more than a commit takes.
        let jobs: Vec<TestJob> =
            (1..=MAX_JOBS_PER_COMMIT as i64).map(|x| Box::new(insert(x, false)) as TestJob).collect();
        let results = in_one_batch(&writer, jobs).await;
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(rows(&dir).len(), MAX_JOBS_PER_COMMIT);
        assert_eq!(writer.commits(), 2);
    }

    #[tokio::test]
    async fn a_transaction_left_empty_by_a_failed_job_is_not_committed() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, rollbacks) = writer(&dir);
        let results = in_one_batch(&writer, vec![Box::new(insert(1, true))]).await;
        assert!(matches!(results[0], Err(StoreError::Unavailable(_))), "{:?}", results[0]);
        assert!(matches!(results[1], Err(StoreError::Backend(_))), "{:?}", results[1]);
        assert!(rows(&dir).is_empty());
        assert_eq!((writer.commits(), rollbacks.load(Ordering::Relaxed)), (0, 1));
    }

    #[tokio::test]
    async fn a_panicking_job_is_undone_with_the_jobs_before_it_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, rollbacks) = writer(&dir);
        let panics: TestJob = Box::new(|conn| {
            conn.execute("INSERT INTO t (x) VALUES (2)", []).map_err(super::super::backend)?;
            panic!("a bug in a write job");
        });
        let results = in_one_batch(&writer, vec![Box::new(insert(1, false)), panics, Box::new(insert(3, false))]).await;
        assert!(results[..3].iter().all(|r| matches!(r, Err(StoreError::Unavailable(_)))), "{results:?}");
        assert!(results[3].is_ok(), "{:?}", results[3]);
        assert_eq!(rows(&dir), [3], "nothing of the panicking transaction is kept");
        assert_eq!(rollbacks.load(Ordering::Relaxed), 1, "the index is read back");
        assert!(writer.can_write());
        writer.run(insert(4, false)).await.unwrap();
        assert_eq!(rows(&dir), [3, 4]);
    }

    #[tokio::test]
    async fn a_closed_writer_reports_that_it_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, _) = writer(&dir);
        assert!(writer.can_write());
        writer.close();
        assert!(!writer.can_write());
    }

    #[tokio::test]
    async fn after_commit_sees_committed_results_only_even_when_the_caller_stopped_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, _) = writer(&dir);
        let (seen_tx, seen) = std::sync::mpsc::channel::<i64>();
        let tx = seen_tx.clone();
        writer.run_then(insert(1, false), move |_| tx.send(1).unwrap()).await.unwrap();
        let tx = seen_tx.clone();
        let _ = writer.run_then(insert(2, true), move |_| tx.send(2).unwrap()).await;
        // A caller that gives up while its job runs: the commit still announces.
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let abandoned = {
            let writer = writer.clone();
            tokio::spawn(async move {
                let job = move |conn: &Connection| {
                    let _ = hold.recv_timeout(Duration::from_secs(10));
                    insert(3, false)(conn)
                };
                writer.run_then(job, move |_| seen_tx.send(3).unwrap()).await
            })
        };
        tokio::task::yield_now().await;
        abandoned.abort();
        release.send(()).unwrap();
        assert_eq!(seen.recv_timeout(Duration::from_secs(10)).unwrap(), 1);
        assert_eq!(seen.recv_timeout(Duration::from_secs(10)).unwrap(), 3, "the failed job announced nothing");
        assert_eq!(rows(&dir), [1, 3]);
    }

    #[tokio::test]
    async fn a_writer_that_cannot_begin_reports_it_until_a_transaction_begins_again() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, _) = writer(&dir);
        let other = Connection::open(dir.path().join("db")).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        assert!(matches!(writer.run(insert(1, false)).await, Err(StoreError::Unavailable(_))));
        assert!(!writer.can_write(), "the database is locked by another writer");
        other.execute_batch("ROLLBACK").unwrap();
        writer.run(insert(2, false)).await.unwrap();
        assert!(writer.can_write());
    }
}
