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
}

/// Liveness: answers while the process serves requests. No credential.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()), responses((status = 200, body = Health)))]
pub async fn healthz() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
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
