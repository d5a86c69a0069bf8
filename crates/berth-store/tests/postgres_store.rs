//! The PostgreSQL store: the conformance suite, and what only it does (nodes sharing one
//! database). Needs a real server: `BERTH_TEST_POSTGRES_URL` (scripts/test starts one).
//! Each test gets a schema of its own in that database, as a store of its own.

#[macro_use]
mod conformance;

use std::sync::{Arc, Mutex};

use berth_core::store::Store;
use berth_store::{PostgresOptions, PostgresStore};
use conformance::Backend;

/// A schema of its own in the test server's database.
struct Postgres {
    options: PostgresOptions,
    opened: Mutex<Option<Arc<PostgresStore>>>,
}

/// The test server's URL; the PostgreSQL tests cannot run without one.
fn server_url() -> String {
    std::env::var("BERTH_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!("BERTH_TEST_POSTGRES_URL is not set: run scripts/test, which starts a PostgreSQL server for the tests")
    })
}

/// A new, empty schema, and options whose connections use it.
async fn new_schema() -> PostgresOptions {
    let url = server_url();
    let schema = format!("t{:016x}", rand::random::<u64>());
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("test server");
    tokio::spawn(connection);
    client.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
    let separator = if url.contains('?') { '&' } else { '?' };
    PostgresOptions { url: format!("{url}{separator}options=-csearch_path%3D{schema}"), pool_size: 8 }
}

#[async_trait::async_trait]
impl Backend for Postgres {
    async fn open(&self) -> Arc<dyn Store> {
        drop(self.opened.lock().unwrap().take());
        let store = Arc::new(PostgresStore::open(&self.options).await.unwrap());
        *self.opened.lock().unwrap() = Some(store.clone());
        store
    }
}

async fn postgres() -> Arc<Postgres> {
    Arc::new(Postgres { options: new_schema().await, opened: Mutex::new(None) })
}

fn backend() -> Arc<dyn Backend> {
    // The suite's tests take the backend by value; the schema is made on the test's runtime.
    Arc::new(Lazy(tokio::sync::OnceCell::new()))
}

/// A backend whose schema is made at its first open.
struct Lazy(tokio::sync::OnceCell<Arc<Postgres>>);

#[async_trait::async_trait]
impl Backend for Lazy {
    async fn open(&self) -> Arc<dyn Store> {
        self.0.get_or_init(postgres).await.open().await
    }
}

conformance_suite!(backend());

#[tokio::test]
async fn a_second_store_on_the_same_schema_is_the_same_store() {
    let backend = postgres().await;
    let first = PostgresStore::open(&backend.options).await.unwrap();
    let second = PostgresStore::open(&backend.options).await.unwrap();
    assert_eq!(first.store_id(), second.store_id());
    assert_eq!(first.receipt_secret().await.unwrap(), second.receipt_secret().await.unwrap());
}

#[tokio::test]
async fn a_put_on_one_node_wakes_a_long_poll_on_another_through_the_database() {
    // Two stores, as two nodes: the wakeup crosses by NOTIFY, not through memory.
    use berth_core::engine::{GetMessages, PolicyValues};
    use berth_core::{Engine, SystemClock};
    use tokio_util::sync::CancellationToken;
    let backend = postgres().await;
    let a: Arc<dyn Store> = Arc::new(PostgresStore::open(&backend.options).await.unwrap());
    let b: Arc<dyn Store> = Arc::new(PostgresStore::open(&backend.options).await.unwrap());
    let clock = Arc::new(SystemClock);
    let node_a = Engine::new(a, clock.clone(), "iad".into(), CancellationToken::new()).await.unwrap();
    let node_b = Arc::new(Engine::new(b, clock, "iad".into(), CancellationToken::new()).await.unwrap());
    let spec = berth_core::engine::spec_with_defaults("q".into(), conformance::T.into(), PolicyValues::default());
    let work = node_a.create_queue(conformance::T, spec.unwrap(), None).await.unwrap();
    let q = work.resources[0].identifier.clone();
    let (waiting, wq) = (node_b.clone(), q.clone());
    let poll = tokio::spawn(async move {
        let params = GetMessages::new(Some(30), Some(20), Some(5), None, false).unwrap();
        let started = std::time::Instant::now();
        let got = waiting.get_messages(conformance::T, &wq, params).await.unwrap();
        (got.len(), started.elapsed())
    });
    conformance::polls_waiting(&node_b, 1).await;
    node_a.put_messages(conformance::T, &q, vec![conformance::message("across", "")]).await.unwrap();
    let (got, waited) = tokio::time::timeout(std::time::Duration::from_secs(5), poll).await.expect("woken").unwrap();
    assert_eq!(got, 1);
    assert!(waited < std::time::Duration::from_secs(5), "woken by the notification, not a timeout: {waited:?}");
}

/// The test server's CA (scripts/postgres-server signs the server's certificate, made for
/// 127.0.0.1 only, with it).
fn server_ca() -> String {
    std::env::var("BERTH_TEST_POSTGRES_CA").unwrap_or_else(|_| {
        panic!("BERTH_TEST_POSTGRES_CA is not set: run scripts/test, which starts a PostgreSQL server with TLS")
    })
}

/// Opens a store with these TLS keys; on success, whether all its connections are encrypted.
async fn open_with(tls_keys: &str, host: &str) -> Result<bool, String> {
    let options = new_schema().await;
    let app = format!("berth-tls-{:08x}", rand::random::<u32>());
    let url = format!("{}&application_name={app}&{tls_keys}", options.url).replace("127.0.0.1", host);
    let store = PostgresStore::open(&PostgresOptions { url, ..options }).await.map_err(|e| e.to_string())?;
    let (client, connection) = tokio_postgres::connect(&server_url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    // The listening connection is made in the background: wait for it (at most 5 s).
    let (mut all, mut encrypted) = (0i64, 0i64);
    for _ in 0..100 {
        let row = client
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a
                 JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = $1",
                &[&app],
            )
            .await
            .unwrap();
        (all, encrypted) = (row.get(0), row.get(1));
        if all >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    drop(store);
    assert!(all >= 2, "the store holds a pooled and a listening connection: {all}");
    Ok(all == encrypted)
}

#[tokio::test]
async fn tls_to_postgres_follows_libpq_sslmode() {
    let ca = server_ca();
    assert_eq!(open_with("sslmode=disable", "127.0.0.1").await, Ok(false));
    assert_eq!(open_with("sslmode=prefer", "127.0.0.1").await, Ok(true), "prefer takes TLS when offered");
    assert_eq!(open_with("sslmode=require", "localhost").await, Ok(true), "require checks no certificate");
    assert_eq!(open_with(&format!("sslmode=verify-full&sslrootcert={ca}"), "127.0.0.1").await, Ok(true));
    assert_eq!(open_with(&format!("sslmode=verify-ca&sslrootcert={ca}"), "localhost").await, Ok(true));
    let wrong_host = open_with(&format!("sslmode=verify-full&sslrootcert={ca}"), "localhost").await;
    assert!(wrong_host.as_ref().is_err_and(|e| e.contains("certificate not valid for name")), "{wrong_host:?}");
    // The server's own certificate is no CA: nothing it signs (itself included) is trusted.
    let leaf = ca.replace("ca.pem", "server.pem");
    let untrusted = open_with(&format!("sslmode=require&sslrootcert={leaf}"), "127.0.0.1").await;
    assert!(untrusted.as_ref().is_err_and(|e| e.contains("invalid peer certificate")), "{untrusted:?}");
}

#[tokio::test]
async fn a_redrive_waits_for_a_dead_letter_move_in_flight() {
    // Another node's sweeper holds an ended lease while it dead-letters it; the stats
    // already count the message in the DLQ, so a redrive now must move it, not skip it.
    use berth_core::engine::PolicyValues;
    let backend = postgres().await;
    let url = backend.options.url.clone();
    let r = conformance::rig(backend).await;
    let q = r.queue(PolicyValues { dead_letter_after: Some(1), ..PolicyValues::default() }).await;
    r.put(&q, &["poison"]).await;
    assert_eq!(r.get(&q, 1, 1).await.len(), 1);
    r.advance(2);
    assert_eq!(r.engine.stats(conformance::T, &q, None).await.unwrap().dead_letter.visible, 1);

    let (mut sweeper, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let sweeping = sweeper.transaction().await.unwrap();
    let held = sweeping.query("SELECT id FROM messages WHERE leased FOR UPDATE", &[]).await.unwrap();
    assert_eq!(held.len(), 1);
    let engine = Arc::new(r.engine);
    let (redriving, rq) = (engine.clone(), q.clone());
    let redrive = tokio::spawn(async move { redriving.redrive(conformance::T, &rq, None).await.unwrap() });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!redrive.is_finished(), "the redrive waits for the row the sweeper holds");
    sweeping.execute("UPDATE messages SET leased = false, dlq = true WHERE leased", &[]).await.unwrap();
    sweeping.commit().await.unwrap();
    assert_eq!(redrive.await.unwrap(), 1, "the message the sweeper dead-lettered is redriven");
    let stats = engine.stats(conformance::T, &q, None).await.unwrap();
    assert_eq!((stats.queue.visible, stats.dead_letter.visible), (1, 0));
}

/// Waits (at most 5 s) until no session with this application name is connected.
async fn sessions_end(name: &str) {
    let (client, connection) = tokio_postgres::connect(&server_url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    for _ in 0..100 {
        let sessions = "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1";
        if client.query_one(sessions, &[&name]).await.unwrap().get::<_, i64>(0) == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("sessions of {name} are still connected");
}

/// Rows of a table of the store's schema.
async fn rows(url: &str, table: &str) -> i64 {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn a_fanned_out_body_is_stored_once_and_goes_once_no_group_holds_it() {
    use conformance::consumer_groups::{get_in, group, named, queue_with_groups, via};
    let backend = postgres().await;
    let url = backend.options.url.clone();
    let r = conformance::rig(backend).await;
    let (q, _) = queue_with_groups(&r, 0, Default::default()).await;
    let g = group(&r, &q, named("g", "")).await;
    r.put(&q, &["a", "b"]).await;
    assert_eq!(rows(&url, "bodies").await, 2);
    assert_eq!(rows(&url, "messages WHERE content IS NOT NULL").await, 0, "the copies hold no body");
    let done = |got: Vec<berth_core::engine::Delivered>| got.into_iter().map(|d| d.receipt).collect::<Vec<_>>();
    let receipts = done(r.get(&q, 2, 30).await);
    assert!(r.engine.delete_messages(conformance::T, &q, receipts).await.unwrap().iter().all(Result::is_ok));
    while r.engine.sweep(100).await.unwrap().total() > 0 {}
    assert_eq!(rows(&url, "bodies").await, 2, "the other group still holds both");
    let got = get_in(&r, via(&q, &g), 2, 30).await;
    assert_eq!(conformance::contents(&got), ["a", "b"]);
    let receipts = done(got);
    assert!(r.engine.delete_messages(conformance::T, via(&q, &g), receipts).await.unwrap().iter().all(Result::is_ok));
    while r.engine.sweep(100).await.unwrap().total() > 0 {}
    assert_eq!((rows(&url, "bodies").await, rows(&url, "body_releases").await), (0, 0));
}

/// The schema's layout and the columns of the messages table's primary key.
async fn layout_and_key(url: &str) -> (String, String) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT convert_from(value, 'UTF8'), substring(pg_get_indexdef('messages_pkey'::regclass) FROM '\\(.*\\)')
             FROM berth_meta WHERE key = 'layout'",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn a_layout_2_database_gets_its_key_led_by_the_queue_while_older_nodes_run() {
    // Its own application name, so that the rig's store, still connected, is the only
    // other node of it.
    let mut options = new_schema().await;
    options.url = format!("{}&application_name=berth-key-{:08x}", options.url, rand::random::<u32>());
    let url = options.url.clone();
    let backend = Arc::new(Postgres { options, opened: Mutex::new(None) });
    let r = conformance::rig(backend.clone()).await;
    let q = r.queue(Default::default()).await;
    let ids = r.put(&q, &["old", "older"]).await;
    assert_eq!(layout_and_key(&url).await, ("3".into(), "(queue, id)".into()));
    // Back to layout 2, its key led by the id. The rig's store plays a layout 2 node that
    // goes on running: its statements work with either key, so the upgrade need not wait.
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(
            "ALTER TABLE messages DROP CONSTRAINT messages_pkey, ADD PRIMARY KEY (id, queue);
             UPDATE berth_meta SET value = convert_to('2', 'UTF8') WHERE key = 'layout'",
        )
        .await
        .unwrap();
    drop(client);
    assert_eq!(layout_and_key(&url).await, ("2".into(), "(id, queue)".into()));
    let upgraded = PostgresStore::open(&backend.options).await.expect("upgraded while a layout 2 node is connected");
    assert_eq!(layout_and_key(&url).await, ("3".into(), "(queue, id)".into()));
    drop(upgraded);
    let got = r.get(&q, 5, 30).await;
    assert_eq!(conformance::contents(&got), ["old", "older"]);
    assert_eq!(got.iter().map(|d| d.message.id).collect::<Vec<_>>(), ids);
}

#[tokio::test]
async fn a_layout_1_database_gets_consumer_groups_and_keeps_its_messages() {
    use conformance::consumer_groups::{get_in, group, named, via};
    // Its own application name: the upgrade waits for no other node of it to be connected.
    let mut options = new_schema().await;
    let name = format!("berth-upgrade-{:08x}", rand::random::<u32>());
    options.url = format!("{}&application_name={name}", options.url);
    let url = options.url.clone();
    let backend = Arc::new(Postgres { options, opened: Mutex::new(None) });
    let r = conformance::rig(backend.clone()).await;
    let q = r.queue(Default::default()).await;
    let ids = r.put(&q, &["old"]).await;
    r.store.close().await.unwrap();
    drop(r);
    drop(backend.opened.lock().unwrap().take());
    sessions_end(&name).await;
    // Back to layout 1 as the previous release left it, with a node of it still connected.
    let (old_node, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    old_node
        .batch_execute(
            "DROP TRIGGER messages_release_body ON messages; DROP FUNCTION berth_release_body();
             DROP TABLE bodies, body_releases;
             ALTER TABLE messages DROP CONSTRAINT messages_pkey, ADD PRIMARY KEY (id);
             ALTER TABLE messages ALTER COLUMN content SET NOT NULL;
             DROP INDEX queues_by_parent; ALTER TABLE queues DROP COLUMN parent, DROP COLUMN stream;
             UPDATE berth_meta SET value = convert_to('1', 'UTF8') WHERE key = 'layout'",
        )
        .await
        .unwrap();
    let refused = PostgresStore::open(&backend.options).await.err().expect("refused while an older node is connected");
    assert!(refused.to_string().contains("stop every node of the older release"), "{refused}");
    drop(old_node);
    sessions_end(&name).await;
    let r = conformance::rig(backend).await;
    assert_eq!(layout_and_key(&url).await, ("3".into(), "(queue, id)".into()));
    let capability = berth_core::engine::QueueChange {
        capabilities: Some(vec![berth_core::consumer_group::CONSUMER_GROUPS.into()]),
        ..Default::default()
    };
    r.engine.update_queue(conformance::T, &q, None, capability).await.unwrap();
    let g = group(&r, &q, named("g", "")).await;
    r.put(&q, &["new"]).await;
    let got = r.get(&q, 5, 30).await;
    assert_eq!(conformance::contents(&got), ["old", "new"], "the queue's messages are its primary group's");
    assert_eq!(got[0].message.id, ids[0]);
    assert_eq!(conformance::contents(&get_in(&r, via(&q, &g), 5, 30).await), ["new"]);
}

#[tokio::test]
async fn an_unreadable_message_goes_to_the_dlq_and_the_rest_of_its_queue_flows() {
    let backend = postgres().await;
    let url = backend.options.url.clone();
    let r = conformance::rig(backend).await;
    let q = r.queue(Default::default()).await;
    let ids = r.put(&q, &["first", "no body", "bad properties", "last"]).await;
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client.execute("UPDATE messages SET content = NULL WHERE id = $1", &[&ids[1]]).await.unwrap();
    client.execute("UPDATE messages SET properties = '{not json' WHERE id = $1", &[&ids[2]]).await.unwrap();
    let peeked = r.engine.peek(conformance::T, q.as_str(), Default::default()).await.unwrap();
    assert_eq!(peeked.items.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(), ["first", "last"]);
    assert_eq!(conformance::contents(&r.get(&q, 10, 30).await), ["first", "last"]);
    let stats = r.engine.stats(conformance::T, q.as_str(), None).await.unwrap();
    assert_eq!((stats.queue.visible, stats.queue.in_flight, stats.dead_letter.visible), (0, 2, 2));
    assert!(r.get_with(&q, 10, 30, None, true).await.is_empty(), "from the DLQ they are taken away");
    assert_eq!(rows(&url, "messages").await, 2);
}

#[tokio::test]
async fn a_poll_whose_lease_found_only_unreadable_messages_serves_those_behind_them() {
    use conformance::consumer_groups::{group, named, queue_with_groups};
    let backend = postgres().await;
    let url = backend.options.url.clone();
    let r = conformance::rig(backend).await;
    // A fanned-out put, whose body went missing, ahead of a readable one.
    let (q, _) = queue_with_groups(&r, 0, Default::default()).await;
    group(&r, &q, named("g", "")).await;
    let bad = r.put(&q, &["lost"]).await[0];
    r.put(&q, &["behind"]).await;
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client.execute("DELETE FROM bodies WHERE id = $1", &[&bad]).await.unwrap();
    let params = berth_core::engine::GetMessages::new(Some(30), Some(20), Some(1), None, false).unwrap();
    let poll = r.engine.get_messages(conformance::T, q.as_str(), params);
    let got = tokio::time::timeout(std::time::Duration::from_secs(5), poll).await.expect("served before its timeout");
    assert_eq!(conformance::contents(&got.unwrap()), ["behind"]);
    let stats = r.engine.stats(conformance::T, q.as_str(), None).await.unwrap();
    assert_eq!(stats.dead_letter.visible, 1, "the unreadable one is in the DLQ");
}

/// The most requests one commit carried.
#[derive(Default)]
struct MostPerCommit(std::sync::atomic::AtomicUsize);

impl berth_core::store::StoreObserver for MostPerCommit {
    fn committed(&self, writes: usize, _took: std::time::Duration) {
        self.0.fetch_max(writes, std::sync::atomic::Ordering::Relaxed);
    }
    fn settled(&self, _queue: berth_core::model::QueueRow, _moved: berth_core::store::Moved) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn puts_and_deletes_arriving_together_commit_together_and_a_bad_put_fails_alone() {
    use std::sync::atomic::Ordering::Relaxed;
    let backend = postgres().await;
    let store = Arc::new(PostgresStore::open(&backend.options).await.unwrap());
    let most = Arc::new(MostPerCommit::default());
    store.observe(most.clone());
    let r = conformance::rig(Arc::new(Ready(store))).await;
    let (q, other) = (r.queue(Default::default()).await, r.queue(Default::default()).await);
    let engine = Arc::new(r.engine);
    let (writers, rounds) = (24, 5);
    let mut puts = tokio::task::JoinSet::new();
    for writer in 0..writers {
        let (engine, q, other) = (engine.clone(), q.clone(), other.clone());
        puts.spawn(async move {
            let mut ids = Vec::new();
            for round in 0..rounds {
                let to = if writer % 3 == 0 { &other } else { &q };
                let batch = vec![
                    conformance::message(&format!("{writer}-{round}-a"), ""),
                    conformance::message(&format!("{writer}-{round}-b"), ""),
                ];
                ids.extend(engine.put_messages(conformance::T, to, batch).await.unwrap().into_iter().map(|p| p.id));
            }
            // PostgreSQL's text cannot hold NUL: this put fails, and only this one.
            let bad = vec![conformance::message("nul\0here", "")];
            assert!(engine.put_messages(conformance::T, &q, bad).await.is_err());
            ids
        });
    }
    while let Some(ids) = puts.join_next().await {
        let ids = ids.unwrap();
        assert_eq!(ids.len(), rounds * 2);
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "a writer's ids rise in its put order: {ids:?}");
    }
    assert!(most.0.load(Relaxed) > 1, "puts arriving together share a commit");

    // Every message stored once, each writer's in its order.
    let mut got = Vec::new();
    for queue in [&q, &other] {
        loop {
            let params = berth_core::engine::GetMessages::new(Some(60), Some(0), Some(20), None, false).unwrap();
            let batch = engine.get_messages(conformance::T, queue, params).await.unwrap();
            if batch.is_empty() {
                break;
            }
            got.extend(batch.into_iter().map(|d| (queue.clone(), d)));
        }
    }
    assert_eq!(got.len(), writers * rounds * 2);
    let contents: Vec<&str> = got.iter().map(|(_, d)| d.message.content.as_str()).collect();
    for writer in 0..writers {
        let mine: Vec<&str> = contents.iter().copied().filter(|c| c.starts_with(&format!("{writer}-"))).collect();
        let expected: Vec<String> =
            (0..rounds).flat_map(|round| [format!("{writer}-{round}-a"), format!("{writer}-{round}-b")]).collect();
        assert_eq!(mine, expected);
    }

    // Deletes at once, one receipt in two of them: deleted once.
    most.0.store(0, Relaxed);
    let mut deletes = tokio::task::JoinSet::new();
    for queue in [&q, &other] {
        let receipts: Vec<String> = got.iter().filter(|(of, _)| of == queue).map(|(_, d)| d.receipt.clone()).collect();
        for (at, chunk) in receipts.chunks(4).enumerate() {
            let (engine, queue) = (engine.clone(), queue.clone());
            let mut chunk = chunk.to_vec();
            if at == 1 {
                chunk.push(receipts[0].clone());
            }
            deletes.spawn(async move {
                let results = engine.delete_messages(conformance::T, queue.as_str(), chunk).await.unwrap();
                (results.len(), results.iter().filter(|r| r.is_ok()).count())
            });
        }
    }
    let (mut given, mut deleted) = (0, 0);
    while let Some(done) = deletes.join_next().await {
        let (results, ok) = done.unwrap();
        given += results;
        deleted += ok;
    }
    assert_eq!((given, deleted), (got.len() + 2, got.len()), "every message deleted once");
    assert!(most.0.load(Relaxed) > 1, "deletes arriving together share a statement");
    for queue in [&q, &other] {
        let stats = engine.stats(conformance::T, queue, None).await.unwrap();
        assert_eq!((stats.queue.visible, stats.queue.in_flight), (0, 0));
    }
}

/// A backend of one store already open.
struct Ready(Arc<PostgresStore>);

#[async_trait::async_trait]
impl Backend for Ready {
    async fn open(&self) -> Arc<dyn Store> {
        self.0.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gets_arriving_together_share_one_pick_each_within_its_own_limits() {
    use std::sync::atomic::Ordering::Relaxed;
    let backend = postgres().await;
    let store = Arc::new(PostgresStore::open(&backend.options).await.unwrap());
    let most = Arc::new(MostPerCommit::default());
    let r = conformance::rig(Arc::new(Ready(store.clone()))).await;
    let q = r.queue(Default::default()).await;
    let contents: Vec<String> = (0..400).map(|n| format!("m{n}")).collect();
    for chunk in contents.chunks(20) {
        r.put(&q, &chunk.iter().map(String::as_str).collect::<Vec<_>>()).await;
    }
    store.observe(most.clone());
    let now = r.clock_now();
    let engine = Arc::new(r.engine);
    let mut gets = tokio::task::JoinSet::new();
    for consumer in 0..24i64 {
        let (engine, q) = (engine.clone(), q.clone());
        gets.spawn(async move {
            let (limit, visibility) = (1 + consumer % 7, 30 + consumer);
            let mut got = Vec::new();
            loop {
                let params =
                    berth_core::engine::GetMessages::new(Some(visibility), Some(0), Some(limit), None, false).unwrap();
                let batch = engine.get_messages(conformance::T, &q, params).await.unwrap();
                if batch.is_empty() {
                    return got;
                }
                assert!(batch.len() as i64 <= limit, "a get takes at most its own limit");
                for d in batch {
                    let lease_ms = d.message.visible_after.0 - now.0;
                    assert_eq!(lease_ms, visibility * 1000, "each get's leases end at its own visibility");
                    got.push(d.message.content.clone());
                }
            }
        });
    }
    let mut seen = std::collections::HashSet::new();
    while let Some(got) = gets.join_next().await {
        for content in got.unwrap() {
            assert!(seen.insert(content.clone()), "{content} was leased twice at once");
        }
    }
    assert_eq!(seen.len(), contents.len(), "every message leased");
    assert!(most.0.load(Relaxed) > 1, "gets arriving together share a transaction");
}
