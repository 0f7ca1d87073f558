//! Discovery documents: RFC 8414 authorization-server metadata and RFC 9728 protected-resource
//! metadata, and the `WWW-Authenticate` challenge every 401 carries (RFC 6750, RFC 9728 §5.1),
//! so OAuth libraries find tether's endpoints and their client authentication without
//! configuration. Every URL is built from `--public-url`.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;

use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(AUTHORIZATION_SERVER_PATH, get(authorization_server))
        .route(PROTECTED_RESOURCE_PATH, get(protected_resource))
}

const AUTHORIZATION_SERVER_PATH: &str = "/.well-known/oauth-authorization-server";
const PROTECTED_RESOURCE_PATH: &str = "/.well-known/oauth-protected-resource";

/// The client authentication the OAuth endpoints accept (besides a Bearer credential, which has
/// no RFC 8414 name).
const CLIENT_AUTH_METHODS: [&str; 2] = ["client_secret_basic", "client_secret_post"];

/// RFC 8414 authorization-server metadata.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuthorizationServerMetadata {
    pub issuer: String,
    /// `client_credentials` for Shared Signals receivers (scopes `ssf.manage`, `ssf.read`).
    pub token_endpoint: String,
    pub token_endpoint_auth_methods_supported: Vec<&'static str>,
    pub scopes_supported: Vec<&'static str>,
    /// The keys tether signs Security Event Tokens with.
    pub jwks_uri: String,
    pub introspection_endpoint: String,
    pub introspection_endpoint_auth_methods_supported: Vec<&'static str>,
    pub revocation_endpoint: String,
    pub revocation_endpoint_auth_methods_supported: Vec<&'static str>,
    /// draft-parecki-oauth-global-token-revocation: where an identity provider signs a user's
    /// agents out everywhere (docs/api.md, "Signals in").
    pub global_token_revocation_endpoint: String,
    /// tether has no authorization endpoint: no response type is supported (RFC 8414 requires
    /// the member).
    pub response_types_supported: Vec<&'static str>,
    pub grant_types_supported: Vec<&'static str>,
    pub service_documentation: String,
}

/// RFC 9728 protected-resource metadata for tether's own API.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProtectedResourceMetadata {
    pub resource: String,
    pub authorization_servers: Vec<String>,
    pub bearer_methods_supported: Vec<&'static str>,
    pub resource_name: &'static str,
    pub resource_documentation: String,
}

/// RFC 8414 metadata: tether's token, introspection, revocation and global token revocation
/// endpoints and the client authentication they take. No credential.
#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", operation_id = "authorization_server_metadata", tag = "operations", security(()), responses((status = 200, body = AuthorizationServerMetadata)))]
pub async fn authorization_server(State(state): State<AppState>) -> Response {
    let url = &state.public_url;
    let body = AuthorizationServerMetadata {
        issuer: url.as_str().to_owned(),
        token_endpoint: url.join("/oauth2/token"),
        token_endpoint_auth_methods_supported: CLIENT_AUTH_METHODS.to_vec(),
        scopes_supported: vec!["ssf.manage", "ssf.read"],
        jwks_uri: url.join("/ssf/jwks.json"),
        introspection_endpoint: url.join("/oauth2/introspect"),
        introspection_endpoint_auth_methods_supported: CLIENT_AUTH_METHODS.to_vec(),
        revocation_endpoint: url.join("/oauth2/revoke"),
        revocation_endpoint_auth_methods_supported: CLIENT_AUTH_METHODS.to_vec(),
        global_token_revocation_endpoint: url.join("/oauth2/global-token-revocation"),
        response_types_supported: Vec::new(),
        grant_types_supported: vec!["client_credentials"],
        service_documentation: url.join("/openapi.json"),
    };
    document(body)
}

/// RFC 9728 metadata for tether's API: where its credentials come from and how they are sent.
/// No credential.
#[utoipa::path(get, path = "/.well-known/oauth-protected-resource", operation_id = "protected_resource_metadata", tag = "operations", security(()), responses((status = 200, body = ProtectedResourceMetadata)))]
pub async fn protected_resource(State(state): State<AppState>) -> Response {
    let url = &state.public_url;
    let body = ProtectedResourceMetadata {
        resource: url.as_str().to_owned(),
        authorization_servers: vec![url.as_str().to_owned()],
        bearer_methods_supported: vec!["header"],
        resource_name: "tether",
        resource_documentation: url.join("/openapi.json"),
    };
    document(body)
}

fn document(body: impl Serialize) -> Response {
    // Public and the same for every caller; a client may cache it for a while.
    ([(header::CACHE_CONTROL, "public, max-age=300")], axum::Json(body)).into_response()
}

/// Completes the RFC 6750 challenge of a 401 (a problem answer carries a bare `Bearer`), pointing
/// at the protected-resource metadata (RFC 9728 §5.1). `error="invalid_token"` is there even when
/// no credential came (RFC 6750 §3.1 says it should be left out then, a should, not a must): one
/// challenge on every 401 is simpler for clients to rely on. A 401 that challenges otherwise
/// (Basic, from client authentication) keeps its own.
pub async fn challenge_unauthenticated(State(state): State<AppState>, mut response: Response) -> Response {
    let challenge = response.headers().get(header::WWW_AUTHENTICATE);
    if response.status() == StatusCode::UNAUTHORIZED && challenge.is_none_or(|c| c == "Bearer") {
        let challenge = format!(
            "Bearer realm=\"tether\", error=\"invalid_token\", resource_metadata=\"{}\"",
            state.public_url.join(PROTECTED_RESOURCE_PATH)
        );
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
        }
    }
    response
}
