//! The Shared Signals transmitter's HTTP face (OpenID SSF 1.0): its configuration and JWKS
//! (no credential), and for receivers stream management (§8), verification and RFC 8936 poll.
//! A receiver presents an access token from `POST /oauth2/token` or its own credential.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{FromRequestParts, State};
use axum::http::{header, request::Parts, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Allowed;
use super::oauth_token::ACCESS_TOKEN_PREFIX;
use super::problem::{ApiError, Json, Query};
use super::AppState;
use crate::domain::access::{Capability, Receiver};
use crate::domain::Error;
use crate::ops::streams::{self as ops, StreamEnv, StreamIn, Verification};
use crate::ssf;
use crate::store::streams::{self, StoredStream};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/.well-known/ssf-configuration", get(configuration))
        .route(ssf::JWKS_PATH, get(jwks))
        .route(
            ssf::STREAMS_PATH,
            get(read_streams).post(create_stream).patch(patch_stream).put(put_stream).delete(delete_stream),
        )
        .route(ssf::STATUS_PATH, get(get_status).post(set_status))
        .route(ssf::ADD_SUBJECT_PATH, post(add_subject))
        .route(ssf::REMOVE_SUBJECT_PATH, post(remove_subject))
        .route(ssf::VERIFY_PATH, post(verify))
        .route("/ssf/poll/{stream_id}", post(poll))
}

/// A receiver on an SSF route: its capability, and whether it may change things (`ssf.manage`;
/// a credential presented directly may).
pub struct SsfCaller {
    pub receiver: Receiver,
    pub manage: bool,
}

impl SsfCaller {
    fn managing(self) -> Result<Receiver, ApiError> {
        if self.manage {
            Ok(self.receiver)
        } else {
            Err(ApiError(Error::Forbidden("insufficient_scope: this needs the `ssf.manage` scope".into())))
        }
    }
}

impl FromRequestParts<AppState> for SsfCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim);
        match bearer {
            Some(token) if token.starts_with(ACCESS_TOKEN_PREFIX) => {
                let now = state.clock.now();
                let unauthenticated = |why: &str| ApiError(Error::Unauthenticated(why.into()));
                let grant = state
                    .ssf_tokens
                    .get(token, now)
                    .ok_or_else(|| unauthenticated("the access token is not valid or has expired"))?;
                // The token lives no longer than the credential it was issued to (which another
                // node may have minted: read once when this one has not seen it).
                let live = match state.views.credentials.get(&grant.caller.credential) {
                    Some(live) => Some(live),
                    None => super::auth::known_credential(state, grant.caller.credential).await.ok(),
                };
                if !live.is_some_and(|c| !c.revoked && c.expires_at.is_none_or(|t| t > now)) {
                    return Err(unauthenticated("the credential behind the access token is no longer valid"));
                }
                Ok(SsfCaller { receiver: Receiver::grant(&grant.caller)?, manage: grant.manage })
            }
            _ => {
                let Allowed(receiver) = Allowed::<Receiver>::from_request_parts(parts, state).await?;
                Ok(SsfCaller { receiver, manage: true })
            }
        }
    }
}

#[utoipa::path(get, path = "/.well-known/ssf-configuration", operation_id = "ssf_configuration", tag = "shared signals", security(()), responses((status = 200, description = "The transmitter configuration (SSF 1.0 section 7.1)")))]
pub async fn configuration(State(state): State<AppState>) -> Response {
    axum::Json(ssf::configuration(&state.public_url)).into_response()
}

#[utoipa::path(get, path = "/ssf/jwks.json", operation_id = "ssf_jwks", tag = "shared signals", security(()), responses((status = 200, description = "The JWKS (RFC 7517) of the active SET signing keys")))]
pub async fn jwks(State(state): State<AppState>) -> Result<Response, ApiError> {
    let keys = state.set_keys.clone();
    // The first key is generated on first use: RSA generation is CPU work, off the runtime.
    let jwks = tokio::task::spawn_blocking(move || keys.jwks())
        .await
        .map_err(|e| ApiError(Error::internal(format!("jwks: {e}"))))??;
    Ok(([(header::CACHE_CONTROL, "max-age=60")], axum::Json(jwks)).into_response())
}

/// A stream's configuration as SSF §8.1.1 shows it (never its authorization header).
fn stream_json(state: &AppState, s: &StoredStream) -> Value {
    let delivered: Vec<&String> =
        s.events_requested.iter().filter(|e| ssf::EVENTS_SUPPORTED.contains(&e.as_str())).collect();
    let mut out = json!({
        "stream_id": s.id,
        "iss": state.public_url.as_str(),
        "aud": s.aud,
        "events_supported": ssf::EVENTS_SUPPORTED,
        "events_requested": s.events_requested,
        "events_delivered": delivered,
        "delivery": {"method": s.delivery_method, "endpoint_url": s.endpoint_url},
        "min_verification_interval": s.min_verification_interval,
    });
    if let Some(d) = &s.description {
        out["description"] = json!(d);
    }
    out
}

fn env(state: &AppState) -> StreamEnv {
    StreamEnv {
        master: state.env.webhook_master,
        public_url: state.public_url.clone(),
        check: if state.allow_private_webhook_urls { check_endpoint_allowing_private } else { check_endpoint },
    }
}

/// A push endpoint: an absolute http(s) URL whose host is not a private address (the webhook
/// guard, `events::destinations`), unless the operator allows private addresses.
fn check_endpoint(url: &str) -> crate::domain::Result<()> {
    check_url(url)?;
    let uri: axum::http::Uri = url.parse().map_err(|_| Error::invalid("`endpoint_url` is not a URL"))?;
    match crate::events::destinations::refused_host(uri.host().unwrap_or_default()) {
        Some(why) => Err(Error::invalid(format!("`endpoint_url`: {why}"))),
        None => Ok(()),
    }
}

fn check_endpoint_allowing_private(url: &str) -> crate::domain::Result<()> {
    check_url(url)
}

fn check_url(url: &str) -> crate::domain::Result<()> {
    if url.len() > 2048 {
        return Err(Error::invalid("`endpoint_url` must be at most 2048 characters"));
    }
    let uri: axum::http::Uri = url.parse().map_err(|_| Error::invalid("`endpoint_url` is not a URL"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none_or(str::is_empty) {
        return Err(Error::invalid("`endpoint_url` must be an absolute http or https URL"));
    }
    Ok(())
}

#[utoipa::path(post, path = "/ssf/streams", operation_id = "ssf_create_stream", tag = "shared signals", responses((status = 201, description = "The stream configuration (SSF 1.0 section 8.1.1)"), (status = "4XX", description = "Refused: a problem+json body names why", body = super::problem::Problem, content_type = "application/problem+json")))]
pub async fn create_stream(
    State(state): State<AppState>,
    caller: SsfCaller,
    Json(req): Json<StreamIn>,
) -> Result<Response, ApiError> {
    let receiver = caller.managing()?;
    let env = env(&state);
    let stream =
        state.writer.execute_as(receiver.caller(), move |tx| ops::create_stream(tx, &env, &receiver, req)).await?;
    Ok((StatusCode::CREATED, axum::Json(stream_json(&state, &stream))).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    pub stream_id: Option<String>,
}

#[utoipa::path(get, path = "/ssf/streams", operation_id = "ssf_read_streams", tag = "shared signals", params(("stream_id" = Option<String>, Query, description = "one stream; without it, the list")), responses((status = 200, description = "A stream configuration, or the list of the receiver's"), (status = "4XX", description = "Refused: a problem+json body names why", body = super::problem::Problem, content_type = "application/problem+json")))]
pub async fn read_streams(
    State(state): State<AppState>,
    caller: SsfCaller,
    Query(q): Query<StreamQuery>,
) -> Result<Response, ApiError> {
    let receiver = caller.receiver.caller().credential;
    match q.stream_id {
        Some(id) => {
            let stream = state.readers.read(move |conn| streams::get_stream(conn, receiver, &id)).await?;
            Ok(axum::Json(stream_json(&state, &stream)).into_response())
        }
        None => {
            let all = state.readers.read(move |conn| streams::list_streams(conn, receiver)).await?;
            Ok(axum::Json(Value::Array(all.iter().map(|s| stream_json(&state, s)).collect())).into_response())
        }
    }
}

async fn update(state: AppState, caller: SsfCaller, req: StreamIn, replace: bool) -> Result<Response, ApiError> {
    let receiver = caller.managing()?;
    let env = env(&state);
    let stream = state
        .writer
        .execute_as(receiver.caller(), move |tx| ops::update_stream(tx, &env, &receiver, req, replace))
        .await?;
    Ok(axum::Json(stream_json(&state, &stream)).into_response())
}

#[utoipa::path(patch, path = "/ssf/streams", operation_id = "ssf_patch_stream", tag = "shared signals", responses((status = 200, description = "The stream configuration; members left out are unchanged"), (status = "4XX", description = "Refused: a problem+json body names why", body = super::problem::Problem, content_type = "application/problem+json")))]
pub async fn patch_stream(
    State(state): State<AppState>,
    caller: SsfCaller,
    Json(req): Json<StreamIn>,
) -> Result<Response, ApiError> {
    update(state, caller, req, false).await
}

#[utoipa::path(put, path = "/ssf/streams", operation_id = "ssf_put_stream", tag = "shared signals", responses((status = 200, description = "The stream configuration, replaced"), (status = "4XX", description = "Refused: a problem+json body names why", body = super::problem::Problem, content_type = "application/problem+json")))]
pub async fn put_stream(
    State(state): State<AppState>,
    caller: SsfCaller,
    Json(req): Json<StreamIn>,
) -> Result<Response, ApiError> {
    update(state, caller, req, true).await
}

#[utoipa::path(delete, path = "/ssf/streams", operation_id = "ssf_delete_stream", tag = "shared signals", params(("stream_id" = String, Query, description = "the stream")), responses((status = 204, description = "Deleted; its queued SETs are dropped"), (status = "4XX", description = "Refused: a problem+json body names why", body = super::problem::Problem, content_type = "application/problem+json")))]
pub async fn delete_stream(
    State(state): State<AppState>,
    caller: SsfCaller,
    Query(q): Query<StreamQuery>,
) -> Result<Response, ApiError> {
    let receiver = caller.managing()?;
    let id = q.stream_id.ok_or_else(|| ApiError(Error::invalid("`stream_id` is required")))?;
    state.writer.execute_as(receiver.caller(), move |tx| ops::delete_stream(tx, &receiver, &id)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn status_json(s: &StoredStream) -> Value {
    let mut out = json!({"stream_id": s.id, "status": s.status});
    if let Some(r) = &s.status_reason {
        out["reason"] = json!(r);
    }
    out
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusQuery {
    pub stream_id: String,
}

#[utoipa::path(get, path = "/ssf/status", operation_id = "ssf_get_status", tag = "shared signals", params(("stream_id" = String, Query, description = "the stream")), responses((status = 200, description = "`{stream_id, status, reason?}`"), (status = "4XX", description = "Refused: a problem+json body names why", body = super::problem::Problem, content_type = "application/problem+json")))]
pub async fn get_status(
    State(state): State<AppState>,
    caller: SsfCaller,
    Query(q): Query<StatusQuery>,
) -> Result<Response, ApiError> {
    let receiver = caller.receiver.caller().credential;
    let stream = state.readers.read(move |conn| streams::get_stream(conn, receiver, &q.stream_id)).await?;
    Ok(axum::Json(status_json(&stream)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusIn {
    pub stream_id: String,
    pub status: String,
    pub reason: Option<String>,
}

#[utoipa::path(post, path = "/ssf/status", operation_id = "ssf_set_status", tag = "shared signals", responses((status = 200, description = "`{stream_id, status, reason?}`"), (status = "4XX", description = "Refused: a problem+json body names why", body = super::problem::Problem, content_type = "application/problem+json")))]
pub async fn set_status(
    State(state): State<AppState>,
    caller: SsfCaller,
    Json(req): Json<StatusIn>,
) -> Result<Response, ApiError> {
    let receiver = caller.managing()?;
    let stream = state
        .writer
        .execute_as(receiver.caller(), move |tx| {
            ops::set_status(tx, &receiver, &req.stream_id, &req.status, req.reason)
        })
        .await?;
    Ok(axum::Json(status_json(&stream)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectIn {
    pub stream_id: String,
    pub subject: Value,
    /// SSF §8.1.3.2: whether the receiver verified the subject; tether keeps no such flag.
    #[allow(dead_code)]
    pub verified: Option<bool>,
}

async fn change_subject(state: AppState, caller: SsfCaller, req: SubjectIn, remove: bool) -> Result<(), ApiError> {
    let receiver = caller.managing()?;
    let issuer = state.public_url.as_str().to_owned();
    state
        .writer
        .execute_as(receiver.caller(), move |tx| {
            ops::change_subject(tx, &receiver, &issuer, &req.stream_id, &req.subject, remove)
        })
        .await?;
    Ok(())
}

#[utoipa::path(post, path = "/ssf/subjects:add", operation_id = "ssf_add_subject", tag = "shared signals", responses((status = 200, description = "Added"), (status = "4XX", description = "Refused: a problem+json body names why", body = super::problem::Problem, content_type = "application/problem+json")))]
pub async fn add_subject(
    State(state): State<AppState>,
    caller: SsfCaller,
    Json(req): Json<SubjectIn>,
) -> Result<Response, ApiError> {
    change_subject(state, caller, req, false).await?;
    Ok(StatusCode::OK.into_response())
}

#[utoipa::path(post, path = "/ssf/subjects:remove", operation_id = "ssf_remove_subject", tag = "shared signals", responses((status = 204, description = "Removed: no SET about it is queued for the stream"), (status = "4XX", description = "Refused: a problem+json body names why", body = super::problem::Problem, content_type = "application/problem+json")))]
pub async fn remove_subject(
    State(state): State<AppState>,
    caller: SsfCaller,
    Json(req): Json<SubjectIn>,
) -> Result<Response, ApiError> {
    change_subject(state, caller, req, true).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyIn {
    pub stream_id: String,
    pub state: Option<String>,
}

#[utoipa::path(post, path = "/ssf/verify", operation_id = "ssf_verify", tag = "shared signals", responses((status = 204, description = "A verification SET is queued"), (status = 429, description = "Asked again within min_verification_interval", body = super::problem::Problem, content_type = "application/problem+json"), (status = "4XX", description = "Refused: a problem+json body names why", body = super::problem::Problem, content_type = "application/problem+json")))]
pub async fn verify(
    State(state): State<AppState>,
    caller: SsfCaller,
    Json(req): Json<VerifyIn>,
) -> Result<Response, ApiError> {
    let receiver = caller.managing()?;
    let outcome = state
        .writer
        .execute_as(receiver.caller(), move |tx| ops::request_verification(tx, &receiver, &req.stream_id, req.state))
        .await?;
    Ok(match outcome {
        Verification::Queued => StatusCode::NO_CONTENT.into_response(),
        Verification::TooSoon(seconds) => {
            let mut answer = too_many_requests(format!(
                "verification was asked less than min_verification_interval ago: retry in {seconds} s"
            ));
            if let Ok(v) = HeaderValue::from_str(&seconds.to_string()) {
                answer.headers_mut().insert(header::RETRY_AFTER, v);
            }
            answer
        }
    })
}

/// 429 as a problem: SSF §8.1.4 names the status for verification asked too often.
fn too_many_requests(detail: String) -> Response {
    let problem = super::problem::Problem {
        kind: "urn:tether:problem:too_many_requests".into(),
        title: "Too many requests",
        status: 429,
        detail,
        code: "too_many_requests",
    };
    let mut answer = (StatusCode::TOO_MANY_REQUESTS, axum::Json(problem)).into_response();
    answer.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    answer
}

/// A stream id in a path: `sst_` and 32 hex digits.
pub struct StreamIdParam(String);

impl super::problem::PathParam for StreamIdParam {
    fn parse_segment(text: &str) -> Result<Self, String> {
        let hex = text.strip_prefix("sst_").unwrap_or_default();
        if hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(StreamIdParam(text.to_owned()))
        } else {
            Err("expected a stream id like `sst_0193…`".into())
        }
    }
}

/// An RFC 8936 poll request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollIn {
    #[serde(rename = "maxEvents")]
    pub max_events: Option<u32>,
    #[serde(rename = "returnImmediately")]
    pub return_immediately: Option<bool>,
    pub ack: Option<Vec<String>>,
    #[serde(rename = "setErrs")]
    pub set_errs: Option<BTreeMap<String, SetErr>>,
}

#[derive(Debug, Deserialize)]
pub struct SetErr {
    pub err: String,
    pub description: Option<String>,
}

/// SETs one poll answers at most.
const MAX_EVENTS: u32 = 1000;
/// How long a poll without `returnImmediately` waits for a SET.
const LONG_POLL: Duration = Duration::from_secs(15);

#[utoipa::path(post, path = "/ssf/poll/{stream_id}", operation_id = "ssf_poll", tag = "shared signals", params(("stream_id" = String, Path, description = "the poll stream")), responses((status = 200, description = "RFC 8936: `{sets: {jti: SET}, moreAvailable}`"), (status = "4XX", description = "Refused: a problem+json body names why", body = super::problem::Problem, content_type = "application/problem+json")))]
pub async fn poll(
    State(state): State<AppState>,
    caller: SsfCaller,
    super::problem::Path(StreamIdParam(stream_id)): super::problem::Path<StreamIdParam>,
    Json(req): Json<PollIn>,
) -> Result<Response, ApiError> {
    let receiver = caller.receiver;
    let credential = receiver.caller().credential;
    let id = stream_id.clone();
    let stream = state.readers.read(move |conn| streams::get_stream(conn, credential, &id)).await?;
    if stream.delivery_method != ssf::POLL {
        return Err(ApiError(Error::invalid("this stream is delivered by push, not poll")));
    }
    let acks = req.ack.unwrap_or_default();
    let errs: Vec<(String, String)> = req
        .set_errs
        .unwrap_or_default()
        .into_iter()
        .map(|(jti, e)| {
            let text = format!("{}: {}", e.err, e.description.unwrap_or_default());
            (jti, text.chars().take(300).collect())
        })
        .collect();
    if acks.len() + errs.len() > 10_000 || acks.iter().chain(errs.iter().map(|(j, _)| j)).any(|j| j.len() > 256) {
        return Err(ApiError(Error::invalid("at most 10000 `ack` and `setErrs` entries of at most 256 characters")));
    }
    if !acks.is_empty() || !errs.is_empty() {
        let id = stream.id.clone();
        state.writer.execute_as(receiver.caller(), move |tx| streams::record_poll(tx, &id, &acks, &errs)).await?;
    }
    let max = req.max_events.unwrap_or(100).min(MAX_EVENTS) as usize;
    if max == 0 {
        return Ok(axum::Json(json!({"sets": {}, "moreAvailable": false})).into_response());
    }
    let deadline =
        tokio::time::Instant::now() + if req.return_immediately.unwrap_or(false) { Duration::ZERO } else { LONG_POLL };
    let mut closing = state.closing.subscribe();
    let (sets, more) = loop {
        let id = stream.id.clone();
        // A paused stream holds its SETs; a disabled one has none.
        let (sets, more) = state
            .readers
            .read(move |conn| {
                let status = streams::get_stream(conn, credential, &id)?.status;
                if status == "enabled" {
                    streams::pending_for_poll(conn, &id, max)
                } else {
                    Ok((Vec::new(), false))
                }
            })
            .await?;
        if !sets.is_empty() || tokio::time::Instant::now() >= deadline || *closing.borrow() {
            break (sets, more);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = closing.changed() => {}
        }
    };
    let (keys, issuer) = (state.set_keys.clone(), state.public_url.as_str().to_owned());
    let signed = tokio::task::spawn_blocking(move || {
        sets.iter()
            .map(|set| ssf::sign(&keys, &issuer, set).map(|jws| (set.jti.clone(), Value::String(jws))))
            .collect::<crate::domain::Result<serde_json::Map<String, Value>>>()
    })
    .await
    .map_err(|e| ApiError(Error::internal(format!("signing SETs: {e}"))))??;
    Ok(axum::Json(json!({"sets": signed, "moreAvailable": more})).into_response())
}
