//! Wire errors of the REST API: every failure becomes OCI's `{"code","message"}` body with
//! the right status, mapped here once. Internal details are logged, never sent.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_core::error::{QueueError, StoreError};

/// An error answered to a REST client.
#[derive(Debug)]
pub enum ApiError {
    /// From the engine.
    Queue(QueueError),
    /// The body is not JSON.
    CannotParse(String),
    /// The request was not signed correctly.
    NotAuthenticated,
    /// No such operation.
    NoRoute,
    /// No such method for this path.
    MethodNotAllowed,
    /// The body is larger than any valid request.
    BodyTooLarge,
    /// The body could not be read (a malformed chunked encoding, a connection cut midway).
    BodyUnreadable,
    /// The request target is longer than any valid request's.
    UriTooLong,
    /// The request's headers are too many or too large.
    TooManyHeaders,
    /// The request is not HTTP/1.1 that parses (answered for hyper).
    MalformedHttp,
    /// The request ran past the server's time limit.
    Timeout,
    /// A handler panicked.
    Panic,
}

impl From<QueueError> for ApiError {
    fn from(error: QueueError) -> Self {
        ApiError::Queue(error)
    }
}

impl ApiError {
    /// Shorthand for an invalid parameter.
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::Queue(QueueError::InvalidParameter(message.into()))
    }

    /// Shorthand for a missing parameter.
    pub fn missing(message: impl Into<String>) -> Self {
        ApiError::Queue(QueueError::MissingParameter(message.into()))
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Queue(e) => match e {
                QueueError::QueueNotFound
                | QueueError::ConsumerGroupNotFound
                | QueueError::WorkRequestNotFound
                | QueueError::ReceiptInvalid => StatusCode::NOT_FOUND,
                QueueError::InvalidParameter(_) | QueueError::MissingParameter(_) | QueueError::LimitExceeded(_) => {
                    StatusCode::BAD_REQUEST
                }
                QueueError::EtagMismatch => StatusCode::PRECONDITION_FAILED,
                QueueError::RetryTokenReused => StatusCode::CONFLICT,
                QueueError::Store(StoreError::Unavailable(_) | StoreError::Full(_)) => StatusCode::SERVICE_UNAVAILABLE,
                QueueError::Store(StoreError::Backend(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::CannotParse(_) => StatusCode::BAD_REQUEST,
            ApiError::NotAuthenticated => StatusCode::UNAUTHORIZED,
            ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyUnreadable => StatusCode::BAD_REQUEST,
            ApiError::UriTooLong => StatusCode::URI_TOO_LONG,
            ApiError::TooManyHeaders => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::MalformedHttp => StatusCode::BAD_REQUEST,
            ApiError::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Panic => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// OCI's error code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Queue(e) => match e {
                QueueError::QueueNotFound
                | QueueError::ConsumerGroupNotFound
                | QueueError::WorkRequestNotFound
                | QueueError::ReceiptInvalid => "NotAuthorizedOrNotFound",
                QueueError::InvalidParameter(_) => "InvalidParameter",
                QueueError::MissingParameter(_) => "MissingParameter",
                QueueError::LimitExceeded(_) => "LimitExceeded",
                QueueError::EtagMismatch => "NoEtagMatch",
                QueueError::RetryTokenReused => "InvalidatedRetryToken",
                QueueError::Store(StoreError::Unavailable(_) | StoreError::Full(_)) => "ServiceUnavailable",
                QueueError::Store(StoreError::Backend(_)) => "InternalServerError",
            },
            ApiError::CannotParse(_) => "CannotParseRequest",
            ApiError::NotAuthenticated => "NotAuthenticated",
            ApiError::NoRoute => "NotFound",
            ApiError::MethodNotAllowed => "MethodNotAllowed",
            ApiError::BodyTooLarge => "RequestEntityTooLarge",
            ApiError::BodyUnreadable => "CannotParseRequest",
            ApiError::UriTooLong => "UriTooLong",
            ApiError::TooManyHeaders => "RequestHeaderFieldsTooLarge",
            ApiError::MalformedHttp => "CannotParseRequest",
            ApiError::Timeout => "ServiceUnavailable",
            ApiError::Panic => "InternalServerError",
        }
    }

    /// OCI's error body, `{"code", "message"}`.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "code": self.code(), "message": self.message() })
    }

    /// The text the client sees; server faults say nothing about internals.
    pub fn message(&self) -> String {
        match self {
            ApiError::Queue(QueueError::Store(StoreError::Full(_))) => {
                "The server is out of storage space: new messages are refused until space is freed; \
                 getting and deleting messages still work. Retry later."
                    .into()
            }
            ApiError::Queue(QueueError::Store(_)) | ApiError::Panic => {
                "The service could not complete the request; it has been logged.".into()
            }
            ApiError::Queue(e) => e.to_string(),
            ApiError::CannotParse(detail) => format!("The request body is not valid JSON: {detail}"),
            ApiError::NotAuthenticated => {
                "The required information to complete authentication was not provided or was incorrect.".into()
            }
            ApiError::NoRoute => "There is no operation for this path.".into(),
            ApiError::MethodNotAllowed => "This path does not support the method.".into(),
            ApiError::BodyTooLarge => "The request body is larger than any valid request.".into(),
            ApiError::BodyUnreadable => "The request body could not be read (malformed or cut short).".into(),
            ApiError::UriTooLong => {
                format!("The request target is longer than {} bytes.", super::MAX_URI_BYTES)
            }
            ApiError::TooManyHeaders => "The request's headers are too many or too large.".into(),
            ApiError::MalformedHttp => {
                "The request is not valid HTTP/1.1: its request line, a header or its framing does not parse.".into()
            }
            ApiError::Timeout => "The request took longer than the server allows; retry it.".into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), error = ?self, "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), code = self.code(), message = %self.message(), "request refused");
        }
        (status, Json(self.body())).into_response()
    }
}
