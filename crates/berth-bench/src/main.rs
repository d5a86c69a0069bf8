//! `berth-bench`: drives a queue with producers and consumers over signed OCI REST or
//! STOMP, then prints rates, the server's CPU per message, end-to-end latency and an
//! exactly-once check. Every run is bounded by `--duration` and `--total`.

mod procfs;
mod record;
mod rest;
mod stomp_client;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use record::{body, key, Recorder};
use rest::{Credentials, RestClient};
use stomp_client::StompClient;
use tokio_util::sync::CancellationToken;

// The load generator shares the server's cores, so its own CPU per message counts against
// every rate it measures; glibc's malloc took a fifth of it under W1.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Protocol {
    Rest,
    Stomp,
}

#[derive(Parser, Debug, Clone)]
#[command(name = "berth-bench", about = "Load generator for OCI Queue REST and STOMP")]
struct Args {
    /// Credentials JSON written by Berth (admin.json or <user>.json).
    #[arg(long)]
    credentials: PathBuf,
    /// REST endpoint [default: the credentials' endpoint]. Repeat it for several nodes of
    /// one store: producers and consumers take them in turn.
    #[arg(long)]
    endpoint: Vec<String>,
    /// Protocol of producers and consumers.
    #[arg(long, value_enum, default_value = "rest")]
    protocol: Protocol,
    /// STOMP address HOST:PORT (for --protocol stomp).
    #[arg(long)]
    stomp_addr: Option<String>,
    /// STOMP destination [default: the queue's OCID, looked up over REST].
    #[arg(long)]
    stomp_destination: Option<String>,
    /// STOMP login and passcode [default: from the credentials].
    #[arg(long)]
    stomp_login: Option<String>,
    #[arg(long)]
    stomp_passcode: Option<String>,
    /// STOMP virtual host sent on CONNECT.
    #[arg(long, default_value = "/")]
    stomp_vhost: String,
    /// Queue display name (created if absent).
    #[arg(long, default_value = "bench")]
    queue: String,
    #[arg(long, default_value_t = 8)]
    producers: u32,
    #[arg(long, default_value_t = 8)]
    consumers: u32,
    /// Message size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Messages per PutMessages (REST).
    #[arg(long, default_value_t = 20)]
    batch: usize,
    /// SENDs a STOMP producer keeps unreceipted (1 = wait for each RECEIPT).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    stomp_window: u32,
    /// GetMessages limit (REST) or prefetch (STOMP).
    #[arg(long, default_value_t = 20)]
    get_limit: u32,
    /// Lease length in seconds.
    #[arg(long, default_value_t = 30)]
    visibility: u32,
    /// Pause between a producer's sends (e.g. "10ms"); none by default.
    #[arg(long)]
    interval: Option<humantime::Duration>,
    /// Measured time.
    #[arg(long, default_value = "30s")]
    duration: humantime::Duration,
    /// Unmeasured time before.
    #[arg(long, default_value = "3s")]
    warmup: humantime::Duration,
    /// Stop producing after this many messages in all.
    #[arg(long)]
    total: Option<u64>,
    /// Put this many messages before consumers start, then measure how fast they drain.
    #[arg(long, default_value_t = 0)]
    preload: u64,
    /// Longest wait after producing stops for the last messages to arrive.
    #[arg(long, default_value = "60s")]
    drain: humantime::Duration,
    /// Producers pause while this many sent messages are not yet received, so the run
    /// measures a rate producers and consumers can sustain (0 = never pause).
    #[arg(long, default_value_t = 20_000)]
    max_backlog: u64,
    /// Server process id, for CPU time and memory from /proc; repeat it for several
    /// processes (nodes, their database), whose CPU and memory are added up.
    #[arg(long)]
    server_pid: Vec<u32>,
    /// Send unsigned requests (server started with --insecure-no-auth).
    #[arg(long)]
    unsigned: bool,
    /// Read through this many consumer groups (REST): the queue gets the CONSUMER_GROUPS
    /// capability and N - 1 groups beside its primary one, each with `--consumers`
    /// consumers of its own, and every message is counted once per group (0 = a plain queue).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=32))]
    consumer_groups: u32,
    /// Label printed in the summary.
    #[arg(long, default_value = "")]
    label: String,
}

struct Shared {
    args: Args,
    creds: Credentials,
    /// One client per endpoint.
    rests: Vec<RestClient>,
    queue_id: String,
    /// The consumer groups read (`None`: the queue itself, or its primary group).
    groups: Vec<Option<String>>,
    /// One per group: each gets every message.
    records: Vec<Recorder>,
    /// Producers stop at this.
    stop_producing: CancellationToken,
    /// Consumers stop at this.
    stop_consuming: CancellationToken,
    /// Most messages to produce: `--preload` when preloading, else `--total`.
    total: Option<u64>,
    /// Messages producers have claimed of `total`.
    claimed: AtomicU64,
}

impl Shared {
    /// The first group's record (the only one without consumer groups).
    fn record(&self) -> &Recorder {
        &self.records[0]
    }

    fn sending(&self, keys: &[u64]) {
        self.records.iter().for_each(|r| r.sending(keys));
    }

    fn acked(&self, keys: &[u64]) {
        self.records.iter().for_each(|r| r.acked(keys));
    }

    /// The client of the `n`th producer or consumer: endpoints in turn.
    fn rest(&self, n: usize) -> &RestClient {
        &self.rests[n % self.rests.len()]
    }

    /// Waits while consumers are `--max-backlog` behind (never while preloading).
    async fn pace(&self) {
        if self.args.max_backlog == 0 || self.args.preload > 0 {
            return;
        }
        let behind = || self.records.iter().map(Recorder::outstanding).max().unwrap_or(0);
        while behind() > self.args.max_backlog && !self.stop_producing.is_cancelled() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Claims up to `n` messages of the `--total` budget; returns how many (0 = spent).
    fn claim(&self, n: u64) -> u64 {
        let Some(total) = self.total else { return n };
        let before = self
            .claimed
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |claimed| Some((claimed + n).min(total)))
            .unwrap_or(total);
        (before + n).min(total) - before
    }
}

async fn produce_rest(s: Arc<Shared>, producer: u64) {
    let mut seq = 0;
    loop {
        s.pace().await;
        let n = s.claim(s.args.batch as u64);
        if n == 0 || s.stop_producing.is_cancelled() {
            break;
        }
        let keys: Vec<u64> = (0..n).map(|i| key(producer, seq + i)).collect();
        seq += keys.len() as u64;
        let bodies: Vec<String> = keys.iter().map(|k| body(*k, s.args.size)).collect();
        s.sending(&keys);
        match s.rest(producer as usize).put(&s.queue_id, &bodies).await {
            Ok(()) => s.acked(&keys),
            Err(e) => {
                s.record().errors_put.fetch_add(1, Ordering::Relaxed);
                eprintln!("put failed: {e:#}");
            }
        }
        if let Some(pause) = s.args.interval {
            tokio::time::sleep(pause.into()).await;
        }
    }
}

async fn consume_rest(s: Arc<Shared>, consumer: usize, group: usize) {
    let rest = s.rest(consumer);
    let (record, group_id) = (&s.records[group], s.groups[group].as_deref());
    while !s.stop_consuming.is_cancelled() {
        let got = match rest.get(&s.queue_id, group_id, s.args.get_limit, s.args.visibility, 1).await {
            Ok(got) => got,
            Err(e) => {
                record.errors_get.fetch_add(1, Ordering::Relaxed);
                eprintln!("get failed: {e:#}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if got.is_empty() {
            continue;
        }
        for g in &got {
            record.received(&g.content);
        }
        match rest.delete(&s.queue_id, group_id, &got).await {
            Ok(0) => {}
            Ok(failed) => {
                record.errors_delete.fetch_add(failed, Ordering::Relaxed);
            }
            Err(e) => {
                record.errors_delete.fetch_add(1, Ordering::Relaxed);
                eprintln!("delete failed: {e:#}");
            }
        }
    }
}

fn stomp_target(s: &Shared) -> anyhow::Result<(String, String, String, String)> {
    let addr = s.args.stomp_addr.clone().context("--stomp-addr is required with --protocol stomp")?;
    let destination = s.args.stomp_destination.clone().unwrap_or_else(|| s.queue_id.clone());
    let login = s.args.stomp_login.clone().unwrap_or_else(|| s.creds.stomp_login.clone());
    let passcode = s.args.stomp_passcode.clone().unwrap_or_else(|| s.creds.stomp_passcode.clone());
    Ok((addr, destination, login, passcode))
}

async fn produce_stomp(s: Arc<Shared>, producer: u64) -> anyhow::Result<()> {
    let (addr, destination, login, passcode) = stomp_target(&s)?;
    let mut client = StompClient::connect(&addr, &login, &passcode, &s.args.stomp_vhost).await?;
    let window = s.args.stomp_window as usize;
    // Sent and not yet receipted, oldest first: (receipt id, key).
    let mut unreceipted = std::collections::VecDeque::with_capacity(window);
    let mut seq = 0;
    let mut producing = true;
    loop {
        while producing && unreceipted.len() < window {
            s.pace().await;
            if s.stop_producing.is_cancelled() || s.claim(1) == 0 {
                producing = false;
                break;
            }
            let k = key(producer, seq);
            seq += 1;
            s.sending(&[k]);
            client.send(&destination, &body(k, s.args.size), seq).await?;
            unreceipted.push_back((seq, k));
            if let Some(pause) = s.args.interval {
                tokio::time::sleep(pause.into()).await;
            }
        }
        let Some((receipt, k)) = unreceipted.pop_front() else { return Ok(()) };
        match client.receipt().await {
            Ok(id) if id == receipt => s.acked(&[k]),
            outcome => {
                s.record().errors_put.fetch_add(1, Ordering::Relaxed);
                return match outcome {
                    Ok(id) => Err(anyhow::anyhow!("RECEIPT {id} arrived while {receipt} was expected")),
                    Err(e) => Err(e),
                };
            }
        }
    }
}

async fn consume_stomp(s: Arc<Shared>) -> anyhow::Result<()> {
    let (addr, destination, login, passcode) = stomp_target(&s)?;
    let mut client = StompClient::connect(&addr, &login, &passcode, &s.args.stomp_vhost).await?;
    client.subscribe(&destination, s.args.get_limit, s.args.visibility).await?;
    loop {
        let frame = tokio::select! {
            frame = client.next() => frame?,
            _ = s.stop_consuming.cancelled() => return Ok(()),
        };
        if frame.command != "MESSAGE" {
            continue;
        }
        s.record().received(&String::from_utf8_lossy(&frame.body));
        let ack = frame.get("ack").or_else(|| frame.get("message-id")).unwrap_or_default().to_owned();
        if let Err(e) = client.ack(&ack).await {
            s.record().errors_delete.fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
    }
}

fn spawn_producers(s: &Arc<Shared>, producers: u32) -> Vec<tokio::task::JoinHandle<()>> {
    (0..producers)
        .map(|p| {
            let s = s.clone();
            tokio::spawn(async move {
                match s.args.protocol {
                    Protocol::Rest => produce_rest(s, u64::from(p)).await,
                    Protocol::Stomp => {
                        if let Err(e) = produce_stomp(s, u64::from(p)).await {
                            eprintln!("STOMP producer failed: {e:#}");
                        }
                    }
                }
            })
        })
        .collect()
}

fn spawn_consumers(s: &Arc<Shared>) -> Vec<tokio::task::JoinHandle<()>> {
    let each = s.args.consumers as usize;
    (0..each * s.groups.len())
        .map(|c| {
            let s = s.clone();
            tokio::spawn(async move {
                match s.args.protocol {
                    Protocol::Rest => consume_rest(s, c, c / each).await,
                    Protocol::Stomp => {
                        if let Err(e) = consume_stomp(s).await {
                            eprintln!("STOMP consumer failed: {e:#}");
                        }
                    }
                }
            })
        })
        .collect()
}

/// Preload: producers fill the queue with `--preload` messages before any consumer runs.
async fn preload(s: &Arc<Shared>) {
    let started = Instant::now();
    for task in spawn_producers(s, s.args.producers.max(1)) {
        let _ = task.await;
    }
    let sent = s.record().sent.load(Ordering::Relaxed);
    eprintln!("preloaded {sent} messages in {:.1} s", started.elapsed().as_secs_f64());
}

fn endpoints(args: &Args, creds: &Credentials) -> Vec<String> {
    if args.endpoint.is_empty() {
        vec![creds.endpoint.clone()]
    } else {
        args.endpoint.clone()
    }
}

/// CPU seconds of the server processes, added up.
fn servers_cpu(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|pid| procfs::cpu_seconds(*pid)).sum()
}

/// Current and peak RSS in MiB of the server processes, added up.
fn servers_rss(pids: &[u32]) -> Option<(f64, f64)> {
    if pids.is_empty() {
        return None;
    }
    pids.iter()
        .map(|pid| procfs::rss_mib(*pid))
        .try_fold((0.0, 0.0), |sum, rss| rss.map(|(n, p)| (sum.0 + n, sum.1 + p)))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let creds = Credentials::load(&args.credentials)?;
    let rests = endpoints(&args, &creds)
        .iter()
        .map(|endpoint| RestClient::new(&creds, endpoint, !args.unsigned))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if args.consumer_groups > 0 && args.protocol != Protocol::Rest {
        anyhow::bail!("--consumer-groups is for --protocol rest");
    }
    let queue_id = if args.protocol == Protocol::Stomp && args.stomp_destination.is_some() {
        String::new()
    } else if args.consumer_groups > 0 {
        let name = format!("{}-groups", args.queue);
        rests[0].ensure_queue(&creds.tenancy_id, &name, args.visibility, true).await?
    } else {
        rests[0].ensure_queue(&creds.tenancy_id, &args.queue, args.visibility, false).await?
    };
    let mut groups = vec![None];
    for n in 2..=args.consumer_groups {
        groups.push(Some(rests[0].ensure_group(&queue_id, &format!("g{n}")).await?));
    }
    let s = Arc::new(Shared {
        args: args.clone(),
        creds,
        rests,
        queue_id,
        records: groups.iter().map(|_| Recorder::default()).collect(),
        groups,
        stop_producing: CancellationToken::new(),
        stop_consuming: CancellationToken::new(),
        total: if args.preload > 0 { Some(args.preload) } else { args.total },
        claimed: AtomicU64::new(0),
    });
    if args.preload > 0 {
        preload(&s).await;
    }

    let warmup: Duration = args.warmup.into();
    let duration: Duration = args.duration.into();
    let consumers = spawn_consumers(&s);
    let producers = if args.preload > 0 { Vec::new() } else { spawn_producers(&s, args.producers) };
    let progress = {
        let s = s.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut last = (0, 0);
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let now = (s.record().sent.load(Ordering::Relaxed), s.record().received_total());
                eprintln!(
                    "[{:>5.1}s] sent {} ({}/s) received {} ({}/s)",
                    started.elapsed().as_secs_f64(),
                    now.0,
                    (now.0 - last.0) / 2,
                    now.1,
                    (now.1 - last.1) / 2
                );
                last = now;
            }
        })
    };

    tokio::time::sleep(warmup).await;
    let cpu_before = servers_cpu(&args.server_pid);
    let own_cpu_before = procfs::cpu_seconds(std::process::id());
    let received_before = s.record().received_total();
    s.records.iter().for_each(|r| r.measuring.store(true, Ordering::Relaxed));
    let window_start = Instant::now();
    // The window ends at its duration, or earlier when a preloaded backlog is drained
    // or the total is reached and everything sent has arrived.
    while window_start.elapsed() < duration {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let sent = s.record().sent.load(Ordering::Relaxed);
        let done_producing = producers.iter().all(|p| p.is_finished());
        if done_producing && s.records.iter().all(|r| r.received_total() >= sent) && sent > 0 {
            break;
        }
    }
    s.records.iter().for_each(|r| r.measuring.store(false, Ordering::Relaxed));
    let window = window_start.elapsed().as_secs_f64();
    let cpu_after = servers_cpu(&args.server_pid);
    let own_cpu_after = procfs::cpu_seconds(std::process::id());
    let rss = servers_rss(&args.server_pid);

    s.stop_producing.cancel();
    for p in producers {
        let _ = p.await;
    }
    let drain_until = Instant::now() + Duration::from(args.drain);
    let drained = || s.records.iter().all(|r| r.received_total() >= r.sent.load(Ordering::Relaxed));
    while !drained() && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.stop_consuming.cancel();
    for c in consumers {
        let _ = c.await;
    }
    progress.abort();

    // Per group: not received is not lost while it is still in the queue (a drain cut short).
    let mut per_group = Vec::with_capacity(s.groups.len());
    for (record, group) in s.records.iter().zip(&s.groups) {
        let left = if s.queue_id.is_empty() {
            None
        } else {
            s.rests[0].messages_left(&s.queue_id, group.as_deref()).await.ok()
        };
        let unreceived = record.unreceived();
        let lost = unreceived.saturating_sub(left.unwrap_or(0));
        per_group.push((unreceived, left, lost));
    }
    let r = s.record();
    let (unreceived, left_in_queue, lost) = per_group[0];
    let received_window = r.received_measured.load(Ordering::Relaxed);
    let delivered_window: u64 = s.records.iter().map(|r| r.received_measured.load(Ordering::Relaxed)).sum();
    let sent_window = r.sent_measured.load(Ordering::Relaxed);
    let [p50, p90, p99, max] = r.latency_ms();
    let [s50, s90, s99, smax] = r.latency_from_send_ms();
    let per = |count: u64, before: Option<f64>, after: Option<f64>| match (before, after) {
        (Some(a), Some(b)) if count > 0 => Some(((b - a) * 1e7 / count as f64).round() / 10.0),
        _ => None,
    };
    let cpu_us_per_msg = per(received_window, cpu_before, cpu_after);
    // The load generator's own CPU: on a shared machine it bounds what the server can show.
    let bench_cpu_us_per_msg = per(received_window, own_cpu_before, own_cpu_after);
    let count =
        |pick: fn(&Recorder) -> &AtomicU64| s.records.iter().map(|r| pick(r).load(Ordering::Relaxed)).sum::<u64>();
    let groups: Vec<serde_json::Value> = s
        .records
        .iter()
        .zip(&per_group)
        .map(|(r, (unreceived, left, lost))| {
            let duplicates = r.duplicates.load(Ordering::Relaxed);
            serde_json::json!({
                "received_per_s": (r.received_measured.load(Ordering::Relaxed) as f64 / window).round(),
                "duplicates": duplicates,
                "unreceived": unreceived,
                "left_in_queue": left,
                "lost": lost,
                "exactly_once": duplicates == 0 && *lost == 0,
            })
        })
        .collect();
    let exactly_once = groups.iter().all(|g| g["exactly_once"] == true);
    let mut summary = serde_json::json!({
        "label": args.label,
        "protocol": format!("{:?}", args.protocol).to_lowercase(),
        "producers": args.producers,
        "consumers": args.consumers,
        "size": args.size,
        "window_s": (window * 100.0).round() / 100.0,
        "sent_per_s": (sent_window as f64 / window).round(),
        "received_per_s": (received_window as f64 / window).round(),
        "server_cpu_us_per_msg": cpu_us_per_msg,
        "bench_cpu_us_per_msg": bench_cpu_us_per_msg,
        "server_rss_mib": rss.map(|(now, _)| now.round()),
        "server_peak_rss_mib": rss.map(|(_, peak)| peak.round()),
        "latency_ms": {"p50": p50, "p90": p90, "p99": p99, "max": max},
        "latency_from_send_ms": {"p50": s50, "p90": s90, "p99": s99, "max": smax},
        "sent": r.sent.load(Ordering::Relaxed),
        "received": r.received_total(),
        "received_before_window": received_before,
        "duplicates": r.duplicates.load(Ordering::Relaxed),
        "unreceived": unreceived,
        "left_in_queue": left_in_queue,
        "lost": lost,
        "foreign": count(|r| &r.foreign),
        "errors": {
            "put": count(|r| &r.errors_put),
            "get": count(|r| &r.errors_get),
            "delete": count(|r| &r.errors_delete),
        },
        "exactly_once": exactly_once,
    });
    if args.consumer_groups > 0 {
        // Every group gets every message: the server's work is per delivery.
        summary["consumer_groups"] = serde_json::json!({
            "delivered_per_s": (delivered_window as f64 / window).round(),
            "server_cpu_us_per_delivered": per(delivered_window, cpu_before, cpu_after),
            "groups": groups,
        });
    }
    println!("BENCH {summary}");
    Ok(())
}
