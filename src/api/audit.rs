//! /v1/audit: the log, its verification, its export, and revocation coverage (auditor, admin).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use futures_util::StreamExt;
use serde::Deserialize;

use super::auth::Allowed;
use super::problem::{ApiResult, Query};
use super::{read, read_stale, AppState};
use crate::audit::{AuditEvent, VerifyReport};
use crate::domain::access::Auditor;
use crate::domain::*;
use crate::store::audit;
use crate::store::audit_listing::{self, AuditFilter};
use crate::store::coverage::{self, Coverage};
use crate::store::query::Page;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/audit", get(list))
        .route("/v1/audit/verify", get(verify))
        .route("/v1/audit/export", get(export))
        .route("/v1/audit/coverage", get(coverage_report))
        .route("/v1/audit/checkpoint", get(checkpoint))
        .route("/v1/audit/checkpoint/verify", axum::routing::post(verify_checkpoint))
}

/// A signed statement of the chain head. Kept outside tether, it lets an auditor prove later
/// that the log up to `seq` was not rewritten, even by someone with write access to the file.
#[derive(Debug, Clone, serde::Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    #[serde(deserialize_with = "crate::domain::text::deserialize_i64")]
    pub seq: i64,
    pub hash: String,
    /// Id of the API key (purpose `api`) that signed it.
    #[serde(deserialize_with = "crate::domain::text::deserialize_u32")]
    #[schema(format = Int64, minimum = 0, maximum = 4294967295_u32)]
    pub kid: u32,
    /// Hex Ed25519 signature over `tether-audit-checkpoint-v1:{seq}:{hash}`.
    #[schema(pattern = "^([0-9a-fA-F]{2})*$")]
    pub signature: String,
}

fn checkpoint_message(seq: i64, hash: &str) -> Vec<u8> {
    format!("tether-audit-checkpoint-v1:{seq}:{hash}").into_bytes()
}

#[utoipa::path(get, path = "/v1/audit/checkpoint", operation_id = "sign_audit_checkpoint", tag = "audit", responses((status = 200, body = Checkpoint)))]
pub async fn checkpoint(State(state): State<AppState>, _: Allowed<Auditor>) -> ApiResult<axum::Json<Checkpoint>> {
    let head = state.readers.read(audit::chain_head).await?;
    let (kid, signature) = state.env.api_keys.sign(&checkpoint_message(head.0, &head.1))?;
    Ok(axum::Json(Checkpoint { seq: head.0, hash: head.1, kid, signature: hex::encode(signature) }))
}

/// Whether a checkpoint is tether's and whether the log still holds it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct CheckpointCheck {
    /// The signature is by one of tether's API keys.
    pub signature_valid: bool,
    /// The event at `seq` still has `hash` (and the chain up to it verifies).
    pub log_matches: bool,
}

#[utoipa::path(post, path = "/v1/audit/checkpoint/verify", operation_id = "verify_audit_checkpoint", tag = "audit", request_body = Checkpoint, responses((status = 200, body = CheckpointCheck)))]
pub async fn verify_checkpoint(
    State(state): State<AppState>,
    _: Allowed<Auditor>,
    super::problem::Json(checkpoint): super::problem::Json<Checkpoint>,
) -> ApiResult<axum::Json<CheckpointCheck>> {
    let signature = hex::decode(&checkpoint.signature).map_err(|_| Error::invalid("`signature` must be hex"))?;
    let signature_valid = state.env.api_keys.verify_signature(
        checkpoint.kid,
        &checkpoint_message(checkpoint.seq, &checkpoint.hash),
        &signature,
    );
    let (seq, hash) = (checkpoint.seq, checkpoint.hash.clone());
    let log_matches = state
        .readers
        .read_long(move |conn| {
            let report = audit::verify_audit_through(conn, Some(seq))?;
            Ok(report.ok && report.head_seq == seq && report.head_hash == hash)
        })
        .await?;
    Ok(axum::Json(CheckpointCheck { signature_valid, log_matches }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Events about this subject id.
    #[param(max_length = 200, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    subject: Option<String>,
    /// Events by this actor id.
    #[param(max_length = 200, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    actor: Option<String>,
    /// Events with this action, e.g. `session.revoked`.
    #[param(max_length = 200, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    action: Option<String>,
    /// Events caused by the event with this seq.
    #[param(value_type = Option<i64>, minimum = 0)]
    cause_seq: Option<String>,
    /// Events after this seq.
    #[param(value_type = Option<i64>, minimum = 0)]
    after_seq: Option<String>,
    /// `next_cursor` of the previous page (a seq).
    #[param(value_type = Option<i64>, minimum = 0)]
    cursor: Option<String>,
    /// Events at or after this RFC 3339 time.
    #[param(format = DateTime)]
    since: Option<String>,
    /// Events before this RFC 3339 time.
    #[param(format = DateTime)]
    until: Option<String>,
    /// Items per page, 1 to 1000 (default 100).
    #[param(value_type = Option<u16>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

fn seq(field: &str, value: &Option<String>) -> Result<Option<i64>> {
    value
        .as_deref()
        .map(|v| {
            v.parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| Error::invalid(format!("`{field}` must be a non-negative integer")))
        })
        .transpose()
}

fn time(field: &str, value: &Option<String>) -> Result<Option<Timestamp>> {
    value
        .as_deref()
        .map(|v| {
            Timestamp::parse_rfc3339(v).ok_or_else(|| Error::invalid(format!("`{field}` must be an RFC 3339 time")))
        })
        .transpose()
}

fn short(field: &str, value: &Option<String>) -> Result<Option<String>> {
    value.as_deref().map(|v| clean_text(field, v, 200)).transpose()
}

#[utoipa::path(get, path = "/v1/audit", operation_id = "list_audit_events", params(ListQuery), tag = "audit", responses((status = 200, body = Page<AuditEvent>)))]
pub async fn list(
    State(state): State<AppState>,
    _: Allowed<Auditor>,
    Query(q): Query<ListQuery>,
) -> ApiResult<axum::Json<Page<AuditEvent>>> {
    let limit = super::page(&q.limit, &None, |_: &str| Ok::<_, Error>(()))?.limit;
    // `cursor` (the last seq of the previous page) and `after_seq` mean the same; the larger wins.
    let after = seq("after_seq", &q.after_seq)?.max(seq("cursor", &q.cursor)?);
    let filter = AuditFilter {
        subject: short("subject", &q.subject)?,
        actor: short("actor", &q.actor)?,
        action: short("action", &q.action)?,
        cause_seq: seq("cause_seq", &q.cause_seq)?,
        after_seq: after,
        since: time("since", &q.since)?,
        until: time("until", &q.until)?,
    };
    read_stale(&state, move |conn| audit_listing::list_audit(conn, &filter, limit)).await
}

#[utoipa::path(get, path = "/v1/audit/verify", operation_id = "verify_audit_log", tag = "audit", responses((status = 200, body = VerifyReport)))]
pub async fn verify(State(state): State<AppState>, _: Allowed<Auditor>) -> ApiResult<axum::Json<VerifyReport>> {
    Ok(axum::Json(state.readers.read_long(audit::verify_audit).await?))
}

/// How long an export waits for its client to take the next chunk before it gives up: the
/// export's read transaction pins the WAL (no checkpoint can finish past it) while it lasts.
const EXPORT_STALL_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// NDJSON, one event a line in seq order, streamed in chunks so a large log is never held whole.
#[utoipa::path(get, path = "/v1/audit/export", operation_id = "export_audit_log", tag = "audit", responses((status = 200, content_type = "application/x-ndjson", body = String)))]
pub async fn export(State(state): State<AppState>, _: Allowed<Auditor>) -> ApiResult<Response> {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::result::Result<Vec<u8>, std::io::Error>>(8);
    let readers = state.readers.clone();
    let runtime = tokio::runtime::Handle::current();
    let gave_up = Arc::new(AtomicBool::new(false));
    let stalled = gave_up.clone();
    tokio::task::spawn_blocking(move || {
        let mut chunk = Vec::with_capacity(64 * 1024);
        let send = |chunk| {
            let sent = runtime.block_on(tx.send_timeout(chunk, EXPORT_STALL_LIMIT)).is_ok();
            if !sent {
                stalled.store(true, Ordering::SeqCst);
            }
            sent
        };
        let outcome = readers.read_own(|conn| {
            audit::each_stored_record(conn, |record| {
                if serde_json::to_writer(&mut chunk, &record).is_err() {
                    return false;
                }
                chunk.push(b'\n');
                if chunk.len() >= 60 * 1024 {
                    return send(Ok(std::mem::take(&mut chunk)));
                }
                true
            })
        });
        if let Err(e) = outcome {
            tracing::error!(error = %e, "audit export failed");
            send(Err(std::io::Error::other("export failed")));
        } else if !chunk.is_empty() {
            send(Ok(chunk));
        }
    });
    // An export that gave up ends in an error, so the client sees a broken transfer rather than
    // a log that merely looks shorter.
    let ending = futures_util::stream::once(async move {
        gave_up
            .load(Ordering::SeqCst)
            .then(|| Err(std::io::Error::other("the export stopped: the client did not read for too long")))
    })
    .filter_map(std::future::ready);
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx).chain(ending);
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(stream))
        .map_err(|e| Error::internal(e).into())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoverageQuery {
    event: String,
}

#[utoipa::path(get, path = "/v1/audit/coverage", operation_id = "audit_coverage", tag = "audit", params(("event" = i64, Query, minimum = 0, description = "seq of the trigger event")), responses((status = 200, body = Coverage)))]
pub async fn coverage_report(
    State(state): State<AppState>,
    _: Allowed<Auditor>,
    Query(q): Query<CoverageQuery>,
) -> ApiResult<axum::Json<Coverage>> {
    let event = seq("event", &Some(q.event))?.unwrap_or(0);
    read(&state, move |conn| coverage::report(conn, event)).await
}
