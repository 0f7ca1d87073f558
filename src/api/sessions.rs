//! /v1/sessions: opening agent sessions, reading them, revoking them.

use axum::extract::State;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use utoipa::ToSchema;

use super::auth::Allowed;
use super::problem::{ApiResult, Json, OptionalJson, Path, Query};
use super::{page, read, read_stale, write_serialized, AppState, SerializedJson};
use crate::domain::access::{Capability, Owner, PlatformScope, TenantReader};
use crate::domain::*;
use crate::ops::sessions::{self as ops, NewSession, RefreshOutcome, Refreshed, SessionCreated};
use crate::ops::WithReason;
use crate::store::query::Page;
use crate::store::sessions::{self, SessionFilter};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/sessions", post(create).get(list))
        .route("/v1/sessions/{id}", get(get_one))
        .route("/v1/sessions/{id}/revoke", post(revoke))
        .route("/v1/sessions/{id}/refresh", post(refresh))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Items per page, 1 to 1000 (default 100).
    #[param(value_type = Option<u16>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<SessionId>, inline)]
    cursor: Option<String>,
    /// Only this user's sessions.
    user_id: Option<UserId>,
    /// Only this agent's sessions.
    agent_id: Option<AgentId>,
    /// Only sessions through this integration.
    integration_id: Option<IntegrationId>,
    /// Only sessions of this delegation.
    delegation_id: Option<DelegationId>,
    /// `active`, `revoked` or `expired`.
    #[param(value_type = Option<SessionStatus>, inline)]
    status: Option<String>,
}

#[utoipa::path(post, operation_id = "create_session", path = "/v1/sessions", tag = "sessions", request_body = NewSession, responses((status = 200, body = SessionCreated)))]
pub async fn create(
    State(state): State<AppState>,
    Allowed(caller): Allowed<PlatformScope>,
    Json(req): Json<NewSession>,
) -> ApiResult<axum::Json<SessionCreated>> {
    Ok(axum::Json(state.open_session(caller, req).await?))
}

#[utoipa::path(get, operation_id = "list_sessions", path = "/v1/sessions", params(ListQuery), tag = "sessions", responses((status = 200, body = Page<Session>)))]
pub async fn list(
    State(state): State<AppState>,
    Allowed(caller): Allowed<TenantReader>,
    Query(q): Query<ListQuery>,
) -> ApiResult<axum::Json<Page<Session>>> {
    let vis = caller.visibility();
    let page = page(&q.limit, &q.cursor, SessionId::parse)?;
    let status = q
        .status
        .as_deref()
        .map(|s| SessionStatus::parse(s).ok_or_else(|| Error::invalid("`status` must be active, revoked or expired")))
        .transpose()?;
    let filter = SessionFilter {
        user_id: q.user_id,
        agent_id: q.agent_id,
        integration_id: q.integration_id,
        delegation_id: q.delegation_id,
        status,
    };
    let now = state.clock.now();
    read_stale(&state, move |conn| sessions::list_sessions(conn, vis, &filter, &page, now)).await
}

#[utoipa::path(get, operation_id = "get_session", path = "/v1/sessions/{id}", params(("id" = inline(SessionId), Path, description = "session id")), tag = "sessions", responses((status = 200, body = Session)))]
pub async fn get_one(
    State(state): State<AppState>,
    Allowed(caller): Allowed<TenantReader>,
    Path(id): Path<SessionId>,
) -> ApiResult<axum::Json<Session>> {
    let vis = caller.visibility();
    let now = state.clock.now();
    read(&state, move |conn| sessions::get_session(conn, vis, id, now)).await
}

#[utoipa::path(post, operation_id = "revoke_session", path = "/v1/sessions/{id}/revoke", params(("id" = inline(SessionId), Path, description = "session id")), tag = "sessions", request_body = Option<WithReason>, responses((status = 200, body = Receipt)))]
pub async fn revoke(
    State(state): State<AppState>,
    Allowed(caller): Allowed<Owner>,
    Path(id): Path<SessionId>,
    OptionalJson(req): OptionalJson<WithReason>,
) -> ApiResult<SerializedJson> {
    write_serialized(&state, caller, move |tx| ops::revoke_session(tx, &caller, id, req)).await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The session's current refresh token (`rt_…`); a longer text is never one.
    #[schema(max_length = 256)]
    pub refresh_token: String,
}

/// Rotates the session's tokens. The caller must be the platform owning the session (or an
/// admin) AND present the refresh token. A refresh token that was already used revokes the
/// session (a replay means it leaked) and answers 400 `invalid_grant`.
#[utoipa::path(post, operation_id = "refresh_session", path = "/v1/sessions/{id}/refresh", params(("id" = inline(SessionId), Path, description = "session id")), tag = "sessions", request_body = RefreshRequest, responses((status = 200, body = Refreshed), (status = 400, body = super::problem::Problem, content_type = "application/problem+json")))]
pub async fn refresh(
    State(state): State<AppState>,
    Allowed(caller): Allowed<PlatformScope>,
    Path(id): Path<SessionId>,
    Json(req): Json<RefreshRequest>,
) -> ApiResult<axum::Json<Refreshed>> {
    if req.refresh_token.len() > 256 {
        return Err(Error::InvalidGrant("the refresh token is not valid for this session".into()).into());
    }
    let env = state.env.clone();
    let outcome = state
        .writer
        .execute_as(caller.caller(), move |tx| ops::refresh_session(tx, &env, &caller, id, &req.refresh_token))
        .await?;
    match outcome {
        RefreshOutcome::Rotated(mut tokens) => {
            // The relying service's first check of the new token is a cache hit, not a verify.
            if let Some(minted) = tokens.minted.take() {
                state.authorizer.remember_minted(&tokens.token, minted);
            }
            Ok(axum::Json(tokens))
        }
        RefreshOutcome::ReuseDetected(receipt) => Err(Error::InvalidGrant(format!(
            "the refresh token was already used: the session has been revoked as compromised (audit seq {})",
            receipt.cause.seq
        ))
        .into()),
    }
}
