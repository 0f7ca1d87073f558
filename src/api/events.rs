//! GET /v1/events: Server-Sent Events of the audit events the caller may see.
//!
//! `id:` is the audit seq. A client that reconnects with `Last-Event-ID` resumes right after it:
//! the stream subscribes to live events first, then replays the backlog from the store, then
//! forwards live events it has not sent yet, so nothing is missed or sent twice. A consumer too
//! slow for the bounded buffer is dropped (writers never wait for it) and resumes the same way.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::wrappers::ReceiverStream;

use super::auth::AuthenticatedWithKey;
use super::problem::{ApiResult, Query};
use super::AppState;
use crate::audit::{visible_to, AuditEvent};
use crate::domain::*;
use crate::store::audit_listing::{self, AuditFilter};

/// How long an idle stream goes without checking that its credential is still live.
const RECHECK_CREDENTIAL: Duration = Duration::from_secs(5);

/// Not revoked, not expired, and its signing key not retired: what a request is checked for on
/// arrival, checked again for as long as the stream lasts.
fn credential_still_live(state: &AppState, credential: CredentialId, kid: u32) -> bool {
    state.views.credentials.get(&credential).is_some_and(|c| c.is_live(state.clock.now()))
        && state.env.api_keys.is_active(kid)
}

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/events", get(events))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Same as `Last-Event-ID`, for clients that cannot set headers.
    #[param(value_type = Option<i64>, minimum = 0)]
    after: Option<String>,
}

/// Sends, from the store, the events after `last` (up to `until`) that the caller may see,
/// advancing `last`. False when the client has gone or the store cannot be read.
async fn replay(
    state: &AppState,
    role: &Role,
    tx: &tokio::sync::mpsc::Sender<Result<Event, Infallible>>,
    last: &mut i64,
    until: Option<i64>,
) -> bool {
    loop {
        let filter = AuditFilter { after_seq: Some(*last), ..Default::default() };
        let Ok(page) = state.readers.read(move |conn| audit_listing::list_audit(conn, &filter, 500)).await else {
            return false;
        };
        for event in &page.items {
            if until.is_some_and(|until| event.seq > until) {
                return true;
            }
            *last = event.seq;
            if visible_to(role, event) && tx.send(Ok(sse_event(event))).await.is_err() {
                return false;
            }
        }
        if page.next_cursor.is_none() {
            return true;
        }
    }
}

fn sse_event(event: &AuditEvent) -> Event {
    Event::default()
        .id(event.seq.to_string())
        .event(event.action.clone())
        .data(crate::events::notification(event).to_string())
}

#[utoipa::path(get, path = "/v1/events", operation_id = "stream_events", params(EventsQuery, ("Last-Event-ID" = Option<String>, Header, pattern = "^\\s*[0-9]{1,18}\\s*$", description = "resume after this audit seq")), tag = "checking tokens", responses((status = 200, content_type = "text/event-stream", body = String)))]
pub async fn events(
    State(state): State<AppState>,
    AuthenticatedWithKey { caller, kid }: AuthenticatedWithKey,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> ApiResult<impl axum::response::IntoResponse> {
    let resume = match headers.get("last-event-id") {
        Some(v) => Some(v.to_str().map_err(|_| Error::invalid("`Last-Event-ID` must be an audit seq"))?.to_owned()),
        None => None,
    }
    .or(q.after);
    let after = match resume {
        None => state.writer_head_seq().await?,
        Some(text) => text
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| Error::invalid("`Last-Event-ID` must be an audit seq"))?,
    };
    // Subscribe before reading the backlog so no event falls between the two.
    let mut live = state.views.events.subscribe();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(64);
    let role = caller.role;
    let credential = caller.credential;
    let mut closing = state.closing.subscribe();
    let feed = async move {
        let mut last = after;
        if !replay(&state, &role, &tx, &mut last, None).await {
            return;
        }
        loop {
            // The credential is checked again on every event and at least every few seconds:
            // a stream ends once its credential is revoked or expires or its key is retired.
            // A client that went away ends it too, even if it would never be sent an event.
            let received = tokio::select! {
                received = tokio::time::timeout(RECHECK_CREDENTIAL, live.recv()) => received,
                () = tx.closed() => return,
            };
            if !credential_still_live(&state, credential, kid) {
                return;
            }
            // Events another process wrote (`tether credential mint`, a key sync at its start)
            // never pass through this process's bus: read them from the store when idle, and
            // before an event that comes after a gap.
            let Ok(received) = received else {
                if !replay(&state, &role, &tx, &mut last, None).await {
                    return;
                }
                continue;
            };
            match received {
                Ok(event) if event.seq <= last => continue,
                Ok(event) => {
                    if event.seq > last + 1 && !replay(&state, &role, &tx, &mut last, Some(event.seq - 1)).await {
                        return;
                    }
                    last = event.seq;
                    if visible_to(&role, &event) && tx.send(Ok(sse_event(&event))).await.is_err() {
                        return;
                    }
                }
                // Too slow: drop the stream; the client resumes with Last-Event-ID.
                Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => return,
            }
        }
    };
    // A server shutting down ends every stream wherever it waits (for an event, for a slow
    // client), so draining the open requests does not wait for clients that never hang up.
    tokio::spawn(async move {
        tokio::select! {
            () = feed => {}
            _ = closing.wait_for(|closing| *closing) => {}
        }
    });
    Ok(Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)).text("keep-alive")))
}
