//! /v1/sessions: opening agent sessions, reading them, revoking them.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use super::auth::Authenticated;
use super::problem::{path_id, ApiResult, Json, OptionalJson, Query};
use super::{page, read, tenant_reader, write, AppState};
use crate::domain::*;
use crate::ops::commands::{NewSession, WithReason};
use crate::ops::sessions::{self as ops, SessionCreated};
use crate::store::reads::{self, Page, SessionFilter};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/sessions", post(create).get(list))
        .route("/v1/sessions/{id}", get(get_one))
        .route("/v1/sessions/{id}/revoke", post(revoke))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<String>,
    cursor: Option<String>,
    user_id: Option<UserId>,
    agent_id: Option<AgentId>,
    integration_id: Option<IntegrationId>,
    delegation_id: Option<DelegationId>,
    status: Option<String>,
}

#[utoipa::path(post, path = "/v1/sessions", tag = "sessions", request_body = NewSession, responses((status = 200, body = SessionCreated)))]
pub async fn create(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Json(req): Json<NewSession>,
) -> ApiResult<axum::Json<SessionCreated>> {
    let env = state.env.clone();
    write(&state, move |tx| {
        ops::create_session(tx, &env, &caller, req)
    })
    .await
}

#[utoipa::path(get, path = "/v1/sessions", tag = "sessions", responses((status = 200, body = Vec<Session>)))]
pub async fn list(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Query(q): Query<ListQuery>,
) -> ApiResult<axum::Json<Page<Session>>> {
    let vis = tenant_reader(&caller)?;
    let page = page(&q.limit, &q.cursor, SessionId::parse)?;
    let status = q
        .status
        .as_deref()
        .map(|s| {
            SessionStatus::parse(s)
                .ok_or_else(|| Error::invalid("`status` must be active, revoked or expired"))
        })
        .transpose()?;
    let filter = SessionFilter {
        user_id: q.user_id,
        agent_id: q.agent_id,
        integration_id: q.integration_id,
        delegation_id: q.delegation_id,
        status,
    };
    let now = state.clock.now();
    read(&state, move |conn| {
        reads::list_sessions(conn, vis, &filter, &page, now)
    })
    .await
}

#[utoipa::path(get, path = "/v1/sessions/{id}", tag = "sessions", responses((status = 200, body = Session)))]
pub async fn get_one(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Session>> {
    let vis = tenant_reader(&caller)?;
    let id = path_id(&id, SessionId::parse)?;
    let now = state.clock.now();
    read(&state, move |conn| reads::get_session(conn, vis, id, now)).await
}

#[utoipa::path(post, path = "/v1/sessions/{id}/revoke", tag = "sessions", request_body = WithReason, responses((status = 200, body = Receipt)))]
pub async fn revoke(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    OptionalJson(req): OptionalJson<WithReason>,
) -> ApiResult<axum::Json<Receipt>> {
    let id = path_id(&id, SessionId::parse)?;
    write(&state, move |tx| ops::revoke_session(tx, &caller, id, req)).await
}
