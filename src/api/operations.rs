//! Operations routes: /healthz, /metrics (Prometheus text), /openapi.json.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/metrics", get(metrics)).route("/openapi.json", get(openapi))
}

/// The answer of `/healthz`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `ok`: the process is up and serving.
    pub status: &'static str,
    /// On a node of several (PostgreSQL): whether it may answer allow, and why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<NodeHealth>,
}

/// A cluster node's standing (docs/architecture.md, "Leases").
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct NodeHealth {
    pub node: String,
    /// `current` (it holds a live lease and has applied the log up to it), `no_lease`, `behind`
    /// or `stopping`; anything but `current` answers an allow with 503.
    pub standing: &'static str,
    /// The last audit seq this node has applied.
    pub applied_seq: i64,
    /// Whether this node sends webhook deliveries and Shared Signals pushes.
    pub sends_outgoing: bool,
}

/// Liveness: answers while the process serves requests. No credential.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()), responses((status = 200, body = Health)))]
pub async fn healthz(State(state): State<AppState>) -> axum::Json<Health> {
    let cluster = state.cluster.as_ref().map(|c| NodeHealth {
        node: c.node_id.clone(),
        standing: match c.state.standing() {
            crate::cluster::Standing::Current => "current",
            crate::cluster::Standing::NoLease => "no_lease",
            crate::cluster::Standing::Behind => "behind",
            crate::cluster::Standing::Stopping => "stopping",
        },
        applied_seq: c.state.applied(),
        sends_outgoing: c.leading.load(std::sync::atomic::Ordering::Acquire),
    });
    axum::Json(Health { status: "ok", cluster })
}

/// Prometheus text exposition of tether's counters (README lists them). No credential.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()), responses((status = 200, content_type = "text/plain; version=0.0.4", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let gauges = crate::metrics::Gauges {
        live_sessions: state.views.sessions.len(),
        cached_tokens: state.authorizer.cached_tokens(),
        writer: state.writer.stats(),
    };
    let body = state.metrics.render(&gauges);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// This document. No credential.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", security(()), responses((status = 200, body = Object)))]
pub async fn openapi() -> impl IntoResponse {
    axum::Json(super::openapi::document())
}
