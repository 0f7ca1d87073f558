//! The bearer-credential extractor: every API route but health and metrics gets a [`Caller`].

use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts};

use super::problem::ApiError;
use super::AppState;
use crate::domain::access::{
    Admin, AnyRole, Auditor, Capability, FeedReader, Owner, PlatformScope, Provisioner, Receiver, TenantReader,
    TokenRevoker, UserScope, Verifier, WebhookOwner,
};
use crate::domain::{Caller, Error, RoleKind};
use crate::tokens::{self, CredentialClaims, TokenError};
use crate::views::CredentialState;

fn unauthenticated(why: &str) -> ApiError {
    ApiError(Error::Unauthenticated(why.to_owned()))
}

/// The caller of this request, verified: signature under the API key, credential known and live.
pub struct Authenticated(pub Caller);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        authenticate(parts, state).await.map(|(caller, _)| Authenticated(caller))
    }
}

/// [`Authenticated`], with the id of the API key that signed the credential: for a long-lived
/// answer (the event stream) that must end when that key is retired.
pub struct AuthenticatedWithKey {
    pub caller: Caller,
    pub kid: u32,
}

impl FromRequestParts<AppState> for AuthenticatedWithKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        authenticate(parts, state).await.map(|(caller, kid)| AuthenticatedWithKey { caller, kid })
    }
}

/// Verifies the bearer credential and checks it is live: the caller, and the signing key's id.
async fn authenticate(parts: &Parts, state: &AppState) -> Result<(Caller, u32), ApiError> {
    let header = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthenticated("missing `Authorization: Bearer <credential>`"))?;
    let value = header.to_str().map_err(|_| unauthenticated("malformed Authorization header"))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(|| unauthenticated("expected a Bearer credential"))?
        .trim();
    credential_caller(state, token).await
}

/// The caller a credential string stands for, verified and checked live, with its key's id: the
/// bearer path above, and RFC 6749 client authentication (`super::client_auth`).
pub(super) async fn credential_caller(state: &AppState, token: &str) -> Result<(Caller, u32), ApiError> {
    let (claims, kid) = verified_credential(state, token)?;
    let live = match state.views.credentials.get(&claims.id) {
        Some(live) => live,
        None => known_credential(state, claims.id).await?,
    };
    if live.revoked {
        return Err(unauthenticated("credential has been revoked"));
    }
    if live.expires_at.is_some_and(|t| t <= state.clock.now()) {
        return Err(unauthenticated("credential has expired"));
    }
    tracing::Span::current().record("caller", tracing::field::display(claims.id));
    Ok((Caller { credential: claims.id, role: claims.role }, kid))
}

/// A credential minted by another process (`tether credential mint`) is not in this process's
/// view yet: look it up once and remember it.
pub(super) async fn known_credential(
    state: &AppState,
    id: crate::domain::CredentialId,
) -> Result<CredentialState, ApiError> {
    let record = state
        .readers
        .read(move |conn| crate::store::credentials::get_credential(conn, id))
        .await
        .map_err(|_| unauthenticated("credential is not known"))?;
    let read = CredentialState { revoked: record.revoked_at.is_some(), expires_at: record.expires_at };
    // The writer may have revoked it between our read and now, and put that in the view: never
    // overwrite what the writer put there with an older read.
    Ok(state.views.credentials.insert_if_absent(id, read))
}

/// Credentials verified before, by their exact text, with the key that signed them.
pub type CredentialCache = crate::views::Sharded<Box<str>, (CredentialClaims, u32)>;

/// Verifies a credential's signature once; later requests with the same credential only check
/// that its key is still active (revocation and expiry are checked against the view after).
fn verified_credential(state: &AppState, token: &str) -> Result<(CredentialClaims, u32), ApiError> {
    if token.len() > tokens::MAX_TOKEN_CHARS {
        return Err(unauthenticated("credential is not valid"));
    }
    if let Some((claims, kid)) = state.credential_cache.get(token) {
        return if state.env.api_keys.is_active(kid) {
            Ok((claims, kid))
        } else {
            Err(unauthenticated("credential signed by an unknown or retired key"))
        };
    }
    let (claims, kid) = tokens::credential::verify(&state.env.api_keys, token).map_err(|e| match e {
        TokenError::UnknownKey => unauthenticated("credential signed by an unknown or retired key"),
        TokenError::Invalid(_) => unauthenticated("credential is not valid"),
    })?;
    state.credential_cache.insert_bounded(token.into(), (claims, kid), 256);
    Ok((claims, kid))
}

/// The authenticated caller, holding the capability `C` the route needs (403 otherwise, from
/// [`Capability::grant`]). Put it before the `Path`, `Query` and body extractors: a caller whose
/// role may not call the route learns 403, never how its input would have been judged.
pub struct Allowed<C>(pub C);

impl<C: Capability> FromRequestParts<AppState> for Allowed<C> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let (caller, _) = authenticate(parts, state).await?;
        Ok(Allowed(C::grant(&caller)?))
    }
}

/// Who may call each route: method, path, and the roles of the capability its handler takes
/// (empty: no credential). The roles come from the capability declarations in
/// `domain::access`; `tests/api/access.rs` checks this table against docs/api.md and against
/// the router's answers (403 for every role outside the set, and only for those).
pub const ROUTE_ROLES: &[(&str, &str, &[RoleKind])] = &[
    ("POST", "/v1/credentials", Admin::ROLES),
    ("GET", "/v1/credentials", Admin::ROLES),
    ("POST", "/v1/credentials/{id}/revoke", Admin::ROLES),
    ("POST", "/v1/platforms", Admin::ROLES),
    ("GET", "/v1/platforms", TenantReader::ROLES),
    ("GET", "/v1/platforms/{id}", TenantReader::ROLES),
    ("POST", "/v1/platforms/{id}/disable", Admin::ROLES),
    ("POST", "/v1/agents", PlatformScope::ROLES),
    ("GET", "/v1/agents", TenantReader::ROLES),
    ("GET", "/v1/agents/{id}", TenantReader::ROLES),
    ("POST", "/v1/agents/{id}/suspend", PlatformScope::ROLES),
    ("POST", "/v1/agents/{id}/resume", PlatformScope::ROLES),
    ("POST", "/v1/agents/{id}/deregister", PlatformScope::ROLES),
    ("POST", "/v1/integrations", PlatformScope::ROLES),
    ("GET", "/v1/integrations", TenantReader::ROLES),
    ("GET", "/v1/integrations/{id}", TenantReader::ROLES),
    ("POST", "/v1/integrations/{id}/disable", PlatformScope::ROLES),
    ("POST", "/v1/users", Admin::ROLES),
    ("GET", "/v1/users", Auditor::ROLES),
    ("GET", "/v1/users/{id}", TenantReader::ROLES),
    ("PUT", "/v1/users/{id}/permissions", Admin::ROLES),
    ("POST", "/v1/users/{id}/disable", Admin::ROLES),
    ("POST", "/v1/users/{id}/enable", Admin::ROLES),
    ("POST", "/v1/users/{id}/lifecycle-events", Admin::ROLES),
    ("POST", "/v1/users/{id}/sign-out-all", UserScope::ROLES),
    ("POST", "/v1/users/{id}/agents/{agent_id}/disconnect", UserScope::ROLES),
    ("POST", "/v1/users/{id}/integrations/{integration_id}/disconnect", UserScope::ROLES),
    ("GET", "/v1/groups", Auditor::ROLES),
    ("GET", "/v1/groups/{id}", Auditor::ROLES),
    ("PUT", "/v1/groups/{id}/permissions", Admin::ROLES),
    ("POST", "/v1/delegations", PlatformScope::ROLES),
    ("GET", "/v1/delegations", TenantReader::ROLES),
    ("GET", "/v1/delegations/{id}", TenantReader::ROLES),
    ("POST", "/v1/delegations/{id}/revoke", Owner::ROLES),
    ("POST", "/v1/sessions", PlatformScope::ROLES),
    ("GET", "/v1/sessions", TenantReader::ROLES),
    ("GET", "/v1/sessions/{id}", TenantReader::ROLES),
    ("POST", "/v1/sessions/{id}/revoke", Owner::ROLES),
    ("POST", "/v1/sessions/{id}/refresh", PlatformScope::ROLES),
    ("POST", "/v1/authorize", Verifier::ROLES),
    ("POST", "/oauth2/introspect", Verifier::ROLES),
    ("POST", "/oauth2/revoke", TokenRevoker::ROLES),
    ("GET", "/v1/keys", AnyRole::ROLES),
    ("POST", "/v1/keys/rotate", Admin::ROLES),
    ("POST", "/v1/keys/{kid}/retire", Admin::ROLES),
    ("GET", "/v1/revocations", FeedReader::ROLES),
    ("GET", "/v1/events", AnyRole::ROLES),
    ("GET", "/v1/audit", Auditor::ROLES),
    ("GET", "/v1/audit/verify", Auditor::ROLES),
    ("GET", "/v1/audit/export", Auditor::ROLES),
    ("GET", "/v1/audit/coverage", Auditor::ROLES),
    ("GET", "/v1/audit/checkpoint", Auditor::ROLES),
    ("POST", "/v1/audit/checkpoint/verify", Auditor::ROLES),
    ("POST", "/v1/console-links", PlatformScope::ROLES),
    ("POST", "/v1/webhooks", WebhookOwner::ROLES),
    ("GET", "/v1/webhooks", AnyRole::ROLES),
    ("DELETE", "/v1/webhooks/{id}", AnyRole::ROLES),
    ("GET", "/v1/webhooks/{id}/deliveries", AnyRole::ROLES),
    ("POST", "/oauth2/token", Receiver::ROLES),
    ("GET", "/.well-known/ssf-configuration", &[]),
    ("GET", "/ssf/jwks.json", &[]),
    ("POST", "/ssf/streams", Receiver::ROLES),
    ("GET", "/ssf/streams", Receiver::ROLES),
    ("PATCH", "/ssf/streams", Receiver::ROLES),
    ("PUT", "/ssf/streams", Receiver::ROLES),
    ("DELETE", "/ssf/streams", Receiver::ROLES),
    ("GET", "/ssf/status", Receiver::ROLES),
    ("POST", "/ssf/status", Receiver::ROLES),
    ("POST", "/ssf/subjects:add", Receiver::ROLES),
    ("POST", "/ssf/subjects:remove", Receiver::ROLES),
    ("POST", "/ssf/verify", Receiver::ROLES),
    ("POST", "/ssf/poll/{stream_id}", Receiver::ROLES),
    ("GET", "/scim/v2/ServiceProviderConfig", Provisioner::ROLES),
    ("GET", "/scim/v2/ResourceTypes", Provisioner::ROLES),
    ("GET", "/scim/v2/ResourceTypes/{name}", Provisioner::ROLES),
    ("GET", "/scim/v2/Schemas", Provisioner::ROLES),
    ("GET", "/scim/v2/Schemas/{id}", Provisioner::ROLES),
    ("POST", "/scim/v2/.search", Provisioner::ROLES),
    ("GET", "/scim/v2/Users", Provisioner::ROLES),
    ("POST", "/scim/v2/Users", Provisioner::ROLES),
    ("GET", "/scim/v2/Users/{id}", Provisioner::ROLES),
    ("PUT", "/scim/v2/Users/{id}", Provisioner::ROLES),
    ("PATCH", "/scim/v2/Users/{id}", Provisioner::ROLES),
    ("DELETE", "/scim/v2/Users/{id}", Provisioner::ROLES),
    ("GET", "/scim/v2/Groups", Provisioner::ROLES),
    ("POST", "/scim/v2/Groups", Provisioner::ROLES),
    ("GET", "/scim/v2/Groups/{id}", Provisioner::ROLES),
    ("PUT", "/scim/v2/Groups/{id}", Provisioner::ROLES),
    ("PATCH", "/scim/v2/Groups/{id}", Provisioner::ROLES),
    ("DELETE", "/scim/v2/Groups/{id}", Provisioner::ROLES),
    ("POST", "/v1/signal-sources", Admin::ROLES),
    ("GET", "/v1/signal-sources", Auditor::ROLES),
    ("GET", "/v1/signal-sources/{id}", Auditor::ROLES),
    ("POST", "/v1/signal-sources/{id}/disable", Admin::ROLES),
    // Authenticated by the source's push authorization, not a credential (OWN_AUTHENTICATION).
    ("POST", "/ssf/push/{id}", &[]),
    // A provisioner or admin credential, or a JWT signed by a signal source's keys.
    ("POST", "/oauth2/global-token-revocation", Provisioner::ROLES),
    ("GET", "/healthz", &[]),
    ("GET", "/metrics", &[]),
    ("GET", "/openapi.json", &[]),
    ("GET", "/.well-known/oauth-authorization-server", &[]),
    ("GET", "/.well-known/oauth-protected-resource", &[]),
];

/// Routes of [`ROUTE_ROLES`] that take no credential but authenticate the request their own way
/// (a signal source's push authorization): a request without it is refused in that protocol's
/// shape, never let through.
pub const OWN_AUTHENTICATION: &[(&str, &str)] = &[("POST", "/ssf/push/{id}")];
