//! `berth queue ...`: the admin CLI, a client of a running server's REST API, signed with
//! the data dir's admin credentials or an OCI config; `berth tenancy|user list` read the
//! store itself, like `berth credentials create`.

mod args;
mod queue;
mod table;
mod tenancy;

pub use args::{ClientArgs, QueueArgs, QueueCommand, TenancyCommand, UserCommand};
pub use queue::run as run_queue;
pub use tenancy::{list_tenancies, list_users};
