//! Console pages' server time (issue 19: every page ≤ 100 ms with 10,000 sessions for one person
//! and 1,000,000 audit events).
//!
//! 1. `App::open` on a temporary data directory; a platform, agent, integration and one person
//!    with a delegation are created through the writer.
//! 2. Rows are bulk-inserted straight into `tether.db` (bench-only SQL): 10,000 active sessions
//!    of that person (every tenth a sub-agent session of the one before) and audit events up to
//!    1,000,000 in all (session creations, authorizations' revocations and the like, by 1,000
//!    actors on 100,000 subjects, one a millisecond after the head).
//! 3. The app is opened again and each page is requested through the real router in-process
//!    (no socket: the figure is server time), with a console session's cookie: 20 times each,
//!    median and worst printed. The revocation pages come from real triggers made afterwards
//!    through the API: one session revoked, then "sign all agents out" over the 10,000.
//!
//! `cargo bench --bench console` (`TETHER_BENCH_EVENTS=1000000 TETHER_BENCH_PERSON_SESSIONS=10000`).
//! `cargo test --bench console` runs it in a debug build: its figures are an upper bound.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request};
use http_body_util::BodyExt;
use tower::ServiceExt;

use tether::domain::*;

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn main() {
    let events = env_count("TETHER_BENCH_EVENTS", 1_000_000);
    let sessions = env_count("TETHER_BENCH_PERSON_SESSIONS", 10_000);
    println!("machine: {}", support::machine());
    let dir = support::data_dir();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let (chain, person) = runtime.block_on(async {
        let app = support::open(dir.path()).await;
        let chain = support::chain(&app.services).await;
        let person = support::delegated_user(&app.services, chain).await;
        drop(app);
        tokio::time::sleep(Duration::from_millis(200)).await;
        (chain, person)
    });
    let start = Instant::now();
    populate(dir.path(), chain, person, sessions, events);
    println!(
        "populated {sessions} sessions of one person and {events} audit events in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    runtime.block_on(measure(dir.path(), person));
}

fn populate(dir: &Path, chain: support::Chain, person: support::Delegated, sessions: usize, events: usize) {
    use rusqlite::params;
    let mut conn = rusqlite::Connection::open(tether::store::database_path(dir)).expect("open db");
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF; PRAGMA cache_size = -262144;")
        .expect("pragmas");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64;
    let (head_seq, head_at): (i64, i64) =
        conn.query_row("SELECT max(seq), max(at) FROM audit_events", [], |r| Ok((r.get(0)?, r.get(1)?))).expect("head");
    let tx = conn.transaction().expect("transaction");
    {
        let mut st = tx
            .prepare(
                "INSERT INTO sessions (id, delegation_id, user_id, agent_id, integration_id, platform_id, parent_id,
                                       depth, created_seq, scopes, status, created_at, expires_at, last_seen_at,
                                       ip, user_agent)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, '[\"mail:read\"]', 'active', ?10, ?11, ?12,
                         '203.0.113.7', 'bench-agent/1.0')",
            )
            .expect("sessions");
        let mut previous: Option<String> = None;
        for i in 0..sessions {
            let id = SessionId::generate().to_string();
            let parent = if i % 10 == 9 { previous.clone() } else { None };
            st.execute(params![
                id,
                person.delegation.to_string(),
                person.user.to_string(),
                chain.agent.to_string(),
                chain.integration.to_string(),
                chain.platform.to_string(),
                parent,
                i64::from(parent.is_some()),
                head_seq,
                now - 60_000,
                now + 24 * 3600 * 1000,
                now - 1000,
            ])
            .expect("session");
            previous = Some(id);
        }
        let mut st = tx
            .prepare(
                "INSERT INTO audit_events (seq, id, at, actor_kind, actor_id, action, subject_kind, subject_id,
                                           cause_seq, reason, details, prev_hash, hash)
                 VALUES (?1, ?2, ?3, 'platform', ?4, ?5, 'session', ?6, NULL, NULL, '{}', ?7, ?8)",
            )
            .expect("events");
        let actions = ["session.created", "session.refreshed", "delegation.created", "agent.created"];
        let first = head_seq + 1;
        let last = (events as i64).max(first);
        // After the head in seq and in time: the log's time never steps back (store::audit_listing).
        for seq in first..=last {
            let n = seq - first;
            st.execute(params![
                seq,
                uuid::Uuid::now_v7().simple().to_string(),
                head_at + 1 + n,
                format!("plt_{:032x}", n % 1000),
                actions[(n % 4) as usize],
                format!("ses_{:032x}", n % 100_000),
                format!("{:064x}", n),
                format!("{:064x}", n + 1),
            ])
            .expect("event");
        }
    }
    tx.commit().expect("commit");
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); ANALYZE;").expect("checkpoint");
}

struct Client {
    router: axum::Router,
}

impl Client {
    async fn send(&self, method: Method, path: &str, headers: &[(&str, &str)], body: String) -> (u16, String, String) {
        let mut request = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response =
            self.router.clone().oneshot(request.body(Body::from(body)).expect("request")).await.expect("answer");
        let status = response.status().as_u16();
        let cookie = response
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|c| c.split(';').next())
            .unwrap_or_default()
            .to_owned();
        let bytes = response.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned(), cookie)
    }

    async fn api(&self, method: Method, path: &str, credential: &str, body: serde_json::Value) -> serde_json::Value {
        let auth = format!("Bearer {credential}");
        let (status, text, _) = self
            .send(method, path, &[("authorization", &auth), ("content-type", "application/json")], body.to_string())
            .await;
        assert!(status < 300, "{path}: {status} {text}");
        serde_json::from_str(&text).expect("json")
    }

    /// Signs in with a fresh link; the cookie.
    async fn sign_in(&self, admin: &str, body: serde_json::Value) -> String {
        let link = self.api(Method::POST, "/v1/console-links", admin, body).await;
        let url = link["url"].as_str().expect("url");
        let path = &url[url.find("/console/open").expect("path")..];
        let (status, _, cookie) = self.send(Method::GET, path, &[], String::new()).await;
        assert_eq!(status, 200);
        cookie
    }

    /// Times `path` 20 times (after one warm-up); prints median and worst, returns the worst.
    async fn time(&self, cookie: &str, label: &str, path: &str) -> Duration {
        let (status, body, _) = self.send(Method::GET, path, &[("cookie", cookie)], String::new()).await;
        assert_eq!(status, 200, "{path}: {body}");
        let mut times = Vec::new();
        for _ in 0..20 {
            let start = Instant::now();
            let (status, _, _) = self.send(Method::GET, path, &[("cookie", cookie)], String::new()).await;
            times.push(start.elapsed());
            assert_eq!(status, 200);
        }
        times.sort();
        println!(
            "{label:<44} median {:>7.1} ms  worst {:>7.1} ms  ({} KiB)",
            times[10].as_secs_f64() * 1e3,
            times[19].as_secs_f64() * 1e3,
            body.len() / 1024
        );
        times[19]
    }
}

async fn measure(dir: &Path, person: support::Delegated) {
    let app = support::open(dir).await;
    let admin = match &app.first_admin_credential {
        Some(c) => c.clone(),
        None => std::fs::read_to_string(dir.join("admin.credential")).expect("admin credential").trim().to_owned(),
    };
    let client = Client { router: app.router() };
    let user = person.user.to_string();
    let mut worst = Duration::ZERO;

    let as_person = client.sign_in(&admin, serde_json::json!({"user_id": user})).await;
    worst = worst.max(client.time(&as_person, "connected agents (10,000 sessions)", "/console/agents").await);

    let as_admin = client.sign_in(&admin, serde_json::json!({"role": "admin"})).await;
    worst = worst.max(client.time(&as_admin, "audit timeline, first page", "/console/audit").await);
    let after = app.services.readers.read(tether::store::audit::chain_head).await.expect("head").0;
    let last_page = format!("/console/audit?after={}", after.saturating_sub(50));
    worst = worst.max(client.time(&as_admin, "audit timeline, last page", &last_page).await);
    worst =
        worst.max(client.time(&as_admin, "audit timeline by action", "/console/audit?action=delegation.created").await);
    worst = worst.max(
        client.time(&as_admin, "audit timeline by subject", &format!("/console/audit?subject=ses_{:032x}", 4242)).await,
    );
    worst = worst
        .max(client.time(&as_admin, "audit timeline by actor", &format!("/console/audit?actor=plt_{:032x}", 7)).await);
    let since = Timestamp(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64 - 400_000,
    )
    .rfc3339();
    worst = worst.max(
        client
            .time(&as_admin, "audit timeline by time window", &format!("/console/audit?since={}", &since[..19]))
            .await,
    );
    worst = worst.max(client.time(&as_admin, "admin overview", "/console/admin").await);

    // Real triggers: one session (with its sub-agent session), then all 10,000.
    let page = client
        .api(
            Method::GET,
            &format!("/v1/sessions?user_id={user}&status=active&limit=10"),
            &admin,
            serde_json::Value::Null,
        )
        .await;
    let one = page["items"][8]["id"].as_str().expect("a session").to_owned();
    let receipt = client.api(Method::POST, &format!("/v1/sessions/{one}/revoke"), &admin, serde_json::json!({})).await;
    let seq = receipt["cause"]["seq"].as_i64().expect("seq");
    worst =
        worst.max(client.time(&as_admin, "revocation of one session", &format!("/console/revocations/{seq}")).await);
    let start = Instant::now();
    let receipt =
        client.api(Method::POST, &format!("/v1/users/{user}/sign-out-all"), &admin, serde_json::json!({})).await;
    println!("(sign-out-all over the person's sessions took {:.2} s)", start.elapsed().as_secs_f64());
    let seq = receipt["cause"]["seq"].as_i64().expect("seq");
    worst = worst.max(
        client.time(&as_admin, "revocation of all the person's sessions", &format!("/console/revocations/{seq}")).await,
    );
    // For comparison: the coverage report alone, as the API answers it (the page builds on it).
    let start = Instant::now();
    client.api(Method::GET, &format!("/v1/audit/coverage?event={seq}"), &admin, serde_json::Value::Null).await;
    println!("(GET /v1/audit/coverage of that trigger alone: {:.1} ms)", start.elapsed().as_secs_f64() * 1e3);
    println!("worst page: {:.1} ms (target ≤ 100 ms)", worst.as_secs_f64() * 1e3);
}
