//! `POST /oauth2/token`, RFC 6749 §4.4 `client_credentials` for Shared Signals receivers: a
//! receiver credential, authenticated as an OAuth client (`client_secret_basic` or
//! `client_secret_post`), gets a short-lived access token with the scopes `ssf.manage` and/or
//! `ssf.read`, which the SSF routes take as a Bearer token.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::extract::{rejection::FormRejection, Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use sha2::{Digest, Sha256};

use super::client_auth::{authenticate_client, oauth_error, single_param, ClientAuthError};
use super::problem::ApiError;
use super::AppState;
use crate::domain::{Caller, Error, Role, Timestamp};

pub fn router() -> Router<AppState> {
    Router::new().route("/oauth2/token", post(token))
}

/// Seconds an access token lives.
pub const ACCESS_TOKEN_SECONDS: i64 = 3600;
/// The prefix that tells an access token from an API credential on the SSF routes.
pub const ACCESS_TOKEN_PREFIX: &str = "ssfat_";
/// Access tokens held at once; past it, expired ones are dropped, then the oldest.
const MAX_TOKENS: usize = 10_000;

/// The SSF scopes (SSF §7.1.1 names them for the OAuth authorization scheme).
pub const SCOPE_MANAGE: &str = "ssf.manage";
pub const SCOPE_READ: &str = "ssf.read";

/// An access token's grant: who, which scopes, until when.
#[derive(Debug, Clone, Copy)]
pub struct Grant {
    pub caller: Caller,
    pub manage: bool,
    pub expires_at: Timestamp,
}

/// Access tokens issued by this process, by the SHA-256 of the token (the token itself is not
/// kept). They live in memory only: a restart ends them and receivers ask for new ones, which
/// RFC 6749 clients do on a 401.
#[derive(Default)]
pub struct AccessTokens {
    grants: Mutex<HashMap<[u8; 32], Grant>>,
}

impl std::fmt::Debug for AccessTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessTokens").finish_non_exhaustive()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl AccessTokens {
    fn issue(&self, grant: Grant, now: Timestamp) -> String {
        let mut bytes = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
        let token = format!("{ACCESS_TOKEN_PREFIX}{}", hex::encode(bytes));
        let mut grants = self.grants.lock().unwrap_or_else(|p| p.into_inner());
        if grants.len() >= MAX_TOKENS {
            grants.retain(|_, g| g.expires_at > now);
            if grants.len() >= MAX_TOKENS {
                if let Some(oldest) = grants.iter().min_by_key(|(_, g)| g.expires_at).map(|(k, _)| *k) {
                    grants.remove(&oldest);
                }
            }
        }
        grants.insert(digest(&token), grant);
        token
    }

    /// The live grant of a token.
    pub fn get(&self, token: &str, now: Timestamp) -> Option<Grant> {
        let grants = self.grants.lock().unwrap_or_else(|p| p.into_inner());
        grants.get(&digest(token)).copied().filter(|g| g.expires_at > now)
    }
}

/// A token request: `grant_type`, `scope`, and the client's own parameters (RFC 6749 §4.4.2).
#[utoipa::path(post, path = "/oauth2/token", operation_id = "oauth_token", tag = "shared signals", security(()), responses((status = 200, description = "`{access_token, token_type: Bearer, expires_in, scope}` (RFC 6749 section 4.4.3)"), (status = "4XX", body = super::client_auth::OAuthError)))]
pub async fn token(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Response {
    // The client first: a caller that is not a receiver learns nothing of how its request would
    // have been judged. A body that is not a form still lets a Basic or Bearer client through to
    // the answer that names the body's fault.
    let (form, malformed) = match form {
        Ok(Form(pairs)) => (pairs, false),
        Err(FormRejection::BytesRejection(e)) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return ApiError(Error::PayloadTooLarge("the request body is over the size limit".into())).into_response()
        }
        Err(_) => (Vec::new(), true),
    };
    let caller = match authenticate_client(&state, &headers, &form).await {
        Ok((caller, _)) => caller,
        // No client authentication at all is `invalid_client` here, not the API's 401 problem.
        Err(ClientAuthError::Bearer(_)) if headers.get(axum::http::header::AUTHORIZATION).is_none() => {
            return ClientAuthError::InvalidClient {
                description: "authenticate the client with client_secret_basic or client_secret_post".into(),
                basic: true,
            }
            .into_response()
        }
        Err(e) => return e.into_response(),
    };
    if !matches!(caller.role, Role::Receiver(_)) {
        // 403 like every route a role may not call (docs/api.md's role table); the body is the
        // OAuth error RFC 6749 §5.2 names for it.
        return oauth_error(
            StatusCode::FORBIDDEN,
            "unauthorized_client",
            "only a receiver credential may use the client_credentials grant",
        );
    }
    if malformed {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "expected an application/x-www-form-urlencoded body",
        );
    }
    let (grant_type, scope) = match (single_param(&form, "grant_type"), single_param(&form, "scope")) {
        (Ok(g), Ok(s)) => (g.map(str::to_owned), s.map(str::to_owned)),
        (Err(e), _) | (_, Err(e)) => return e.into_response(),
    };
    match grant_type.as_deref() {
        Some("client_credentials") => {}
        Some(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only `client_credentials` is supported",
            )
        }
        None => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "`grant_type` is required"),
    }
    let requested: Vec<&str> = match scope.as_deref() {
        None => vec![SCOPE_MANAGE, SCOPE_READ],
        Some(text) => text.split(' ').filter(|s| !s.is_empty()).collect(),
    };
    if requested.is_empty() || requested.iter().any(|s| *s != SCOPE_MANAGE && *s != SCOPE_READ) {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_scope", "the scopes are `ssf.manage` and `ssf.read`");
    }
    let manage = requested.contains(&SCOPE_MANAGE);
    let now = state.clock.now();
    let grant = Grant { caller, manage, expires_at: now.plus_seconds(ACCESS_TOKEN_SECONDS) };
    let access_token = state.ssf_tokens.issue(grant, now);
    let mut scopes: Vec<&str> = requested;
    scopes.sort_unstable();
    scopes.dedup();
    let body = serde_json::json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": ACCESS_TOKEN_SECONDS,
        "scope": scopes.join(" "),
    });
    (StatusCode::OK, [("cache-control", "no-store"), ("pragma", "no-cache")], axum::Json(body)).into_response()
}
