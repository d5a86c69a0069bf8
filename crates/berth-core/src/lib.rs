//! Berth's queue semantics, free of sockets, SQL and wire formats.
//!
//! # Layout
//! - [`clock`]: the only source of time (`SystemClock`, `ManualClock` for tests).
//! - [`model`]: queues, messages, work requests and the values that describe them.
//! - [`consumer_group`]: consumer groups and how a put fans out to them ([`filter`] their filters).
//! - [`limits`]: OCI Queue limits and the validation of every client-supplied value.
//! - [`delivery`]: what happens to a message when its lease ends (redeliver or dead-letter).
//! - [`receipt`]: HMAC receipts bound to one lease of one message of one queue.
//! - [`store`]: the `Store` trait (the port the storage backends implement).
//! - [`engine`]: [`engine::Engine`] applies the rules around store calls, including long polling.
//! - [`error`]: `QueueError` (what a client did wrong or what is missing) and `StoreError`.

#![warn(missing_docs)]

pub mod clock;
pub mod consumer_group;
pub mod delivery;
pub mod engine;
pub mod error;
pub mod filter;
pub mod limits;
pub mod model;
pub mod ocid;
pub mod receipt;
pub mod store;
mod wakeup;

pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use engine::Engine;
pub use error::{QueueError, StoreError};
