//! Measures the engine and the SQLite store without HTTP: W1's message cycle (put in
//! batches of 20, get up to 20, delete what was got) run by concurrent tasks in-process.
//!
//! Run: `cargo run --release -p berth-store --example cycle -- [SECONDS] [TASKS] [LABEL]`
//! (defaults 10, 8 and "cycle"). TASKS producers and TASKS consumers share one 1 KiB-message
//! queue; producers pause while more than 20,000 messages wait. Prints, as one `BENCH {json}`
//! line like berth-bench, messages consumed per second, the process's CPU time per message
//! (user + system) and commits per message.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_core::engine::{spec_with_defaults, GetMessages, PolicyValues};
use berth_core::model::NewMessage;
use berth_core::{Engine, SystemClock};
use berth_store::SqliteStore;
use support::cpu_secs;
use tokio_util::sync::CancellationToken;

mod support;

// The server's allocator, so that the figures match what the server spends.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const T: &str = "ocid1.tenancy.oc1..bench";
const BATCH: usize = 20;
const MAX_BACKLOG: u64 = 20_000;

fn batch() -> Vec<NewMessage> {
    let message = NewMessage { content: "x".repeat(1024), channel: String::new(), properties: None, delay_secs: None };
    vec![message; BATCH]
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map_or(10, |a| a.parse().expect("SECONDS"));
    let tasks: usize = args.next().map_or(8, |a| a.parse().expect("TASKS"));
    let label = args.next().unwrap_or_else(|| "cycle".into());
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SqliteStore::open(&dir.path().join("db")).expect("open"));
    let engine = Arc::new(
        Engine::new(store.clone(), Arc::new(SystemClock), "iad".into(), CancellationToken::new()).await.unwrap(),
    );
    let spec = spec_with_defaults("cycle".into(), T.into(), PolicyValues::default()).unwrap();
    let queue = engine.create_queue(T, spec, None).await.unwrap().resources[0].identifier.clone();
    let (sent, got) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (e, q, s, g, halt) = (engine.clone(), queue.clone(), sent.clone(), got.clone(), stop.clone());
        handles.push(tokio::spawn(producer(e, q, s, g, halt)));
        let (e, q, g, halt) = (engine.clone(), queue.clone(), got.clone(), stop.clone());
        handles.push(tokio::spawn(consumer(e, q, g, halt)));
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // warm-up
    let (got0, commits0, cpu0, started) = (got.load(Ordering::Relaxed), store.commits(), cpu_secs(), Instant::now());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (got1, commits1, cpu1, elapsed) =
        (got.load(Ordering::Relaxed), store.commits(), cpu_secs(), started.elapsed().as_secs_f64());
    stop.store(true, Ordering::Relaxed);
    for handle in handles {
        handle.await.expect("task");
    }
    let messages = (got1 - got0) as f64;
    // One line in berth-bench's summary format, so scripts/bench can table it.
    println!(
        "BENCH {{\"label\":\"{label}\",\"received_per_s\":{:.0},\"server_cpu_us_per_msg\":{:.1},\"commits_per_msg\":{:.4}}}",
        messages / elapsed,
        (cpu1 - cpu0) * 1e6 / messages,
        (commits1 - commits0) as f64 / messages
    );
}

async fn producer(
    engine: Arc<Engine>,
    queue: String,
    sent: Arc<AtomicU64>,
    got: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        if sent.load(Ordering::Relaxed).saturating_sub(got.load(Ordering::Relaxed)) > MAX_BACKLOG {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        engine.put_messages(T, &queue, batch()).await.expect("put");
        sent.fetch_add(BATCH as u64, Ordering::Relaxed);
    }
}

async fn consumer(engine: Arc<Engine>, queue: String, got: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let params = GetMessages::new(Some(30), Some(1), Some(BATCH as i64), None, false).expect("params");
        let leased = engine.get_messages(T, &queue, params).await.expect("get");
        let receipts: Vec<String> = leased.iter().map(|d| d.receipt.clone()).collect();
        if !receipts.is_empty() {
            engine.delete_messages(T, &queue, receipts).await.expect("delete");
        }
        got.fetch_add(leased.len() as u64, Ordering::Relaxed);
    }
}
