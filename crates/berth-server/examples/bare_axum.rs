//! The ceiling of the HTTP edge: an axum server that answers berth-bench's REST calls
//! from a queue in memory, with no storage, no signatures and no queue rules, in the same
//! bytes as Berth (receipts as long as Berth's, its timestamps, an entry per deleted
//! message), so that the two carry the same JSON over the same TCP. Measured
//! with the same load generator as Berth (see docs/BENCHMARKS.md), it shows how many
//! messages per second HTTP, JSON and loopback TCP allow on a machine before Berth does
//! any work of its own.
//!
//! Run: `cargo run --release -p berth-server --example bare_axum` (prints `listening http=ADDR`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Notify;

/// As long as Berth's receipts (58 bytes, base64url).
const RECEIPT_LEN: usize = 78;
/// A timestamp as Berth writes them.
const TIME: &str = "2026-12-02T00:00:00.000Z";

#[derive(Default)]
struct Bare {
    // std Mutex: held only for a few map operations, never across an await.
    queue: Mutex<Queue>,
    arrived: Notify,
}

#[derive(Default)]
struct Queue {
    next_id: u64,
    ready: VecDeque<(u64, String)>,
    leased: HashMap<String, u64>,
}

#[derive(Deserialize)]
struct Put {
    messages: Vec<Content>,
}

#[derive(Deserialize)]
struct Content {
    content: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetParams {
    limit: Option<usize>,
    timeout_in_seconds: Option<u64>,
}

#[derive(Deserialize)]
struct Delete {
    entries: Vec<Receipt>,
}

#[derive(Deserialize)]
struct Receipt {
    receipt: String,
}

async fn list_queues() -> Json<Value> {
    Json(json!({ "items": [{ "id": "bare" }] }))
}

async fn put(State(bare): State<Arc<Bare>>, Path(_queue): Path<String>, Json(put): Json<Put>) -> Json<Value> {
    let mut entries = Vec::with_capacity(put.messages.len());
    {
        let mut queue = bare.queue.lock().unwrap_or_else(|e| e.into_inner());
        for message in put.messages {
            queue.next_id += 1;
            let id = queue.next_id;
            queue.ready.push_back((id, message.content));
            entries.push(json!({ "id": id, "expireAfter": TIME }));
        }
    }
    bare.arrived.notify_waiters();
    Json(json!({ "messages": entries }))
}

async fn get_messages(
    State(bare): State<Arc<Bare>>,
    Path(_queue): Path<String>,
    Query(params): Query<GetParams>,
) -> Json<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(params.timeout_in_seconds.unwrap_or(0));
    loop {
        let arrived = bare.arrived.notified();
        let taken: Vec<Value> = {
            let mut queue = bare.queue.lock().unwrap_or_else(|e| e.into_inner());
            let n = params.limit.unwrap_or(1).min(queue.ready.len());
            let batch: Vec<(u64, String)> = queue.ready.drain(..n).collect();
            batch
                .into_iter()
                .map(|(id, content)| {
                    let receipt = format!("{id:0RECEIPT_LEN$}");
                    let message = json!({ "id": id, "content": content, "receipt": receipt, "deliveryCount": 1,
                                          "visibleAfter": TIME, "expireAfter": TIME, "createdAt": TIME });
                    queue.leased.insert(receipt, id);
                    message
                })
                .collect()
        };
        if !taken.is_empty() || tokio::time::Instant::now() >= deadline {
            return Json(json!({ "messages": taken }));
        }
        let _ = tokio::time::timeout_at(deadline, arrived).await;
    }
}

async fn delete_messages(
    State(bare): State<Arc<Bare>>,
    Path(_queue): Path<String>,
    Json(delete): Json<Delete>,
) -> Json<Value> {
    let mut queue = bare.queue.lock().unwrap_or_else(|e| e.into_inner());
    let failures = delete.entries.iter().filter(|e| queue.leased.remove(&e.receipt).is_none()).count();
    let entries: Vec<Value> = delete.entries.iter().map(|_| json!({})).collect();
    Json(json!({ "serverFailures": 0, "clientFailures": failures, "entries": entries }))
}

async fn stats(State(bare): State<Arc<Bare>>, Path(_queue): Path<String>) -> Json<Value> {
    let queue = bare.queue.lock().unwrap_or_else(|e| e.into_inner());
    Json(json!({ "queue": { "visibleMessages": queue.ready.len(), "inFlightMessages": queue.leased.len(),
                            "delayedMessages": 0 } }))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".into());
    let app = Router::new()
        .route("/20210201/queues", get(list_queues))
        .route("/20210201/queues/{queue}/messages", post(put).get(get_messages))
        .route("/20210201/queues/{queue}/messages/actions/deleteMessages", post(delete_messages))
        .route("/20210201/queues/{queue}/stats", get(stats))
        .with_state(Arc::new(Bare::default()));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening http={}", listener.local_addr()?);
    axum::serve(listener, app).await
}
