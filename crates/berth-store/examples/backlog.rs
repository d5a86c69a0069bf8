//! Measures whether leasing costs the same with a large backlog as with a small one.
//!
//! Run: `cargo run --release -p berth-store --example backlog -- [BACKLOG] [ROUNDS]`
//! (defaults 1000000 and 2000). Two queues in one store: one with BACKLOG waiting
//! messages, one with 1,000; each round gets up to 20 messages and deletes them, then puts
//! 20 back so the backlog stays level. Prints median lease+delete time per round for
//! both and their ratio, and the process's peak RSS.

use std::sync::Arc;
use std::time::Instant;

use berth_core::engine::{spec_with_defaults, GetMessages, PolicyValues};
use berth_core::model::NewMessage;
use berth_core::{Engine, SystemClock};
use berth_store::SqliteStore;
use tokio_util::sync::CancellationToken;

const T: &str = "ocid1.tenancy.oc1..bench";

fn batch(n: usize) -> Vec<NewMessage> {
    (0..n)
        .map(|i| NewMessage {
            content: format!("{i:0>1024}"),
            channel: String::new(),
            properties: None,
            delay_secs: None,
        })
        .collect()
}

async fn fill(engine: &Arc<Engine>, queue: &str, count: usize) {
    let writers = 64;
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (engine, queue) = (engine.clone(), queue.to_owned());
            tokio::spawn(async move {
                let mut left = count / writers + usize::from(w < count % writers);
                while left > 0 {
                    let n = left.min(20);
                    engine.put_messages(T, &queue, batch(n)).await.expect("put");
                    left -= n;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("writer");
    }
}

/// Median microseconds of one get(20) + delete round.
async fn rounds(engine: &Engine, queue: &str, count: usize) -> f64 {
    let mut micros = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        let params = GetMessages::new(Some(30), Some(0), Some(20), None, false).expect("params");
        let got = engine.get_messages(T, queue, params).await.expect("get");
        let receipts = got.iter().map(|d| d.receipt.clone()).collect();
        engine.delete_messages(T, queue, receipts).await.expect("delete");
        micros.push(started.elapsed().as_micros() as f64);
        engine.put_messages(T, queue, batch(got.len().max(1))).await.expect("refill");
    }
    micros.sort_by(f64::total_cmp);
    micros[micros.len() / 2]
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let backlog: usize = args.next().map_or(1_000_000, |a| a.parse().expect("BACKLOG"));
    let count: usize = args.next().map_or(2_000, |a| a.parse().expect("ROUNDS"));
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SqliteStore::open(&dir.path().join("db")).expect("open"));
    let engine = Arc::new(
        Engine::new(store.clone(), Arc::new(SystemClock), "iad".into(), CancellationToken::new()).await.unwrap(),
    );
    let mut queues = Vec::new();
    for name in ["small", "large"] {
        let spec = spec_with_defaults(name.into(), T.into(), PolicyValues::default()).unwrap();
        queues.push(engine.create_queue(T, spec, None).await.unwrap().resources[0].identifier.clone());
    }
    let started = Instant::now();
    fill(&engine, &queues[0], 1_000).await;
    fill(&engine, &queues[1], backlog).await;
    let fill_secs = started.elapsed().as_secs_f64();
    println!(
        "filled {backlog} messages in {fill_secs:.1} s ({:.0} msg/s, {} commits)",
        backlog as f64 / fill_secs,
        store.commits()
    );
    let rss_after_fill = peak_rss_mib();
    // Alternate so that both see the same machine noise.
    let (mut small, mut large) = (Vec::new(), Vec::new());
    for _ in 0..4 {
        small.push(rounds(&engine, &queues[0], count / 4).await);
        large.push(rounds(&engine, &queues[1], count / 4).await);
    }
    small.sort_by(f64::total_cmp);
    large.sort_by(f64::total_cmp);
    let (small, large) = (small[small.len() / 2], large[large.len() / 2]);
    println!("median get(20)+delete round: backlog 1000: {small:.0} us; backlog {backlog}: {large:.0} us");
    println!("ratio (small/large, 1.0 = no slowdown): {:.2}", small / large);
    println!("peak RSS: {rss_after_fill:.0} MiB after fill, {:.0} MiB at end", peak_rss_mib());
}
