//! A tether to load over HTTP (benches/http.sh, benches/storm.sh): the real router on a
//! temporary data directory, plus bench-only endpoints:
//!
//! - `POST /bench/bare`: a bare axum endpoint that reads the same JSON request and answers a
//!   canned JSON body of exactly the size of an allow answer from `/v1/authorize`;
//! - `POST /bench/storm`: starts a refresh storm (once): every session's tokens are rotated
//!   through the real `POST /v1/sessions/{id}/refresh` handler (the router in process, with an
//!   admin credential: handler, writer, `refresh_session`, token mint and commit as for an API
//!   call; only the TCP and HTTP parsing of the refresh requests are skipped), spread evenly
//!   over `--storm-seconds` (default 60), at most 256 in flight. Each new access token is
//!   appended to `STORM_FILE` as a line `INDEX TOKEN` (INDEX: its session's 1-based line in
//!   `TOKENS_FILE`) as soon as the refresh answered, so a load generator can present it;
//!   `GET /bench/storm` answers how far it got (`refreshed`, `failed`, `elapsed_s`, `done`).
//!
//! Creates a verifier credential and N live sessions with tokens (`--sessions`, default 1000),
//! and with `--stored M` first bulk-inserts M more sessions that are stored but not live (half
//! revoked, half expired; benches/support `bulk_sessions`, the way benches/scale.rs stores 1M),
//! then prints (and writes to `--env FILE`) `ADDR=…`, `CREDENTIAL=…`, `TOKEN=…`,
//! `TOKENS_FILE=…` (one token a line), `STORM_FILE=…`, and serves until killed or
//! `--seconds S` elapse.
//!
//! `cargo run --release --example bench_server -- --sessions 1000 --env /tmp/tether-bench.env`
//! `… -- --sessions 100000 --stored 900000 --storm-seconds 60`

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../benches/support/mod.rs"]
mod support;

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    let stored: usize = arg(&args, "--stored").and_then(|s| s.parse().ok()).unwrap_or(0);
    let storm_seconds: f64 = arg(&args, "--storm-seconds").and_then(|s| s.parse().ok()).unwrap_or(60.0);
    // Like `tether serve`: one runtime worker per CPU unless told otherwise.
    let workers: usize = arg(&args, "--workers")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from));
    // The subscriber `tether serve` installs: request spans are enabled at `info`, and cost what
    // they cost in production.
    tether::install_log_subscriber(false);
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build().expect("runtime");
    let options = Options { sessions: sessions.max(1), stored, port, seconds, env_file, storm_seconds };
    runtime.block_on(serve(options));
}

struct Options {
    sessions: usize,
    stored: usize,
    port: u16,
    seconds: Option<u64>,
    env_file: Option<String>,
    storm_seconds: f64,
}

async fn serve(options: Options) {
    let Options { sessions, stored, port, seconds, env_file, storm_seconds } = options;
    let dir = support::data_dir();
    let mut app = support::open(dir.path()).await;
    let chain = support::chain(&app.services).await;
    if stored > 0 {
        // Stored-only sessions go in by bulk SQL with the App closed (the writer thread closes
        // its connection once its queue is dropped), then the App opens the store again, as a
        // restarted server would: the live view holds none of them.
        drop(app);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let start = Instant::now();
        let path = dir.path().to_owned();
        tokio::task::spawn_blocking(move || support::bulk_sessions(&path, chain, stored, 0, 1_000_000))
            .await
            .expect("bulk sessions");
        eprintln!("stored {stored} sessions (not live) in {:.1} s", start.elapsed().as_secs_f64());
        app = support::open(dir.path()).await;
    }
    let services = app.services.clone();
    let credential = support::stored_credential(&services, Role::Verifier).await.secret;
    let admin = support::stored_credential(&services, Role::Admin).await.secret;
    let user = support::delegated_user(&services, chain).await;
    let start = Instant::now();
    let created = support::sessions_created(&services, user.delegation, sessions, 500).await;
    eprintln!("created {sessions} live sessions through the writer in {:.1} s", start.elapsed().as_secs_f64());
    let token = created[0].token.clone();

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
    let tokens_file = dir.path().join("tokens.txt");
    std::fs::write(&tokens_file, created.iter().map(|c| c.token.as_str()).collect::<Vec<_>>().join("\n"))
        .expect("tokens file");
    let storm_file = dir.path().join("storm.txt");
    std::fs::write(&storm_file, "").expect("storm file");
    let storm = Arc::new(Storm {
        api: app.router(),
        admin,
        targets: created.iter().map(|c| (c.session.id, c.refresh_token.clone().expect("a refresh token"))).collect(),
        seconds: storm_seconds,
        file: storm_file.clone(),
        started: AtomicBool::new(false),
        refreshed: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        elapsed_ms: AtomicU64::new(0),
        done: AtomicBool::new(false),
    });
    drop(created);
    let (start_storm, storm_status) = (storm.clone(), storm.clone());
    let storm_routes = Router::new().route(
        "/bench/storm",
        post(move || async move {
            if start_storm.started.swap(true, Ordering::SeqCst) {
                return (StatusCode::CONFLICT, "the storm already ran\n").into_response();
            }
            tokio::spawn(start_storm.clone().run());
            (StatusCode::ACCEPTED, "storm started\n").into_response()
        })
        .get(move || async move { axum::Json(storm_status.status()) }),
    );
    let router = router.merge(bare).merge(storm_routes);

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let lines = format!(
        "ADDR={addr}\nCREDENTIAL={credential}\nTOKEN={token}\nTOKENS_FILE={}\nSTORM_FILE={}\nANSWER_BYTES={}\nREQUEST_BYTES={}\n",
        tokens_file.display(),
        storm_file.display(),
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

/// A refresh storm: every session's tokens rotated once, spread evenly over `seconds`.
struct Storm {
    /// The API router (the same one that serves HTTP).
    api: Router,
    /// An admin credential's secret: the refresh handler wants an admin or the owning platform.
    admin: String,
    /// (session, its current refresh token), in `TOKENS_FILE` order.
    targets: Vec<(SessionId, String)>,
    seconds: f64,
    file: PathBuf,
    started: AtomicBool,
    refreshed: AtomicUsize,
    failed: AtomicUsize,
    elapsed_ms: AtomicU64,
    done: AtomicBool,
}

/// Refreshes in flight at most: enough for the writer to group-commit many per fsync.
const STORM_IN_FLIGHT: u32 = 256;

impl Storm {
    fn status(&self) -> serde_json::Value {
        serde_json::json!({
            "sessions": self.targets.len(),
            "refreshed": self.refreshed.load(Ordering::SeqCst),
            "failed": self.failed.load(Ordering::SeqCst),
            "elapsed_s": self.elapsed_ms.load(Ordering::SeqCst) as f64 / 1000.0,
            "spread_s": self.seconds,
            "done": self.done.load(Ordering::SeqCst),
        })
    }

    async fn run(self: Arc<Self>) {
        // One appender writes whole lines, batched: readers poll the file and take complete
        // lines only.
        let (lines, mut queue) = tokio::sync::mpsc::unbounded_channel::<String>();
        let file = self.file.clone();
        let appender = tokio::task::spawn_blocking(move || {
            let mut out = std::fs::OpenOptions::new().append(true).open(file).expect("storm file");
            while let Some(mut batch) = queue.blocking_recv() {
                while let Ok(more) = queue.try_recv() {
                    batch.push_str(&more);
                }
                out.write_all(batch.as_bytes()).expect("append storm file");
            }
        });
        let in_flight = Arc::new(tokio::sync::Semaphore::new(STORM_IN_FLIGHT as usize));
        let start = Instant::now();
        let total = self.targets.len();
        let mut next = 0usize;
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        while next < total {
            tick.tick().await;
            // Evenly spread: by now this many refreshes should have been sent.
            let due = ((start.elapsed().as_secs_f64() / self.seconds) * total as f64).ceil() as usize;
            while next < due.min(total) {
                let permit = in_flight.clone().acquire_owned().await.expect("semaphore");
                let (storm, lines, index) = (self.clone(), lines.clone(), next);
                tokio::spawn(async move {
                    match storm.refresh(index).await {
                        Some(token) => {
                            let _ = lines.send(format!("{} {token}\n", index + 1));
                            storm.refreshed.fetch_add(1, Ordering::SeqCst);
                        }
                        None => {
                            storm.failed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    storm.elapsed_ms.store(start.elapsed().as_millis() as u64, Ordering::SeqCst);
                    drop(permit);
                });
                next += 1;
            }
        }
        let _all = in_flight.acquire_many(STORM_IN_FLIGHT).await.expect("semaphore");
        drop(lines);
        let _ = appender.await;
        self.elapsed_ms.store(start.elapsed().as_millis() as u64, Ordering::SeqCst);
        self.done.store(true, Ordering::SeqCst);
        eprintln!("storm: {}", self.status());
    }

    /// One refresh through the API's handler; the new access token, or `None` if refused.
    async fn refresh(&self, index: usize) -> Option<String> {
        let (session, refresh_token) = &self.targets[index];
        let request = Request::post(format!("/v1/sessions/{session}/refresh"))
            .header("authorization", format!("Bearer {}", self.admin))
            .header("content-type", "application/json")
            .body(Body::from(serde_json::json!({ "refresh_token": refresh_token }).to_string()))
            .expect("request");
        let answer = self.api.clone().oneshot(request).await.ok()?;
        let status = answer.status();
        let body = answer.into_body().collect().await.ok()?.to_bytes();
        if status != StatusCode::OK {
            eprintln!("refresh of {session}: {status} {}", String::from_utf8_lossy(&body));
            return None;
        }
        let refreshed: serde_json::Value = serde_json::from_slice(&body).ok()?;
        refreshed["token"].as_str().map(str::to_owned)
    }
}
