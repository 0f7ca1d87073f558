//! `POST /oauth2/global-token-revocation` (draft-parecki-oauth-global-token-revocation; Okta
//! Universal Logout): an identity provider asks that every agent acting for a user be signed out.
//!
//! Authenticated by an admin or provisioner credential, or by a JWT signed with the keys of an
//! active signal source (Okta's signed-JWT mode). Answers as the draft says: 204 when the sign-out
//! is done; 400 for a malformed request or a subject format tether does not read; 401, 403; 404
//! when the subject names no user.

use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::{header, StatusCode};
use axum::routing::post;
use axum::Router;
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::auth::Allowed;
use super::problem::{ApiError, ApiResult, Json};
use super::AppState;
use crate::domain::access::{Capability, Provisioner, SignalAuthority};
use crate::domain::*;
use crate::ops::signals as ops;
use crate::signals::jwks::KeySource;
use crate::signals::set::{self, SKEW_SECONDS};
use crate::store::signals as store;

pub fn router() -> Router<AppState> {
    Router::new().route("/oauth2/global-token-revocation", post(revoke))
}

/// The request: the subject whose tokens end. Drafts up to -02 called the member `subject`; later
/// ones (and Okta) `sub_id`. Exactly one of the two.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GlobalRevocation {
    /// A subject identifier (RFC 9493): `email`, `iss_sub`, `opaque`, `account`, `aliases`, or
    /// `complex` with a `user` member.
    #[schema(value_type = Option<Object>)]
    pub sub_id: Option<Value>,
    /// The same as `sub_id`, as early drafts named it.
    #[schema(value_type = Option<Object>)]
    pub subject: Option<Value>,
}

fn unauthenticated(why: &str) -> ApiError {
    ApiError(Error::Unauthenticated(why.to_owned()))
}

fn b64_json(part: &str) -> Option<Map<String, Value>> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Verifies a JWT bearer signed by an active signal source: its `iss` names the source, its
/// signature verifies with the source's keys, `aud` names the source's audience (when set),
/// `iat` is within the skew window or an unexpired `exp` is present. A SET is not accepted here:
/// a SET sent to a receiver must not become a sign-out request.
async fn verified_source(state: &AppState, token: &str) -> Result<(SignalAuthority, String), ApiError> {
    let invalid = || unauthenticated("the JWT does not verify with a registered signal source's keys");
    let mut parts = token.split('.');
    let (Some(head), Some(payload)) = (parts.next(), parts.next()) else { return Err(invalid()) };
    let jose = b64_json(head).ok_or_else(invalid)?;
    if jose.get("typ").and_then(Value::as_str).is_some_and(|t| t.to_ascii_lowercase().contains("secevent")) {
        return Err(unauthenticated("a Security Event Token is not a revocation request"));
    }
    let alg = jose.get("alg").and_then(Value::as_str).and_then(crate::signals::jwks::asymmetric_algorithm).ok_or_else(
        || unauthenticated("the JWT must be signed with an asymmetric algorithm (RS256, ES256, EdDSA, …)"),
    )?;
    let kid = jose.get("kid").and_then(Value::as_str).map(str::to_owned);
    let issuer =
        b64_json(payload).and_then(|c| c.get("iss").and_then(Value::as_str).map(str::to_owned)).ok_or_else(invalid)?;
    let sources = state.readers.read(store::active_sources).await?;
    let header = set::Header { alg, kid };
    let now = state.clock.now().seconds();
    for source in sources.into_iter().filter(|s| s.issuer == issuer) {
        let from = match (&source.jwks_uri, &source.jwks) {
            (Some(uri), _) => KeySource::Uri(uri.clone()),
            (None, Some(jwks)) => KeySource::Inline(serde_json::from_str(jwks).unwrap_or(Value::Null)),
            (None, None) => continue,
        };
        let Ok(keys) = state.signal_keys.keys(source.id, &from, header.kid.as_deref()).await else { continue };
        let Ok(claims) = set::verify_signature(token, &header, &keys) else { continue };
        if let Some(audience) = &source.audience {
            let named = match claims.get("aud") {
                Some(Value::String(a)) => a == audience,
                Some(Value::Array(all)) => all.iter().any(|a| a.as_str() == Some(audience)),
                _ => false,
            };
            if !named {
                return Err(unauthenticated("the JWT's `aud` does not name this receiver's audience"));
            }
        }
        let number = |name: &str| claims.get(name).and_then(Value::as_i64);
        let exp_ok = number("exp").is_none_or(|exp| exp > now);
        let iat_ok = number("iat").is_some_and(|iat| (iat - now).abs() <= SKEW_SECONDS);
        let fresh = exp_ok && (iat_ok || number("exp").is_some_and(|exp| exp - now <= SKEW_SECONDS * 12));
        if !fresh {
            return Err(unauthenticated(&format!(
                "the JWT is expired or stale: `iat` within {SKEW_SECONDS} s, or an `exp` within the hour, is required"
            )));
        }
        return Ok((SignalAuthority::for_verified_source(source.id), source.issuer));
    }
    Err(invalid())
}

#[utoipa::path(
    post,
    operation_id = "global_token_revocation",
    path = "/oauth2/global-token-revocation",
    tag = "signals",
    request_body = GlobalRevocation,
    responses(
        (status = 204, description = "Every agent acting for the user was signed out"),
        (status = 400, description = "Malformed, or a subject format tether does not read", body = super::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "No credential, or one that does not verify", body = super::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "A credential whose role may not do this", body = super::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "The subject names no user", body = super::problem::Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is over 64 KiB", body = super::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not `application/json`", body = super::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn revoke(State(state): State<AppState>, request: Request) -> ApiResult<StatusCode> {
    let (mut parts, body) = request.into_parts();
    let bearer = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(|t| t.trim().to_owned());
    // A JWT has two dots; tether's credentials (biscuits, base64url) have none.
    let (issuer, via) = match bearer.filter(|t| t.matches('.').count() == 2) {
        Some(jwt) => {
            let (authority, issuer) = verified_source(&state, &jwt).await?;
            (Some(issuer), Via::Source(authority))
        }
        None => {
            let Allowed(caller) = Allowed::<Provisioner>::from_request_parts(&mut parts, &state).await?;
            (None, Via::Credential(caller))
        }
    };
    let Json(req) = Json::<GlobalRevocation>::from_request(Request::from_parts(parts, body), &state).await?;
    let subject = match (req.sub_id, req.subject) {
        (Some(s), None) | (None, Some(s)) => s,
        _ => {
            return Err(ApiError(Error::invalid(
                "give the subject as `sub_id` (exactly one of `sub_id` and `subject`)",
            )))
        }
    };
    if let Err(crate::signals::subject::Unsupported(why)) = crate::signals::subject::wanted(&subject, issuer.as_deref())
    {
        return Err(ApiError(Error::invalid(format!("`sub_id`: {why}"))));
    }
    match via {
        Via::Credential(caller) => {
            let command =
                move |tx: &mut crate::store::Tx<'_>| ops::global_revocation(tx, &caller, &subject, issuer.as_deref());
            state.writer.execute_as(caller.caller(), command).await?
        }
        Via::Source(authority) => {
            let command = move |tx: &mut crate::store::Tx<'_>| {
                ops::global_revocation(tx, &authority, &subject, issuer.as_deref())
            };
            state.writer.execute(command).await?
        }
    };
    Ok(StatusCode::NO_CONTENT)
}

/// How the request was authenticated.
enum Via {
    Credential(Provisioner),
    Source(SignalAuthority),
}
