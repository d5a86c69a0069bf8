//! `opc-request-id` on every response: the client's id when it sent one, else a new one;
//! and on every log line written while the request is served (a `request` span).

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use rand::Rng;
use tracing::Instrument;

/// The request id of the current request, for handlers and logs.
#[derive(Debug, Clone)]
pub struct RequestId(pub HeaderValue);

/// Middleware: assigns the id and puts it on the response, errors and panics included.
pub async fn assign(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get("opc-request-id")
        .filter(|v| !v.is_empty() && v.len() <= 98)
        .cloned()
        .unwrap_or_else(new_id);
    request.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!(
        "request",
        id = %id.to_str().unwrap_or_default(),
        method = %request.method(),
        path = %request.uri().path()
    );
    let mut response = next.run(request).instrument(span).await;
    response.headers_mut().insert("opc-request-id", id);
    response
}

/// A new request id: 32 hex digits.
pub fn new_id() -> HeaderValue {
    let id: u128 = rand::thread_rng().gen();
    HeaderValue::from_str(&format!("{id:032X}")).expect("hex is a valid header value")
}
