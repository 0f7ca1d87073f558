//! A tether to load over HTTP (benches/http.sh): the real router on a temporary data directory,
//! plus `POST /bench/bare`, a bare axum endpoint that reads the same JSON request and answers a
//! canned JSON body of exactly the size of an allow answer from `/v1/authorize`.
//!
//! Creates a verifier credential and N sessions, then prints (and writes to `--env FILE`)
//! `ADDR=…`, `CREDENTIAL=…`, `TOKEN=…` (and `TOKENS_FILE=…`, one token a line), and serves until
//! killed or `--seconds S` elapse.
//!
//! `cargo run --release --example bench_server -- --sessions 1000 --env /tmp/tether-bench.env`

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../benches/support/mod.rs"]
mod support;

use std::io::Write;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, Request, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use http_body_util::BodyExt;
use serde::Deserialize;
use tower::ServiceExt;

use tether::domain::*;

/// The same request shape as /v1/authorize (parsed the same way: unknown fields refused).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct BareRequest {
    token: String,
    scope: String,
    resource: Option<String>,
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let sessions: usize = arg(&args, "--sessions").and_then(|s| s.parse().ok()).unwrap_or(1000);
    let port: u16 = arg(&args, "--port").and_then(|s| s.parse().ok()).unwrap_or(0);
    let seconds: Option<u64> = arg(&args, "--seconds").and_then(|s| s.parse().ok());
    let env_file = arg(&args, "--env");
    // Like `tether serve`: one runtime worker per CPU unless told otherwise.
    let workers: usize = arg(&args, "--workers")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from));
    // The subscriber `tether serve` installs: request spans are enabled at `info`, and cost what
    // they cost in production.
    tether::install_log_subscriber(false);
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build().expect("runtime");
    runtime.block_on(serve(sessions, port, seconds, env_file));
}

async fn serve(sessions: usize, port: u16, seconds: Option<u64>, env_file: Option<String>) {
    let dir = support::data_dir();
    let app = support::open(dir.path()).await;
    let services = app.services.clone();
    let chain = support::chain(&services).await;
    let credential = support::stored_credential(&services, Role::Verifier).await.secret;
    let user = support::delegated_user(&services, chain).await;
    let created = support::sessions(&services, user.delegation, sessions.max(1), 500).await;
    let token = created[0].1.clone();

    // One real allow answer: the bare endpoint returns bytes of exactly its size.
    let router = app.router();
    let request_body = serde_json::json!({"token": token, "scope": "mail:read"}).to_string();
    let answer = router
        .clone()
        .oneshot(
            Request::post("/v1/authorize")
                .header("authorization", format!("Bearer {credential}"))
                .header("content-type", "application/json")
                .body(Body::from(request_body.clone()))
                .expect("request"),
        )
        .await
        .expect("authorize");
    assert_eq!(answer.status(), StatusCode::OK);
    let canned: Bytes = answer.into_body().collect().await.expect("body").to_bytes();
    let text = String::from_utf8_lossy(&canned).into_owned();
    assert!(text.contains("\"decision\":\"allow\""), "{text}");

    let bare_body = canned.clone();
    let bare = Router::new().route(
        "/bench/bare",
        post(move |axum::Json(_req): axum::Json<BareRequest>| {
            let body = bare_body.clone();
            async move { ([(header::CONTENT_TYPE, "application/json")], body).into_response() }
        }),
    );
    let router = router.merge(bare);

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let tokens_file = dir.path().join("tokens.txt");
    std::fs::write(&tokens_file, created.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>().join("\n"))
        .expect("tokens file");
    let lines = format!(
        "ADDR={addr}\nCREDENTIAL={credential}\nTOKEN={token}\nTOKENS_FILE={}\nANSWER_BYTES={}\nREQUEST_BYTES={}\n",
        tokens_file.display(),
        canned.len(),
        request_body.len()
    );
    if let Some(path) = env_file {
        let mut f = std::fs::File::create(&path).expect("env file");
        f.write_all(lines.as_bytes()).expect("write env file");
    }
    print!("{lines}");
    println!("READY");
    let _ = std::io::stdout().flush();

    let workers = app.start_workers();
    let shutdown = async move {
        match seconds {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => std::future::pending::<()>().await,
        }
    };
    // The accept loop `tether serve` uses (read timeouts, TCP_NODELAY), for both endpoints.
    tether::server::run(listener, router, tether::server::HttpTimeouts::default(), shutdown, || {}).await;
    workers.stop().await;
    drop(app);
}
