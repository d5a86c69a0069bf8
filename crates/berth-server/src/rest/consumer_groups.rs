//! Consumer group handlers. Mutations answer 202 with `opc-work-request-id` and no body,
//! as OCI does; GetConsumerGroup carries an `etag`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use berth_core::consumer_group::{ConsumerGroupDetails, ConsumerGroupFilter};
use berth_core::engine::ConsumerGroupChange;
use serde::Deserialize;

use super::control_plane::{accepted, header, lifecycle_state, retry_token, sorting};
use super::data_plane::next_page_header;
use super::dto::{Collection, ConsumerGroupBody, CreateConsumerGroupDetails, UpdateConsumerGroupDetails};
use super::error::ApiError;
use super::extract::{parse_json, OciJsonOrEmpty, OciPath, OciQuery};
use crate::app::AppState;
use crate::auth::Principal;

type ApiResult<T> = Result<T, ApiError>;

pub async fn create_consumer_group(
    State(app): State<AppState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let details: CreateConsumerGroupDetails = parse_json(&body)?;
    let queue_id = details.queue_id.ok_or_else(|| ApiError::missing("queueId is required"))?;
    let display_name = details.display_name.ok_or_else(|| ApiError::missing("displayName is required"))?;
    let details = ConsumerGroupDetails {
        display_name: Some(display_name),
        filter: details.filter,
        enabled: details.is_enabled,
        dead_letter_after: details.dead_letter_queue_delivery_count,
        freeform_tags: details.freeform_tags.unwrap_or_default(),
        defined_tags: details.defined_tags.unwrap_or_default(),
    };
    let retry = retry_token(&headers, &body);
    let work = app.engine.create_consumer_group(&who.tenancy_id, &queue_id, details, retry).await?;
    accepted(work)
}

pub async fn get_consumer_group(
    State(app): State<AppState>,
    Extension(who): Extension<Principal>,
    OciPath(id): OciPath<String>,
) -> ApiResult<impl IntoResponse> {
    let group = app.engine.get_consumer_group(&who.tenancy_id, &id).await?;
    let mut headers = HeaderMap::new();
    headers.insert("etag", HeaderValue::from(group.version));
    Ok((headers, Json(ConsumerGroupBody::new(group, false))))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListConsumerGroupsQuery {
    queue_id: Option<String>,
    lifecycle_state: Option<String>,
    display_name: Option<String>,
    id: Option<String>,
    limit: Option<i64>,
    page: Option<String>,
    sort_order: Option<String>,
    sort_by: Option<String>,
}

pub async fn list_consumer_groups(
    State(app): State<AppState>,
    Extension(who): Extension<Principal>,
    OciQuery(q): OciQuery<ListConsumerGroupsQuery>,
) -> ApiResult<impl IntoResponse> {
    let (by_display_name, descending) = sorting(q.sort_by.as_deref(), q.sort_order.as_deref())?;
    let filter = ConsumerGroupFilter {
        queue_id: q.queue_id,
        id: q.id,
        display_name: q.display_name,
        state: lifecycle_state(q.lifecycle_state)?,
        by_display_name,
        descending,
    };
    let page = app.engine.list_consumer_groups(&who.tenancy_id, &filter, q.page.as_deref(), q.limit).await?;
    let items: Vec<ConsumerGroupBody> = page.items.into_iter().map(|g| ConsumerGroupBody::new(g, true)).collect();
    Ok((next_page_header(page.next)?, Json(Collection { items })))
}

pub async fn update_consumer_group(
    State(app): State<AppState>,
    Extension(who): Extension<Principal>,
    OciPath(id): OciPath<String>,
    headers: HeaderMap,
    OciJsonOrEmpty(details): OciJsonOrEmpty<UpdateConsumerGroupDetails>,
) -> ApiResult<impl IntoResponse> {
    let change = ConsumerGroupChange {
        display_name: details.display_name,
        filter: details.filter,
        enabled: details.is_enabled,
        dead_letter_after: details.dead_letter_queue_delivery_count,
        freeform_tags: details.freeform_tags,
        defined_tags: details.defined_tags,
    };
    let work = app.engine.update_consumer_group(&who.tenancy_id, &id, header(&headers, "if-match"), change).await?;
    accepted(work)
}

pub async fn delete_consumer_group(
    State(app): State<AppState>,
    Extension(who): Extension<Principal>,
    OciPath(id): OciPath<String>,
    headers: HeaderMap,
) -> ApiResult<impl IntoResponse> {
    let work = app.engine.delete_consumer_group(&who.tenancy_id, &id, header(&headers, "if-match")).await?;
    accepted(work)
}
