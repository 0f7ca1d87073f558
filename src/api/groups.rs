//! /v1/groups: what an admin sees of the identity provider's groups, and what each grants.

use axum::extract::State;
use axum::routing::{get, put};
use axum::Router;
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::Allowed;
use super::problem::{ApiResult, Json, Path, Query};
use super::{page, read, read_stale, write, AppState, RawPage};
use crate::domain::access::{Admin, Auditor};
use crate::domain::*;
use crate::ops::groups::{self as ops, SetGroupPermissions};
use crate::store::groups;
use crate::store::query::Page;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/groups", get(list))
        .route("/v1/groups/{id}", get(get_one))
        .route("/v1/groups/{id}/permissions", put(set_permissions))
}

#[utoipa::path(get, operation_id = "list_groups", path = "/v1/groups", params(("limit" = Option<u16>, Query, minimum = 1, maximum = 1000, description = "Items per page, 1 to 1000 (default 100)."), ("cursor" = inline(Option<GroupId>), Query, description = "`next_cursor` of the previous page.")), tag = "groups", responses((status = 200, body = Page<Group>)))]
pub async fn list(
    State(state): State<AppState>,
    Allowed(_caller): Allowed<Auditor>,
    Query(q): Query<RawPage>,
) -> ApiResult<axum::Json<Page<Group>>> {
    let page = page(&q.limit, &q.cursor, GroupId::parse)?;
    read_stale(&state, move |conn| groups::list_groups(conn, &page)).await
}

#[utoipa::path(get, operation_id = "get_group", path = "/v1/groups/{id}", params(("id" = inline(GroupId), Path, description = "group id")), tag = "groups", responses((status = 200, body = Group)))]
pub async fn get_one(
    State(state): State<AppState>,
    Allowed(_caller): Allowed<Auditor>,
    Path(id): Path<GroupId>,
) -> ApiResult<axum::Json<Group>> {
    read(&state, move |conn| groups::get_group(conn, id)).await
}

/// The group after the change, and the receipt of the sessions it revoked.
#[derive(Serialize, ToSchema)]
pub struct GroupPermissionsChanged {
    pub group: Group,
    pub receipt: Receipt,
}

#[utoipa::path(put, operation_id = "set_group_permissions", path = "/v1/groups/{id}/permissions", params(("id" = inline(GroupId), Path, description = "group id")), tag = "groups", request_body = SetGroupPermissions, responses((status = 200, body = GroupPermissionsChanged)))]
pub async fn set_permissions(
    State(state): State<AppState>,
    Allowed(caller): Allowed<Admin>,
    Path(id): Path<GroupId>,
    Json(req): Json<SetGroupPermissions>,
) -> ApiResult<axum::Json<GroupPermissionsChanged>> {
    write(&state, caller, move |tx| {
        ops::set_group_permissions(tx, &caller, id, req)
            .map(|(group, receipt)| GroupPermissionsChanged { group, receipt })
    })
    .await
}
