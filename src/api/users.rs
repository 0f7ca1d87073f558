//! /v1/users: the delegating people, their permissions, and the triggers they or an admin pull.

use axum::extract::State;
use axum::routing::{get, post, put};
use axum::Router;
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::Authenticated;
use super::problem::{path_id, ApiResult, Json, OptionalJson, Path, Query};
use super::{page, read, tenant_reader, write, AppState, RawPage};
use crate::domain::*;
use crate::ops::commands::{LifecycleEvent, NewUser, SetPermissions, WithReason};
use crate::ops::objects::{self as ops, Disconnect};
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

#[utoipa::path(post, path = "/v1/users", tag = "users", request_body = NewUser, responses((status = 200, body = User)))]
pub async fn create(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Json(req): Json<NewUser>,
) -> ApiResult<axum::Json<User>> {
    write(&state, caller, move |tx| ops::create_user(tx, &caller, req)).await
}

#[utoipa::path(get, path = "/v1/users", params(super::RawPage), tag = "users", responses((status = 200, body = Page<User>)))]
pub async fn list(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Query(q): Query<RawPage>,
) -> ApiResult<axum::Json<Page<User>>> {
    crate::ops::require(&caller, &[RoleKind::Admin, RoleKind::Auditor])?;
    let page = page(&q.limit, &q.cursor, UserId::parse)?;
    read(&state, move |conn| users::list_users(conn, Visibility::All, &page)).await
}

#[utoipa::path(get, path = "/v1/users/{id}", params(("id" = String, Path, description = "user id")), tag = "users", responses((status = 200, body = User)))]
pub async fn get_one(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<User>> {
    let vis = tenant_reader(&caller)?;
    let id = path_id(&id, UserId::parse)?;
    read(&state, move |conn| users::get_user(conn, vis, id)).await
}

/// The user after the change, and the receipt of the sessions it revoked.
#[derive(Serialize, ToSchema)]
pub struct PermissionsChanged {
    pub user: User,
    pub receipt: Receipt,
}

#[utoipa::path(put, path = "/v1/users/{id}/permissions", params(("id" = String, Path, description = "user id")), tag = "users", request_body = SetPermissions, responses((status = 200, body = PermissionsChanged)))]
pub async fn set_permissions(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    Json(req): Json<SetPermissions>,
) -> ApiResult<axum::Json<PermissionsChanged>> {
    let id = path_id(&id, UserId::parse)?;
    write(&state, caller, move |tx| {
        ops::set_permissions(tx, &caller, id, req).map(|(user, receipt)| PermissionsChanged { user, receipt })
    })
    .await
}

#[utoipa::path(post, path = "/v1/users/{id}/disable", params(("id" = String, Path, description = "user id")), tag = "users", request_body = Option<WithReason>, responses((status = 200, body = Receipt)))]
pub async fn disable(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    OptionalJson(req): OptionalJson<WithReason>,
) -> ApiResult<axum::Json<Receipt>> {
    let id = path_id(&id, UserId::parse)?;
    write(&state, caller, move |tx| ops::disable_user(tx, &caller, id, req)).await
}

#[utoipa::path(post, path = "/v1/users/{id}/enable", params(("id" = String, Path, description = "user id")), tag = "users", request_body = Option<WithReason>, responses((status = 200, body = User)))]
pub async fn enable(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    OptionalJson(req): OptionalJson<WithReason>,
) -> ApiResult<axum::Json<User>> {
    let id = path_id(&id, UserId::parse)?;
    write(&state, caller, move |tx| ops::enable_user(tx, &caller, id, req)).await
}

#[utoipa::path(post, path = "/v1/users/{id}/lifecycle-events", params(("id" = String, Path, description = "user id")), tag = "users", request_body = LifecycleEvent, responses((status = 200, body = Receipt)))]
pub async fn lifecycle_event(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    Json(req): Json<LifecycleEvent>,
) -> ApiResult<axum::Json<Receipt>> {
    let id = path_id(&id, UserId::parse)?;
    write(&state, caller, move |tx| ops::user_lifecycle_event(tx, &caller, id, req)).await
}

#[utoipa::path(post, path = "/v1/users/{id}/sign-out-all", params(("id" = String, Path, description = "user id")), tag = "users", request_body = Option<WithReason>, responses((status = 200, body = Receipt)))]
pub async fn sign_out_all(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    OptionalJson(req): OptionalJson<WithReason>,
) -> ApiResult<axum::Json<Receipt>> {
    let id = path_id(&id, UserId::parse)?;
    write(&state, caller, move |tx| ops::sign_out_all(tx, &caller, id, req)).await
}

#[utoipa::path(post, path = "/v1/users/{id}/agents/{agent_id}/disconnect", params(("id" = String, Path, description = "user id"), ("agent_id" = String, Path, description = "agent id")), tag = "users", request_body = Option<WithReason>, responses((status = 200, body = Receipt)))]
pub async fn disconnect_agent(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((id, agent)): Path<(String, String)>,
    OptionalJson(req): OptionalJson<WithReason>,
) -> ApiResult<axum::Json<Receipt>> {
    let id = path_id(&id, UserId::parse)?;
    let agent = path_id(&agent, AgentId::parse)?;
    write(&state, caller, move |tx| ops::disconnect(tx, &caller, id, Disconnect::Agent(agent), req)).await
}

#[utoipa::path(post, path = "/v1/users/{id}/integrations/{integration_id}/disconnect", params(("id" = String, Path, description = "user id"), ("integration_id" = String, Path, description = "integration id")), tag = "users", request_body = Option<WithReason>, responses((status = 200, body = Receipt)))]
pub async fn disconnect_integration(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((id, integration)): Path<(String, String)>,
    OptionalJson(req): OptionalJson<WithReason>,
) -> ApiResult<axum::Json<Receipt>> {
    let id = path_id(&id, UserId::parse)?;
    let integration = path_id(&integration, IntegrationId::parse)?;
    write(&state, caller, move |tx| ops::disconnect(tx, &caller, id, Disconnect::Integration(integration), req)).await
}
