//! The embedded SQLite store: the conformance suite, and what only it does (one process
//! serves a file's messages, its layout version, group commit).

#[macro_use]
mod conformance;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use berth_core::engine::PolicyValues;
use berth_core::store::Store;
use berth_store::SqliteStore;
use conformance::{contents, rig, Backend, Rig, T};

/// A database file in a temp dir; remembers the store it opened last.
struct Sqlite {
    dir: tempfile::TempDir,
    opened: Mutex<Option<Arc<SqliteStore>>>,
}

impl Sqlite {
    fn path(&self) -> PathBuf {
        self.dir.path().join("db")
    }
}

#[async_trait::async_trait]
impl Backend for Sqlite {
    async fn open(&self) -> Arc<dyn Store> {
        // The store opened before (closed by now) must be gone to let go of the file's lock.
        drop(self.opened.lock().unwrap().take());
        let store = Arc::new(SqliteStore::open(&self.path()).unwrap());
        assert!(store.owns_messages(), "an earlier store let go of the database");
        *self.opened.lock().unwrap() = Some(store.clone());
        store
    }
}

fn sqlite() -> Arc<Sqlite> {
    Arc::new(Sqlite { dir: tempfile::tempdir().unwrap(), opened: Mutex::new(None) })
}

fn backend() -> Arc<dyn Backend> {
    sqlite()
}

conformance_suite!(backend());

/// A rig, its store as the SQLite type, and the database file.
async fn sqlite_rig_at() -> (Rig, Arc<SqliteStore>, PathBuf) {
    let backend = sqlite();
    let r = rig(backend.clone()).await;
    let store = backend.opened.lock().unwrap().clone().expect("opened");
    (r, store, backend.path())
}

async fn sqlite_rig() -> (Rig, Arc<SqliteStore>) {
    let (r, store, _) = sqlite_rig_at().await;
    (r, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_share_commits_and_all_land() {
    let (r, sqlite) = sqlite_rig().await;
    let r = Arc::new(r);
    let q = r.queue(PolicyValues::default()).await;
    let commits_before = sqlite.commits();
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let (r, q) = (r.clone(), q.clone());
            tokio::spawn(async move { r.put(&q, &[&format!("m{i}")]).await })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.extend(task.await.unwrap());
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 64);
    let commits = sqlite.commits() - commits_before;
    assert!(commits < 32, "64 concurrent puts took {commits} commits: no group commit");
    assert_eq!(r.engine.stats(T, &q, None).await.unwrap().queue.visible, 64);
}

#[tokio::test]
async fn a_store_opened_without_messages_leaves_them_to_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let tool = SqliteStore::open_without_messages(&path).unwrap();
    assert!(!tool.owns_messages());
    let server = SqliteStore::open(&path).unwrap();
    assert!(server.owns_messages(), "the tool holds no lock");
    tool.ensure_tenancy("t", "ocid1.tenancy.oc1..t").await.unwrap();
}

#[tokio::test]
async fn a_second_store_on_the_same_file_serves_no_messages_but_can_add_users() {
    let (r, sqlite, path) = sqlite_rig_at().await;
    let q = r.queue(PolicyValues::default()).await;
    r.put(&q, &["a"]).await;
    let other = SqliteStore::open(&path).unwrap();
    assert!(sqlite.owns_messages());
    assert!(!other.owns_messages());
    let row = r.store.queue(T, &q).await.unwrap().unwrap().row;
    let refused = other.stats(row, None, r.clock_now()).await;
    assert_eq!(refused.unwrap(), Default::default(), "the other store holds no message state");
    let lease = other
        .delete_leased(
            vec![berth_core::model::LeaseRef { queue: row, message_id: 1, lease_token: 0, dead_letter: false }],
            r.clock_now(),
        )
        .await;
    assert!(matches!(lease, Err(berth_core::error::StoreError::Unavailable(_))), "{lease:?}");
    other.ensure_tenancy("second", "ocid1.tenancy.oc1..second").await.unwrap();
    assert!(r.store.tenancy_by_name("second").await.unwrap().is_some());
    assert_eq!(contents(&r.get(&q, 1, 30).await), ["a"], "the first store still serves");
}

#[tokio::test]
async fn a_database_of_a_newer_layout_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    drop(SqliteStore::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    let layout: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0)).unwrap();
    assert!(layout > 0, "the store records its layout");
    conn.execute_batch(&format!("PRAGMA user_version = {}", layout + 1)).unwrap();
    drop(conn);
    let refused = SqliteStore::open(&path).err().expect("a newer layout is refused");
    assert!(refused.to_string().contains("newer Berth"), "{refused}");
    assert!(SqliteStore::open_without_messages(&path).is_err(), "tools refuse it too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fanned_out_put_is_one_row_that_goes_with_the_last_group_done_with_it() {
    use conformance::consumer_groups::{get_in, group, named, queue_with_groups, via};
    let (r, store, path) = sqlite_rig_at().await;
    drop(store); // so that the restart below can take the file
    let (q, _) = queue_with_groups(&r, 0, Default::default()).await;
    let g = group(&r, &q, named("g", "")).await;
    r.put(&q, &["a", "b"]).await;
    let count = |table: &str| -> i64 {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| row.get(0)).unwrap()
    };
    assert_eq!(count("message_batches"), 1, "one row with the bodies for both groups");
    let done = |got: Vec<berth_core::engine::Delivered>| got.into_iter().map(|d| d.receipt).collect::<Vec<_>>();
    let receipts = done(r.get(&q, 2, 30).await);
    assert!(r.engine.delete_messages(conformance::T, &q, receipts).await.unwrap().iter().all(Result::is_ok));
    assert_eq!(count("message_batches"), 1, "the other group still has both");
    // A restart finds the primary group done and the other one not.
    let r = r.reopen().await;
    assert!(r.get(&q, 2, 30).await.is_empty());
    let receipts = done(get_in(&r, via(&q, &g), 2, 30).await);
    assert_eq!(receipts.len(), 2);
    assert!(r.engine.delete_messages(conformance::T, via(&q, &g), receipts).await.unwrap().iter().all(Result::is_ok));
    assert_eq!((count("message_batches"), count("stream_batch_states")), (0, 0));
}
