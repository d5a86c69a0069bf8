//! Storage backends behind [`berth_core::store::Store`].
//!
//! # Layout
//! - [`sqlite`]: the embedded default. One writer thread commits many requests per
//!   transaction (group commit); readers use their own connections (WAL).
//! - [`postgres`]: several stateless nodes on one PostgreSQL database.

pub mod postgres;
pub mod sqlite;

pub use postgres::{DatabaseClock, PostgresOptions, PostgresStore};
pub use sqlite::SqliteStore;
