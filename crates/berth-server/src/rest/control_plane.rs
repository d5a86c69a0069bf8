//! Control-plane handlers: queues and work requests. Mutations answer 202 with
//! `opc-work-request-id` and no body, as OCI does.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use berth_core::consumer_group::ConsumerGroupDetails;
use berth_core::engine::{spec_with_defaults, PolicyValues, QueueChange};
use berth_core::model::{LifecycleState, PurgeTarget, QueueFilter, QueueSort, WorkRequest};
use serde::Deserialize;

use super::data_plane::next_page_header;
use super::dto::{
    Capability, ChangeCompartmentDetails, Collection, CreateQueueDetails, PurgeQueueDetails, QueueBody, QueueSummary,
    UpdateQueueDetails, WorkErrorBody, WorkLogBody, WorkRequestBody,
};
use super::error::ApiError;
use super::extract::{parse_json, OciJson, OciJsonOrEmpty, OciPath, OciQuery};
use crate::app::AppState;
use crate::auth::Principal;

type ApiResult<T> = Result<T, ApiError>;

/// 202 with the work request id.
pub(super) fn accepted(work: WorkRequest) -> ApiResult<(StatusCode, HeaderMap)> {
    let mut headers = HeaderMap::new();
    let id = HeaderValue::from_str(&work.id).map_err(|_| ApiError::invalid("bad work request id"))?;
    headers.insert("opc-work-request-id", id);
    Ok((StatusCode::ACCEPTED, headers))
}

pub(super) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The capability names, and the primary group's settings where CONSUMER_GROUPS is given.
fn capabilities(capabilities: Option<Vec<Capability>>) -> (Option<Vec<String>>, Option<ConsumerGroupDetails>) {
    let Some(list) = capabilities else { return (None, None) };
    let primary = list.iter().find_map(Capability::primary_consumer_group);
    (Some(list.into_iter().map(|c| c.kind).collect()), primary)
}

/// An `opc-retry-token` and the digest of its request's body: a retry of the same request
/// carries the same body, so the digest tells a retry from a reuse.
pub(super) fn retry_token(headers: &HeaderMap, body: &[u8]) -> Option<(String, String)> {
    header(headers, "opc-retry-token").map(|token| {
        let digest = ring::digest::digest(&ring::digest::SHA256, body);
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        (token.to_owned(), hex)
    })
}

pub async fn create_queue(
    State(app): State<AppState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let details: CreateQueueDetails = parse_json(&body)?;
    let display_name = details.display_name.ok_or_else(|| ApiError::missing("displayName is required"))?;
    let compartment_id = details.compartment_id.ok_or_else(|| ApiError::missing("compartmentId is required"))?;
    let values = PolicyValues {
        retention: details.retention_in_seconds,
        visibility: details.visibility_in_seconds,
        timeout: details.timeout_in_seconds,
        dead_letter_after: details.dead_letter_queue_delivery_count,
        delivery_delay: details.delivery_delay_in_seconds,
        channel_consumption_limit: details.channel_consumption_limit,
    };
    let mut spec = spec_with_defaults(display_name, compartment_id, values)?;
    spec.custom_encryption_key_id = details.custom_encryption_key_id.filter(|k| !k.is_empty());
    let (names, primary) = capabilities(details.capabilities);
    spec.capabilities = names.unwrap_or_default();
    spec.primary_consumer_group = primary;
    spec.freeform_tags = details.freeform_tags.unwrap_or_default();
    spec.defined_tags = details.defined_tags.unwrap_or_default();
    let work = app.engine.create_queue(&who.tenancy_id, spec, retry_token(&headers, &body)).await?;
    accepted(work)
}

pub async fn get_queue(
    State(app): State<AppState>,
    Extension(who): Extension<Principal>,
    OciPath(queue_id): OciPath<String>,
) -> ApiResult<impl IntoResponse> {
    let queue = app.engine.get_queue(&who.tenancy_id, &queue_id).await?;
    let mut headers = HeaderMap::new();
    headers.insert("etag", HeaderValue::from(queue.version));
    Ok((headers, Json(QueueBody::new(queue, &app.public_url))))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListQueuesQuery {
    compartment_id: Option<String>,
    lifecycle_state: Option<String>,
    display_name: Option<String>,
    id: Option<String>,
    limit: Option<i64>,
    page: Option<String>,
    sort_order: Option<String>,
    sort_by: Option<String>,
}

pub async fn list_queues(
    State(app): State<AppState>,
    Extension(who): Extension<Principal>,
    OciQuery(q): OciQuery<ListQueuesQuery>,
) -> ApiResult<impl IntoResponse> {
    let (by_display_name, descending) = sorting(q.sort_by.as_deref(), q.sort_order.as_deref())?;
    let sort = if by_display_name { QueueSort::DisplayName } else { QueueSort::TimeCreated };
    let state = lifecycle_state(q.lifecycle_state)?;
    let filter = QueueFilter {
        compartment_id: q.compartment_id,
        state,
        display_name: q.display_name,
        id: q.id,
        sort,
        descending,
    };
    let page = app.engine.list_queues(&who.tenancy_id, &filter, q.page.as_deref(), q.limit).await?;
    let items = page.items.into_iter().map(|queue| QueueSummary::new(queue, &app.public_url)).collect();
    Ok((next_page_header(page.next)?, Json(Collection { items })))
}

/// `sortBy` and `sortOrder` of a list: whether by display name, and whether descending
/// (by default, newest first and names A to Z).
pub(super) fn sorting(sort_by: Option<&str>, sort_order: Option<&str>) -> ApiResult<(bool, bool)> {
    let by_display_name = match sort_by {
        None | Some("timeCreated") => false,
        Some("displayName") => true,
        Some(other) => {
            return Err(ApiError::invalid(format!("sortBy must be timeCreated or displayName, got {other:?}")))
        }
    };
    let descending = match sort_order.map(str::to_ascii_uppercase).as_deref() {
        None => !by_display_name,
        Some("ASC") => false,
        Some("DESC") => true,
        Some(other) => return Err(ApiError::invalid(format!("sortOrder must be ASC or DESC, got {other:?}"))),
    };
    Ok((by_display_name, descending))
}

/// A `lifecycleState` filter.
pub(super) fn lifecycle_state(state: Option<String>) -> ApiResult<Option<LifecycleState>> {
    state
        .map(|s| LifecycleState::parse(&s).ok_or_else(|| ApiError::invalid(format!("unknown lifecycleState {s:?}"))))
        .transpose()
}

pub async fn update_queue(
    State(app): State<AppState>,
    Extension(who): Extension<Principal>,
    OciPath(queue_id): OciPath<String>,
    headers: HeaderMap,
    OciJsonOrEmpty(details): OciJsonOrEmpty<UpdateQueueDetails>,
) -> ApiResult<impl IntoResponse> {
    if details.retention_in_seconds.is_some() {
        return Err(ApiError::invalid("retentionInSeconds cannot be changed after a queue is created"));
    }
    let (names, primary) = capabilities(details.capabilities);
    let change = QueueChange {
        display_name: details.display_name,
        visibility_secs: details.visibility_in_seconds,
        timeout_secs: details.timeout_in_seconds,
        dead_letter_after: details.dead_letter_queue_delivery_count,
        delivery_delay_secs: details.delivery_delay_in_seconds,
        channel_consumption_limit: details.channel_consumption_limit,
        custom_encryption_key_id: details.custom_encryption_key_id,
        capabilities: names,
        primary_consumer_group: primary,
        freeform_tags: details.freeform_tags,
        defined_tags: details.defined_tags,
    };
    let work = app.engine.update_queue(&who.tenancy_id, &queue_id, header(&headers, "if-match"), change).await?;
    accepted(work)
}

pub async fn delete_queue(
    State(app): State<AppState>,
    Extension(who): Extension<Principal>,
    OciPath(queue_id): OciPath<String>,
    headers: HeaderMap,
) -> ApiResult<impl IntoResponse> {
    let work = app.engine.delete_queue(&who.tenancy_id, &queue_id, header(&headers, "if-match")).await?;
    accepted(work)
}

pub async fn change_queue_compartment(
    State(app): State<AppState>,
    Extension(who): Extension<Principal>,
    OciPath(queue_id): OciPath<String>,
    headers: HeaderMap,
    OciJson(details): OciJson<ChangeCompartmentDetails>,
) -> ApiResult<impl IntoResponse> {
    let compartment = details.compartment_id.ok_or_else(|| ApiError::missing("compartmentId is required"))?;
    let work =
        app.engine.change_compartment(&who.tenancy_id, &queue_id, header(&headers, "if-match"), compartment).await?;
    accepted(work)
}

pub async fn purge_queue(
    State(app): State<AppState>,
    Extension(who): Extension<Principal>,
    OciPath(queue_id): OciPath<String>,
    headers: HeaderMap,
    OciJson(details): OciJson<PurgeQueueDetails>,
) -> ApiResult<impl IntoResponse> {
    let target = match details.purge_type.as_deref().map(str::to_ascii_uppercase).as_deref() {
        Some("NORMAL") => PurgeTarget::Normal,
        Some("DLQ") => PurgeTarget::DeadLetter,
        Some("BOTH") => PurgeTarget::Both,
        Some(other) => return Err(ApiError::invalid(format!("purgeType must be NORMAL, DLQ or BOTH, got {other:?}"))),
        None => return Err(ApiError::missing("purgeType is required")),
    };
    let if_match = header(&headers, "if-match");
    let group = details.consumer_group_id.as_deref();
    let work = app.engine.purge_queue(&who.tenancy_id, &queue_id, if_match, target, details.channel_ids, group).await?;
    accepted(work)
}

pub async fn get_work_request(
    State(app): State<AppState>,
    Extension(who): Extension<Principal>,
    OciPath(id): OciPath<String>,
) -> ApiResult<Json<WorkRequestBody>> {
    Ok(Json(app.engine.get_work_request(&who.tenancy_id, &id).await?.into()))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListWorkRequestsQuery {
    compartment_id: Option<String>,
    work_request_id: Option<String>,
    page: Option<String>,
    limit: Option<i64>,
}

pub async fn list_work_requests(
    State(app): State<AppState>,
    Extension(who): Extension<Principal>,
    OciQuery(q): OciQuery<ListWorkRequestsQuery>,
) -> ApiResult<impl IntoResponse> {
    let page = app
        .engine
        .list_work_requests(
            &who.tenancy_id,
            q.compartment_id.as_deref(),
            q.work_request_id.as_deref(),
            q.page.as_deref(),
            q.limit,
        )
        .await?;
    let items: Vec<WorkRequestBody> = page.items.into_iter().map(Into::into).collect();
    Ok((next_page_header(page.next)?, Json(Collection { items })))
}

#[derive(Deserialize)]
pub struct PageQuery {
    page: Option<String>,
    limit: Option<i64>,
}

/// Pages a work request's errors or logs (they are few, kept in the work request).
async fn work_entries<T: serde::Serialize>(
    app: &AppState,
    who: &Principal,
    id: &str,
    q: PageQuery,
    pick: impl Fn(WorkRequest) -> Vec<T>,
) -> ApiResult<impl IntoResponse> {
    let work = app.engine.get_work_request(&who.tenancy_id, id).await?;
    let all = pick(work);
    let (offset, limit) = berth_core::engine::page_window(q.page.as_deref(), q.limit)?;
    let items: Vec<T> = all.into_iter().skip(offset as usize).take(limit as usize + 1).collect();
    let page = berth_core::engine::paged(items, offset, limit);
    Ok((next_page_header(page.next)?, Json(Collection { items: page.items })))
}

pub async fn list_work_request_errors(
    State(app): State<AppState>,
    Extension(who): Extension<Principal>,
    OciPath(id): OciPath<String>,
    OciQuery(q): OciQuery<PageQuery>,
) -> ApiResult<impl IntoResponse> {
    work_entries(&app, &who, &id, q, |w| w.errors.into_iter().map(WorkErrorBody::from).collect()).await
}

pub async fn list_work_request_logs(
    State(app): State<AppState>,
    Extension(who): Extension<Principal>,
    OciPath(id): OciPath<String>,
    OciQuery(q): OciQuery<PageQuery>,
) -> ApiResult<impl IntoResponse> {
    work_entries(&app, &who, &id, q, |w| w.logs.into_iter().map(WorkLogBody::from).collect()).await
}
