//! Wiring: opens the store, provisions first-start credentials, binds the listeners,
//! serves until shutdown, then drains and closes everything in order.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use berth_core::store::Store;
use berth_core::{Clock, Engine, SystemClock};
use berth_store::{PostgresStore, SqliteStore};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::auth::{Authenticator, Principal};
use crate::config::{Config, MetricsAt, StoreChoice};
use crate::data_dir::DataDir;
use crate::login_throttle::LoginThrottle;
use crate::metrics::Metrics;
use crate::stomp::StompContext;
use crate::{credentials, http, rest, stomp, tls, workers};

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    /// The queue engine.
    pub engine: Arc<Engine>,
    /// Request verification.
    pub auth: Arc<Authenticator>,
    /// The `messagesEndpoint` reported to clients.
    pub public_url: Arc<str>,
    /// Metrics, recorded always.
    pub metrics: Arc<Metrics>,
    /// Whether `GET /metrics` is served on this (the HTTP) port.
    pub metrics_on_http: bool,
    /// The web console's sessions and charts (served unless `console_on` is false).
    pub console: Arc<crate::console::Console>,
    /// Whether the web console is served.
    pub console_on: bool,
}

/// A store opened for the server or a tool, and the clock its rules run on.
pub struct OpenedStore {
    /// The store.
    pub store: Arc<dyn Store>,
    /// SQLite: this machine's clock. PostgreSQL: the database's, so that every node tells
    /// the same time.
    pub clock: Arc<dyn Clock>,
}

/// Opens the chosen store, paired with the data dir (see [`DataDir`]); `serve_messages`
/// for the server, which then serves the messages (tools that only manage users leave
/// them to it).
///
/// # Errors
/// A database that is missing, empty or another data dir's (unless `start_fresh` for the
/// first two), that cannot be opened, or (SQLite) that another server serves.
pub async fn open_store(
    data_dir: &Path,
    choice: &StoreChoice,
    serve_messages: bool,
    start_fresh: bool,
    min_free_space: u64,
) -> anyhow::Result<OpenedStore> {
    match choice {
        StoreChoice::Sqlite => {
            let dir = DataDir::check(data_dir, start_fresh)?;
            let path = dir.database();
            let store =
                if serve_messages { SqliteStore::open(&path) } else { SqliteStore::open_without_messages(&path) };
            let store = store.with_context(|| format!("cannot open {}", path.display()))?;
            dir.pair(store.store_id(), &path.display().to_string())?;
            anyhow::ensure!(
                !serve_messages || store.owns_messages(),
                "another berth server is using the data dir {} (one server per data dir)",
                data_dir.display()
            );
            Ok(OpenedStore { store: Arc::new(store.with_min_free_space(min_free_space)), clock: Arc::new(SystemClock) })
        }
        StoreChoice::Postgres(options) => {
            let dir = DataDir::beside_external(data_dir)?;
            let store = PostgresStore::open(options).await.context("cannot open the PostgreSQL store")?;
            dir.pair(store.store_id(), "the PostgreSQL database")?;
            let clock = store.clock();
            tracing::info!(offset_ms = clock.offset_ms(), "on PostgreSQL's clock");
            Ok(OpenedStore { store: Arc::new(store), clock })
        }
    }
}

/// Runs the server until `shutdown` fires.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    // Both caps, plus the store's files and a margin for the rest.
    crate::accept::raise_open_files_limit(
        (config.http_limits.max_connections + config.stomp_max_connections + 64) as u64,
    );
    // Listeners and certificates first: a server that cannot start leaves no new database or
    // credentials behind.
    let http_tls = config.http_tls.as_ref().map(|(cert, key)| tls::server_config(cert, key)).transpose()?;
    let stomp_tls = config.stomp_tls.as_ref().map(|(cert, key)| tls::server_config(cert, key)).transpose()?;
    let http =
        TcpListener::bind(&config.http_addr).await.with_context(|| format!("cannot bind {}", config.http_addr))?;
    let stomp =
        TcpListener::bind(&config.stomp_addr).await.with_context(|| format!("cannot bind {}", config.stomp_addr))?;
    let (http_addr, stomp_addr) = (http.local_addr()?, stomp.local_addr()?);
    let metrics_listener = match &config.metrics {
        MetricsAt::Addr(addr) => Some(TcpListener::bind(addr).await.with_context(|| format!("cannot bind {addr}"))?),
        MetricsAt::Http | MetricsAt::Off => None,
    };
    let OpenedStore { store, clock } =
        open_store(&config.data_dir, &config.store, true, config.start_fresh, config.min_free_space).await?;
    let scheme = if config.http_tls.is_some() { "https" } else { "http" };
    let public_url = config.public_url.clone().unwrap_or_else(|| format!("{scheme}://{http_addr}"));

    let default_tenancy = credentials::bootstrap(store.as_ref(), &config.data_dir, &config.region, &public_url).await?;
    let store_dyn = store.clone();
    let engine =
        Arc::new(Engine::new(store_dyn.clone(), clock.clone(), config.region.clone(), shutdown.clone()).await?);
    let auth = if config.insecure_no_auth {
        tracing::warn!(
            "AUTHENTICATION IS OFF (--insecure-no-auth): every request acts as tenancy {}. \
             Never expose this server beyond local testing.",
            default_tenancy.id
        );
        let principal = Principal { tenancy_id: default_tenancy.id.clone(), user_id: "insecure-no-auth".into() };
        Authenticator::insecure(store_dyn.clone(), clock.clone(), principal)
    } else {
        Authenticator::new(store_dyn.clone(), clock.clone())
    };
    let auth = Arc::new(auth);
    let metrics = Arc::new(Metrics::default());
    store.observe(metrics.store_observer());
    // STOMP and the console check the same passcodes: one count of failures.
    let logins = Arc::new(LoginThrottle::default());
    let stomp_ctx = Arc::new(StompContext {
        engine: engine.clone(),
        auth: auth.clone(),
        metrics: metrics.clone(),
        limits: stomp::frame::Limits::default(),
        idle_timeout: config.stomp_idle_timeout,
        max_connections: config.stomp_max_connections,
        tls: stomp_tls.map(TlsAcceptor::from),
        logins: logins.clone(),
    });
    let sweeper = tokio::spawn(workers::sweep(engine.clone(), shutdown.clone()));
    let metrics_on_http = config.metrics == MetricsAt::Http;
    // Secure cookies when the browser's URL is https, also behind a TLS-terminating proxy.
    let https = config.http_tls.is_some() || public_url.starts_with("https://");
    let console = Arc::new(crate::console::Console::new(https, logins));
    if config.console {
        tokio::spawn(console.clone().sample(engine.clone(), shutdown.clone()));
    }
    let state = AppState {
        engine,
        auth,
        public_url: public_url.into(),
        metrics,
        metrics_on_http,
        console,
        console_on: config.console,
    };
    let mut metrics_line = String::new();
    if let Some(listener) = metrics_listener {
        metrics_line = format!(" metrics={}", listener.local_addr()?);
        let only_metrics =
            axum::Router::new().route("/metrics", axum::routing::get(rest::metrics)).with_state(state.clone());
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, only_metrics).with_graceful_shutdown(shutdown.cancelled_owned()).await;
            if let Err(e) = served {
                tracing::error!(error = %e, "metrics listener failed");
            }
        });
    }

    let stomp_task = tokio::spawn(stomp::serve(stomp, stomp_ctx, shutdown.clone()));
    let server = tokio::spawn(http::serve(
        http,
        rest::router(state),
        http_tls.map(TlsAcceptor::from),
        config.http_limits.clone(),
        shutdown.clone(),
    ));

    // One line for people and scripts: the schemes say whether TLS is on.
    let stomp_scheme = if config.stomp_tls.is_some() { "stomp+tls" } else { "stomp" };
    println!("listening {scheme}={http_addr} {stomp_scheme}={stomp_addr}{metrics_line}");
    let oci_config = config.data_dir.join("credentials").join("oci-config");
    if oci_config.exists() {
        println!("OCI config for the SDK and CLI: {}", oci_config.display());
    } else {
        // Another node made the store's admin credentials, in its own data dir.
        println!("OCI config for the SDK and CLI: in the data dir of the node that first started on this store");
    }

    shutdown.cancelled().await;
    tracing::info!("shutting down: no new connections; draining requests");
    match tokio::time::timeout(config.shutdown_grace, server).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "HTTP server task failed"),
        Err(_) => tracing::warn!(
            grace_ms = config.shutdown_grace.as_millis() as u64,
            "requests still open after the grace period"
        ),
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = sweeper.await;
        let _ = stomp_task.await;
    })
    .await;
    store.close().await?;
    tracing::info!("stopped");
    Ok(())
}
