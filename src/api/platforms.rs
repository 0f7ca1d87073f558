//! /v1/platforms, /v1/agents, /v1/integrations: platforms, what they register, and their lifecycles.

use axum::extract::State;
use axum::routing::{get, post};
use axum::Router;

use super::auth::Allowed;
use super::problem::{ApiResult, Json, OptionalJson, Path, Query};
use super::{page, read, read_stale, write, write_serialized, AppState, RawPage, SerializedJson};
use crate::domain::access::{Admin, PlatformScope, TenantReader};
use crate::domain::*;
use crate::ops::platforms::{self as ops, NewAgent, NewIntegration, NewPlatform};
use crate::ops::WithReason;
use crate::store::platforms;
use crate::store::query::Page;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/platforms", post(create_platform).get(list_platforms))
        .route("/v1/platforms/{id}", get(get_platform))
        .route("/v1/platforms/{id}/disable", post(disable_platform))
        .route("/v1/agents", post(create_agent).get(list_agents))
        .route("/v1/agents/{id}", get(get_agent))
        .route("/v1/agents/{id}/suspend", post(suspend_agent))
        .route("/v1/agents/{id}/resume", post(resume_agent))
        .route("/v1/agents/{id}/deregister", post(deregister_agent))
        .route("/v1/integrations", post(create_integration).get(list_integrations))
        .route("/v1/integrations/{id}", get(get_integration))
        .route("/v1/integrations/{id}/disable", post(disable_integration))
}

#[utoipa::path(post, path = "/v1/platforms", tag = "platforms", request_body = NewPlatform, responses((status = 200, body = Platform)))]
pub async fn create_platform(
    State(state): State<AppState>,
    Allowed(caller): Allowed<Admin>,
    Json(req): Json<NewPlatform>,
) -> ApiResult<axum::Json<Platform>> {
    write(&state, caller, move |tx| ops::create_platform(tx, &caller, req)).await
}

#[utoipa::path(get, path = "/v1/platforms", params(("limit" = Option<u16>, Query, minimum = 1, maximum = 1000, description = "Items per page, 1 to 1000 (default 100)."), ("cursor" = inline(Option<PlatformId>), Query, description = "`next_cursor` of the previous page.")), tag = "platforms", responses((status = 200, body = Page<Platform>)))]
pub async fn list_platforms(
    State(state): State<AppState>,
    Allowed(caller): Allowed<TenantReader>,
    Query(q): Query<RawPage>,
) -> ApiResult<axum::Json<Page<Platform>>> {
    let vis = caller.visibility();
    let page = page(&q.limit, &q.cursor, PlatformId::parse)?;
    read_stale(&state, move |conn| platforms::list_platforms(conn, vis, &page)).await
}

#[utoipa::path(get, path = "/v1/platforms/{id}", params(("id" = inline(PlatformId), Path, description = "platform id")), tag = "platforms", responses((status = 200, body = Platform)))]
pub async fn get_platform(
    State(state): State<AppState>,
    Allowed(caller): Allowed<TenantReader>,
    Path(id): Path<PlatformId>,
) -> ApiResult<axum::Json<Platform>> {
    let vis = caller.visibility();
    read(&state, move |conn| platforms::get_platform(conn, vis, id)).await
}

#[utoipa::path(post, path = "/v1/platforms/{id}/disable", params(("id" = inline(PlatformId), Path, description = "platform id")), tag = "platforms", request_body = Option<WithReason>, responses((status = 200, body = Receipt)))]
pub async fn disable_platform(
    State(state): State<AppState>,
    Allowed(caller): Allowed<Admin>,
    Path(id): Path<PlatformId>,
    OptionalJson(req): OptionalJson<WithReason>,
) -> ApiResult<SerializedJson> {
    write_serialized(&state, caller, move |tx| ops::disable_platform(tx, &caller, id, req)).await
}

#[utoipa::path(post, path = "/v1/agents", tag = "agents", request_body = NewAgent, responses((status = 200, body = Agent)))]
pub async fn create_agent(
    State(state): State<AppState>,
    Allowed(caller): Allowed<PlatformScope>,
    Json(req): Json<NewAgent>,
) -> ApiResult<axum::Json<Agent>> {
    write(&state, caller, move |tx| ops::create_agent(tx, &caller, req)).await
}

#[utoipa::path(get, path = "/v1/agents", params(("limit" = Option<u16>, Query, minimum = 1, maximum = 1000, description = "Items per page, 1 to 1000 (default 100)."), ("cursor" = inline(Option<AgentId>), Query, description = "`next_cursor` of the previous page.")), tag = "agents", responses((status = 200, body = Page<Agent>)))]
pub async fn list_agents(
    State(state): State<AppState>,
    Allowed(caller): Allowed<TenantReader>,
    Query(q): Query<RawPage>,
) -> ApiResult<axum::Json<Page<Agent>>> {
    let vis = caller.visibility();
    let page = page(&q.limit, &q.cursor, AgentId::parse)?;
    read_stale(&state, move |conn| platforms::list_agents(conn, vis, &page)).await
}

#[utoipa::path(get, path = "/v1/agents/{id}", params(("id" = inline(AgentId), Path, description = "agent id")), tag = "agents", responses((status = 200, body = Agent)))]
pub async fn get_agent(
    State(state): State<AppState>,
    Allowed(caller): Allowed<TenantReader>,
    Path(id): Path<AgentId>,
) -> ApiResult<axum::Json<Agent>> {
    let vis = caller.visibility();
    read(&state, move |conn| platforms::get_agent(conn, vis, id)).await
}

#[utoipa::path(post, path = "/v1/agents/{id}/suspend", params(("id" = inline(AgentId), Path, description = "agent id")), tag = "agents", request_body = Option<WithReason>, responses((status = 200, body = Receipt)))]
pub async fn suspend_agent(
    State(state): State<AppState>,
    Allowed(caller): Allowed<PlatformScope>,
    Path(id): Path<AgentId>,
    OptionalJson(req): OptionalJson<WithReason>,
) -> ApiResult<SerializedJson> {
    write_serialized(&state, caller, move |tx| ops::end_agent(tx, &caller, id, AgentStatus::Suspended, req)).await
}

#[utoipa::path(post, path = "/v1/agents/{id}/deregister", params(("id" = inline(AgentId), Path, description = "agent id")), tag = "agents", request_body = Option<WithReason>, responses((status = 200, body = Receipt)))]
pub async fn deregister_agent(
    State(state): State<AppState>,
    Allowed(caller): Allowed<PlatformScope>,
    Path(id): Path<AgentId>,
    OptionalJson(req): OptionalJson<WithReason>,
) -> ApiResult<SerializedJson> {
    write_serialized(&state, caller, move |tx| ops::end_agent(tx, &caller, id, AgentStatus::Deregistered, req)).await
}

#[utoipa::path(post, path = "/v1/agents/{id}/resume", params(("id" = inline(AgentId), Path, description = "agent id")), tag = "agents", request_body = Option<WithReason>, responses((status = 200, body = Agent)))]
pub async fn resume_agent(
    State(state): State<AppState>,
    Allowed(caller): Allowed<PlatformScope>,
    Path(id): Path<AgentId>,
    OptionalJson(req): OptionalJson<WithReason>,
) -> ApiResult<axum::Json<Agent>> {
    write(&state, caller, move |tx| ops::resume_agent(tx, &caller, id, req)).await
}

#[utoipa::path(post, path = "/v1/integrations", tag = "integrations", request_body = NewIntegration, responses((status = 200, body = Integration)))]
pub async fn create_integration(
    State(state): State<AppState>,
    Allowed(caller): Allowed<PlatformScope>,
    Json(req): Json<NewIntegration>,
) -> ApiResult<axum::Json<Integration>> {
    write(&state, caller, move |tx| ops::create_integration(tx, &caller, req)).await
}

#[utoipa::path(get, path = "/v1/integrations", params(("limit" = Option<u16>, Query, minimum = 1, maximum = 1000, description = "Items per page, 1 to 1000 (default 100)."), ("cursor" = inline(Option<IntegrationId>), Query, description = "`next_cursor` of the previous page.")), tag = "integrations", responses((status = 200, body = Page<Integration>)))]
pub async fn list_integrations(
    State(state): State<AppState>,
    Allowed(caller): Allowed<TenantReader>,
    Query(q): Query<RawPage>,
) -> ApiResult<axum::Json<Page<Integration>>> {
    let vis = caller.visibility();
    let page = page(&q.limit, &q.cursor, IntegrationId::parse)?;
    read_stale(&state, move |conn| platforms::list_integrations(conn, vis, &page)).await
}

#[utoipa::path(get, path = "/v1/integrations/{id}", params(("id" = inline(IntegrationId), Path, description = "integration id")), tag = "integrations", responses((status = 200, body = Integration)))]
pub async fn get_integration(
    State(state): State<AppState>,
    Allowed(caller): Allowed<TenantReader>,
    Path(id): Path<IntegrationId>,
) -> ApiResult<axum::Json<Integration>> {
    let vis = caller.visibility();
    read(&state, move |conn| platforms::get_integration(conn, vis, id)).await
}

#[utoipa::path(post, path = "/v1/integrations/{id}/disable", params(("id" = inline(IntegrationId), Path, description = "integration id")), tag = "integrations", request_body = Option<WithReason>, responses((status = 200, body = Receipt)))]
pub async fn disable_integration(
    State(state): State<AppState>,
    Allowed(caller): Allowed<PlatformScope>,
    Path(id): Path<IntegrationId>,
    OptionalJson(req): OptionalJson<WithReason>,
) -> ApiResult<SerializedJson> {
    write_serialized(&state, caller, move |tx| ops::disable_integration(tx, &caller, id, req)).await
}
