//! POST /v1/authorize: the relying service's question, answered from memory.

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Allowed;
use super::problem::{ApiResult, Json};
use super::AppState;
use crate::authorize::Request;
use crate::domain::access::{Capability, Verifier};
use crate::domain::*;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/authorize", post(authorize))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthorizeContext {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthorizeRequest {
    pub token: String,
    /// The scope asked for (1-128 characters of `a-z 0-9 _ . : / * -`).
    #[schema(min_length = 1, max_length = 128, pattern = "^[a-z0-9_.:/*-]{1,128}$")]
    pub scope: String,
    /// At most 1024 characters, no control characters.
    #[schema(max_length = 1024, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    pub resource: Option<String>,
    #[serde(default, deserialize_with = "crate::domain::text::object_only")]
    pub context: Option<AuthorizeContext>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuthorizeResponse {
    /// `allow` or `deny`.
    pub decision: &'static str,
    pub reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<SessionId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<AgentId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub integration_id: Option<IntegrationId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<ScopeSet>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
}

#[utoipa::path(post, path = "/v1/authorize", operation_id = "authorize", tag = "checking tokens", request_body = AuthorizeRequest, responses((status = 200, body = AuthorizeResponse)))]
pub async fn authorize(
    State(state): State<AppState>,
    Allowed(caller): Allowed<Verifier>,
    Json(req): Json<AuthorizeRequest>,
) -> ApiResult<JsonBytes> {
    let scope = Scope::parse(&req.scope).map_err(|e| Error::invalid(format!("`scope`: {e}")))?;
    if let Some(resource) = &req.resource {
        clean_text("resource", resource, 1024)?;
    }
    let request = Request { token: &req.token, scope: &scope, resource: req.resource.as_deref() };
    // On a node of several, the standing is read before the live view: an allow then rests on a
    // view read while the node could vouch for everything up to its lease's head. Read after
    // the view, it could vouch for a lease granted, and a revocation applied, after the view was
    // read (docs/architecture.md, "Leases").
    let standing = state.cluster.as_ref().map(|c| c.state.standing());
    let mut decision = state.authorizer.authorize(&request);
    if let Some(standing) = standing {
        if decision.reason == crate::authorize::Reason::SessionUnknown {
            // Created on another node: read once, then decided as usual (docs/architecture.md,
            // "Every node learns every change").
            if let Some(token) = &decision.token {
                if state.learn_session(token.claims.session).await? {
                    decision = state.authorizer.authorize(&request);
                }
            }
        }
        if decision.allowed() && standing != crate::cluster::Standing::Current {
            return Err(Error::Unavailable(standing.explain().into()).into());
        }
    }
    state.metrics.count_decision(decision.reason);
    let allowed = decision.allowed();
    let claims = decision.token.as_ref().map(|t| &t.claims);
    if allowed {
        if let Some(claims) = claims {
            let context = req.context.unwrap_or_default();
            state.last_seen.record(claims.session, state.clock.now(), context.ip, context.user_agent);
        }
    }
    if decision.reason == crate::authorize::Reason::SessionRevoked {
        if let Some(claims) = claims {
            audit_revoked_use(&state, caller.actor(), claims.session).await;
        }
    }
    // A denied token still names its session when it verified (the relying service may want to
    // log it), but never its scopes.
    let answer = || AuthorizeResponse {
        decision: if allowed { "allow" } else { "deny" },
        reason: decision.reason.as_str(),
        session_id: claims.map(|c| c.session),
        user_id: claims.map(|c| c.user),
        agent_id: claims.map(|c| c.agent),
        integration_id: claims.map(|c| c.integration),
        scopes: claims.filter(|_| allowed).map(|c| c.scopes.clone()),
        expires_at: claims.map(|c| c.expires_at),
    };
    // An allow answer is a function of the token's claims alone: serialized once per cached
    // token, then its bytes are shared by every later allow of that token.
    let body = match (&decision.token, allowed) {
        (Some(token), true) => match token.allow_answer.get() {
            Some(bytes) => bytes.clone(),
            None => {
                // Copied out of the serializer's buffer, whose spare capacity would otherwise stay
                // with every cached token.
                let bytes = Bytes::copy_from_slice(&json_bytes(&answer())?);
                let _ = token.allow_answer.set(bytes.clone());
                bytes
            }
        },
        _ => json_bytes(&answer())?,
    };
    Ok(JsonBytes(body))
}

/// A JSON answer already serialized.
pub struct JsonBytes(pub Bytes);

impl axum::response::IntoResponse for JsonBytes {
    fn into_response(self) -> axum::response::Response {
        let json = axum::http::HeaderValue::from_static("application/json");
        ([(axum::http::header::CONTENT_TYPE, json)], self.0).into_response()
    }
}

/// Room for an authorize answer with a few scopes; larger ones grow the buffer once or twice.
const ANSWER_CAPACITY: usize = 512;

/// Serializes into a buffer sized for an answer at once: `axum::Json` starts a `BytesMut` at 128
/// bytes and writes through `io::Write` piece by piece (two reallocations for authorize's
/// ~320-byte answer; docs/performance.md, "the HTTP tail").
fn json_bytes<T: Serialize>(value: &T) -> Result<Bytes> {
    let mut body = Vec::with_capacity(ANSWER_CAPACITY);
    serde_json::to_writer(&mut body, value).map_err(|e| Error::internal(format!("serializing an answer: {e}")))?;
    Ok(Bytes::from(body))
}

/// Records, in aggregate, that a revoked session's token was presented: the first denial per
/// session per minute waits for its event to commit (so the log is exact when the answer
/// arrives); the others only count.
async fn audit_revoked_use(state: &AppState, actor: Actor, session: SessionId) {
    let Some(count) = state.denials.count(session, state.clock.now()) else { return };
    let event = crate::audit::NewEvent::new(actor, "authorize.revoked_token_used", Subject::new("session", session))
        .reason(Some("session_revoked".into()))
        .details(serde_json::json!({"denials": count}));
    if let Err(e) = state.writer.execute(move |tx| tx.audit(event).map(drop)).await {
        // The decision stands (deny); only its record failed.
        tracing::warn!(error = %e, "auditing a revoked token's use failed");
    }
}
