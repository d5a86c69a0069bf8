//! The admin CLI's flags.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use crate::config::StoreArgs;

/// How to reach the server and whose credentials to sign with.
#[derive(Args, Debug)]
pub struct ClientArgs {
    /// Data dir of the server: its admin credentials (`credentials/admin.json`) sign.
    #[arg(long, env = "BERTH_DATA_DIR", default_value = "./berth-data", global = true)]
    pub data_dir: PathBuf,
    /// Sign with this OCI config file instead (as the SDKs and the `oci` CLI do).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// The profile of `--config`.
    #[arg(long, default_value = "DEFAULT", global = true)]
    pub profile: String,
    /// The server [default: the endpoint in the credentials, else http://127.0.0.1:8080].
    #[arg(long, env = "BERTH_ENDPOINT", global = true)]
    pub endpoint: Option<String>,
    /// The CA (PEM) that signed an https server's certificate.
    #[arg(long, global = true)]
    pub ca_file: Option<PathBuf>,
    /// Send unsigned requests (a server run with --insecure-no-auth).
    #[arg(long, global = true)]
    pub unsigned: bool,
    /// Print the server's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `berth queue ...`
#[derive(Args, Debug)]
pub struct QueueArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: QueueCommand,
}

/// What to do with queues. QUEUE is a queue's OCID or its display name.
#[derive(Subcommand, Debug)]
pub enum QueueCommand {
    /// List the queues of a compartment.
    List {
        /// The compartment [default: the tenancy].
        #[arg(long)]
        compartment_id: Option<String>,
    },
    /// Create a queue and wait until it is active.
    Create {
        /// Its display name.
        name: String,
        /// The compartment [default: the tenancy].
        #[arg(long)]
        compartment_id: Option<String>,
        /// Seconds a message is kept (retentionInSeconds).
        #[arg(long)]
        retention: Option<u32>,
        /// Default lease of a get, in seconds (visibilityInSeconds).
        #[arg(long)]
        visibility: Option<u32>,
        /// Default long-poll wait, in seconds (timeoutInSeconds).
        #[arg(long)]
        timeout: Option<u32>,
        /// Deliveries before a message goes to the DLQ; 0: no DLQ (deadLetterQueueDeliveryCount).
        #[arg(long)]
        dead_letter_after: Option<u32>,
        /// Default delay of new messages, in seconds (deliveryDelayInSeconds).
        #[arg(long)]
        delivery_delay: Option<u32>,
    },
    /// Show a queue's settings.
    Get { queue: String },
    /// Message counts of the queue and its DLQ.
    Stats {
        queue: String,
        /// Only this channel.
        #[arg(long)]
        channel: Option<String>,
        /// Of this consumer group (its OCID or display name) [default: the primary group].
        #[arg(long)]
        consumer_group: Option<String>,
    },
    /// List messages with their bodies without leasing them.
    Peek {
        queue: String,
        /// The dead letter queue instead.
        #[arg(long)]
        dlq: bool,
        /// Only this channel.
        #[arg(long)]
        channel: Option<String>,
        /// Leased messages too.
        #[arg(long)]
        in_flight: bool,
        /// Delayed messages too.
        #[arg(long)]
        delayed: bool,
        /// At most this many (1 to 100).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// The page the previous peek named.
        #[arg(long)]
        page: Option<String>,
        /// Of this consumer group (its OCID or display name) [default: the primary group].
        #[arg(long)]
        consumer_group: Option<String>,
    },
    /// Put messages (one per argument).
    Put {
        queue: String,
        /// The contents.
        #[arg(required = true)]
        messages: Vec<String>,
        /// Into this channel.
        #[arg(long)]
        channel: Option<String>,
        /// Seconds before they become visible.
        #[arg(long)]
        delay: Option<u32>,
    },
    /// Lease messages (GetMessages); with --delete, consume them.
    GetMessages {
        queue: String,
        /// At most this many.
        #[arg(long, default_value_t = 1)]
        limit: u32,
        /// Lease length in seconds [default: the queue's].
        #[arg(long)]
        visibility: Option<u32>,
        /// Seconds to wait for a message.
        #[arg(long, default_value_t = 0)]
        timeout: u32,
        /// From the dead letter queue.
        #[arg(long)]
        dlq: bool,
        /// Only this channel.
        #[arg(long)]
        channel: Option<String>,
        /// Delete what was got.
        #[arg(long)]
        delete: bool,
        /// Of this consumer group (its OCID or display name) [default: the primary group].
        #[arg(long)]
        consumer_group: Option<String>,
    },
    /// Delete messages of the queue, its DLQ or both, and wait until done.
    Purge {
        queue: String,
        #[arg(long, value_enum, default_value_t = PurgeType::Normal)]
        r#type: PurgeType,
        /// Of this consumer group (its OCID or display name), or `all` of them (a group
        /// named "all" by its OCID) [default: the primary group].
        #[arg(long)]
        consumer_group: Option<String>,
    },
    /// Move the DLQ's messages back to the queue.
    Redrive {
        queue: String,
        /// Only these channels.
        #[arg(long)]
        channel: Vec<String>,
        /// Of this consumer group (its OCID or display name) [default: the primary group].
        #[arg(long)]
        consumer_group: Option<String>,
    },
    /// Delete a queue and wait until it is deleted.
    Delete { queue: String },
    /// List a queue's consumer groups.
    Groups { queue: String },
}

/// What a purge deletes.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum PurgeType {
    Normal,
    Dlq,
    Both,
}

impl PurgeType {
    pub(crate) fn wire(self) -> &'static str {
        match self {
            PurgeType::Normal => "NORMAL",
            PurgeType::Dlq => "DLQ",
            PurgeType::Both => "BOTH",
        }
    }
}

/// `berth tenancy ...`
#[derive(Subcommand, Debug)]
pub enum TenancyCommand {
    /// List the tenancies of a store.
    List {
        #[arg(long, env = "BERTH_DATA_DIR", default_value = "./berth-data")]
        data_dir: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `berth user ...`
#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// List the users of a store's tenancies.
    List {
        #[arg(long, env = "BERTH_DATA_DIR", default_value = "./berth-data")]
        data_dir: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
        /// Only this tenancy (by name).
        #[arg(long)]
        tenancy: Option<String>,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
}
