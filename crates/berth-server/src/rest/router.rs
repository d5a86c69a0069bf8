//! The one route table. Paths are the SDK's (`/20210201/...`); handlers carry OCI's names.

use std::any::Any;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::extract::{Request, State};
use axum::middleware::{from_fn, from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;

use super::consumer_groups::*;
use super::control_plane::*;
use super::data_plane::*;
use super::error::ApiError;
use super::request_id;
use crate::app::AppState;
use crate::auth::{authenticate, MAX_BODY_BYTES};

/// Longest a request may take; above the 30 s long-poll maximum, so requests don't hang forever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(45);
/// Most header lines of a request; an SDK sends about a dozen.
pub const MAX_HEADERS: usize = 100;
/// Longest request target (path and query); a receipt in a path is under 300 bytes.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// The HTTP application.
pub fn router(state: AppState) -> Router {
    let q = "/20210201/queues/{queue_id}";
    let api = Router::new()
        .route("/20210201/queues", get(list_queues).post(create_queue))
        .route(q, get(get_queue).put(update_queue).delete(delete_queue))
        .route(&format!("{q}/actions/changeCompartment"), post(change_queue_compartment))
        .route(&format!("{q}/actions/purge"), post(purge_queue))
        .route(&format!("{q}/actions/redrive"), post(redrive))
        .route(&format!("{q}/messages"), get(get_messages).post(put_messages))
        .route(&format!("{q}/messages/actions/updateMessages"), post(update_messages))
        .route(&format!("{q}/messages/actions/deleteMessages"), post(delete_messages))
        .route(&format!("{q}/messages/{{receipt}}"), put(update_message).delete(delete_message))
        .route(&format!("{q}/stats"), get(get_stats))
        .route(&format!("{q}/channels"), get(list_channels))
        .route(&format!("{q}/peek"), get(peek))
        .route("/20210201/consumerGroups", get(list_consumer_groups).post(create_consumer_group))
        .route(
            "/20210201/consumerGroups/{id}",
            get(get_consumer_group).put(update_consumer_group).delete(delete_consumer_group),
        )
        .route("/20210201/workRequests", get(list_work_requests))
        .route("/20210201/workRequests/{id}", get(get_work_request))
        .route("/20210201/workRequests/{id}/errors", get(list_work_request_errors))
        .route("/20210201/workRequests/{id}/logs", get(list_work_request_logs))
        .route_layer(from_fn_with_state(state.clone(), authenticate))
        .route_layer(from_fn_with_state(state.metrics.clone(), crate::metrics::record));
    let mut app = Router::new().route("/health", get(health));
    if state.metrics_on_http {
        app = app.route("/metrics", get(metrics));
    }
    if state.console_on {
        app = app.merge(crate::console::router());
    }
    app.merge(api)
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(from_fn(time_limit))
        .layer(from_fn(head_limits))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(from_fn(request_id::assign))
        .with_state(state)
}

/// `ok`, or 503 in OCI's shape when the store cannot write (unauthenticated, for probes:
/// the reason is logged, not sent).
async fn health(State(app): State<AppState>) -> Result<&'static str, ApiError> {
    app.engine.health().await.inspect_err(|e| tracing::error!(error = %e, "unhealthy: the store cannot write"))?;
    Ok("ok")
}

/// Prometheus metrics (unauthenticated, like `/health`; `--metrics` moves or hides them).
pub async fn metrics(State(app): State<AppState>) -> Result<Response, ApiError> {
    let text = app.metrics.render(&app.engine).await?;
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    Ok(([(axum::http::header::CONTENT_TYPE, content_type)], text).into_response())
}

/// A panic becomes a logged 500 in OCI's shape; the process keeps serving.
fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = detail, "handler panicked");
    ApiError::Panic.into_response()
}

/// Refuses oversized request heads in OCI's shape (hyper's own limits are set above these).
async fn head_limits(request: Request, next: Next) -> Response {
    // Origin-form targets, the only ones routed: the path and query are the target.
    if request.uri().path_and_query().map_or(0, |target| target.as_str().len()) > MAX_URI_BYTES {
        return ApiError::UriTooLong.into_response();
    }
    if request.headers().len() > MAX_HEADERS {
        return ApiError::TooManyHeaders.into_response();
    }
    next.run(request).await
}

/// Ends a request that runs past [`REQUEST_TIMEOUT`] with OCI's error shape.
async fn time_limit(request: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout.into_response(),
    }
}
