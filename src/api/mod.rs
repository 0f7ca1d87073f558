//! The HTTP API: one module per resource, each with its own `router()`, merged here; `console`
//! also serves the console's HTML pages under `/console` (docs/console.md).

pub mod audit;
pub mod auth;
pub mod authorize;
pub mod client_auth;
pub mod console;
pub mod credentials;
pub mod delegations;
pub mod events;
pub mod global_revocation;
pub mod groups;
pub mod keys;
pub mod links;
pub mod metadata;
pub mod oauth;
pub mod oauth_token;
pub mod openapi;
pub mod operations;
pub mod platforms;
pub mod problem;
pub mod scim;
pub mod sessions;
pub mod signals;
pub mod ssf;
pub mod users;
pub mod webhooks;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::Request;
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::Deserialize;

use crate::authorize::{Authorizer, DenialLog};
use crate::clock::Clock;
use crate::domain::access::{Capability, PlatformScope};
use crate::domain::{Error, Result};
use crate::last_seen::LastSeen;
use crate::metrics;
use crate::ops::sessions::{NewSession, SessionCreated};
use crate::ops::{self, Env};
use crate::store::query::PageRequest;
use crate::store::{self, ReadPool, Writer};
use crate::views::Views;
use problem::ApiError;

/// What request handlers reach; built by [`crate::app::App::open`].
pub struct Context {
    pub writer: Writer,
    pub readers: Arc<ReadPool>,
    /// The read replica's pool (`--read-database`), for [`Context::read_stale`] only.
    pub replica: Option<Arc<store::replica::Replica>>,
    pub views: Arc<Views>,
    pub authorizer: Authorizer,
    pub env: Arc<Env>,
    pub clock: Arc<Clock>,
    pub metrics: metrics::Metrics,
    /// Filled by authorize calls, flushed by the app's last-seen worker.
    pub last_seen: Arc<LastSeen>,
    /// Whether a webhook may name a private, loopback or link-local address.
    pub allow_private_webhook_urls: bool,
    /// Signal sources' keys (inline or fetched), for verifying pushed SETs.
    pub signal_keys: crate::signals::jwks::KeyCache,
    pub credential_cache: auth::CredentialCache,
    pub denials: DenialLog,
    /// Set when the server starts shutting down: long-lived answers (event streams) end on it,
    /// so draining the open requests does not wait for clients that never hang up.
    pub closing: tokio::sync::watch::Sender<bool>,
    /// The base of every URL tether advertises.
    pub public_url: crate::domain::PublicUrl,
    /// The Shared Signals SET signing keys (their JWKS is public).
    pub set_keys: Arc<crate::tokens::SetKeyRing>,
    /// Access tokens issued at `POST /oauth2/token` to SSF receivers.
    pub ssf_tokens: oauth_token::AccessTokens,
    /// This node's part in a cluster (PostgreSQL); `None` on SQLite.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// What this node remembers of the delegations it opened sessions on (`open_session`).
    pub delegation_links: Arc<links::DelegationLinks>,
}

impl Context {
    /// Opens a session: tokens are minted from a read of the chain on a blocking thread (in
    /// parallel with other requests), then the single writer checks the whole chain and commits.
    /// Puts a session created on another node into the live view, read from the database; false
    /// when there is no such session. Never replaces what the view holds (a revocation the tailer
    /// applied meanwhile stays).
    pub async fn learn_session(&self, id: crate::domain::SessionId) -> Result<bool> {
        let row = self.readers.read(move |conn| crate::store::sessions::live_row(conn, id)).await?;
        Ok(match row {
            Some(row) => {
                let state = crate::views::LiveSession { revoked: row.revoked, expires_at: row.expires_at };
                self.views.sessions.insert_if_absent(row.id, state);
                true
            }
            None => false,
        })
    }

    pub async fn open_session(&self, caller: PlatformScope, req: NewSession) -> Result<SessionCreated> {
        let now = self.clock.now();
        // A delegation this node has opened sessions on needs no read to mint from.
        let known = self.delegation_links.get(req.delegation_id, caller.visibility());
        let preminted = match known.and_then(|links| ops::sessions::premint_known(&self.env, &req, links, now)) {
            Some(preminted) => Some(preminted),
            None => {
                let (env, req) = (self.env.clone(), req.clone());
                let preminted =
                    self.readers.read(move |conn| Ok(ops::sessions::premint(conn, &env, &caller, &req, now))).await?;
                if let Some(p) = &preminted {
                    let (id, links) = p.links();
                    self.delegation_links.remember(id, links);
                }
                preminted
            }
        };
        let env = self.env.clone();
        let delegation = Some((caller.visibility(), req.delegation_id));
        self.writer
            .execute_appending_as(caller.caller(), delegation, move |tx| {
                ops::sessions::create_session(tx, &env, &caller, req, preminted)
            })
            .await
    }

    /// The seq of the newest committed audit event.
    pub async fn writer_head_seq(&self) -> Result<i64> {
        self.readers.read(|conn| store::audit::chain_head(conn).map(|(seq, _)| seq)).await
    }

    /// Runs a read whose answer may be as old as the read replica's replay (listings; the list
    /// of which is in docs/architecture.md, "Read replica"): on the replica when one is
    /// configured, else on the primary's pool. Whatever the replica fails (out of reach, a query
    /// cancelled by replay, an object it has not replayed yet) is read again on the primary, so
    /// a replica can make an answer older, never an error; a request's own fault is answered.
    pub async fn read_stale<T, F>(&self, command: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&store::Conn) -> Result<T> + Clone + Send + 'static,
    {
        let Some((replica, pool)) = self.replica.as_ref().and_then(|r| Some((r, r.usable()?))) else {
            return self.readers.read(command).await;
        };
        match pool.read(command.clone()).await {
            Ok(answer) => Ok(answer),
            // Not found is the replica being behind, which is expected: the primary has it.
            Err(Error::NotFound(_)) => self.readers.read(command).await,
            Err(e @ (Error::Unavailable(_) | Error::Internal(_))) => {
                // Worth an operator's look: the primary carries the replica's load meanwhile.
                tracing::warn!(error = %e, "the read replica failed a read; read on the primary");
                if matches!(e, Error::Unavailable(_)) {
                    replica.unreachable();
                }
                self.readers.read(command).await
            }
            // The request's own fault (a bad cursor): the primary would say the same.
            Err(e) => Err(e),
        }
    }
}

/// Shared state of every handler.
pub type AppState = Arc<Context>;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The whole router, with body limits, problem+json fallbacks and per-request spans.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(credentials::router())
        .merge(platforms::router())
        .merge(users::router())
        .merge(delegations::router())
        .merge(sessions::router())
        .merge(authorize::router())
        .merge(audit::router())
        .merge(keys::router())
        .merge(events::router())
        .merge(webhooks::router())
        .merge(oauth::router())
        .merge(metadata::router())
        .merge(oauth_token::router())
        .merge(ssf::router())
        .merge(operations::router())
        .merge(scim::router())
        .merge(groups::router())
        .merge(signals::router())
        .merge(global_revocation::router())
        .merge(console::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::map_response_with_state(state.clone(), metadata::challenge_unauthenticated))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                .make_span_with(|request: &Request<_>| {
                    // Only method and path: query strings and headers may hold tokens.
                    tracing::info_span!(
                        "request",
                        id = %uuid::Uuid::now_v7().simple(),
                        method = %request.method(),
                        path = %request.uri().path(),
                        caller = tracing::field::Empty,
                    )
                })
                .on_failure(log_failure),
        )
        .with_state(state)
}

/// Logs an answer that failed: a 5xx as an error, except 503. A 503 is a state the node is in
/// (no lease, behind the log, stopping, the database out of reach), logged once where it begins
/// (`cluster/lease.rs`, the store); as an error per answer, a node without a lease wrote a line
/// for each of tens of thousands of requests a second, and the disk that writing kept busy
/// delayed the WAL flush its lease renewal waited for.
fn log_failure(
    failure: tower_http::classify::ServerErrorsFailureClass,
    latency: std::time::Duration,
    _: &tracing::Span,
) {
    use tower_http::classify::ServerErrorsFailureClass;
    match failure {
        ServerErrorsFailureClass::StatusCode(axum::http::StatusCode::SERVICE_UNAVAILABLE) => {
            tracing::debug!(latency_ms = latency.as_millis() as u64, "answered 503")
        }
        failure => tracing::error!(%failure, latency_ms = latency.as_millis() as u64, "response failed"),
    }
}

async fn not_found() -> ApiError {
    ApiError(Error::NotFound("route"))
}

async fn method_not_allowed() -> ApiError {
    ApiError(Error::MethodNotAllowed("this route does not take this method".into()))
}

/// `?limit=&cursor=` as sent; parsed into a [`PageRequest`] with the cursor checked by `parse`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RawPage {
    /// Items per page, 1 to 1000 (default 100).
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

pub fn page<T, E: std::fmt::Display>(
    limit: &Option<String>,
    cursor: &Option<String>,
    parse: impl Fn(&str) -> std::result::Result<T, E>,
) -> Result<PageRequest> {
    let limit = match limit {
        None => 100,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => return Err(Error::invalid("`limit` must be an integer from 1 to 1000")),
        },
    };
    if let Some(c) = cursor {
        parse(c).map_err(|e| Error::invalid(format!("`cursor`: {e}")))?;
    }
    Ok(PageRequest { limit, cursor: cursor.clone() })
}

/// Runs a write command for the holder of `capability` (only while its credential is still live,
/// checked inside the writer) and answers with its result as JSON.
pub async fn write<T, F>(
    state: &AppState,
    capability: impl Capability,
    command: F,
) -> std::result::Result<axum::Json<T>, ApiError>
where
    T: serde::Serialize + Send + 'static,
    F: FnOnce(&mut crate::store::Tx<'_>) -> Result<T> + Send + 'static,
{
    Ok(axum::Json(state.writer.execute_as(capability.caller(), command).await?))
}

/// [`write`] for an answer that can be large (a cascade's receipt): it is serialized while the
/// other nodes confirm the revocation, not after.
pub async fn write_serialized<T, F>(
    state: &AppState,
    capability: impl Capability,
    command: F,
) -> std::result::Result<SerializedJson, ApiError>
where
    T: serde::Serialize + Send + 'static,
    F: FnOnce(&mut crate::store::Tx<'_>) -> Result<T> + Send + 'static,
{
    let serialize =
        |answer: T| serde_json::to_vec(&answer).map_err(|e| Error::internal_from("serializing an answer", e));
    Ok(SerializedJson(state.writer.execute_as_then(capability.caller(), command, serialize).await??))
}

/// A JSON answer serialized ahead of its response ([`write_serialized`]).
pub struct SerializedJson(Vec<u8>);

impl IntoResponse for SerializedJson {
    fn into_response(self) -> Response {
        ([(axum::http::header::CONTENT_TYPE, "application/json")], self.0).into_response()
    }
}

/// Runs a read with the caller's visibility and answers with its result as JSON.
pub async fn read<T, F>(state: &AppState, command: F) -> std::result::Result<axum::Json<T>, ApiError>
where
    T: serde::Serialize + Send + 'static,
    F: FnOnce(&crate::store::Conn) -> Result<T> + Send + 'static,
{
    Ok(axum::Json(state.readers.read(command).await?))
}

/// [`read`], for a listing whose staleness is harmless: see [`Context::read_stale`].
pub async fn read_stale<T, F>(state: &AppState, command: F) -> std::result::Result<axum::Json<T>, ApiError>
where
    T: serde::Serialize + Send + 'static,
    F: Fn(&crate::store::Conn) -> Result<T> + Clone + Send + 'static,
{
    Ok(axum::Json(state.read_stale(command).await?))
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        ApiError(self).into_response()
    }
}
