//! /v1/credentials: minting, listing and revoking API credentials (admin).

use axum::extract::State;
use axum::routing::post;
use axum::Router;
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::Allowed;
use super::problem::{ApiResult, Json, Path, Query};
use super::{page, read_stale, write, AppState, RawPage};
use crate::domain::access::Admin;
use crate::domain::*;
use crate::ops::credentials::{self as ops, NewCredential};
use crate::store::credentials;
use crate::store::query::Page;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/credentials", post(create).get(list)).route("/v1/credentials/{id}/revoke", post(revoke))
}

/// A new credential: the secret is in `credential`, here and never again.
#[derive(Serialize, ToSchema)]
pub struct CreatedCredential {
    pub id: CredentialId,
    pub role: RoleKind,
    pub label: Option<String>,
    pub platform_id: Option<PlatformId>,
    pub user_id: Option<UserId>,
    pub credential: String,
    pub expires_at: Option<Timestamp>,
}

#[utoipa::path(post, operation_id = "create_credential", path = "/v1/credentials", tag = "credentials", request_body = NewCredential,
    responses((status = 200, body = CreatedCredential), (status = 400, body = super::problem::Problem, content_type = "application/problem+json")))]
pub async fn create(
    State(state): State<AppState>,
    Allowed(caller): Allowed<Admin>,
    Json(req): Json<NewCredential>,
) -> ApiResult<axum::Json<CreatedCredential>> {
    let env = state.env.clone();
    write(&state, caller, move |tx| {
        let created = ops::create_credential(tx, &env, &caller, req)?;
        let r = created.record;
        Ok(CreatedCredential {
            id: r.id,
            role: r.role,
            label: r.label,
            platform_id: r.platform_id,
            user_id: r.user_id,
            credential: created.secret,
            expires_at: r.expires_at,
        })
    })
    .await
}

#[utoipa::path(get, operation_id = "list_credentials", path = "/v1/credentials", params(("limit" = Option<u16>, Query, minimum = 1, maximum = 1000, description = "Items per page, 1 to 1000 (default 100)."), ("cursor" = inline(Option<CredentialId>), Query, description = "`next_cursor` of the previous page.")), tag = "credentials", responses((status = 200, body = Page<Credential>)))]
pub async fn list(
    State(state): State<AppState>,
    _: Allowed<Admin>,
    Query(q): Query<RawPage>,
) -> ApiResult<axum::Json<Page<Credential>>> {
    let page = page(&q.limit, &q.cursor, CredentialId::parse)?;
    read_stale(&state, move |conn| credentials::list_credentials(conn, &page)).await
}

#[utoipa::path(post, operation_id = "revoke_credential", path = "/v1/credentials/{id}/revoke", params(("id" = inline(CredentialId), Path, description = "credential id")), tag = "credentials", responses((status = 200, body = Credential)))]
pub async fn revoke(
    State(state): State<AppState>,
    Allowed(caller): Allowed<Admin>,
    Path(id): Path<CredentialId>,
) -> ApiResult<axum::Json<Credential>> {
    write(&state, caller, move |tx| ops::revoke_credential(tx, &caller, id)).await
}
