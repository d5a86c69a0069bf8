//! Errors of the core: what the client got wrong, what does not exist, and storage faults.
//! Each protocol edge maps these to its wire errors in one exhaustive `match`.

/// An operation on queues or messages could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The queue does not exist or belongs to another tenancy (deliberately the same answer).
    #[error("queue not found or not authorized")]
    QueueNotFound,
    /// The consumer group does not exist, belongs to another tenancy or another queue.
    #[error("consumer group not found or not authorized")]
    ConsumerGroupNotFound,
    /// The work request does not exist or belongs to another tenancy.
    #[error("work request not found or not authorized")]
    WorkRequestNotFound,
    /// The receipt is malformed, forged, from another queue, or its lease has ended.
    #[error("receipt is not valid for a current lease of a message of this queue")]
    ReceiptInvalid,
    /// A value is out of range or badly formed.
    #[error("{0}")]
    InvalidParameter(String),
    /// A required value is absent.
    #[error("{0}")]
    MissingParameter(String),
    /// A per-queue or per-request quantity limit would be exceeded.
    #[error("{0}")]
    LimitExceeded(String),
    /// `if-match` named another version of the resource.
    #[error("the resource's etag does not match if-match")]
    EtagMismatch,
    /// An `opc-retry-token` was reused for a different request.
    #[error("the retry token was already used for a different request")]
    RetryTokenReused,
    /// The storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl QueueError {
    /// Shorthand for [`QueueError::InvalidParameter`].
    pub fn invalid(message: impl Into<String>) -> Self {
        QueueError::InvalidParameter(message.into())
    }
}

/// A storage backend failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached right now (retryable: 503).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The backend is out of space: writes that add data are refused until room is made
    /// (retryable: 503); reads, gets and deletes go on.
    #[error("storage full: {0}")]
    Full(String),
    /// The backend failed in a way retrying will not fix (500).
    #[error("storage failure: {0}")]
    Backend(String),
}
