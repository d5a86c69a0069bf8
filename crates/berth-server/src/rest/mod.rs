//! The OCI Queue REST API: routes, handlers, wire types and wire errors.

pub mod consumer_groups;
pub mod control_plane;
pub mod data_plane;
pub mod dto;
pub mod error;
pub mod extract;
pub mod request_id;
pub mod router;

pub use router::{metrics, router, MAX_HEADERS, MAX_URI_BYTES};
