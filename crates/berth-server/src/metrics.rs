//! Prometheus metrics (`GET /metrics`, OpenMetrics text): requests by operation and status
//! with their latency, STOMP connections and frames, the store's commits, and per queue its
//! counts (read from the store at scrape time) and what this node moved through it.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use berth_core::engine::QueueMetrics;
use berth_core::model::{QueueRow, QueueStats};
use berth_core::store::{Moved, StoreObserver};
use berth_core::Engine;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::rest::error::ApiError;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    operation: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FrameLabels {
    command: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    tenancy: String,
    queue_id: String,
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueStateLabels {
    tenancy: String,
    queue_id: String,
    queue: String,
    /// `queue` or `dlq`.
    side: &'static str,
    /// `visible`, `in_flight` or `delayed`.
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupStateLabels {
    tenancy: String,
    queue_id: String,
    queue: String,
    consumer_group_id: String,
    consumer_group: String,
    side: &'static str,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    tenancy: String,
    queue_id: String,
    queue: String,
    consumer_group_id: String,
    consumer_group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueSideLabels {
    tenancy: String,
    queue_id: String,
    queue: String,
    side: &'static str,
}

type LatencyFamily = Family<OperationLabels, Histogram, fn() -> Histogram>;

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: LatencyFamily,
    stomp_connections: Gauge,
    stomp_frames: Family<FrameLabels, Counter>,
    store: Arc<StoreMetrics>,
    queues: QueueCollector,
    /// One scrape at a time: each puts its snapshot into the collector, then encodes.
    scraping: tokio::sync::Mutex<()>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 16 s; long polls past that land in +Inf.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("berth_http_requests", "REST requests by OCI operation and HTTP status", requests.clone());
        let latency = LatencyFamily::new_with_constructor(latency_histogram);
        registry.register("berth_http_request_duration_seconds", "REST request latency by operation", latency.clone());
        let stomp_connections = Gauge::default();
        registry.register("berth_stomp_connections", "Open STOMP connections", stomp_connections.clone());
        let stomp_frames = Family::<FrameLabels, Counter>::default();
        registry.register("berth_stomp_frames_received", "STOMP frames received by command", stomp_frames.clone());
        let store = Arc::new(StoreMetrics::default());
        registry.register("berth_store_commits", "Transactions the store committed", store.commits.clone());
        registry.register(
            "berth_store_writes_per_commit",
            "Writes a commit carried (SQLite's group commit carries several requests'; PostgreSQL one)",
            store.writes_per_commit.clone(),
        );
        registry.register(
            "berth_store_commit_duration_seconds",
            "How long COMMIT took (SQLite: its fsync)",
            store.commit_seconds.clone(),
        );
        let queues = QueueCollector { settled: store.clone(), ..QueueCollector::default() };
        registry.register_collector(Box::new(queues.clone()));
        Metrics {
            registry,
            requests,
            latency,
            stomp_connections,
            stomp_frames,
            store,
            queues,
            scraping: tokio::sync::Mutex::new(()),
        }
    }
}

impl Metrics {
    /// The exposition: the counters kept here and each queue as the store has it now.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub async fn render(&self, engine: &Engine) -> Result<String, ApiError> {
        let _one_at_a_time = self.scraping.lock().await;
        let snapshot = engine.queue_metrics(true).await?;
        *self.queues.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = snapshot;
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).map_err(|_| ApiError::Panic)?;
        Ok(text)
    }

    /// What the store tells of its commits and settling.
    pub fn store_observer(&self) -> Arc<dyn StoreObserver> {
        self.store.clone()
    }

    /// A STOMP connection opened; it counts until the guard drops.
    pub fn stomp_connection(self: &Arc<Self>) -> StompConnectionGuard {
        self.stomp_connections.inc();
        StompConnectionGuard(self.clone())
    }

    /// A STOMP frame arrived (commands outside STOMP's own count as `other`, so a client
    /// cannot make up label values).
    pub fn stomp_frame(&self, command: &str) {
        const KNOWN: [&str; 11] = [
            "CONNECT",
            "STOMP",
            "SEND",
            "SUBSCRIBE",
            "UNSUBSCRIBE",
            "ACK",
            "NACK",
            "BEGIN",
            "COMMIT",
            "ABORT",
            "DISCONNECT",
        ];
        let command = if KNOWN.contains(&command) { command } else { "other" };
        self.stomp_frames.get_or_create(&FrameLabels { command: command.to_owned() }).inc();
    }
}

/// Counts one open STOMP connection while it lives.
pub struct StompConnectionGuard(Arc<Metrics>);

impl Drop for StompConnectionGuard {
    fn drop(&mut self) {
        self.0.stomp_connections.dec();
    }
}

/// Counts each REST request by operation and status, with its latency.
pub async fn record(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let operation = match request.extensions().get::<MatchedPath>() {
        Some(path) => operation(request.method(), path.as_str()),
        None => "Unknown".to_owned(),
    };
    let started = Instant::now();
    let response = next.run(request).await;
    let labels = RequestLabels { operation: operation.clone(), status: response.status().as_u16() };
    metrics.requests.get_or_create(&labels).inc();
    metrics.latency.get_or_create(&OperationLabels { operation }).observe(started.elapsed().as_secs_f64());
    response
}

/// OCI's operation name for a route.
fn operation(method: &Method, path: &str) -> String {
    let route = path.strip_prefix("/20210201").unwrap_or(path);
    let name = match (method.as_str(), route) {
        ("GET", "/queues") => "ListQueues",
        ("POST", "/queues") => "CreateQueue",
        ("GET", "/queues/{queue_id}") => "GetQueue",
        ("PUT", "/queues/{queue_id}") => "UpdateQueue",
        ("DELETE", "/queues/{queue_id}") => "DeleteQueue",
        ("POST", "/queues/{queue_id}/actions/changeCompartment") => "ChangeQueueCompartment",
        ("POST", "/queues/{queue_id}/actions/purge") => "PurgeQueue",
        ("POST", "/queues/{queue_id}/actions/redrive") => "Redrive",
        ("GET", "/queues/{queue_id}/messages") => "GetMessages",
        ("POST", "/queues/{queue_id}/messages") => "PutMessages",
        ("POST", "/queues/{queue_id}/messages/actions/updateMessages") => "UpdateMessages",
        ("POST", "/queues/{queue_id}/messages/actions/deleteMessages") => "DeleteMessages",
        ("PUT", "/queues/{queue_id}/messages/{receipt}") => "UpdateMessage",
        ("DELETE", "/queues/{queue_id}/messages/{receipt}") => "DeleteMessage",
        ("GET", "/queues/{queue_id}/stats") => "GetStats",
        ("GET", "/queues/{queue_id}/channels") => "ListChannels",
        ("GET", "/queues/{queue_id}/peek") => "Peek",
        ("GET", "/workRequests") => "ListWorkRequests",
        ("GET", "/workRequests/{id}") => "GetWorkRequest",
        ("GET", "/workRequests/{id}/errors") => "ListWorkRequestErrors",
        ("GET", "/workRequests/{id}/logs") => "ListWorkRequestLogs",
        _ => return format!("{method} {path}"),
    };
    name.to_owned()
}

/// What the store reported after its commits.
#[derive(Debug)]
struct StoreMetrics {
    commits: Counter,
    writes_per_commit: Histogram,
    commit_seconds: Histogram,
    /// Retention and dead-lettering per queue row, since start (rows of queues no longer
    /// live are dropped at the next scrape, before a row can be reused).
    settled: Mutex<HashMap<QueueRow, Moved>>,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        StoreMetrics {
            commits: Counter::default(),
            // 1 to 256, SQLite's most per commit.
            writes_per_commit: Histogram::new(exponential_buckets(1.0, 2.0, 9)),
            // 50 µs to about 1.6 s.
            commit_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            settled: Mutex::new(HashMap::new()),
        }
    }
}

impl StoreObserver for StoreMetrics {
    fn committed(&self, writes: usize, took: Duration) {
        self.commits.inc();
        self.writes_per_commit.observe(writes as f64);
        self.commit_seconds.observe(took.as_secs_f64());
    }

    fn settled(&self, queue: QueueRow, moved: Moved) {
        let mut settled = self.settled.lock().unwrap_or_else(|e| e.into_inner());
        let total = settled.entry(queue).or_default();
        total.expired += moved.expired;
        total.dead_lettered += moved.dead_lettered;
    }
}

/// A side's counts by state: (side, state, messages).
fn by_state(stats: &QueueStats) -> impl Iterator<Item = (&'static str, &'static str, u64)> + '_ {
    [("queue", &stats.queue), ("dlq", &stats.dead_letter)].into_iter().flat_map(|(side, c)| {
        [("visible", c.visible), ("in_flight", c.in_flight), ("delayed", c.delayed)]
            .into_iter()
            .map(move |(state, n)| (side, state, n))
    })
}

/// Per-queue metrics, from the snapshot the scrape took just before encoding.
#[derive(Clone, Debug, Default)]
struct QueueCollector {
    snapshot: Arc<Mutex<Vec<QueueMetrics>>>,
    settled: Arc<StoreMetrics>,
}

impl Collector for QueueCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let messages = Family::<QueueStateLabels, Gauge>::default();
        let group_messages = Family::<GroupStateLabels, Gauge>::default();
        let group_delivered = Family::<GroupLabels, Counter>::default();
        let group_deleted = Family::<GroupLabels, Counter>::default();
        let group_redelivered = Family::<GroupLabels, Counter>::default();
        let bytes = Family::<QueueSideLabels, Gauge>::default();
        let put = Family::<QueueLabels, Counter>::default();
        let delivered = Family::<QueueLabels, Counter>::default();
        let deleted = Family::<QueueLabels, Counter>::default();
        let redelivered = Family::<QueueLabels, Counter>::default();
        let expired = Family::<QueueLabels, Counter>::default();
        let dead_lettered = Family::<QueueLabels, Counter>::default();
        let gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        let snapshot = self.snapshot.lock().unwrap_or_else(|e| e.into_inner());
        let mut settled = self.settled.settled.lock().unwrap_or_else(|e| e.into_inner());
        let live: HashSet<QueueRow> = snapshot.iter().map(|q| q.queue.row).collect();
        settled.retain(|row, _| live.contains(row));
        for q in snapshot.iter() {
            let queue = QueueLabels {
                tenancy: q.tenancy_name.clone(),
                queue_id: q.queue.id.clone(),
                queue: q.queue.spec.display_name.clone(),
            };
            for (side, state, n) in by_state(&q.stats) {
                let labels = QueueStateLabels {
                    tenancy: queue.tenancy.clone(),
                    queue_id: queue.queue_id.clone(),
                    queue: queue.queue.clone(),
                    side,
                    state,
                };
                messages.get_or_create(&labels).set(gauge(n));
            }
            for (side, counts) in [("queue", &q.stats.queue), ("dlq", &q.stats.dead_letter)] {
                let labels = QueueSideLabels {
                    tenancy: queue.tenancy.clone(),
                    queue_id: queue.queue_id.clone(),
                    queue: queue.queue.clone(),
                    side,
                };
                bytes.get_or_create(&labels).set(gauge(counts.size_bytes));
            }
            for (group, stats, totals) in &q.groups {
                let labels = GroupLabels {
                    tenancy: queue.tenancy.clone(),
                    queue_id: queue.queue_id.clone(),
                    queue: queue.queue.clone(),
                    consumer_group_id: group.id.clone(),
                    consumer_group: group.spec.display_name.clone(),
                };
                group_delivered.get_or_create(&labels).inc_by(totals.delivered);
                group_deleted.get_or_create(&labels).inc_by(totals.deleted);
                group_redelivered.get_or_create(&labels).inc_by(totals.redelivered);
                for (side, state, n) in by_state(stats) {
                    let labels = GroupStateLabels {
                        tenancy: queue.tenancy.clone(),
                        queue_id: queue.queue_id.clone(),
                        queue: queue.queue.clone(),
                        consumer_group_id: group.id.clone(),
                        consumer_group: group.spec.display_name.clone(),
                        side,
                        state,
                    };
                    group_messages.get_or_create(&labels).set(gauge(n));
                }
            }
            put.get_or_create(&queue).inc_by(q.totals.put);
            delivered.get_or_create(&queue).inc_by(q.totals.delivered);
            deleted.get_or_create(&queue).inc_by(q.totals.deleted);
            redelivered.get_or_create(&queue).inc_by(q.totals.redelivered);
            let moved = settled.get(&q.queue.row).copied().unwrap_or_default();
            expired.get_or_create(&queue).inc_by(moved.expired);
            dead_lettered.get_or_create(&queue).inc_by(moved.dead_lettered);
        }
        drop((snapshot, settled));
        let mut emit = |name: &str, help: &str, metric: &dyn EncodeMetric| {
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
        };
        emit("berth_queue_messages", "Messages of a queue or its DLQ by state, as the store has them now", &messages)?;
        emit(
            "berth_consumer_group_messages",
            "Messages of a consumer group's copy of its queue, or of its DLQ, by state (the primary group's are its queue's)",
            &group_messages,
        )?;
        emit(
            "berth_consumer_group_messages_delivered",
            "Deliveries (leases) of a consumer group through this node, redeliveries included",
            &group_delivered,
        )?;
        emit(
            "berth_consumer_group_messages_deleted",
            "Messages of a consumer group deleted by receipt through this node",
            &group_deleted,
        )?;
        emit(
            "berth_consumer_group_messages_redelivered",
            "Deliveries of a consumer group through this node of messages delivered before",
            &group_redelivered,
        )?;
        emit("berth_queue_bytes", "Content bytes of a queue or its DLQ (delayed messages not counted)", &bytes)?;
        emit("berth_queue_messages_put", "Messages put through this node", &put)?;
        emit(
            "berth_queue_messages_delivered",
            "Deliveries (leases) through this node, redeliveries included",
            &delivered,
        )?;
        emit("berth_queue_messages_deleted", "Messages deleted by receipt through this node", &deleted)?;
        emit(
            "berth_queue_messages_redelivered",
            "Deliveries through this node of messages delivered before",
            &redelivered,
        )?;
        emit("berth_queue_messages_expired", "Messages this node's store removed at retention's end", &expired)?;
        emit(
            "berth_queue_messages_dead_lettered",
            "Messages this node's store moved to the DLQ (last delivery ended undeleted)",
            &dead_lettered,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_named_as_oci_names_its_operations() {
        assert_eq!(operation(&Method::GET, "/20210201/queues/{queue_id}/messages"), "GetMessages");
        assert_eq!(operation(&Method::DELETE, "/20210201/queues/{queue_id}/messages/{receipt}"), "DeleteMessage");
        assert_eq!(operation(&Method::PATCH, "/20210201/queues"), "PATCH /20210201/queues");
    }
}
