//! /v1/delegations: a user's consent that an agent act for them through an integration.

use axum::extract::State;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use super::auth::Allowed;
use super::problem::{ApiResult, Json, OptionalJson, Path, Query};
use super::{page, read, read_stale, write, write_serialized, AppState, SerializedJson};
use crate::domain::access::{Owner, PlatformScope, TenantReader};
use crate::domain::*;
use crate::ops::delegations::{self as ops, NewDelegation};
use crate::ops::WithReason;
use crate::store::delegations::{self, DelegationFilter};
use crate::store::query::Page;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/delegations", post(create).get(list))
        .route("/v1/delegations/{id}", get(get_one))
        .route("/v1/delegations/{id}/revoke", post(revoke))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Items per page, 1 to 1000 (default 100).
    #[param(value_type = Option<u16>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<DelegationId>, inline)]
    cursor: Option<String>,
    /// Only this user's delegations.
    user_id: Option<UserId>,
    /// Only delegations to this agent.
    agent_id: Option<AgentId>,
    /// Only delegations through this integration.
    integration_id: Option<IntegrationId>,
    /// `active` or `revoked`.
    #[param(value_type = Option<DelegationStatus>, inline)]
    status: Option<String>,
}

#[utoipa::path(post, operation_id = "create_delegation", path = "/v1/delegations", tag = "delegations", request_body = NewDelegation, responses((status = 200, body = Delegation)))]
pub async fn create(
    State(state): State<AppState>,
    Allowed(caller): Allowed<PlatformScope>,
    Json(req): Json<NewDelegation>,
) -> ApiResult<axum::Json<Delegation>> {
    write(&state, caller, move |tx| ops::create_delegation(tx, &caller, req)).await
}

#[utoipa::path(get, operation_id = "list_delegations", path = "/v1/delegations", params(ListQuery), tag = "delegations", responses((status = 200, body = Page<Delegation>)))]
pub async fn list(
    State(state): State<AppState>,
    Allowed(caller): Allowed<TenantReader>,
    Query(q): Query<ListQuery>,
) -> ApiResult<axum::Json<Page<Delegation>>> {
    let vis = caller.visibility();
    let page = page(&q.limit, &q.cursor, DelegationId::parse)?;
    let status = q
        .status
        .as_deref()
        .map(|s| DelegationStatus::parse(s).ok_or_else(|| Error::invalid("`status` must be active or revoked")))
        .transpose()?;
    let filter =
        DelegationFilter { user_id: q.user_id, agent_id: q.agent_id, integration_id: q.integration_id, status };
    read_stale(&state, move |conn| delegations::list_delegations(conn, vis, &filter, &page)).await
}

#[utoipa::path(get, operation_id = "get_delegation", path = "/v1/delegations/{id}", params(("id" = inline(DelegationId), Path, description = "delegation id")), tag = "delegations", responses((status = 200, body = Delegation)))]
pub async fn get_one(
    State(state): State<AppState>,
    Allowed(caller): Allowed<TenantReader>,
    Path(id): Path<DelegationId>,
) -> ApiResult<axum::Json<Delegation>> {
    let vis = caller.visibility();
    read(&state, move |conn| delegations::get_delegation(conn, vis, id)).await
}

#[utoipa::path(post, operation_id = "revoke_delegation", path = "/v1/delegations/{id}/revoke", params(("id" = inline(DelegationId), Path, description = "delegation id")), tag = "delegations", request_body = Option<WithReason>, responses((status = 200, body = Receipt)))]
pub async fn revoke(
    State(state): State<AppState>,
    Allowed(caller): Allowed<Owner>,
    Path(id): Path<DelegationId>,
    OptionalJson(req): OptionalJson<WithReason>,
) -> ApiResult<SerializedJson> {
    write_serialized(&state, caller, move |tx| ops::revoke_delegation(tx, &caller, id, req)).await
}
