//! SCIM 2.0 (RFC 7643, RFC 7644) at `/scim/v2`: the identity provider's door for users and
//! groups, authenticated with a provisioner (or admin) credential, answering
//! `application/scim+json` and SCIM error bodies, 401 and 403 included. Kept out of the OpenAPI
//! document: SCIM describes itself through /ServiceProviderConfig, /ResourceTypes and /Schemas.

pub mod filter;
pub mod groups;
pub mod patch;
pub mod protocol;
pub mod schema;
pub mod users;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use serde_json::Value;

use crate::api::AppState;
use crate::domain::access::Provisioner;
use protocol::{base_url, scim_json, ScimAllowed, ScimError, ScimResult, Window};

/// Every SCIM route, under `/scim/v2`, with SCIM answers for unknown paths and methods.
pub fn router() -> Router<AppState> {
    let inner = Router::new()
        .route("/ServiceProviderConfig", get(service_provider_config))
        .route("/ResourceTypes", get(resource_types))
        .route("/ResourceTypes/{name}", get(resource_type))
        .route("/Schemas", get(schemas))
        .route("/Schemas/{id}", get(schema_by_id))
        .route("/.search", axum::routing::post(search_everything))
        .merge(users::router())
        .merge(groups::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    Router::new().nest("/scim/v2", inner)
}

async fn not_found() -> ScimError {
    ScimError::not_found("resource")
}

async fn method_not_allowed() -> ScimError {
    ScimError::new(StatusCode::METHOD_NOT_ALLOWED, None, "this SCIM endpoint does not take this method")
}

/// Searching every resource type at once (RFC 7644 §3.4.3, a MAY) is not implemented: 501, as
/// §3.12 says for an unsupported operation.
async fn search_everything(ScimAllowed(_): ScimAllowed<Provisioner>) -> ScimError {
    ScimError::new(StatusCode::NOT_IMPLEMENTED, None, "searching every resource type at once is not supported")
}

async fn service_provider_config(
    State(state): State<AppState>,
    ScimAllowed(_): ScimAllowed<Provisioner>,
) -> ScimResult {
    Ok(scim_json(StatusCode::OK, &schema::service_provider_config(&base_url(&state))))
}

fn all_of(documents: Vec<Value>) -> axum::response::Response {
    let window = Window { start_index: 1, count: documents.len() };
    protocol::list_response(documents.len(), window, documents)
}

async fn resource_types(State(state): State<AppState>, ScimAllowed(_): ScimAllowed<Provisioner>) -> ScimResult {
    let base = base_url(&state);
    Ok(all_of(["User", "Group"].iter().filter_map(|n| schema::resource_type_document(&base, n)).collect()))
}

async fn resource_type(
    State(state): State<AppState>,
    ScimAllowed(_): ScimAllowed<Provisioner>,
    Path(name): Path<String>,
) -> ScimResult {
    let document = schema::resource_type_document(&base_url(&state), &name)
        .ok_or_else(|| ScimError::not_found("resource type"))?;
    Ok(scim_json(StatusCode::OK, &document))
}

async fn schemas(State(state): State<AppState>, ScimAllowed(_): ScimAllowed<Provisioner>) -> ScimResult {
    let base = base_url(&state);
    Ok(all_of(
        [schema::USER_SCHEMA, schema::GROUP_SCHEMA]
            .iter()
            .filter_map(|id| schema::schema_document(&base, id))
            .collect(),
    ))
}

async fn schema_by_id(
    State(state): State<AppState>,
    ScimAllowed(_): ScimAllowed<Provisioner>,
    Path(id): Path<String>,
) -> ScimResult {
    let document = schema::schema_document(&base_url(&state), &id).ok_or_else(|| ScimError::not_found("schema"))?;
    Ok(scim_json(StatusCode::OK, &document))
}
