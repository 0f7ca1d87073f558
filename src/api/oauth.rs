//! RFC 7662 token introspection and RFC 7009 token revocation, form-encoded, so gateways and
//! OAuth tooling can use tether without custom code. Errors use the OAuth error shape
//! (`{"error", "error_description"}`) these clients expect, not problem+json.

use axum::extract::{rejection::FormRejection, Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

pub use super::client_auth::OAuthError;
use super::client_auth::{authenticate_client, oauth_error, ClientAuthError};
use super::problem::ApiError;
use super::AppState;
use crate::authorize::Request;
use crate::domain::access::{Capability, TokenRevoker, Verifier};
use crate::domain::*;
use crate::ops::WithReason;

pub fn router() -> Router<AppState> {
    Router::new().route("/oauth2/introspect", post(introspect)).route("/oauth2/revoke", post(revoke))
}

/// The form body of RFC 7662 and RFC 7009 requests, as documented. Other parameters are ignored;
/// `token` and `token_type_hint` may not appear twice. `client_id` and `client_secret`
/// (`client_secret_post`) are client authentication, not part of the request (docs/api.md): the
/// schema leaves them out, as it leaves out the Authorization header.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
pub struct TokenForm {
    /// The access or refresh token.
    #[schema(min_length = 1)]
    pub token: String,
    /// `access_token` or `refresh_token`; a hint only.
    pub token_type_hint: Option<String>,
}

/// Why a form body was refused: a 413 problem, or an OAuth `invalid_request` with its text.
enum FormError {
    TooLarge,
    Invalid(String),
}

impl FormError {
    fn into_response(self) -> Response {
        match self {
            FormError::TooLarge => {
                ApiError(Error::PayloadTooLarge("the request body is over the size limit".into())).into_response()
            }
            FormError::Invalid(why) => oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &why),
        }
    }
}

/// The pairs of a form body, or why it was refused.
fn form_pairs(form: Result<Form<Vec<(String, String)>>, FormRejection>) -> Result<Vec<(String, String)>, FormError> {
    match form {
        Ok(Form(pairs)) => Ok(pairs),
        Err(FormRejection::BytesRejection(e)) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Err(FormError::TooLarge)
        }
        Err(FormRejection::FailedToDeserializeForm(_)) => {
            Err(FormError::Invalid("the `token` parameter is required".into()))
        }
        Err(_) => Err(FormError::Invalid("expected an application/x-www-form-urlencoded body".into())),
    }
}

/// The caller of an RFC 7662/7009 request, by Bearer or RFC 6749 client authentication, and its
/// form, whose faults the handler answers after the role check: 401, then 403, then 400 or 413.
async fn caller_and_form(
    state: &AppState,
    headers: &HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<(Caller, Result<Vec<(String, String)>, FormError>), Response> {
    let pairs = form_pairs(form);
    let posted: &[(String, String)] = pairs.as_deref().unwrap_or_default();
    let (caller, _) = authenticate_client(state, headers, posted).await.map_err(ClientAuthError::into_response)?;
    Ok((caller, pairs))
}

/// The `token` parameter of an RFC 7662/7009 form body. `token` or `token_type_hint` given twice
/// is refused (RFC 6749 §3.1: request parameters must not be included more than once), naming it.
fn token_param(pairs: Result<Vec<(String, String)>, FormError>) -> Result<String, FormError> {
    let pairs = pairs?;
    // Parameters this endpoint ignores may repeat as they like; the ones it reads may not.
    let mut seen = std::collections::HashSet::new();
    for (name, _) in pairs.iter().filter(|(name, _)| name == "token" || name == "token_type_hint") {
        if !seen.insert(name.as_str()) {
            let name: String = name.chars().take(64).collect();
            return Err(FormError::Invalid(format!(
                "the `{name}` parameter is given more than once (RFC 6749 section 3.1)"
            )));
        }
    }
    match pairs.into_iter().find(|(name, _)| name == "token") {
        Some((_, token)) if !token.is_empty() => Ok(token),
        _ => Err(FormError::Invalid("the `token` parameter is required".into())),
    }
}

/// An RFC 7662 answer: only `active: false` for a token that is not live; the claims otherwise.
#[derive(Debug, Default, serde::Serialize, utoipa::ToSchema)]
pub struct Introspection {
    pub active: bool,
    /// The scopes authorize would allow now, space-separated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The delegating user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<UserId>,
    /// The platform the session was opened by.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<PlatformId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// The session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<SessionId>,
    /// The acting agent (RFC 8693), nesting each ancestor agent of a sub-agent session.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub act: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub integration_id: Option<IntegrationId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delegation_id: Option<DelegationId>,
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
#[utoipa::path(post, path = "/oauth2/introspect", operation_id = "introspect_token", tag = "checking tokens", request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"), responses((status = 200, body = Introspection), (status = 401, description = "No credential, or a Bearer credential not valid on arrival (problem+json); a client that failed RFC 6749 client authentication (`invalid_client`)", content((super::problem::Problem = "application/problem+json"), (OAuthError = "application/json"))), (status = 413, description = "The form is over 64 KiB", body = super::problem::Problem, content_type = "application/problem+json"), (status = "4XX", body = OAuthError)))]
pub async fn introspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Response {
    let (caller, pairs) = match caller_and_form(&state, &headers, form).await {
        Ok(both) => both,
        Err(answer) => return answer,
    };
    if Verifier::grant(&caller).is_err() {
        return oauth_error(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            "introspection needs a verifier or admin credential",
        );
    }
    let token = match token_param(pairs) {
        Ok(t) => t,
        Err(why) => return why.into_response(),
    };
    let inactive =
        || (StatusCode::OK, [("cache-control", "no-store")], axum::Json(Introspection::default())).into_response();
    let Ok(verified) = state.authorizer.verified(&token) else { return inactive() };
    let claims = &verified.claims;
    let now = state.clock.now();
    // Read before the live view, as authorize does: the view then holds every revocation up to
    // the head of the lease this standing rests on.
    let standing = state.cluster.as_ref().map(|c| c.state.standing());
    let mut live = state.views.sessions.get(claims.session);
    if let Some(standing) = standing {
        // As authorize does on a node of several: a session made elsewhere is read once, and an
        // active answer needs a node that can vouch for it (docs/architecture.md, "Leases").
        if live.is_none() {
            match state.learn_session(claims.session).await {
                Ok(_) => live = state.views.sessions.get(claims.session),
                Err(e) => return ApiError(e).into_response(),
            }
        }
        if live.is_some_and(|s| !s.revoked) && standing != crate::cluster::Standing::Current {
            return ApiError(Error::Unavailable(standing.explain().into())).into_response();
        }
    }
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
    let body = Introspection {
        active: true,
        scope: Some(allowed.join(" ")),
        sub: Some(claims.user),
        client_id: Some(claims.platform),
        token_type: Some("Bearer".to_owned()),
        exp: Some(claims.expires_at.seconds()),
        iat: Some(claims.issued_at.seconds()),
        iss: Some("tether".to_owned()),
        sid: Some(claims.session),
        act: Some(act(claims.agent, &claims.chain)),
        integration_id: Some(claims.integration),
        delegation_id: Some(claims.delegation),
    };
    (StatusCode::OK, [("cache-control", "no-store")], axum::Json(body)).into_response()
}

/// RFC 7009: revokes the session behind an access or refresh token. Answers 200 whether or not
/// the token was valid (the RFC's rule, so the endpoint cannot be used to probe tokens). A
/// platform may revoke only its own sessions; a verifier any token it holds.
#[utoipa::path(post, path = "/oauth2/revoke", operation_id = "revoke_token", tag = "checking tokens", request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"), responses((status = 200, description = "revoked, or the token was not one tether would revoke (RFC 7009)"), (status = 401, description = "No credential, or a Bearer credential not valid on arrival (problem+json); a client that failed RFC 6749 client authentication (`invalid_client`)", content((super::problem::Problem = "application/problem+json"), (OAuthError = "application/json"))), (status = 413, description = "The form is over 64 KiB", body = super::problem::Problem, content_type = "application/problem+json"), (status = "4XX", body = OAuthError)))]
pub async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Response {
    let (caller, pairs) = match caller_and_form(&state, &headers, form).await {
        Ok(both) => both,
        Err(answer) => return answer,
    };
    let Ok(revoker) = TokenRevoker::grant(&caller) else {
        return oauth_error(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            "revocation needs a verifier, platform or admin credential",
        );
    };
    let token = match token_param(pairs) {
        Ok(t) => t,
        Err(why) => return why.into_response(),
    };
    let done = || (StatusCode::OK, [("cache-control", "no-store")]).into_response();
    // A fixed, valid reason: `parse` cannot refuse it.
    let reason = WithReason { reason: Reason::parse("oauth_token_revocation").ok() };
    let held = if token.starts_with("rt_") {
        revoker.holding_refresh_token(crate::tokens::refresh::hash(&token))
    } else {
        let Ok(verified) = state.authorizer.verified(&token) else { return done() };
        // A platform holds only its own platform's tokens: another's is not one it may revoke.
        let Some(held) = revoker.holding_session(verified.claims.session, verified.claims.platform) else {
            return done();
        };
        held
    };
    let outcome =
        state.writer.execute_as(&caller, move |tx| crate::ops::sessions::revoke_held(tx, &held, reason)).await;
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
