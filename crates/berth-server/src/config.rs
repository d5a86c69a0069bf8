//! Configuration: defaults < TOML file (`--config`) < `BERTH_*` environment < flags.
//! `validate` reports every problem at once.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

/// The `berth` command line.
#[derive(Parser, Debug)]
#[command(name = "berth", version, about = "A self-hosted message queue that speaks the OCI Queue API")]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server.
    Serve(Box<ServeArgs>),
    /// Manage API credentials.
    #[command(subcommand)]
    Credentials(CredentialsCommand),
    /// Manage queues of a running server (over its REST API).
    Queue(crate::admin::QueueArgs),
    /// List tenancies (from the store).
    #[command(subcommand)]
    Tenancy(crate::admin::TenancyCommand),
    /// List users (from the store).
    #[command(subcommand)]
    User(crate::admin::UserCommand),
}

/// `berth credentials ...`
#[derive(Subcommand, Debug)]
pub enum CredentialsCommand {
    /// Create a user with an API signing key and a STOMP passcode (and its tenancy if new).
    Create(CreateCredentialsArgs),
}

/// Where the messages are kept: flags of `serve` and of the tools that open the store.
#[derive(Args, Debug, Default)]
pub struct StoreArgs {
    /// `sqlite` (embedded, in the data dir) or `postgres` (shared by several nodes) [default: sqlite].
    #[arg(long, env = "BERTH_STORE")]
    pub store: Option<String>,
    /// PostgreSQL URL for `--store postgres`, e.g. postgres://berth@127.0.0.1/berth.
    #[arg(long, env = "BERTH_POSTGRES_URL")]
    pub postgres_url: Option<String>,
    /// Most PostgreSQL connections of this node for requests [default: 16].
    #[arg(long, env = "BERTH_POSTGRES_POOL_SIZE")]
    pub postgres_pool_size: Option<usize>,
}

/// Where the messages are kept.
#[derive(Clone)]
pub enum StoreChoice {
    /// The embedded SQLite database in the data dir.
    Sqlite,
    /// A PostgreSQL database, shared by every node started on it.
    Postgres(berth_store::PostgresOptions),
}

impl std::fmt::Debug for StoreChoice {
    // Never the URL's password: the configuration is logged at start.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreChoice::Sqlite => f.write_str("Sqlite"),
            StoreChoice::Postgres(options) => f
                .debug_struct("Postgres")
                .field("url", &redact_password(&options.url))
                .field("pool_size", &options.pool_size)
                .finish(),
        }
    }
}

/// A PostgreSQL URL or key=value string with its password masked.
fn redact_password(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((userinfo, host)) = rest.split_once('@') {
            if let Some((user, _)) = userinfo.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
        return url.to_owned();
    }
    url.split_whitespace()
        .map(|pair| if pair.starts_with("password=") { "password=***" } else { pair })
        .collect::<Vec<_>>()
        .join(" ")
}

impl StoreArgs {
    /// The store these flags (over the file's keys) choose, or what is wrong with them.
    fn choose(self, file: &FileConfig, problems: &mut Vec<String>) -> StoreChoice {
        let url = self.postgres_url.or_else(|| file.postgres_url.clone());
        let pool_size = self.postgres_pool_size.or(file.postgres_pool_size).unwrap_or(16);
        match self.store.or_else(|| file.store.clone()).as_deref() {
            None | Some("sqlite") => StoreChoice::Sqlite,
            Some("postgres") => match url {
                Some(url) if pool_size > 0 => StoreChoice::Postgres(berth_store::PostgresOptions { url, pool_size }),
                Some(_) => {
                    problems.push("postgres_pool_size must be at least 1".into());
                    StoreChoice::Sqlite
                }
                None => {
                    problems.push("store postgres needs postgres_url (--postgres-url, BERTH_POSTGRES_URL)".into());
                    StoreChoice::Sqlite
                }
            },
            Some(other) => {
                problems.push(format!("store {other:?} is not sqlite or postgres"));
                StoreChoice::Sqlite
            }
        }
    }

    /// The store these flags choose (for the tools, which read no file).
    ///
    /// # Errors
    /// Invalid store flags.
    pub fn chosen(self) -> anyhow::Result<StoreChoice> {
        let mut problems = Vec::new();
        let choice = self.choose(&FileConfig::default(), &mut problems);
        anyhow::ensure!(problems.is_empty(), "invalid configuration: {}", problems.join("; "));
        Ok(choice)
    }
}

/// `berth credentials create`
#[derive(Args, Debug)]
pub struct CreateCredentialsArgs {
    /// Data directory of the server.
    #[arg(long, env = "BERTH_DATA_DIR", default_value = "./berth-data")]
    pub data_dir: PathBuf,
    /// The server's store.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Tenancy name (created if new).
    #[arg(long)]
    pub tenancy: String,
    /// User name, unique within the tenancy.
    #[arg(long)]
    pub user: String,
    /// Where to write `oci-config`, `<user>.json` and the key.
    #[arg(long)]
    pub out: PathBuf,
    /// Endpoint written into the files.
    #[arg(long, env = "BERTH_PUBLIC_URL", default_value = "http://127.0.0.1:8080")]
    pub endpoint: String,
    /// Region written into `oci-config`.
    #[arg(long, env = "BERTH_REGION", default_value = DEFAULT_REGION)]
    pub region: String,
}

/// `berth serve` flags; each overrides the same key of the file.
#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// TOML file with the same keys (data_dir, http_addr, ...).
    #[arg(long, env = "BERTH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (database and credentials) [default: ./berth-data].
    #[arg(long, env = "BERTH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// HTTP listen address [default: 127.0.0.1:8080].
    #[arg(long, env = "BERTH_HTTP_ADDR")]
    pub http_addr: Option<String>,
    /// STOMP listen address [default: 127.0.0.1:61613].
    #[arg(long, env = "BERTH_STOMP_ADDR")]
    pub stomp_addr: Option<String>,
    /// The `messagesEndpoint` reported to clients [default: http://<http-addr>].
    #[arg(long, env = "BERTH_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Region used in OCIDs and written into generated OCI configs [default: us-ashburn-1].
    #[arg(long, env = "BERTH_REGION")]
    pub region: Option<String>,
    /// Accept unsigned requests as the default tenancy. For local testing only.
    #[arg(long, env = "BERTH_INSECURE_NO_AUTH", num_args = 0..=1, default_missing_value = "true")]
    pub insecure_no_auth: Option<bool>,
    /// Serve the web console at /console on the HTTP port [default: true].
    #[arg(long, env = "BERTH_CONSOLE", num_args = 0..=1, default_missing_value = "true")]
    pub console: Option<bool>,
    /// PEM certificate chain for HTTPS on --http-addr (with --http-tls-key).
    #[arg(long, env = "BERTH_HTTP_TLS_CERT")]
    pub http_tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS.
    #[arg(long, env = "BERTH_HTTP_TLS_KEY")]
    pub http_tls_key: Option<PathBuf>,
    /// PEM certificate chain for STOMP over TLS on --stomp-addr (with --stomp-tls-key).
    #[arg(long, env = "BERTH_STOMP_TLS_CERT")]
    pub stomp_tls_cert: Option<PathBuf>,
    /// PEM private key for STOMP over TLS.
    #[arg(long, env = "BERTH_STOMP_TLS_KEY")]
    pub stomp_tls_key: Option<PathBuf>,
    /// Close STOMP connections silent this long when no heart-beats were negotiated [default: 5m].
    #[arg(long, env = "BERTH_STOMP_IDLE_TIMEOUT")]
    pub stomp_idle_timeout: Option<String>,
    /// Most open STOMP connections; more wait to be accepted [default: 1024].
    #[arg(long, env = "BERTH_STOMP_MAX_CONNECTIONS")]
    pub stomp_max_connections: Option<usize>,
    /// How long in-flight requests get at shutdown, e.g. "10s" [default: 10s].
    #[arg(long, env = "BERTH_SHUTDOWN_GRACE")]
    pub shutdown_grace: Option<String>,
    /// Begin a new, empty store when the data dir's database is missing or empty (the old
    /// credentials are moved aside). Without it, start-up refuses such a data dir.
    #[arg(long, env = "BERTH_START_FRESH")]
    pub start_fresh: bool,
    /// Refuse puts while less than this is free on the database's disk (and in its free
    /// pages), so that gets and deletes keep working; 0 turns it off [default: 64MiB].
    #[arg(long, env = "BERTH_MIN_FREE_SPACE")]
    pub min_free_space: Option<String>,
    /// Most open HTTP connections; more wait to be accepted [default: 4096].
    #[arg(long, env = "BERTH_HTTP_MAX_CONNECTIONS")]
    pub http_max_connections: Option<usize>,
    /// Close HTTP connections that send no byte of a next request, or read nothing of an
    /// answer, for this long [default: 60s].
    #[arg(long, env = "BERTH_HTTP_IDLE_TIMEOUT")]
    pub http_idle_timeout: Option<String>,
    /// Close HTTP connections whose request head is not complete this long after its first byte [default: 10s].
    #[arg(long, env = "BERTH_HTTP_HEADER_TIMEOUT")]
    pub http_header_timeout: Option<String>,
    /// Where `GET /metrics` (Prometheus, unauthenticated) is served: `http` (the HTTP port),
    /// `off`, or HOST:PORT of its own plain-HTTP listener [default: http].
    #[arg(long, env = "BERTH_METRICS")]
    pub metrics: Option<String>,
    /// Where the messages are kept.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Keys of the TOML file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// HTTP listen address.
    pub http_addr: Option<String>,
    /// STOMP listen address.
    pub stomp_addr: Option<String>,
    /// Reported messages endpoint.
    pub public_url: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// Turn authentication off.
    pub insecure_no_auth: Option<bool>,
    /// Serve the web console.
    pub console: Option<bool>,
    /// Shutdown grace period, human units.
    pub shutdown_grace: Option<String>,
    /// HTTPS certificate chain (PEM).
    pub http_tls_cert: Option<PathBuf>,
    /// HTTPS private key (PEM).
    pub http_tls_key: Option<PathBuf>,
    /// STOMP TLS certificate chain (PEM).
    pub stomp_tls_cert: Option<PathBuf>,
    /// STOMP TLS private key (PEM).
    pub stomp_tls_key: Option<PathBuf>,
    /// STOMP idle timeout, human units.
    pub stomp_idle_timeout: Option<String>,
    /// Most open STOMP connections.
    pub stomp_max_connections: Option<usize>,
    /// Free space below which puts are refused, e.g. "64MiB".
    pub min_free_space: Option<String>,
    /// Most open HTTP connections.
    pub http_max_connections: Option<usize>,
    /// HTTP keep-alive idle timeout, human units.
    pub http_idle_timeout: Option<String>,
    /// HTTP request head timeout, human units.
    pub http_header_timeout: Option<String>,
    /// `http`, `off` or HOST:PORT.
    pub metrics: Option<String>,
    /// `sqlite` or `postgres`.
    pub store: Option<String>,
    /// PostgreSQL URL.
    pub postgres_url: Option<String>,
    /// PostgreSQL connections per node.
    pub postgres_pool_size: Option<usize>,
}

const DEFAULT_REGION: &str = "us-ashburn-1";

/// The effective configuration of `serve`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Data directory.
    pub data_dir: PathBuf,
    /// HTTP listen address.
    pub http_addr: String,
    /// STOMP listen address.
    pub stomp_addr: String,
    /// Reported messages endpoint; `None` = `http://<bound http addr>`.
    pub public_url: Option<String>,
    /// Region.
    pub region: String,
    /// Authentication off.
    pub insecure_no_auth: bool,
    /// Whether the web console is served.
    pub console: bool,
    /// Grace period for in-flight requests at shutdown.
    pub shutdown_grace: Duration,
    /// HTTPS certificate and key.
    pub http_tls: Option<(PathBuf, PathBuf)>,
    /// STOMP TLS certificate and key.
    pub stomp_tls: Option<(PathBuf, PathBuf)>,
    /// STOMP idle timeout.
    pub stomp_idle_timeout: Duration,
    /// Most open STOMP connections.
    pub stomp_max_connections: usize,
    /// HTTP connection cap and deadlines.
    pub http_limits: crate::http::Limits,
    /// Begin a new store if the database is missing or empty.
    pub start_fresh: bool,
    /// Bytes puts leave free on the database's disk.
    pub min_free_space: u64,
    /// Where metrics are served.
    pub metrics: MetricsAt,
    /// Where the messages are kept.
    pub store: StoreChoice,
}

/// Where `GET /metrics` is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsAt {
    /// On the HTTP port, beside the API.
    Http,
    /// Not at all (still recorded, at no cost worth naming).
    Off,
    /// On a plain-HTTP listener of its own.
    Addr(String),
}

impl MetricsAt {
    fn parse(value: Option<String>) -> MetricsAt {
        match value.as_deref() {
            None | Some("http") => MetricsAt::Http,
            Some("off") => MetricsAt::Off,
            Some(addr) => MetricsAt::Addr(addr.to_owned()),
        }
    }
}

/// Parses a human duration (`"10s"`, `"5m"`), noting a problem instead of failing.
fn duration(key: &str, value: Option<String>, default: Duration, problems: &mut Vec<String>) -> Duration {
    match value {
        None => default,
        Some(text) => humantime::parse_duration(&text).unwrap_or_else(|e| {
            problems.push(format!("{key} {text:?}: {e}"));
            default
        }),
    }
}

/// Parses a size in bytes: a whole number with an optional `KiB`, `MiB` or `GiB`.
fn bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(scale)
}

/// A certificate and key given together, or neither.
fn tls_pair(
    key_name: &str,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    problems: &mut Vec<String>,
) -> Option<(PathBuf, PathBuf)> {
    match (cert, key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => {
            problems.push(format!("{key_name}_cert and {key_name}_key must be given together"));
            None
        }
    }
}

impl Config {
    /// Merges flags (and the environment, through clap) over the file over defaults.
    ///
    /// # Errors
    /// An unreadable or invalid file, or invalid values (all listed).
    pub fn load(args: ServeArgs) -> anyhow::Result<Config> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("invalid config file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let mut problems = Vec::new();
        let p = &mut problems;
        let store = args.store.choose(&file, p);
        let shutdown_grace =
            duration("shutdown_grace", args.shutdown_grace.or(file.shutdown_grace), Duration::from_secs(10), p);
        let stomp_idle_timeout = duration(
            "stomp_idle_timeout",
            args.stomp_idle_timeout.or(file.stomp_idle_timeout),
            Duration::from_secs(300),
            p,
        );
        let min_free_space = match args.min_free_space.or(file.min_free_space) {
            None => berth_store::sqlite::DEFAULT_MIN_FREE_SPACE,
            Some(text) => bytes(&text).unwrap_or_else(|| {
                p.push(format!("min_free_space {text:?}: not a size such as 0, 512KiB, 64MiB or 2GiB"));
                0
            }),
        };
        let http_limits = crate::http::Limits {
            max_connections: args.http_max_connections.or(file.http_max_connections).unwrap_or(4096),
            idle_timeout: duration(
                "http_idle_timeout",
                args.http_idle_timeout.or(file.http_idle_timeout),
                Duration::from_secs(60),
                p,
            ),
            header_timeout: duration(
                "http_header_timeout",
                args.http_header_timeout.or(file.http_header_timeout),
                Duration::from_secs(10),
                p,
            ),
        };
        let http_tls =
            tls_pair("http_tls", args.http_tls_cert.or(file.http_tls_cert), args.http_tls_key.or(file.http_tls_key), p);
        let stomp_tls = tls_pair(
            "stomp_tls",
            args.stomp_tls_cert.or(file.stomp_tls_cert),
            args.stomp_tls_key.or(file.stomp_tls_key),
            p,
        );
        let config = Config {
            store,
            data_dir: args.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("./berth-data")),
            http_addr: args.http_addr.or(file.http_addr).unwrap_or_else(|| "127.0.0.1:8080".into()),
            stomp_addr: args.stomp_addr.or(file.stomp_addr).unwrap_or_else(|| "127.0.0.1:61613".into()),
            public_url: args.public_url.or(file.public_url),
            region: args.region.or(file.region).unwrap_or_else(|| DEFAULT_REGION.into()),
            insecure_no_auth: args.insecure_no_auth.or(file.insecure_no_auth).unwrap_or(false),
            console: args.console.or(file.console).unwrap_or(true),
            shutdown_grace,
            http_tls,
            stomp_tls,
            stomp_idle_timeout,
            stomp_max_connections: args.stomp_max_connections.or(file.stomp_max_connections).unwrap_or(1024),
            http_limits,
            start_fresh: args.start_fresh,
            min_free_space,
            metrics: MetricsAt::parse(args.metrics.or(file.metrics)),
        };
        problems.extend(config.problems());
        if !problems.is_empty() {
            anyhow::bail!("invalid configuration:\n  - {}", problems.join("\n  - "));
        }
        Ok(config)
    }

    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (key, addr) in [("http_addr", &self.http_addr), ("stomp_addr", &self.stomp_addr)] {
            if addr.parse::<SocketAddr>().is_err() {
                problems.push(format!("{key} {addr:?} is not HOST:PORT with an IP address"));
            }
        }
        if let MetricsAt::Addr(addr) = &self.metrics {
            if addr.parse::<SocketAddr>().is_err() {
                problems.push(format!("metrics {addr:?} is not http, off, or HOST:PORT with an IP address"));
            }
        }
        if let Some(url) = &self.public_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.ends_with('/') {
                problems.push(format!("public_url {url:?} must start with http:// or https:// and not end with /"));
            }
        }
        if self.stomp_idle_timeout.is_zero() {
            problems.push("stomp_idle_timeout must be longer than 0".into());
        }
        if self.stomp_max_connections == 0 {
            problems.push("stomp_max_connections must be at least 1".into());
        }
        if self.http_limits.max_connections == 0 {
            problems.push("http_max_connections must be at least 1".into());
        }
        for (key, value) in [
            ("http_idle_timeout", self.http_limits.idle_timeout),
            ("http_header_timeout", self.http_limits.header_timeout),
        ] {
            if value.is_zero() {
                problems.push(format!("{key} must be longer than 0"));
            }
        }
        if self.region.is_empty() || !self.region.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            problems.push(format!("region {:?} must be letters, digits and dashes", self.region));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_and_defaults_fill_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("berth.toml");
        std::fs::write(&file, "http_addr = \"127.0.0.1:9000\"\nstomp_addr = \"127.0.0.1:9001\"\n").unwrap();
        let args = ServeArgs { config: Some(file), stomp_addr: Some("127.0.0.1:0".into()), ..ServeArgs::default() };
        let config = Config::load(args).unwrap();
        assert_eq!(config.http_addr, "127.0.0.1:9000");
        assert_eq!(config.stomp_addr, "127.0.0.1:0");
        assert_eq!(config.data_dir, PathBuf::from("./berth-data"));
        assert_eq!(config.shutdown_grace, Duration::from_secs(10));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let args = ServeArgs {
            http_addr: Some("nowhere".into()),
            public_url: Some("ftp://x".into()),
            shutdown_grace: Some("soon".into()),
            ..ServeArgs::default()
        };
        let message = Config::load(args).unwrap_err().to_string();
        for key in ["http_addr", "public_url", "shutdown_grace"] {
            assert!(message.contains(key), "{message}");
        }
    }

    #[test]
    fn a_false_flag_overrides_insecure_mode_set_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("berth.toml");
        std::fs::write(&file, "insecure_no_auth = true\n").unwrap();
        let args = ServeArgs { config: Some(file.clone()), ..ServeArgs::default() };
        assert!(Config::load(args).unwrap().insecure_no_auth);
        let args = ServeArgs { config: Some(file), insecure_no_auth: Some(false), ..ServeArgs::default() };
        assert!(!Config::load(args).unwrap().insecure_no_auth);
    }

    #[test]
    fn tls_certificate_without_key_is_a_problem() {
        let args = ServeArgs { stomp_tls_cert: Some("c.pem".into()), ..ServeArgs::default() };
        assert!(Config::load(args).unwrap_err().to_string().contains("stomp_tls_cert and stomp_tls_key"));
    }

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(bytes("0"), Some(0));
        assert_eq!(bytes("512KiB"), Some(512 << 10));
        assert_eq!(bytes("64 MiB"), Some(64 << 20));
        assert_eq!(bytes("2GiB"), Some(2 << 30));
        for bad in ["", "MiB", "1.5GiB", "10MB", "-1"] {
            assert_eq!(bytes(bad), None, "{bad}");
        }
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("berth.toml");
        std::fs::write(&file, "http_adr = \"127.0.0.1:9000\"\n").unwrap();
        let err = Config::load(ServeArgs { config: Some(file), ..ServeArgs::default() }).unwrap_err();
        assert!(format!("{err:#}").contains("http_adr"), "{err:#}");
    }
}
