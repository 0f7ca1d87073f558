//! /v1/users: the delegating people, their permissions, and the triggers they or an admin pull.

use axum::extract::State;
use axum::routing::{get, post, put};
use axum::Router;
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::Allowed;
use super::problem::{ApiResult, Json, OptionalJson, Path, Query};
use super::{page, read, read_stale, write, write_serialized, AppState, RawPage, SerializedJson};
use crate::domain::access::{Admin, Auditor, TenantReader, UserScope};
use crate::domain::*;
use crate::ops::users::{self as ops, Disconnect, LifecycleEvent, NewUser, SetPermissions};
use crate::ops::WithReason;
use crate::store::query::Page;
use crate::store::users;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/users", post(create).get(list))
        .route("/v1/users/{id}", get(get_one))
        .route("/v1/users/{id}/permissions", put(set_permissions))
        .route("/v1/users/{id}/disable", post(disable))
        .route("/v1/users/{id}/enable", post(enable))
        .route("/v1/users/{id}/lifecycle-events", post(lifecycle_event))
        .route("/v1/users/{id}/sign-out-all", post(sign_out_all))
        .route("/v1/users/{id}/agents/{agent_id}/disconnect", post(disconnect_agent))
        .route("/v1/users/{id}/integrations/{integration_id}/disconnect", post(disconnect_integration))
}

#[utoipa::path(post, operation_id = "create_user", path = "/v1/users", tag = "users", request_body = NewUser, responses((status = 200, body = User)))]
pub async fn create(
    State(state): State<AppState>,
    Allowed(caller): Allowed<Admin>,
    Json(req): Json<NewUser>,
) -> ApiResult<axum::Json<User>> {
    write(&state, caller, move |tx| ops::create_user(tx, &caller, req)).await
}

#[utoipa::path(get, operation_id = "list_users", path = "/v1/users", params(("limit" = Option<u16>, Query, minimum = 1, maximum = 1000, description = "Items per page, 1 to 1000 (default 100)."), ("cursor" = inline(Option<UserId>), Query, description = "`next_cursor` of the previous page.")), tag = "users", responses((status = 200, body = Page<User>)))]
pub async fn list(
    State(state): State<AppState>,
    Allowed(caller): Allowed<Auditor>,
    Query(q): Query<RawPage>,
) -> ApiResult<axum::Json<Page<User>>> {
    let vis = caller.visibility();
    let page = page(&q.limit, &q.cursor, UserId::parse)?;
    read_stale(&state, move |conn| users::list_users(conn, vis, &page)).await
}

#[utoipa::path(get, operation_id = "get_user", path = "/v1/users/{id}", params(("id" = inline(UserId), Path, description = "user id")), tag = "users", responses((status = 200, body = User)))]
pub async fn get_one(
    State(state): State<AppState>,
    Allowed(caller): Allowed<TenantReader>,
    Path(id): Path<UserId>,
) -> ApiResult<axum::Json<User>> {
    let vis = caller.visibility();
    read(&state, move |conn| users::get_user(conn, vis, id)).await
}

/// The user after the change, and the receipt of the sessions it revoked.
#[derive(Serialize, ToSchema)]
pub struct PermissionsChanged {
    pub user: User,
    pub receipt: Receipt,
}

#[utoipa::path(put, operation_id = "set_user_permissions", path = "/v1/users/{id}/permissions", params(("id" = inline(UserId), Path, description = "user id")), tag = "users", request_body = SetPermissions, responses((status = 200, body = PermissionsChanged)))]
pub async fn set_permissions(
    State(state): State<AppState>,
    Allowed(caller): Allowed<Admin>,
    Path(id): Path<UserId>,
    Json(req): Json<SetPermissions>,
) -> ApiResult<axum::Json<PermissionsChanged>> {
    write(&state, caller, move |tx| {
        ops::set_permissions(tx, &caller, id, req).map(|(user, receipt)| PermissionsChanged { user, receipt })
    })
    .await
}

#[utoipa::path(post, operation_id = "disable_user", path = "/v1/users/{id}/disable", params(("id" = inline(UserId), Path, description = "user id")), tag = "users", request_body = Option<WithReason>, responses((status = 200, body = Receipt)))]
pub async fn disable(
    State(state): State<AppState>,
    Allowed(caller): Allowed<Admin>,
    Path(id): Path<UserId>,
    OptionalJson(req): OptionalJson<WithReason>,
) -> ApiResult<SerializedJson> {
    write_serialized(&state, caller, move |tx| ops::disable_user(tx, &caller, id, req)).await
}

#[utoipa::path(post, operation_id = "enable_user", path = "/v1/users/{id}/enable", params(("id" = inline(UserId), Path, description = "user id")), tag = "users", request_body = Option<WithReason>, responses((status = 200, body = User)))]
pub async fn enable(
    State(state): State<AppState>,
    Allowed(caller): Allowed<Admin>,
    Path(id): Path<UserId>,
    OptionalJson(req): OptionalJson<WithReason>,
) -> ApiResult<axum::Json<User>> {
    write(&state, caller, move |tx| ops::enable_user(tx, &caller, id, req)).await
}

#[utoipa::path(post, operation_id = "record_user_lifecycle_event", path = "/v1/users/{id}/lifecycle-events", params(("id" = inline(UserId), Path, description = "user id")), tag = "users", request_body = LifecycleEvent, responses((status = 200, body = Receipt)))]
pub async fn lifecycle_event(
    State(state): State<AppState>,
    Allowed(caller): Allowed<Admin>,
    Path(id): Path<UserId>,
    Json(req): Json<LifecycleEvent>,
) -> ApiResult<SerializedJson> {
    write_serialized(&state, caller, move |tx| ops::user_lifecycle_event(tx, &caller, id, req)).await
}

#[utoipa::path(post, operation_id = "sign_user_out_everywhere", path = "/v1/users/{id}/sign-out-all", params(("id" = inline(UserId), Path, description = "user id")), tag = "users", request_body = Option<WithReason>, responses((status = 200, body = Receipt)))]
pub async fn sign_out_all(
    State(state): State<AppState>,
    Allowed(caller): Allowed<UserScope>,
    Path(id): Path<UserId>,
    OptionalJson(req): OptionalJson<WithReason>,
) -> ApiResult<SerializedJson> {
    write_serialized(&state, caller, move |tx| ops::sign_out_all(tx, &caller, id, req)).await
}

#[utoipa::path(post, operation_id = "disconnect_user_agent", path = "/v1/users/{id}/agents/{agent_id}/disconnect", params(("id" = inline(UserId), Path, description = "user id"), ("agent_id" = inline(AgentId), Path, description = "agent id")), tag = "users", request_body = Option<WithReason>, responses((status = 200, body = Receipt)))]
pub async fn disconnect_agent(
    State(state): State<AppState>,
    Allowed(caller): Allowed<UserScope>,
    Path((id, agent)): Path<(UserId, AgentId)>,
    OptionalJson(req): OptionalJson<WithReason>,
) -> ApiResult<SerializedJson> {
    write_serialized(&state, caller, move |tx| ops::disconnect(tx, &caller, id, Disconnect::Agent(agent), req)).await
}

#[utoipa::path(post, operation_id = "disconnect_user_integration", path = "/v1/users/{id}/integrations/{integration_id}/disconnect", params(("id" = inline(UserId), Path, description = "user id"), ("integration_id" = inline(IntegrationId), Path, description = "integration id")), tag = "users", request_body = Option<WithReason>, responses((status = 200, body = Receipt)))]
pub async fn disconnect_integration(
    State(state): State<AppState>,
    Allowed(caller): Allowed<UserScope>,
    Path((id, integration)): Path<(UserId, IntegrationId)>,
    OptionalJson(req): OptionalJson<WithReason>,
) -> ApiResult<SerializedJson> {
    write_serialized(&state, caller, move |tx| {
        ops::disconnect(tx, &caller, id, Disconnect::Integration(integration), req)
    })
    .await
}
