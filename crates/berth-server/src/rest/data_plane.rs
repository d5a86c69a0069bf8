//! Data-plane handlers, named after the OCI operations. Each extracts, converts the DTO,
//! calls the engine and converts back; the rules live in the engine.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use berth_core::engine::{GetMessages, Peek, Target};
use berth_core::model::NewMessage;
use berth_core::QueueError;
use serde::Deserialize;

use super::dto::{
    time, BatchEntry, BatchResult, Collection, DeleteMessagesDetails, Empty, GetMessagesResponse, PeekResponse,
    PutMessage, PutMessages, PutMessagesDetails, RedriveDetails, Redriven, Stats, UpdateMessageDetails,
    UpdateMessagesDetails, UpdatedMessage,
};
use super::error::ApiError;
use super::extract::{parse_json, OciJson, OciPath, OciQuery};
use crate::app::AppState;
use crate::auth::Principal;

type ApiResult<T> = Result<T, ApiError>;

pub async fn put_messages(
    State(app): State<AppState>,
    Extension(who): Extension<Principal>,
    OciPath(queue_id): OciPath<String>,
    OciJson(body): OciJson<PutMessagesDetails>,
) -> ApiResult<Json<PutMessages>> {
    let messages = body
        .messages
        .into_iter()
        .map(|entry| {
            let (channel, properties) = match entry.metadata {
                Some(meta) => (meta.channel_id.unwrap_or_default(), meta.custom_properties),
                None => (String::new(), None),
            };
            let delay_secs = entry
                .delay_in_seconds
                .map(|d| {
                    u32::try_from(d)
                        .map_err(|_| ApiError::invalid(format!("delayInSeconds must not be negative, got {d}")))
                })
                .transpose()?;
            Ok(NewMessage { content: entry.content, channel, properties, delay_secs })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let put = app.engine.put_messages(&who.tenancy_id, &queue_id, messages).await?;
    let messages = put.into_iter().map(|p| PutMessage { id: p.id, expire_after: time(p.expire_at) }).collect();
    Ok(Json(PutMessages { messages }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetMessagesQuery {
    visibility_in_seconds: Option<i64>,
    timeout_in_seconds: Option<i64>,
    limit: Option<i64>,
    channel_filter: Option<String>,
    consumer_group_id: Option<String>,
    #[serde(default)]
    dead_letter_queue: bool,
}

/// The queue, or its consumer group when one is named.
fn target<'a>(queue_id: &'a str, consumer_group_id: &'a Option<String>) -> Target<'a> {
    Target { queue_id, consumer_group_id: consumer_group_id.as_deref() }
}

pub async fn get_messages(
    State(app): State<AppState>,
    Extension(who): Extension<Principal>,
    OciPath(queue_id): OciPath<String>,
    OciQuery(q): OciQuery<GetMessagesQuery>,
) -> ApiResult<Json<GetMessagesResponse>> {
    let params = GetMessages::new(
        q.visibility_in_seconds,
        q.timeout_in_seconds,
        q.limit,
        q.channel_filter,
        q.dead_letter_queue,
    )?;
    let delivered = app.engine.get_messages(&who.tenancy_id, target(&queue_id, &q.consumer_group_id), params).await?;
    Ok(Json(GetMessagesResponse { messages: delivered.into_iter().map(Into::into).collect() }))
}

/// Query of the receipt-based operations.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiptQuery {
    consumer_group_id: Option<String>,
    /// Accepted (and checked to be a boolean) for symmetry with GetMessages; the receipt
    /// itself names the side.
    #[serde(default, rename = "deadLetterQueue")]
    _dead_letter_queue: bool,
}

pub async fn update_message(
    State(app): State<AppState>,
    Extension(who): Extension<Principal>,
    OciPath((queue_id, receipt)): OciPath<(String, String)>,
    OciQuery(q): OciQuery<ReceiptQuery>,
    OciJson(body): OciJson<UpdateMessageDetails>,
) -> ApiResult<Json<UpdatedMessage>> {
    let mut results = app
        .engine
        .update_messages(
            &who.tenancy_id,
            target(&queue_id, &q.consumer_group_id),
            vec![(receipt, body.visibility_in_seconds)],
        )
        .await?;
    let (id, visible_after) = results.pop().ok_or(QueueError::ReceiptInvalid)??;
    Ok(Json(UpdatedMessage { id, visible_after: time(visible_after) }))
}

pub async fn update_messages(
    State(app): State<AppState>,
    Extension(who): Extension<Principal>,
    OciPath(queue_id): OciPath<String>,
    OciQuery(q): OciQuery<ReceiptQuery>,
    OciJson(body): OciJson<UpdateMessagesDetails>,
) -> ApiResult<Json<BatchResult<UpdatedMessage>>> {
    let entries = body.entries.into_iter().map(|e| (e.receipt, e.visibility_in_seconds)).collect();
    let results = app.engine.update_messages(&who.tenancy_id, target(&queue_id, &q.consumer_group_id), entries).await?;
    Ok(Json(batch(results, |(id, at)| UpdatedMessage { id, visible_after: time(at) })))
}

pub async fn delete_message(
    State(app): State<AppState>,
    Extension(who): Extension<Principal>,
    OciPath((queue_id, receipt)): OciPath<(String, String)>,
    OciQuery(q): OciQuery<ReceiptQuery>,
) -> ApiResult<StatusCode> {
    let mut results =
        app.engine.delete_messages(&who.tenancy_id, target(&queue_id, &q.consumer_group_id), vec![receipt]).await?;
    results.pop().ok_or(QueueError::ReceiptInvalid)??;
    Ok(StatusCode::OK)
}

pub async fn delete_messages(
    State(app): State<AppState>,
    Extension(who): Extension<Principal>,
    OciPath(queue_id): OciPath<String>,
    OciQuery(q): OciQuery<ReceiptQuery>,
    OciJson(body): OciJson<DeleteMessagesDetails>,
) -> ApiResult<Json<BatchResult<Empty>>> {
    let receipts = body.entries.into_iter().map(|e| e.receipt).collect();
    let results =
        app.engine.delete_messages(&who.tenancy_id, target(&queue_id, &q.consumer_group_id), receipts).await?;
    Ok(Json(batch(results, |()| Empty {})))
}

/// Builds a batch result: per-entry HTTP-style integer codes, failures counted by side.
fn batch<T, U: serde::Serialize>(results: Vec<Result<T, QueueError>>, ok: impl Fn(T) -> U) -> BatchResult<U> {
    let (mut server_failures, mut client_failures) = (0, 0);
    let entries = results
        .into_iter()
        .map(|result| match result {
            Ok(value) => BatchEntry::Ok(ok(value)),
            Err(error) => {
                let error = ApiError::Queue(error);
                let status = error.status();
                if status.is_server_error() {
                    server_failures += 1;
                } else {
                    client_failures += 1;
                }
                BatchEntry::Failed { error_code: status.as_u16(), error_message: error.message() }
            }
        })
        .collect();
    BatchResult { server_failures, client_failures, entries }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsQuery {
    channel_id: Option<String>,
    consumer_group_id: Option<String>,
}

pub async fn get_stats(
    State(app): State<AppState>,
    Extension(who): Extension<Principal>,
    OciPath(queue_id): OciPath<String>,
    OciQuery(q): OciQuery<StatsQuery>,
) -> ApiResult<Json<Stats>> {
    let stats =
        app.engine.stats(&who.tenancy_id, target(&queue_id, &q.consumer_group_id), q.channel_id.as_deref()).await?;
    Ok(Json(Stats::new(stats, q.channel_id, q.consumer_group_id)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListChannelsQuery {
    channel_filter: Option<String>,
    page: Option<String>,
    limit: Option<i64>,
    consumer_group_id: Option<String>,
}

pub async fn list_channels(
    State(app): State<AppState>,
    Extension(who): Extension<Principal>,
    OciPath(queue_id): OciPath<String>,
    OciQuery(q): OciQuery<ListChannelsQuery>,
) -> ApiResult<impl IntoResponse> {
    // The cursor is the last channel id of the page, base64url so any id fits in a header.
    let after = q
        .page
        .map(|page| {
            URL_SAFE_NO_PAD
                .decode(page)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| ApiError::invalid("page is not a cursor this server issued"))
        })
        .transpose()?;
    let page = app
        .engine
        .list_channels(
            &who.tenancy_id,
            target(&queue_id, &q.consumer_group_id),
            q.channel_filter.as_deref(),
            after.as_deref(),
            q.limit,
        )
        .await?;
    let next = page.next.map(|last| URL_SAFE_NO_PAD.encode(last));
    Ok((next_page_header(next)?, Json(Collection { items: page.items })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeekQuery {
    #[serde(default)]
    dead_letter_queue: bool,
    channel_id: Option<String>,
    #[serde(default)]
    include_in_flight: bool,
    #[serde(default)]
    include_delayed: bool,
    limit: Option<i64>,
    page: Option<String>,
    consumer_group_id: Option<String>,
}

/// Berth extension: `GET /queues/{id}/peek` lists messages without leasing them.
pub async fn peek(
    State(app): State<AppState>,
    Extension(who): Extension<Principal>,
    OciPath(queue_id): OciPath<String>,
    OciQuery(q): OciQuery<PeekQuery>,
) -> ApiResult<impl IntoResponse> {
    let peek = Peek {
        dead_letter: q.dead_letter_queue,
        channel: q.channel_id,
        in_flight: q.include_in_flight,
        delayed: q.include_delayed,
        limit: q.limit,
        page: q.page,
    };
    let page = app.engine.peek(&who.tenancy_id, target(&queue_id, &q.consumer_group_id), peek).await?;
    let messages = page.items.into_iter().map(Into::into).collect();
    Ok((next_page_header(page.next)?, Json(PeekResponse { messages })))
}

/// A consumer group named in the query.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupQuery {
    consumer_group_id: Option<String>,
}

/// Berth extension: `POST /queues/{id}/actions/redrive`, body optional.
pub async fn redrive(
    State(app): State<AppState>,
    Extension(who): Extension<Principal>,
    OciPath(queue_id): OciPath<String>,
    OciQuery(q): OciQuery<GroupQuery>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Redriven>> {
    let details: RedriveDetails =
        if body.iter().all(u8::is_ascii_whitespace) { RedriveDetails::default() } else { parse_json(&body)? };
    let moved =
        app.engine.redrive(&who.tenancy_id, target(&queue_id, &q.consumer_group_id), details.channel_ids).await?;
    Ok(Json(Redriven { messages_moved: moved }))
}

/// The `opc-next-page` header when there is a next page.
pub fn next_page_header(next: Option<String>) -> ApiResult<HeaderMap> {
    let mut headers = HeaderMap::new();
    if let Some(next) = next {
        let value = HeaderValue::from_str(&next).map_err(|_| ApiError::invalid("page cursor is not a valid header"))?;
        headers.insert("opc-next-page", value);
    }
    Ok(headers)
}
