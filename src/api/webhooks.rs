//! /v1/webhooks: subscriptions to signed event deliveries, and their delivery records.

use axum::extract::State;
use axum::routing::{delete, get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Allowed;
use super::problem::{ApiResult, Json, Path, Query};
use super::{page, read_stale, write, AppState, RawPage};
use crate::domain::access::{AnyRole, WebhookOwner, WebhookOwnerOf};
use crate::domain::*;
use crate::events::webhooks::secret;
use crate::ops::webhooks::{self as ops, NewWebhook};
use crate::store::query::Page;
use crate::store::webhooks::{self, Delivery, Webhook};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/webhooks", post(create).get(list))
        .route("/v1/webhooks/{id}", delete(remove))
        .route("/v1/webhooks/{id}/deliveries", get(deliveries))
}

/// A new webhook with its signing secret: shown here once, never again.
#[derive(Serialize, ToSchema)]
pub struct CreatedWebhook {
    pub id: WebhookId,
    pub url: String,
    pub events: Vec<String>,
    pub created_at: Timestamp,
    /// Standard Webhooks secret (`whsec_…`): verify `webhook-signature` with it.
    pub secret: String,
}

#[utoipa::path(post, operation_id = "create_webhook", path = "/v1/webhooks", tag = "webhooks", request_body = NewWebhook, responses((status = 200, body = CreatedWebhook)))]
pub async fn create(
    State(state): State<AppState>,
    Allowed(caller): Allowed<WebhookOwner>,
    Json(req): Json<NewWebhook>,
) -> ApiResult<axum::Json<CreatedWebhook>> {
    let allow_private = state.allow_private_webhook_urls;
    let axum::Json(webhook) = write(&state, caller, move |tx| ops::create(tx, &caller, req, allow_private)).await?;
    let secret = secret(&state.env.webhook_master, webhook.id);
    Ok(axum::Json(CreatedWebhook {
        id: webhook.id,
        url: webhook.url,
        events: webhook.events,
        created_at: webhook.created_at,
        secret,
    }))
}

#[utoipa::path(get, operation_id = "list_webhooks", path = "/v1/webhooks", params(("limit" = Option<u16>, Query, minimum = 1, maximum = 1000, description = "Items per page, 1 to 1000 (default 100)."), ("cursor" = inline(Option<WebhookId>), Query, description = "`next_cursor` of the previous page.")), tag = "webhooks", responses((status = 200, body = Page<Webhook>)))]
pub async fn list(
    State(state): State<AppState>,
    Allowed(caller): Allowed<AnyRole>,
    Query(q): Query<RawPage>,
) -> ApiResult<axum::Json<Page<Webhook>>> {
    let page = page(&q.limit, &q.cursor, WebhookId::parse)?;
    let (role, owner) = caller.owner();
    read_stale(&state, move |conn| webhooks::list_webhooks(conn, role, &owner, &page)).await
}

#[utoipa::path(delete, operation_id = "delete_webhook", path = "/v1/webhooks/{id}", params(("id" = inline(WebhookId), Path, description = "webhook id")), tag = "webhooks", responses((status = 200, body = Webhook)))]
pub async fn remove(
    State(state): State<AppState>,
    Allowed(caller): Allowed<AnyRole>,
    Path(id): Path<WebhookId>,
) -> ApiResult<axum::Json<Webhook>> {
    write(&state, caller, move |tx| ops::delete(tx, &caller, id)).await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    /// Items per page, 1 to 1000 (default 100).
    #[param(value_type = Option<u16>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// `next_cursor` of the previous page (a seq).
    #[param(value_type = Option<i64>, minimum = 0)]
    cursor: Option<String>,
}

#[utoipa::path(get, operation_id = "list_webhook_deliveries", path = "/v1/webhooks/{id}/deliveries", params(("id" = inline(WebhookId), Path, description = "webhook id"), DeliveryQuery), tag = "webhooks", responses((status = 200, body = Page<Delivery>)))]
pub async fn deliveries(
    State(state): State<AppState>,
    Allowed(caller): Allowed<AnyRole>,
    Path(id): Path<WebhookId>,
    Query(q): Query<DeliveryQuery>,
) -> ApiResult<axum::Json<Page<Delivery>>> {
    let limit = page(&q.limit, &None, |_: &str| Ok::<_, Error>(()))?.limit;
    let after = match &q.cursor {
        None => 0,
        Some(c) => c
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| Error::invalid("`cursor` must be a non-negative integer"))?,
    };
    let (role, owner) = caller.owner();
    read_stale(&state, move |conn| {
        webhooks::get_webhook(conn, role, &owner, id)?;
        webhooks::list_deliveries(conn, id, after, limit)
    })
    .await
}
