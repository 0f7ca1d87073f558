//! The bearer-credential extractor: every API route but health and metrics gets a [`Caller`].

use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts};

use super::problem::ApiError;
use super::AppState;
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
async fn known_credential(state: &AppState, id: crate::domain::CredentialId) -> Result<CredentialState, ApiError> {
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

/// Which roles may call a route at all: checked by [`Allowed`] before the path, query or body is
/// looked at, so a caller whose role may not call the route learns 403, never how its input
/// would have been judged.
pub trait Roles {
    fn check(caller: &Caller) -> Result<(), Error>;
}

/// The authenticated caller, whose role `R` allows the route (403 otherwise). Put it before the
/// `Path`, `Query` and body extractors.
pub struct Allowed<R>(pub Caller, pub std::marker::PhantomData<R>);

impl<R: Roles> FromRequestParts<AppState> for Allowed<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let (caller, _) = authenticate(parts, state).await?;
        R::check(&caller)?;
        Ok(Allowed(caller, std::marker::PhantomData))
    }
}

macro_rules! roles {
    ($($(#[$doc:meta])* $name:ident = [$($role:ident),+];)+) => {$(
        $(#[$doc])*
        pub struct $name;

        impl Roles for $name {
            fn check(caller: &Caller) -> Result<(), Error> {
                crate::ops::require(caller, &[$(RoleKind::$role),+])
            }
        }
    )+};
}

roles! {
    /// Admin routes: credentials, platforms, users' administration, keys.
    Admins = [Admin];
    /// The audit log and the list of users.
    AdminsAndAuditors = [Admin, Auditor];
    /// Registering and ending agents and integrations, delegations, opening sessions.
    AdminsAndPlatforms = [Admin, Platform];
    /// What a user does about their own sessions (signing out, disconnecting).
    AdminsAndUsers = [Admin, User];
    /// Revoking a delegation or a session: its owner platform, its user, an admin.
    Owners = [Admin, Platform, User];
    /// Creating webhooks: every role but the user.
    WebhookOwners = [Admin, Platform, Verifier, Auditor];
    /// Checking tokens: `POST /v1/authorize`, introspection.
    Verifiers = [Verifier, Admin];
    /// The revocation feed.
    FeedReaders = [Verifier, Admin, Auditor];
    /// Token revocation (RFC 7009).
    TokenRevokers = [Verifier, Platform, Admin];
}

/// Readers of tenant data: every role but the verifier.
pub struct TenantReaders;

impl Roles for TenantReaders {
    fn check(caller: &Caller) -> Result<(), Error> {
        super::tenant_reader(caller).map(drop)
    }
}
