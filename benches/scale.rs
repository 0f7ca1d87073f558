//! Scale of state (issue 6, item 5): 1M sessions stored, 100k of them active; start-up to ready
//! and resident memory per live session.
//!
//! 1. `App::open` creates the data directory and schema; a chain is created through the writer.
//! 2. Rows are bulk-inserted straight into `tether.db` with rusqlite (bench-only SQL, columns as
//!    migrations/ leave them): 1,000 users with a delegation each, 1,000,000 sessions of which
//!    100,000 active and unexpired, 450,000 revoked and 450,000 left `active` past their expiry
//!    (as an unswept store would hold them). Expired sessions are not loaded into the live view.
//! 3. A fresh process (this binary re-run with `--measure DIR`) reads VmRSS, runs `App::open` on
//!    the directory (timed: start-up to ready), reads VmRSS again: (after - before) / live sessions.
//!    The page cache is dropped first when the kernel allows it (cold start), else it says warm.
//! 4. Another fresh process (`--view-only N`) fills a bare `LiveView` with N entries: the view's
//!    own bytes per session, without SQLite's page caches.
//!
//! `cargo bench --bench scale` (`TETHER_BENCH_SESSIONS=1000000 TETHER_BENCH_ACTIVE=100000`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tether::domain::*;

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--measure") {
        return measure(Path::new(&args[i + 1]));
    }
    if let Some(i) = args.iter().position(|a| a == "--view-only") {
        return view_only(args[i + 1].parse().expect("count"));
    }
    let total = env_count("TETHER_BENCH_SESSIONS", 1_000_000);
    let active = env_count("TETHER_BENCH_ACTIVE", 100_000).min(total);
    println!("machine: {}", support::machine());
    let dir = support::data_dir();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let chain = runtime.block_on(async {
        let app = support::open(dir.path()).await;
        let chain = support::chain(&app.services).await;
        drop(app);
        // The writer thread closes its connection once its queue is dropped.
        tokio::time::sleep(Duration::from_millis(200)).await;
        chain
    });
    drop(runtime);

    let start = Instant::now();
    populate(dir.path(), chain, total, active);
    let db = tether::store::database_path(dir.path());
    let size = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
    println!(
        "populated {total} sessions ({active} active) in {:.1} s; tether.db {:.0} MiB",
        start.elapsed().as_secs_f64(),
        size as f64 / (1024.0 * 1024.0)
    );

    let exe = std::env::current_exe().expect("current exe");
    for _ in 0..2 {
        let status = Command::new(&exe).arg("--measure").arg(dir.path()).status().expect("measure process");
        assert!(status.success(), "measure process failed");
    }
    let status = Command::new(&exe).arg("--view-only").arg(active.to_string()).status().expect("view process");
    assert!(status.success(), "view-only process failed");
}

fn populate(dir: &Path, chain: support::Chain, total: usize, active: usize) {
    support::bulk_sessions(dir, chain, total, active, 1_000_000);
}

/// Whether the kernel let us drop the page cache (a cold start), as root outside a container.
fn drop_page_cache() -> bool {
    let _ = Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", b"3\n").is_ok()
}

fn measure(dir: &Path) {
    let cold = drop_page_cache();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async {
        // Let the runtime's threads settle before the baseline.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let before = support::rss_bytes();
        let start = Instant::now();
        let app = support::open(dir).await;
        let ready = start.elapsed();
        let after = support::rss_bytes();
        let live = app.services.views.sessions.len();
        let active = app
            .services
            .readers
            .read(|c| {
                c.query_row("SELECT count(*) FROM sessions WHERE status = 'active' AND expires_at > ?1", [now_ms()], |r| r.get::<_, i64>(0))
                    .map_err(tether::store::db_error)
            })
            .await
            .expect("count");
        // The live-view scan alone, on a read connection (warm now).
        let conn = tether::store::Conn::Sqlite(tether::store::open_connection(&tether::store::database_path(dir), true).expect("read conn"));
        let scan = Instant::now();
        let mut rows = 0usize;
        tether::store::sessions::live_sessions(&conn, Timestamp(now_ms()), |_| rows += 1).expect("scan");
        let scan = scan.elapsed();
        println!(
            "start-up to ready ({}): {:.3} s; live view {live} entries ({active} active); RSS {:.1} → {:.1} MiB: {:.0} bytes per live session (all of App::open); live-view scan alone (warm) {:.3} s for {rows} rows",
            if cold { "cold page cache" } else { "warm page cache: could not drop it" },
            ready.as_secs_f64(),
            before as f64 / 1048576.0,
            after as f64 / 1048576.0,
            after.saturating_sub(before) as f64 / live.max(1) as f64,
            scan.as_secs_f64(),
        );
        drop(app);
    });
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64
}

fn view_only(n: usize) {
    let view = tether::views::LiveView::default();
    let before = support::rss_bytes();
    let expires_at = Timestamp(now_ms() + 3_600_000);
    for _ in 0..n {
        view.set(SessionId::generate(), tether::views::LiveSession { revoked: false, expires_at });
    }
    let after = support::rss_bytes();
    println!(
        "LiveView alone: {n} entries, RSS +{:.1} MiB = {:.0} bytes per live session",
        after.saturating_sub(before) as f64 / 1048576.0,
        after.saturating_sub(before) as f64 / n.max(1) as f64
    );
    assert_eq!(view.len(), n);
}
