//! Shared Signals in: `/v1/signal-sources` (an admin registers the transmitters tether trusts) and
//! `POST /ssf/push/{id}`, each source's RFC 8935 push endpoint.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use rand::RngCore;
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use super::auth::Allowed;
use super::problem::{ApiError, ApiResult, Json, OptionalJson, Path, PathParam, Query};
use super::{page, AppState, RawPage};
use crate::domain::access::{Admin, Auditor, Capability, SignalAuthority};
use crate::domain::*;
use crate::ops::signals::{self as ops, NewSignalSource, Outcome};
use crate::ops::WithReason;
use crate::signals::effects::Effect;
use crate::signals::jwks::KeySource;
use crate::signals::set::{self, Expected, MAX_SET_BYTES};
use crate::signals::{PushErrorCode, Rejection};
use crate::store::query::Page;
use crate::store::signals::{self as store, SourceRow};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/signal-sources", post(create).get(list))
        .route("/v1/signal-sources/{id}", get(get_one))
        .route("/v1/signal-sources/{id}/disable", post(disable))
        .route("/ssf/push/{id}", post(push))
}

impl PathParam for SignalSourceId {
    fn parse_segment(text: &str) -> Result<Self, String> {
        SignalSourceId::parse(text).map_err(|e| e.to_string())
    }
}

/// A signal source as an admin or auditor sees it (never its push authorization).
#[derive(Debug, Serialize, ToSchema)]
pub struct SignalSource {
    pub id: SignalSourceId,
    pub issuer: String,
    pub audience: Option<String>,
    pub label: Option<String>,
    pub jwks_uri: Option<String>,
    /// The inline JWKS (public keys), when the source was registered with one.
    #[schema(value_type = Option<Object>)]
    pub jwks: Option<Value>,
    /// Where the transmitter pushes SETs (its stream's `delivery.endpoint_url`), under
    /// `--public-url`.
    pub push_url: String,
    /// `active` or `disabled`.
    pub status: String,
    /// What each signal does for this source: the defaults with its overrides.
    pub effects: BTreeMap<String, Effect>,
    pub created_at: Timestamp,
    pub disabled_at: Option<Timestamp>,
}

/// A new source, with its push authorization: shown here once, never again.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedSignalSource {
    #[serde(flatten)]
    pub source: SignalSource,
    /// The whole `Authorization` header value the transmitter sends with each push (its stream's
    /// `delivery.authorization_header`).
    pub push_authorization: String,
}

/// A source as the API shows it; its push URL is written under `--public-url`.
fn view(row: SourceRow, public_url: &PublicUrl) -> SignalSource {
    let effects = ops::effect_table(&row);
    SignalSource {
        push_url: public_url.join(&format!("/ssf/push/{}", row.id)),
        id: row.id,
        issuer: row.issuer,
        audience: row.audience,
        label: row.label,
        jwks_uri: row.jwks_uri,
        jwks: row.jwks.and_then(|j| serde_json::from_str(&j).ok()),
        status: row.status,
        effects,
        created_at: row.created_at,
        disabled_at: row.disabled_at,
    }
}

/// SHA-256 of a push authorization token, in hex: what is stored and compared.
fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[utoipa::path(post, operation_id = "create_signal_source", path = "/v1/signal-sources", tag = "signals", request_body = NewSignalSource, responses((status = 201, body = CreatedSignalSource)))]
pub async fn create(
    State(state): State<AppState>,
    Allowed(caller): Allowed<Admin>,
    Json(req): Json<NewSignalSource>,
) -> ApiResult<(StatusCode, axum::Json<CreatedSignalSource>)> {
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let token = format!("ssfp_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret));
    let hash = token_hash(&token);
    let allow_private = state.allow_private_webhook_urls;
    let row = state
        .writer
        .execute_as(caller.caller(), move |tx| ops::create_source(tx, &caller, req, allow_private, &hash))
        .await?;
    let source = view(row, &state.public_url);
    Ok((StatusCode::CREATED, axum::Json(CreatedSignalSource { source, push_authorization: format!("Bearer {token}") })))
}

#[utoipa::path(get, operation_id = "list_signal_sources", path = "/v1/signal-sources", params(("limit" = Option<u16>, Query, minimum = 1, maximum = 1000, description = "Items per page, 1 to 1000 (default 100)."), ("cursor" = inline(Option<SignalSourceId>), Query, description = "`next_cursor` of the previous page.")), tag = "signals", responses((status = 200, body = Page<SignalSource>)))]
pub async fn list(
    State(state): State<AppState>,
    Allowed(_caller): Allowed<Auditor>,
    Query(q): Query<RawPage>,
) -> ApiResult<axum::Json<Page<SignalSource>>> {
    let page = page(&q.limit, &q.cursor, SignalSourceId::parse)?;
    let rows = state.read_stale(move |conn| store::list_sources(conn, &page)).await?;
    Ok(axum::Json(Page {
        items: rows.items.into_iter().map(|r| view(r, &state.public_url)).collect(),
        next_cursor: rows.next_cursor,
    }))
}

#[utoipa::path(get, operation_id = "get_signal_source", path = "/v1/signal-sources/{id}", params(("id" = inline(SignalSourceId), Path, description = "signal source id")), tag = "signals", responses((status = 200, body = SignalSource)))]
pub async fn get_one(
    State(state): State<AppState>,
    Allowed(_caller): Allowed<Auditor>,
    Path(id): Path<SignalSourceId>,
) -> ApiResult<axum::Json<SignalSource>> {
    let row = state.readers.read(move |conn| store::get_source(conn, id)).await?;
    Ok(axum::Json(view(row, &state.public_url)))
}

#[utoipa::path(post, operation_id = "disable_signal_source", path = "/v1/signal-sources/{id}/disable", params(("id" = inline(SignalSourceId), Path, description = "signal source id")), tag = "signals", request_body = WithReason, responses((status = 200, body = SignalSource)))]
pub async fn disable(
    State(state): State<AppState>,
    Allowed(caller): Allowed<Admin>,
    Path(id): Path<SignalSourceId>,
    OptionalJson(req): OptionalJson<WithReason>,
) -> ApiResult<axum::Json<SignalSource>> {
    let row =
        state.writer.execute_as(caller.caller(), move |tx| ops::disable_source(tx, &caller, id, req.reason)).await?;
    state.signal_keys.forget(id);
    Ok(axum::Json(view(row, &state.public_url)))
}

/// RFC 8935's failure answer: `{"err", "description"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PushError {
    pub err: PushErrorCode,
    pub description: String,
}

fn refused(status: StatusCode, rejection: Rejection) -> Response {
    let body = json!({"err": rejection.code.as_str(), "description": rejection.description});
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn unauthenticated() -> Rejection {
    // One answer for a source that does not exist and a wrong authorization: the push URL and
    // its authorization go together.
    Rejection::new(
        PushErrorCode::AuthenticationFailed,
        "the push names no signal source or does not carry its authorization",
    )
}

/// The token of an `Authorization` header: `Bearer <token>`, or the bare value.
fn presented_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    Some(value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")).unwrap_or(value).trim())
}

/// Receives one SET (RFC 8935): 202 and an empty body when accepted (a replayed `jti` too), else
/// 400 `{"err", "description"}` with RFC 8935's code, 413 for a body over 64 KiB.
#[utoipa::path(
    post,
    operation_id = "push_security_event",
    path = "/ssf/push/{id}",
    tag = "signals",
    params(("id" = inline(SignalSourceId), Path, description = "signal source id")),
    request_body(content = String, content_type = "application/secevent+jwt", description = "A signed SET (compact JWS), at most 64 KiB"),
    responses(
        (status = 202, description = "Accepted (a replayed `jti` too: it has no second effect)"),
        (status = 400, description = "Refused, with RFC 8935's code", body = PushError, content_type = "application/json"),
        (status = 413, description = "The SET is over 64 KiB", body = PushError, content_type = "application/json"),
    ),
    // The source's push authorization (`Authorization`, as `POST /v1/signal-sources` answered it)
    // is no API credential; a missing or wrong one is RFC 8935's 400 `authentication_failed`.
    security(())
)]
pub async fn push(
    State(state): State<AppState>,
    raw: axum::extract::RawPathParams,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match receive(&state, raw, &headers, body).await {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(Refusal::Set(rejection, status)) => refused(status, rejection),
        Err(Refusal::Api(e)) => e.into_response(),
    }
}

enum Refusal {
    Set(Rejection, StatusCode),
    Api(ApiError),
}

impl From<Rejection> for Refusal {
    fn from(r: Rejection) -> Self {
        Refusal::Set(r, StatusCode::BAD_REQUEST)
    }
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Self {
        Refusal::Api(ApiError(e))
    }
}

async fn receive(
    state: &AppState,
    raw: axum::extract::RawPathParams,
    headers: &HeaderMap,
    body: Body,
) -> Result<(), Refusal> {
    let id = raw.iter().next().and_then(|(_, v)| SignalSourceId::parse(v).ok()).ok_or_else(unauthenticated)?;
    let (source, hash) =
        state.readers.read(move |conn| store::get_source_for_push(conn, id)).await?.ok_or_else(unauthenticated)?;
    let token = presented_token(headers).ok_or_else(unauthenticated)?;
    if !bool::from(token_hash(token).as_bytes().ct_eq(hash.as_bytes())) {
        return Err(unauthenticated().into());
    }
    if source.status != "active" {
        return Err(Rejection::new(PushErrorCode::AccessDenied, "this signal source is disabled").into());
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let media = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    if media != "application/secevent+jwt" {
        return Err(Rejection::invalid("`Content-Type` must be application/secevent+jwt (RFC 8935 §2)").into());
    }
    let bytes = axum::body::to_bytes(body, MAX_SET_BYTES).await.map_err(|_| {
        Refusal::Set(Rejection::invalid("the SET is larger than 64 KiB"), StatusCode::PAYLOAD_TOO_LARGE)
    })?;
    let token = std::str::from_utf8(&bytes).map_err(|_| Rejection::invalid("the body is not UTF-8 text"))?.trim();
    let header = set::header(token)?;
    let from = match (&source.jwks_uri, &source.jwks) {
        (Some(uri), _) => KeySource::Uri(uri.clone()),
        (None, Some(jwks)) => KeySource::Inline(serde_json::from_str(jwks).unwrap_or(Value::Null)),
        (None, None) => return Err(Rejection::new(PushErrorCode::InvalidKey, "the source has no keys").into()),
    };
    let keys = state
        .signal_keys
        .keys(id, &from, header.kid.as_deref())
        .await
        .map_err(|why| Rejection::new(PushErrorCode::InvalidKey, why))?;
    let claims = set::verify_signature(token, &header, &keys)?;
    let expected =
        Expected { issuer: &source.issuer, audience: source.audience.as_deref(), now: state.clock.now().seconds() };
    let verified = set::check_claims(claims, expected)?;
    let authority = SignalAuthority::for_verified_source(id);
    let outcome = state.writer.execute(move |tx| ops::receive(tx, &authority, &verified)).await?;
    match outcome {
        Outcome::Accepted { .. } | Outcome::Replayed { .. } => Ok(()),
        Outcome::SourceDisabled => {
            Err(Rejection::new(PushErrorCode::AccessDenied, "this signal source is disabled").into())
        }
    }
}
