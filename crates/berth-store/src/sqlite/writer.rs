//! The single writer thread and its group commit.

use std::sync::atomic::{AtomicU64, Ordering};
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

/// A job runs inside a savepoint and returns whether it succeeded plus its reply,
/// which is sent only once the commit outcome is known.
type Job = Box<dyn FnOnce(&Connection) -> (bool, Reply) + Send>;
type Reply = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// Called on the writer thread after a transaction failed to commit (and was rolled back).
pub(crate) type OnFailedCommit = Box<dyn Fn() + Send>;

pub(crate) struct Writer {
    /// Transactions committed so far (each is one fsync of the WAL).
    commits: Arc<AtomicU64>,
    // std Mutexes: held only to clone or take, never across an await.
    jobs: Mutex<Option<SyncSender<Job>>>,
    thread: Mutex<Option<thread::JoinHandle<()>>>,
}

impl Writer {
    pub(crate) fn spawn(conn: Connection, on_failed_commit: OnFailedCommit) -> Result<Self, StoreError> {
        let (tx, rx) = sync_channel::<Job>(QUEUE_DEPTH);
        let commits = Arc::new(AtomicU64::new(0));
        let counter = commits.clone();
        let thread = thread::Builder::new()
            .name("berth-sqlite-writer".into())
            .spawn(move || run_writer(conn, rx, &counter, &on_failed_commit))
            .map_err(|e| StoreError::Backend(format!("cannot start writer thread: {e}")))?;
        Ok(Writer { commits, jobs: Mutex::new(Some(tx)), thread: Mutex::new(Some(thread)) })
    }

    /// Transactions committed so far.
    pub(crate) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Runs `f` in the next transaction and returns its result once committed.
    pub(crate) async fn run<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T, E>>();
        let job: Job = Box::new(move |conn| {
            let result = f(conn);
            let ok = result.is_ok();
            let reply: Reply = Box::new(move |committed| {
                let _ = tx.send(match committed {
                    Ok(()) => result,
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

fn run_writer(conn: Connection, jobs: Receiver<Job>, commits: &AtomicU64, on_failed_commit: &OnFailedCommit) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_JOBS_PER_COMMIT {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if !commit_batch(&conn, batch) {
            on_failed_commit();
        }
        commits.fetch_add(1, Ordering::Relaxed);
    }
    let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
}

/// Runs and commits one batch; false if it was rolled back.
fn commit_batch(conn: &Connection, batch: Vec<Job>) -> bool {
    // Cached statements: parsing these on every commit showed up in profiles.
    let run = |sql: &str| conn.prepare_cached(sql).and_then(|mut statement| statement.execute([])).map(|_| ());
    if let Err(e) = run("BEGIN IMMEDIATE") {
        // Dropping the jobs drops their reply channels: each caller gets Unavailable.
        tracing::error!(error = %e, jobs = batch.len(), "cannot begin a transaction");
        return true; // no job ran
    }
    let mut replies = Vec::with_capacity(batch.len());
    for job in batch {
        let savepoint = run("SAVEPOINT job");
        let (ok, reply) = job(conn);
        let closed = if ok && savepoint.is_ok() {
            run("RELEASE job")
        } else {
            run("ROLLBACK TO job").and_then(|()| run("RELEASE job"))
        };
        if let Err(e) = closed {
            tracing::error!(error = %e, "savepoint failed");
        }
        replies.push(reply);
    }
    let outcome = run("COMMIT").map_err(super::backend);
    if let Err(e) = &outcome {
        tracing::error!(error = %e, "commit failed; rolling back the batch");
        let _ = conn.execute_batch("ROLLBACK");
    }
    let committed = outcome.is_ok();
    for reply in replies {
        reply(outcome.clone());
    }
    committed
}
