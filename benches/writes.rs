//! Durable writes (issue 6, items 3 and 4), timed by hand:
//!
//! 1. session creation with durable commits from 64 concurrent callers, each answered only after
//!    its batch committed (fsync, `synchronous=FULL`): through `services.writer.execute(create_session)`
//!    and through the router (`POST /v1/sessions`, JSON, credential check) → sessions/s sustained;
//! 2. the cascade: disable a user holding 1k, 10k, 100k active sessions → wall time to receipt,
//!    and the authorize latency of OTHER users' cached tokens while it runs vs idle (p50/p99).
//!
//! `cargo bench --bench writes` (`-- create` or `-- cascade` runs one part; `TETHER_BENCH_SECONDS`
//! sets the creation run length, `TETHER_BENCH_CASCADES=1000,10000` the cascade sizes, and
//! `TETHER_BENCH_WEBHOOKS=3` subscribes that many webhooks to `session.revoked` first, so each
//! revoked session also queues a delivery per webhook in the outbox. Their URL is a closed local
//! port: deliveries fail and retry after the cascade, so run one size at a time with webhooks).
//! `TETHER_BENCH_PAUSE=1` waits 3 s before each cascade, after printing "cascade of N sessions
//! starts in 3 s", so a profiler can attach to the writer thread for the cascade alone
//! (docs/performance.md shows the command). `TETHER_BENCH_WAL_PAGES=1` prints, after each cascade,
//! which tables and indexes the pages its COMMIT wrote to the WAL belong to.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request as HttpRequest;
use http_body_util::BodyExt;
use tower::ServiceExt;

use tether::authorize::Request;
use tether::domain::*;
use tether::ops;
use tether::ops::WithReason;
use tether::Services;

const CALLERS: usize = 64;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let wants = |part: &str| args.is_empty() || args.iter().any(|a| part.contains(a.as_str()));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let dir = support::data_dir();
    println!("machine: {}", support::machine());
    println!(
        "fsync (4 KiB write + fdatasync) on the data dir: {:.0} µs",
        support::micros(support::fsync_latency(dir.path(), 200))
    );
    runtime.block_on(async {
        let app = support::open(dir.path()).await;
        let services = app.services.clone();
        let chain = support::chain(&services).await;
        if wants("create_sessions") {
            create_sessions(&services, chain).await;
            create_sessions_http(&app, &services, chain).await;
        }
        if wants("cascade") {
            let sizes: Vec<usize> = std::env::var("TETHER_BENCH_CASCADES")
                .ok()
                .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
                .unwrap_or_else(|| vec![1_000, 10_000, 100_000]);
            let webhooks: usize = std::env::var("TETHER_BENCH_WEBHOOKS").ok().and_then(|n| n.parse().ok()).unwrap_or(0);
            subscribe_webhooks(&services, webhooks).await;
            cascades(&services, chain, &sizes, &dir.path().join("tether.db")).await;
        }
        drop(app);
    });
}

fn run_seconds() -> Duration {
    Duration::from_secs_f64(std::env::var("TETHER_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5.0))
}

/// Runs `CALLERS` tasks, each calling `one` in a loop, for a warm-up second then the run; returns
/// completed calls in the run, its length, and the sorted call latencies.
async fn closed_loop<F, Fut>(one: F) -> (u64, Duration, Vec<Duration>)
where
    F: Fn() -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CALLERS {
        let (one, measuring, stop, done) = (one.clone(), measuring.clone(), stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                one().await;
                if measuring.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
                    latencies.push(start.elapsed());
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
            latencies
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    measuring.store(true, Ordering::SeqCst);
    let start = Instant::now();
    tokio::time::sleep(run_seconds()).await;
    stop.store(true, Ordering::SeqCst);
    let took = start.elapsed();
    let completed = done.load(Ordering::SeqCst);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("join"));
    }
    all.sort();
    (completed, took, all)
}

fn report(what: &str, completed: u64, took: Duration, latencies: &[Duration]) {
    println!(
        "{what}: {completed} in {:.2} s = {:.0}/s; latency p50 {:.2} ms, p99 {:.2} ms ({CALLERS} concurrent callers)",
        took.as_secs_f64(),
        completed as f64 / took.as_secs_f64(),
        support::micros(support::percentile(latencies, 50.0)) / 1000.0,
        support::micros(support::percentile(latencies, 99.0)) / 1000.0,
    );
}

async fn create_sessions(services: &Arc<Services>, chain: support::Chain) {
    let user = support::delegated_user(services, chain).await;
    let admin = support::stored_admin(services).await;
    let s = services.clone();
    let (completed, took, latencies) = closed_loop(move || {
        let s = s.clone();
        async move {
            s.api
                .open_session(support::grant(&admin), support::new_session(user.delegation))
                .await
                .expect("create session");
        }
    })
    .await;
    report("create_sessions (api::Context::open_session, durable)", completed, took, &latencies);
}

async fn create_sessions_http(app: &tether::App, services: &Arc<Services>, chain: support::Chain) {
    let user = support::delegated_user(services, chain).await;
    let platform = chain.platform;
    let credential = support::stored_credential(services, Role::Platform(platform)).await.secret;
    let router = app.router();
    let body = serde_json::json!({"delegation_id": user.delegation, "scopes": ["mail:read", "mail:send"]}).to_string();
    let (completed, took, latencies) = closed_loop(move || {
        let router = router.clone();
        let request = HttpRequest::post("/v1/sessions")
            .header("authorization", format!("Bearer {credential}"))
            .header("content-type", "application/json")
            .body(Body::from(body.clone()))
            .expect("request");
        async move {
            let response = router.oneshot(request).await.expect("response");
            let status = response.status();
            let bytes = response.into_body().collect().await.expect("body").to_bytes();
            assert!(status.is_success(), "{status}: {}", String::from_utf8_lossy(&bytes));
        }
    })
    .await;
    report("create_sessions (POST /v1/sessions in process, durable)", completed, took, &latencies);
}

/// Authorize calls on `tokens` in a loop on a dedicated thread until `stop`; returns each call's
/// start (since `epoch`) and latency.
fn sample_authorize(
    services: Arc<Services>,
    tokens: Vec<String>,
    epoch: Instant,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<(Duration, Duration)>> {
    std::thread::spawn(move || {
        let scope = Scope::parse("mail:read").expect("scope");
        let mut samples = Vec::with_capacity(1 << 20);
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            i = (i + 1) % tokens.len();
            let start = Instant::now();
            let decision =
                services.api.authorizer.authorize(&Request { token: &tokens[i], scope: &scope, resource: None });
            let took = start.elapsed();
            assert!(decision.allowed(), "another user's token was denied: {:?}", decision.reason);
            samples.push((start - epoch, took));
        }
        samples
    })
}

fn window(samples: &[(Duration, Duration)], from: Duration, to: Duration) -> Vec<Duration> {
    let mut w: Vec<Duration> = samples.iter().filter(|(at, _)| *at >= from && *at < to).map(|(_, l)| *l).collect();
    w.sort();
    w
}

/// Frames in the WAL now (pages written since the last full checkpoint, 4 KiB + 24 bytes each);
/// checkpoints them, from a connection of the bench's own. The writer may be checkpointing at
/// the same moment (SQLite then answers -1): wait for it and ask again.
fn wal_frames(db: &std::path::Path) -> i64 {
    let conn = rusqlite::Connection::open(db).expect("open the bench database");
    for _ in 0..100 {
        let frames = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1)).expect("checkpoint");
        if frames >= 0 {
            return frames;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    -1
}

/// Prints which tables and indexes the pages in the WAL belong to (the last commit's, when the
/// WAL was checkpointed just before it): what a cascade's COMMIT writes, B-tree by B-tree.
fn wal_pages_by_btree(db: &std::path::Path) {
    let mut wal_path = db.as_os_str().to_owned();
    wal_path.push("-wal");
    let wal = std::fs::read(&wal_path).expect("read the WAL");
    let page_size = u32::from_be_bytes(wal[8..12].try_into().unwrap()) as usize;
    let salt = &wal[16..24];
    let mut pages = std::collections::HashSet::new();
    let mut frames = 0;
    let mut at = 32;
    while at + 24 + page_size <= wal.len() && &wal[at + 8..at + 16] == salt {
        pages.insert(u32::from_be_bytes(wal[at..at + 4].try_into().unwrap()) as i64);
        frames += 1;
        at += 24 + page_size;
    }
    let conn = rusqlite::Connection::open(db).expect("open the bench database");
    let mut by_name: std::collections::BTreeMap<String, usize> = Default::default();
    let mut st = conn.prepare("SELECT name, pageno FROM dbstat").unwrap();
    let mut rows = st.query([]).unwrap();
    while let Some(row) = rows.next().unwrap() {
        if pages.contains(&row.get::<_, i64>(1).unwrap()) {
            *by_name.entry(row.get(0).unwrap()).or_default() += 1;
        }
    }
    let mut by_name: Vec<_> = by_name.into_iter().collect();
    by_name.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    println!("  WAL: {frames} frames, {} distinct pages of {page_size} B", pages.len());
    for (name, n) in by_name {
        println!("    {name:40} {n:7} pages {:6.1} MiB", (n * page_size) as f64 / 1048576.0);
    }
}

/// Webhooks for every `session.revoked` event, delivered nowhere (port 9 on loopback is closed).
async fn subscribe_webhooks(services: &Arc<Services>, count: usize) {
    for _ in 0..count {
        let admin = support::admin();
        let request = ops::webhooks::NewWebhook {
            url: "http://127.0.0.1:9/tether-bench".into(),
            events: Some(vec!["session.revoked".into()]),
        };
        services
            .writer
            .execute(move |tx| ops::webhooks::create(tx, &support::grant(&admin), request, true))
            .await
            .expect("webhook");
    }
    if count > 0 {
        println!("{count} webhooks subscribed to session.revoked: each revoked session queues {count} deliveries");
    }
}

async fn cascades(services: &Arc<Services>, chain: support::Chain, sizes: &[usize], db: &std::path::Path) {
    // Other users, whose cached tokens are checked throughout.
    let mut others = Vec::new();
    for _ in 0..4 {
        let user = support::delegated_user(services, chain).await;
        others.extend(support::sessions(services, user.delegation, 64, 64).await.into_iter().map(|(_, t)| t));
    }
    let mut per_session = Vec::new();
    for &n in sizes {
        let user = support::delegated_user(services, chain).await;
        let made = Instant::now();
        let sessions = support::sessions(services, user.delegation, n, 500).await;
        let made = made.elapsed();
        drop(sessions);

        let epoch = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = sample_authorize(services.clone(), others.clone(), epoch, stop.clone());
        // Idle: the sampler alone for a second (the first 200 ms warm the caches).
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let idle_to = epoch.elapsed();
        let admin = support::admin();
        wal_frames(db); // checkpoint everything so far: the WAL then holds only what follows
        let writer_before = services.writer.stats();
        if std::env::var_os("TETHER_BENCH_PAUSE").is_some() {
            // Time to attach a profiler to the `tether-writer` thread for the cascade alone.
            println!("cascade of {n} sessions starts in 3 s");
            std::io::Write::flush(&mut std::io::stdout()).ok();
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        let started = Instant::now();
        let receipt = services
            .writer
            .execute(move |tx| {
                ops::users::disable_user(
                    tx,
                    &support::grant::<tether::domain::access::Admin>(&admin),
                    user.user,
                    WithReason { reason: Some(Reason::parse("bench").expect("reason")) },
                )
            })
            .await
            .expect("disable user");
        let wall = started.elapsed();
        let writer_after = services.writer.stats();
        if std::env::var_os("TETHER_BENCH_WAL_PAGES").is_some() {
            wal_pages_by_btree(db);
        }
        let frames = wal_frames(db);
        let (from, to) = (started - epoch, epoch.elapsed());
        stop.store(true, Ordering::SeqCst);
        let samples = sampler.join().expect("sampler");
        assert_eq!(receipt.revoked.len(), n, "the receipt lists every session");

        let idle = window(&samples, Duration::from_millis(200), idle_to);
        let during = window(&samples, from, to);
        let (idle50, idle99) = (support::percentile(&idle, 50.0), support::percentile(&idle, 99.0));
        let (dur50, dur99) = (support::percentile(&during, 50.0), support::percentile(&during, 99.0));
        per_session.push((n, wall));
        println!(
            "cascade disable_user with {n} active sessions: {:.3} s to receipt ({:.1} µs per session; {n} created in {:.1} s); its commit wrote about {} WAL frames = {:.0} MiB",
            wall.as_secs_f64(),
            support::micros(wall) / n as f64,
            made.as_secs_f64(),
            frames,
            frames as f64 * (f64::from(tether::store::PAGE_SIZE) + 24.0) / 1048576.0,
        );
        println!(
            "  the writer ran its statements for {:.3} s and spent {:.3} s in COMMIT",
            (writer_after.running - writer_before.running).as_secs_f64(),
            (writer_after.committing - writer_before.committing).as_secs_f64(),
        );
        println!(
            "  other users' cached authorize: idle p50 {:.2} µs p99 {:.2} µs ({} calls); during cascade p50 {:.2} µs p99 {:.2} µs ({} calls); p99 ratio {:.2}×",
            support::micros(idle50),
            support::micros(idle99),
            idle.len(),
            support::micros(dur50),
            support::micros(dur99),
            during.len(),
            dur99.as_secs_f64() / idle99.as_secs_f64().max(1e-9),
        );
    }
    if let (Some(first), Some(last)) = (per_session.first(), per_session.last()) {
        let growth = last.1.as_secs_f64() / first.1.as_secs_f64();
        println!("cascade growth: {}× the sessions took {growth:.1}× the time", last.0 / first.0.max(1),);
    }
}
