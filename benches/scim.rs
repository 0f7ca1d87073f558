//! SCIM deactivation (issue 17, "Bad input, reliability, speed"): Okta's PATCH
//! `{"op":"replace","value":{"active":false}}` for a user holding 1,000 live sessions, through the
//! real router (credential check, SCIM parsing, the writer's transaction with the scim event,
//! user.disabled and its cascade, the durable commit), timed from request to answer. Target:
//! ≤ 100 ms.
//!
//! `cargo bench --bench scim` (`TETHER_BENCH_SCIM_SESSIONS=1000`, `TETHER_BENCH_SCIM_RUNS=5`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request as HttpRequest;
use http_body_util::BodyExt;
use tower::ServiceExt;

use tether::domain::*;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let sessions = env_usize("TETHER_BENCH_SCIM_SESSIONS", 1000);
    let runs = env_usize("TETHER_BENCH_SCIM_RUNS", 5);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let dir = support::data_dir();
    println!("machine: {}", support::machine());
    runtime.block_on(async {
        let app = support::open(dir.path()).await;
        let services = app.services.clone();
        let chain = support::chain(&services).await;
        let credential = support::stored_credential(&services, Role::Provisioner).await.secret;
        let router = app.router();
        let mut times = Vec::new();
        for run in 0..runs {
            let user = support::delegated_user(&services, chain).await;
            let opened = support::sessions(&services, user.delegation, sessions, 500).await;
            let body = serde_json::json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "value": {"active": false}}],
            });
            let request = HttpRequest::patch(format!("/scim/v2/Users/{}", user.user))
                .header("authorization", format!("Bearer {credential}"))
                .header("content-type", "application/scim+json")
                .body(Body::from(body.to_string()))
                .expect("request");
            let started = Instant::now();
            let response = router.clone().oneshot(request).await.expect("response");
            let status = response.status();
            let answer = response.into_body().collect().await.expect("body").to_bytes();
            let took = started.elapsed();
            assert!(status.is_success(), "{status}: {}", String::from_utf8_lossy(&answer));
            let answer: serde_json::Value = serde_json::from_slice(&answer).expect("json");
            assert_eq!(answer["active"], false);
            let still_live =
                opened.iter().filter(|(id, _)| services.views.sessions.get(*id).is_some_and(|s| !s.revoked));
            assert_eq!(still_live.count(), 0, "every session of the user is revoked");
            println!(
                "run {run}: SCIM deactivation of a user with {sessions} live sessions answered in {:.1} ms",
                ms(took)
            );
            times.push(took);
        }
        times.sort();
        println!(
            "SCIM deactivation, {sessions} live sessions, {runs} runs: median {:.1} ms, max {:.1} ms (target ≤ 100 ms)",
            ms(times[times.len() / 2]),
            ms(*times.last().expect("a run"))
        );
    });
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
