//! /v1/platforms, /v1/agents, /v1/integrations: what platforms register, and their lifecycles.

use axum::extract::State;
use axum::routing::{get, post};
use axum::Router;

use super::auth::Authenticated;
use super::problem::{path_id, ApiResult, Json, OptionalJson, Path, Query};
use super::{page, read, tenant_reader, write, AppState, RawPage};
use crate::domain::*;
use crate::ops::commands::{NewAgent, NewIntegration, NewPlatform, WithReason};
use crate::ops::objects as ops;
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
    Authenticated(caller): Authenticated,
    Json(req): Json<NewPlatform>,
) -> ApiResult<axum::Json<Platform>> {
    write(&state, caller, move |tx| ops::create_platform(tx, &caller, req)).await
}

#[utoipa::path(get, path = "/v1/platforms", params(super::RawPage), tag = "platforms", responses((status = 200, body = Page<Platform>)))]
pub async fn list_platforms(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Query(q): Query<RawPage>,
) -> ApiResult<axum::Json<Page<Platform>>> {
    let vis = tenant_reader(&caller)?;
    let page = page(&q.limit, &q.cursor, PlatformId::parse)?;
    read(&state, move |conn| platforms::list_platforms(conn, vis, &page)).await
}

#[utoipa::path(get, path = "/v1/platforms/{id}", params(("id" = String, Path, description = "platform id")), tag = "platforms", responses((status = 200, body = Platform)))]
pub async fn get_platform(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Platform>> {
    let vis = tenant_reader(&caller)?;
    let id = path_id(&id, PlatformId::parse)?;
    read(&state, move |conn| platforms::get_platform(conn, vis, id)).await
}

#[utoipa::path(post, path = "/v1/platforms/{id}/disable", params(("id" = String, Path, description = "platform id")), tag = "platforms", request_body = Option<WithReason>, responses((status = 200, body = Receipt)))]
pub async fn disable_platform(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    OptionalJson(req): OptionalJson<WithReason>,
) -> ApiResult<axum::Json<Receipt>> {
    let id = path_id(&id, PlatformId::parse)?;
    write(&state, caller, move |tx| ops::disable_platform(tx, &caller, id, req)).await
}

#[utoipa::path(post, path = "/v1/agents", tag = "agents", request_body = NewAgent, responses((status = 200, body = Agent)))]
pub async fn create_agent(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Json(req): Json<NewAgent>,
) -> ApiResult<axum::Json<Agent>> {
    write(&state, caller, move |tx| ops::create_agent(tx, &caller, req)).await
}

#[utoipa::path(get, path = "/v1/agents", params(super::RawPage), tag = "agents", responses((status = 200, body = Page<Agent>)))]
pub async fn list_agents(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Query(q): Query<RawPage>,
) -> ApiResult<axum::Json<Page<Agent>>> {
    let vis = tenant_reader(&caller)?;
    let page = page(&q.limit, &q.cursor, AgentId::parse)?;
    read(&state, move |conn| platforms::list_agents(conn, vis, &page)).await
}

#[utoipa::path(get, path = "/v1/agents/{id}", params(("id" = String, Path, description = "agent id")), tag = "agents", responses((status = 200, body = Agent)))]
pub async fn get_agent(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Agent>> {
    let vis = tenant_reader(&caller)?;
    let id = path_id(&id, AgentId::parse)?;
    read(&state, move |conn| platforms::get_agent(conn, vis, id)).await
}

#[utoipa::path(post, path = "/v1/agents/{id}/suspend", params(("id" = String, Path, description = "agent id")), tag = "agents", request_body = Option<WithReason>, responses((status = 200, body = Receipt)))]
pub async fn suspend_agent(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    OptionalJson(req): OptionalJson<WithReason>,
) -> ApiResult<axum::Json<Receipt>> {
    let id = path_id(&id, AgentId::parse)?;
    write(&state, caller, move |tx| ops::end_agent(tx, &caller, id, AgentStatus::Suspended, req)).await
}

#[utoipa::path(post, path = "/v1/agents/{id}/deregister", params(("id" = String, Path, description = "agent id")), tag = "agents", request_body = Option<WithReason>, responses((status = 200, body = Receipt)))]
pub async fn deregister_agent(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    OptionalJson(req): OptionalJson<WithReason>,
) -> ApiResult<axum::Json<Receipt>> {
    let id = path_id(&id, AgentId::parse)?;
    write(&state, caller, move |tx| ops::end_agent(tx, &caller, id, AgentStatus::Deregistered, req)).await
}

#[utoipa::path(post, path = "/v1/agents/{id}/resume", params(("id" = String, Path, description = "agent id")), tag = "agents", request_body = Option<WithReason>, responses((status = 200, body = Agent)))]
pub async fn resume_agent(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    OptionalJson(req): OptionalJson<WithReason>,
) -> ApiResult<axum::Json<Agent>> {
    let id = path_id(&id, AgentId::parse)?;
    write(&state, caller, move |tx| ops::resume_agent(tx, &caller, id, req)).await
}

#[utoipa::path(post, path = "/v1/integrations", tag = "integrations", request_body = NewIntegration, responses((status = 200, body = Integration)))]
pub async fn create_integration(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Json(req): Json<NewIntegration>,
) -> ApiResult<axum::Json<Integration>> {
    write(&state, caller, move |tx| ops::create_integration(tx, &caller, req)).await
}

#[utoipa::path(get, path = "/v1/integrations", params(super::RawPage), tag = "integrations", responses((status = 200, body = Page<Integration>)))]
pub async fn list_integrations(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Query(q): Query<RawPage>,
) -> ApiResult<axum::Json<Page<Integration>>> {
    let vis = tenant_reader(&caller)?;
    let page = page(&q.limit, &q.cursor, IntegrationId::parse)?;
    read(&state, move |conn| platforms::list_integrations(conn, vis, &page)).await
}

#[utoipa::path(get, path = "/v1/integrations/{id}", params(("id" = String, Path, description = "integration id")), tag = "integrations", responses((status = 200, body = Integration)))]
pub async fn get_integration(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Integration>> {
    let vis = tenant_reader(&caller)?;
    let id = path_id(&id, IntegrationId::parse)?;
    read(&state, move |conn| platforms::get_integration(conn, vis, id)).await
}

#[utoipa::path(post, path = "/v1/integrations/{id}/disable", params(("id" = String, Path, description = "integration id")), tag = "integrations", request_body = Option<WithReason>, responses((status = 200, body = Receipt)))]
pub async fn disable_integration(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    OptionalJson(req): OptionalJson<WithReason>,
) -> ApiResult<axum::Json<Receipt>> {
    let id = path_id(&id, IntegrationId::parse)?;
    write(&state, caller, move |tx| ops::disable_integration(tx, &caller, id, req)).await
}
