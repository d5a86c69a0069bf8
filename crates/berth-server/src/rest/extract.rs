//! Extractors whose rejections take OCI's error shape.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Parses a JSON body: malformed → `CannotParseRequest`, a missing field → `MissingParameter`,
/// a wrong type or value → `InvalidParameter`.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        use serde_json::error::Category;
        let text = e.to_string();
        match e.classify() {
            Category::Data if text.starts_with("missing field") => ApiError::missing(text),
            Category::Data => ApiError::invalid(text),
            Category::Syntax | Category::Eof | Category::Io => ApiError::CannotParse(text),
        }
    })
}

/// Why a body could not be read: past the size limit, or malformed or cut short.
pub fn body_error(error: &(dyn std::error::Error + 'static)) -> ApiError {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.is::<http_body_util::LengthLimitError>() {
            return ApiError::BodyTooLarge;
        }
        cause = e.source();
    }
    ApiError::BodyUnreadable
}

/// A JSON body in OCI's error shape.
pub struct OciJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OciJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let body = Bytes::from_request(req, state).await.map_err(|e| body_error(&e))?;
        parse_json(&body).map(OciJson)
    }
}

/// A JSON body that may be absent, read as `{}`: the OCI TypeScript SDK sends no body for
/// a request whose details serialise to `{}` (UpdateQueue with nothing to change).
pub struct OciJsonOrEmpty<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OciJsonOrEmpty<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let body = Bytes::from_request(req, state).await.map_err(|e| body_error(&e))?;
        let body: &[u8] = if body.trim_ascii().is_empty() { b"{}" } else { &body };
        parse_json(body).map(OciJsonOrEmpty)
    }
}

/// Query parameters in OCI's error shape.
pub struct OciQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for OciQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| OciQuery(q))
            .map_err(|e| ApiError::invalid(format!("invalid query parameter: {}", e.body_text())))
    }
}

/// Path parameters in OCI's error shape.
pub struct OciPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for OciPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(p)| OciPath(p))
            .map_err(|e| ApiError::invalid(format!("invalid path parameter: {}", e.body_text())))
    }
}
