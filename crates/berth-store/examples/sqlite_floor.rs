//! The floor of a durable SQLite store for W1's message cycle: the fewest statements that
//! keep a put, its lease (delivery count) and its deletion durable, with no queue logic,
//! no threads and no async runtime. It bounds what any SQLite layout of this kind can cost.
//!
//! Run: `cargo run --release -p berth-store --example sqlite_floor -- [SECONDS]` (default 5).
//! Each round is what W1 commits at once (40 messages, one commit): two puts of 20 1 KiB
//! messages as one row each, a read of each put's bodies, the lease's durable state, and
//! the deletion of both puts, each request in its own savepoint unless the layout says not.
//! Three layouts, alternated: a state row per leased message with a savepoint per request
//! (the store until 2026-12-01), one state row per put, and one per put without savepoints
//! (the store since).
//! Prints one `BENCH {json}` line per layout: CPU time per message (user + system).

use std::time::{Duration, Instant};

use rusqlite::{params, Connection};
use support::cpu_secs;

mod support;

const BATCH: i64 = 20;
/// A put's state row: a version byte and 21 bytes per message (`schema::encode_states`).
const STATE_BYTES: usize = 1 + 21 * BATCH as usize;

#[derive(Clone, Copy, PartialEq)]
/// Which rows keep the lease state, and whether each request has its own savepoint.
enum Layout {
    Messages,
    Puts,
    PutsWithoutSavepoints,
}

fn open(path: &std::path::Path) -> Connection {
    let conn = Connection::open(path).expect("open");
    // The writer's settings (schema.rs): durable commits, no auto-vacuum, WAL.
    conn.execute_batch(
        "PRAGMA auto_vacuum = NONE; PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
         PRAGMA wal_autocheckpoint = 16000;
         CREATE TABLE batches (id INTEGER PRIMARY KEY AUTOINCREMENT, queue INTEGER NOT NULL,
             created_at INTEGER NOT NULL, expire_at INTEGER NOT NULL, meta TEXT NOT NULL, bodies BLOB NOT NULL);
         CREATE TABLE states (id INTEGER PRIMARY KEY, dlq INTEGER, leased INTEGER, visible_at INTEGER,
             delivery_count INTEGER, lease_token INTEGER, deleted INTEGER);
         CREATE TABLE put_states (id INTEGER PRIMARY KEY, states BLOB NOT NULL);",
    )
    .expect("schema");
    conn
}

/// Runs rounds for `seconds`; returns CPU microseconds per message.
fn run(conn: &Connection, layout: Layout, seconds: f64, next: &mut i64) -> f64 {
    let bodies = vec![b'x'; 1024 * BATCH as usize];
    // The meta of a put of 20 messages without properties, as the store writes it.
    let meta = format!("[{}]", vec![r#"{"s":1024}"#; BATCH as usize].join(","));
    let exec = |sql: &str| conn.prepare_cached(sql).and_then(|mut s| s.execute([])).map(|_| ()).expect(sql);
    let job = |work: &mut dyn FnMut()| {
        if layout != Layout::PutsWithoutSavepoints {
            exec("SAVEPOINT job");
        }
        work();
        if layout != Layout::PutsWithoutSavepoints {
            exec("RELEASE job");
        }
    };
    let (cpu0, started) = (cpu_secs(), Instant::now());
    let mut messages = 0u64;
    while started.elapsed() < Duration::from_secs_f64(seconds) {
        exec("BEGIN IMMEDIATE");
        let puts = [*next + BATCH - 1, *next + 2 * BATCH - 1];
        *next += 2 * BATCH;
        for last in puts {
            job(&mut || {
                conn.prepare_cached(
                    "INSERT INTO batches (id, queue, created_at, expire_at, meta, bodies) VALUES (?1, 1, 0, 0, ?2, ?3)",
                )
                .and_then(|mut s| s.execute(params![last, meta, bodies]))
                .expect("put");
            });
        }
        for last in puts {
            job(&mut || {
                let read: usize = conn
                    .prepare_cached("SELECT bodies FROM batches WHERE id = ?1")
                    .and_then(|mut s| s.query_row(params![last], |row| Ok(row.get_ref(0)?.as_blob()?.len())))
                    .expect("read");
                assert_eq!(read, bodies.len());
                if layout == Layout::Messages {
                    let mut state = conn
                        .prepare_cached("INSERT INTO states VALUES (?1, 0, 1, 0, 1, ?1, 0) ON CONFLICT (id) DO UPDATE SET leased = 1")
                        .expect("state");
                    for id in last - BATCH + 1..=last {
                        state.execute(params![id]).expect("lease");
                    }
                } else {
                    conn.prepare_cached("INSERT INTO put_states (id, states) VALUES (?1, ?2) ON CONFLICT (id) DO UPDATE SET states = excluded.states")
                        .and_then(|mut s| s.execute(params![last, vec![1u8; STATE_BYTES]]))
                        .expect("lease");
                }
            });
        }
        for last in puts {
            job(&mut || {
                conn.prepare_cached("DELETE FROM batches WHERE id = ?1")
                    .and_then(|mut s| s.execute(params![last]))
                    .expect("delete");
                let sql = if layout == Layout::Messages {
                    "DELETE FROM states WHERE id BETWEEN ?1 - 19 AND ?1"
                } else {
                    "DELETE FROM put_states WHERE id = ?1"
                };
                conn.prepare_cached(sql).and_then(|mut s| s.execute(params![last])).expect("delete states");
            });
        }
        exec("COMMIT");
        messages += 2 * BATCH as u64;
    }
    (cpu_secs() - cpu0) * 1e6 / messages as f64
}

fn main() {
    let seconds: f64 = std::env::args().nth(1).map_or(5.0, |a| a.parse().expect("SECONDS"));
    let dir = tempfile::tempdir().expect("tempdir");
    let layouts = [
        (Layout::Messages, "sqlite-floor-per-message"),
        (Layout::Puts, "sqlite-floor-per-put"),
        (Layout::PutsWithoutSavepoints, "sqlite-floor-per-put-no-savepoints"),
    ];
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); layouts.len()];
    // Alternate the layouts, each on its own file, so that drift hits them alike.
    let conns: Vec<Connection> = (0..layouts.len()).map(|i| open(&dir.path().join(format!("db{i}")))).collect();
    let mut next = vec![1i64; layouts.len()];
    for _ in 0..3 {
        for (i, (layout, _)) in layouts.iter().enumerate() {
            results[i].push(run(&conns[i], *layout, seconds / 3.0, &mut next[i]));
        }
    }
    for (i, (_, label)) in layouts.iter().enumerate() {
        results[i].sort_by(f64::total_cmp);
        println!("BENCH {{\"label\":\"{label}\",\"server_cpu_us_per_msg\":{:.1}}}", results[i][1]);
    }
}
