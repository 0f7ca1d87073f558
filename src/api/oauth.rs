//! RFC 7662 token introspection and RFC 7009 token revocation, form-encoded, so gateways and
//! OAuth tooling can use tether without custom code. Errors use the OAuth error shape
//! (`{"error", "error_description"}`) these clients expect, not problem+json.

use std::collections::HashMap;

use axum::extract::{rejection::FormRejection, Form, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

use super::auth::Authenticated;
use super::AppState;
use crate::authorize::Request;
use crate::domain::*;
use crate::ops::commands::WithReason;

pub fn router() -> Router<AppState> {
    Router::new().route("/oauth2/introspect", post(introspect)).route("/oauth2/revoke", post(revoke))
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (status, [("cache-control", "no-store")], axum::Json(json!({"error": error, "error_description": description})))
        .into_response()
}

/// The `token` parameter of an RFC 7662/7009 form body, or why it is missing.
fn token_param(form: Result<Form<HashMap<String, String>>, FormRejection>) -> Result<String, &'static str> {
    let Form(params) = form.map_err(|_| "expected an application/x-www-form-urlencoded body")?;
    match params.get("token") {
        Some(t) if !t.is_empty() => Ok(t.clone()),
        _ => Err("the `token` parameter is required"),
    }
}

/// `act` as in RFC 8693: the acting agent, nesting each ancestor agent.
fn act(agent: AgentId, chain: &[(SessionId, AgentId)]) -> Value {
    let mut act = json!({"sub": agent});
    let mut cursor = &mut act;
    for (_, ancestor) in chain {
        cursor["act"] = json!({"sub": ancestor});
        cursor = &mut cursor["act"];
    }
    act
}

/// RFC 7662: `{"active": false}` for anything not live, with no further detail.
#[utoipa::path(post, path = "/oauth2/introspect", tag = "checking tokens", request_body(content = String, content_type = "application/x-www-form-urlencoded"), responses((status = 200, body = Object)))]
pub async fn introspect(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    if crate::ops::require(&caller, &[RoleKind::Verifier, RoleKind::Admin]).is_err() {
        return oauth_error(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            "introspection needs a verifier or admin credential",
        );
    }
    let token = match token_param(form) {
        Ok(t) => t,
        Err(why) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", why),
    };
    let inactive =
        || (StatusCode::OK, [("cache-control", "no-store")], axum::Json(json!({"active": false}))).into_response();
    let Ok(verified) = state.authorizer.verified(&token) else { return inactive() };
    let claims = &verified.claims;
    let now = state.clock.now();
    let live = state.views.sessions.get(claims.session);
    let active = live.is_some_and(|s| !s.revoked && s.expires_at > now) && claims.expires_at > now;
    if !active {
        return inactive();
    }
    // Only the scopes authorize would allow now (without a resource): blocks a holder appended
    // to narrow the token, and the policy, apply here too, so introspection never grants more
    // than authorize.
    let allowed: Vec<&str> = claims
        .scopes
        .iter()
        .filter(|scope| state.authorizer.authorize(&Request { token: &token, scope, resource: None }).allowed())
        .map(|scope| scope.as_str())
        .collect();
    let body = json!({
        "active": true,
        "scope": allowed.join(" "),
        "sub": claims.user,
        "client_id": claims.platform,
        "token_type": "Bearer",
        "exp": claims.expires_at.seconds(),
        "iat": claims.issued_at.seconds(),
        "iss": "tether",
        "sid": claims.session,
        "act": act(claims.agent, &claims.chain),
        "integration_id": claims.integration,
        "delegation_id": claims.delegation,
    });
    (StatusCode::OK, [("cache-control", "no-store")], axum::Json(body)).into_response()
}

/// RFC 7009: revokes the session behind an access or refresh token. Answers 200 whether or not
/// the token was valid (the RFC's rule, so the endpoint cannot be used to probe tokens). A
/// platform may revoke only its own sessions; a verifier any token it holds.
#[utoipa::path(post, path = "/oauth2/revoke", tag = "checking tokens", request_body(content = String, content_type = "application/x-www-form-urlencoded"), responses((status = 200)))]
pub async fn revoke(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    if crate::ops::require(&caller, &[RoleKind::Verifier, RoleKind::Platform, RoleKind::Admin]).is_err() {
        return oauth_error(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            "revocation needs a verifier, platform or admin credential",
        );
    }
    let token = match token_param(form) {
        Ok(t) => t,
        Err(why) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", why),
    };
    let done = || (StatusCode::OK, [("cache-control", "no-store")]).into_response();
    let reason = WithReason { reason: Some("oauth_token_revocation".into()) };
    let outcome = if token.starts_with("rt_") {
        let hash = crate::tokens::refresh::hash(&token);
        state
            .writer
            .execute_as(&caller, move |tx| crate::ops::sessions::revoke_by_refresh_token(tx, &caller, &hash, reason))
            .await
    } else {
        let Ok(verified) = state.authorizer.verified(&token) else { return done() };
        let claims = verified.claims.clone();
        if let Role::Platform(p) = caller.role {
            if p != claims.platform {
                return done();
            }
        }
        state
            .writer
            .execute_as(&caller, move |tx| {
                crate::ops::sessions::revoke_session_held(tx, &caller, claims.session, reason)
            })
            .await
    };
    match outcome {
        Ok(_) | Err(Error::NotFound(_)) => done(),
        // The caller's credential was revoked while the request waited (RFC 7009 §2.2.1).
        Err(Error::Unauthenticated(why)) => oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", &why),
        Err(e) => {
            tracing::warn!(error = %e, "oauth revoke failed");
            oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the revocation could not be recorded",
            )
        }
    }
}
