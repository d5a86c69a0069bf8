//! Storage backends behind [`berth_core::store::Store`].
//!
//! # Layout
//! - [`sqlite`]: the embedded default. One writer thread commits many requests per
//!   transaction (group commit); readers use their own connections (WAL).

pub mod sqlite;

pub use sqlite::SqliteStore;
