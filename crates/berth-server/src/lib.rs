//! The `berth` server: OCI Queue REST API over the core engine.
//!
//! # Layout
//! - [`config`]: command line, TOML file and `BERTH_*` environment, merged and validated.
//! - [`admin`]: the admin CLI (`berth queue`, `berth tenancy`, `berth user`).
//! - [`app`]: wiring and the shutdown sequence.
//! - [`accept`]: accepting connections under a cap, for HTTP and STOMP; the open-files limit.
//! - [`http`]: the HTTP listener: connection cap, TLS, deadlines for request heads.
//! - [`auth`]: OCI request signatures → [`auth::Principal`].
//! - [`rest`]: routes, handlers (named after OCI operations), DTOs and the one error mapping.
//! - [`data_dir`]: the data dir and its database, paired by the store's id.
//! - [`credentials`]: API keys and STOMP passcodes, OCI config files.
//! - [`workers`]: bounded background sweeps.
//! - [`stomp`]: STOMP 1.0–1.2 over the same engine.
//! - [`console`]: the web console at `/console`, server-rendered over the same engine.
//! - [`tls`]: rustls server configuration for HTTPS and STOMP over TLS.

pub mod accept;
pub mod admin;
pub mod app;
pub mod auth;
pub mod config;
pub mod console;
pub mod credentials;
pub mod data_dir;
pub mod http;
pub mod login_throttle;
pub mod metrics;
pub mod rest;
pub mod stomp;
pub mod tls;
pub mod workers;
