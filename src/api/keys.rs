//! /v1/keys and /v1/revocations: what an offline verifier needs; key rotation for admins.

use axum::extract::State;
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{Allowed, Authenticated};
use super::problem::{ApiResult, KeyId, OptionalJson, Path, Query};
use super::AppState;
use crate::domain::access::{Admin, Capability, FeedReader};
use crate::domain::*;
use crate::store::feed;
use crate::store::query::Page;
use crate::tokens::{KeyPurpose, KeyStatus};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/keys", get(list_keys))
        .route("/v1/keys/rotate", post(rotate))
        .route("/v1/keys/{kid}/retire", post(retire))
        .route("/v1/revocations", get(revocations))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PublicKey {
    pub kid: u32,
    pub algorithm: &'static str,
    /// Hex of the Ed25519 public key.
    pub public_key: String,
    pub status: KeyStatus,
    /// `agent` (agent tokens) or `api` (API credentials).
    pub purpose: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<PublicKey>,
}

fn key_list(state: &AppState, purposes: &[KeyPurpose]) -> KeyList {
    let mut keys = Vec::new();
    for purpose in purposes {
        let (ring, name) = match purpose {
            KeyPurpose::Agent => (&state.env.agent_keys, "agent"),
            KeyPurpose::Api => (&state.env.api_keys, "api"),
        };
        keys.extend(ring.public_keys().into_iter().map(|k| PublicKey {
            kid: k.kid,
            algorithm: "ed25519",
            public_key: k.public_key,
            status: k.status,
            purpose: name,
        }));
    }
    KeyList { keys }
}

/// The agent-token keys (what a relying service verifies with); an admin also sees the API keys.
#[utoipa::path(get, path = "/v1/keys", operation_id = "list_keys", tag = "checking tokens", responses((status = 200, body = KeyList)))]
pub async fn list_keys(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> ApiResult<axum::Json<KeyList>> {
    let purposes: &[KeyPurpose] = match caller.role {
        Role::Admin => &[KeyPurpose::Agent, KeyPurpose::Api],
        _ => &[KeyPurpose::Agent],
    };
    Ok(axum::Json(key_list(&state, purposes)))
}

/// Which key ring a key change is for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PurposeName {
    /// The ring that signs agent tokens.
    #[default]
    Agent,
    /// The ring that signs API credentials.
    Api,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyPurposeBody {
    /// `agent` (the default) or `api`.
    #[serde(default)]
    pub purpose: PurposeName,
}

impl KeyPurposeBody {
    fn purpose(&self) -> KeyPurpose {
        match self.purpose {
            PurposeName::Agent => KeyPurpose::Agent,
            PurposeName::Api => KeyPurpose::Api,
        }
    }
}

/// Applies a key change to the ring and records it in the audit log, both inside one writer
/// command: the caller's credential is re-checked first, and the once-a-second key sync (also a
/// writer command) cannot slip in between and record the admin's change as the system's. If the
/// audit write fails after the file changed, that sync records it later.
async fn change_keys(
    state: &AppState,
    caller: Admin,
    purpose: KeyPurpose,
    change: impl FnOnce(&crate::tokens::KeyRing) -> Result<()> + Send + 'static,
) -> ApiResult<axum::Json<KeyList>> {
    // The `Allowed<Admin>` extractor checked the role before the body was looked at.
    let ring = match purpose {
        KeyPurpose::Agent => state.env.agent_keys.clone(),
        KeyPurpose::Api => state.env.api_keys.clone(),
    };
    state
        .writer
        .execute_as(caller.caller(), move |tx| {
            change(&ring)?;
            crate::ops::keys::sync(tx, caller.actor(), purpose, &ring.public_keys())
        })
        .await?;
    Ok(axum::Json(key_list(state, &[purpose])))
}

#[utoipa::path(post, path = "/v1/keys/rotate", operation_id = "rotate_keys", tag = "keys", request_body = Option<KeyPurposeBody>, responses((status = 200, body = KeyList)))]
pub async fn rotate(
    State(state): State<AppState>,
    Allowed(caller): Allowed<Admin>,
    OptionalJson(body): OptionalJson<KeyPurposeBody>,
) -> ApiResult<axum::Json<KeyList>> {
    change_keys(&state, caller, body.purpose(), |ring| ring.rotate().map(drop)).await
}

#[utoipa::path(post, path = "/v1/keys/{kid}/retire", operation_id = "retire_key", params(("kid" = u32, Path, format = Int64, minimum = 0, maximum = 4294967295_u32, description = "key id")), tag = "keys", request_body = Option<KeyPurposeBody>, responses((status = 200, body = KeyList)))]
pub async fn retire(
    State(state): State<AppState>,
    Allowed(caller): Allowed<Admin>,
    Path(KeyId(kid)): Path<KeyId>,
    OptionalJson(body): OptionalJson<KeyPurposeBody>,
) -> ApiResult<axum::Json<KeyList>> {
    change_keys(&state, caller, body.purpose(), move |ring| ring.retire(kid)).await
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RevocationEntry {
    pub cursor: i64,
    /// Hex of the revoked token's (first block's) revocation id.
    pub revocation_id: String,
    pub session_id: SessionId,
    /// After this, the token cannot verify anyway and the entry can be dropped.
    pub expires_at: Timestamp,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FeedQuery {
    /// Entries after this cursor (default 0, the beginning).
    #[param(value_type = Option<i64>, minimum = 0)]
    after: Option<String>,
    /// Same as `after`.
    #[param(value_type = Option<i64>, minimum = 0)]
    cursor: Option<String>,
    /// Items per page, 1 to 1000 (default 100).
    #[param(value_type = Option<u16>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

/// Revoked tokens' revocation ids since a cursor, oldest first; expired entries are left out.
#[utoipa::path(get, path = "/v1/revocations", operation_id = "list_revocations", params(FeedQuery), tag = "checking tokens", responses((status = 200, body = Page<RevocationEntry>)))]
pub async fn revocations(
    State(state): State<AppState>,
    _: Allowed<FeedReader>,
    Query(q): Query<FeedQuery>,
) -> ApiResult<axum::Json<Page<RevocationEntry>>> {
    let limit = super::page(&q.limit, &None, |_: &str| Ok::<_, Error>(()))?.limit;
    let after = q.after.as_ref().or(q.cursor.as_ref());
    let after = match after {
        None => 0,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| Error::invalid("`after` must be a non-negative integer cursor"))?,
    };
    let now = state.clock.now();
    super::read(&state, move |conn| feed::revocation_feed(conn, after, limit, now)).await.map(|axum::Json(page)| {
        axum::Json(Page {
            items: page
                .items
                .into_iter()
                .map(|(cursor, revocation_id, session_id, expires_at)| RevocationEntry {
                    cursor,
                    revocation_id,
                    session_id,
                    expires_at,
                })
                .collect(),
            next_cursor: page.next_cursor,
        })
    })
}
