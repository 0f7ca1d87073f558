//! `POST /oauth2/token`, RFC 6749 §4.4 `client_credentials` for Shared Signals receivers: a
//! receiver credential, authenticated as an OAuth client (`client_secret_basic` or
//! `client_secret_post`), gets a short-lived access token with the scopes `ssf.manage` and/or
//! `ssf.read`, which the SSF routes take as a Bearer token.

use axum::extract::{rejection::FormRejection, Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::client_auth::{authenticate_client, oauth_error, single_param, ClientAuthError};
use super::problem::ApiError;
use super::AppState;
use crate::domain::{Caller, CredentialId, Error, PlatformId, Role, Timestamp};

pub fn router() -> Router<AppState> {
    Router::new().route("/oauth2/token", post(token))
}

/// Seconds an access token lives.
pub const ACCESS_TOKEN_SECONDS: i64 = 3600;
/// The prefix that tells an access token from an API credential on the SSF routes.
pub const ACCESS_TOKEN_PREFIX: &str = "ssfat_";

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

/// Access tokens: `ssfat_` + the grant (credential id, whether it may manage, expiry) + an
/// HMAC-SHA256 of it under a key derived from the data directory's master key. Nothing is held in
/// memory or stored, so every node that shares the keys honours a token another node issued, and
/// a restart ends none; revoking the receiver's credential ends its tokens (checked at each use).
pub struct AccessTokens {
    key: [u8; 32],
}

impl std::fmt::Debug for AccessTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessTokens").finish_non_exhaustive()
    }
}

fn mac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length.
    <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

impl AccessTokens {
    /// `master`: the data directory's master key (`keys/webhook.key`), which every node shares.
    pub fn new(master: &[u8; 32]) -> Self {
        let mut derive = mac(master);
        derive.update(b"tether: Shared Signals access tokens, v1");
        AccessTokens { key: derive.finalize().into_bytes().into() }
    }

    fn issue(&self, grant: Grant) -> String {
        // Only receivers are granted tokens (`token` below); their platform binding rides along.
        let platform = match grant.caller.role {
            Role::Receiver(Some(platform)) => platform.to_string(),
            _ => "-".to_owned(),
        };
        let grant =
            format!("{}.{platform}.{}.{}", grant.caller.credential, u8::from(grant.manage), grant.expires_at.millis());
        let mut signature = mac(&self.key);
        signature.update(grant.as_bytes());
        format!("{ACCESS_TOKEN_PREFIX}{}.{}", B64.encode(&grant), B64.encode(signature.finalize().into_bytes()))
    }

    /// The grant of a token this tether issued and that has not expired.
    pub fn get(&self, token: &str, now: Timestamp) -> Option<Grant> {
        let (grant, signature) = token.strip_prefix(ACCESS_TOKEN_PREFIX)?.split_once('.')?;
        let grant = B64.decode(grant).ok()?;
        let mut expected = mac(&self.key);
        expected.update(&grant);
        expected.verify_slice(&B64.decode(signature).ok()?).ok()?;
        let text = std::str::from_utf8(&grant).ok()?;
        let mut fields = text.split('.');
        let (credential, platform, manage, expires) = (fields.next()?, fields.next()?, fields.next()?, fields.next()?);
        let platform = match platform {
            "-" => None,
            id => Some(PlatformId::parse(id).ok()?),
        };
        let grant = Grant {
            caller: Caller { credential: CredentialId::parse(credential).ok()?, role: Role::Receiver(platform) },
            manage: manage == "1",
            expires_at: Timestamp(expires.parse().ok()?),
        };
        (fields.next().is_none() && grant.expires_at > now).then_some(grant)
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
    let access_token = state.ssf_tokens.issue(grant);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(manage: bool, expires_at: i64) -> Grant {
        let credential = CredentialId::parse("cred_01a24c1a470d778881e0b904ccb50d68").expect("id");
        Grant { caller: Caller { credential, role: Role::Receiver(None) }, manage, expires_at: Timestamp(expires_at) }
    }

    #[test]
    fn a_token_carries_its_grant_to_any_node_with_the_same_master_key_until_it_expires() {
        let (here, elsewhere) = (AccessTokens::new(&[7; 32]), AccessTokens::new(&[7; 32]));
        let token = here.issue(grant(true, 2_000));
        let read = elsewhere.get(&token, Timestamp(1_000)).expect("honoured by another node");
        assert_eq!(
            (read.caller.credential, read.manage, read.expires_at),
            (grant(true, 0).caller.credential, true, Timestamp(2_000))
        );
        assert!(!here.get(&here.issue(grant(false, 2_000)), Timestamp(1_000)).expect("read").manage);
        let platform = PlatformId::parse("plt_01a24c1a470d778881e0b904ccb50d68").expect("id");
        let bound = Grant {
            caller: Caller { role: Role::Receiver(Some(platform)), ..grant(false, 0).caller },
            ..grant(false, 2_000)
        };
        assert_eq!(
            here.get(&here.issue(bound), Timestamp(1_000)).expect("read").caller.role,
            Role::Receiver(Some(platform))
        );
        assert!(here.get(&token, Timestamp(2_000)).is_none(), "expired");
    }

    #[test]
    fn a_token_under_another_key_or_altered_is_refused() {
        let tokens = AccessTokens::new(&[7; 32]);
        let token = tokens.issue(grant(false, 2_000));
        assert!(AccessTokens::new(&[8; 32]).get(&token, Timestamp(0)).is_none(), "another tether's key");
        // The same signature over a grant that says it may manage, or lives longer.
        let (_, signature) = token.rsplit_once('.').expect("two parts");
        for forged in
            ["cred_01a24c1a470d778881e0b904ccb50d68.-.1.2000", "cred_01a24c1a470d778881e0b904ccb50d68.-.0.9000"]
        {
            let forged = format!("{ACCESS_TOKEN_PREFIX}{}.{signature}", B64.encode(forged));
            assert!(tokens.get(&forged, Timestamp(0)).is_none(), "{forged}");
        }
        assert!(tokens.get("ssfat_", Timestamp(0)).is_none());
        assert!(tokens.get("ssfat_.", Timestamp(0)).is_none());
    }
}
