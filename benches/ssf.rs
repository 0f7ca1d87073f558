//! Shared Signals transmitter (issue 18): what a revocation costs on its way to a receiver.
//!
//! 1. Latency: a session revoked through the writer, until a loopback push receiver has the SET
//!    and has verified its RS256 signature against the JWKS (p50, p99 over N revocations, one
//!    at a time).
//! 2. A user with 100k active sessions disabled: how many SETs each stream gets (O(1): the
//!    account-disabled and one session-revoked about the user) and what the cascade took, with
//!    and without a stream.
//! 3. An integration used by 1,000 users disabled: SETs per stream (one per user) and the time
//!    until a push receiver has verified them all.
//!
//! `cargo bench --bench ssf` (`TETHER_BENCH_SSF_N=200`, `TETHER_BENCH_SSF_SESSIONS=100000`,
//! `TETHER_BENCH_SSF_USERS=1000`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tether::domain::access::{Owner, PlatformScope, Receiver};
use tether::domain::*;
use tether::ops::streams::{DeliveryIn, StreamEnv, StreamIn};
use tether::ops::{self, WithReason};
use tether::{App, Config, Services};

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn config(dir: &Path) -> Config {
    let mut config = Config::new(dir);
    config.webhooks.allow_private_addresses = true;
    config
}

fn allow_any(_: &str) -> Result<()> {
    Ok(())
}

/// A receiver credential and a stream for it (push to `endpoint`, else poll).
async fn stream(services: &Services, endpoint: Option<String>) -> String {
    let created = support::stored_credential(services, Role::Receiver(None)).await;
    let caller = Caller { credential: created.record.id, role: Role::Receiver(None) };
    let receiver: Receiver = support::grant(&caller);
    let env = StreamEnv { master: services.env.webhook_master, public_url: PublicUrl::default(), check: allow_any };
    let req = StreamIn {
        delivery: endpoint.map(|url| DeliveryIn {
            method: "urn:ietf:rfc:8935".into(),
            endpoint_url: Some(url),
            authorization_header: None,
        }),
        ..Default::default()
    };
    services.writer.execute(move |tx| ops::streams::create_stream(tx, &env, &receiver, req)).await.expect("stream").id
}

/// What a push receiver verified: the SET's claims and when.
type Verified = tokio::sync::mpsc::UnboundedReceiver<(serde_json::Value, Instant)>;

/// A loopback push receiver that verifies each SET against the JWKS and reports (the SET's
/// claims, when it was verified).
async fn push_receiver(jwks: serde_json::Value) -> (String, Verified) {
    let key = &jwks["keys"][0];
    let decoding = Arc::new(
        jsonwebtoken::DecodingKey::from_rsa_components(key["n"].as_str().unwrap(), key["e"].as_str().unwrap()).unwrap(),
    );
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/events",
        axum::routing::post(move |body: String| {
            let (tx, decoding) = (tx.clone(), decoding.clone());
            async move {
                let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
                validation.required_spec_claims.clear();
                validation.validate_exp = false;
                validation.validate_aud = false;
                let claims =
                    jsonwebtoken::decode::<serde_json::Value>(&body, &decoding, &validation).expect("verifies").claims;
                let _ = tx.send((claims, Instant::now()));
                axum::http::StatusCode::ACCEPTED
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

fn outbox_count(dir: &Path, stream: &str) -> i64 {
    let conn = rusqlite::Connection::open(tether::store::database_path(dir)).unwrap();
    conn.query_row("SELECT count(*) FROM ssf_outbox WHERE stream_id = ?1", [stream], |r| r.get(0)).unwrap()
}

fn main() {
    println!("machine: {}", support::machine());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(latency(env_count("TETHER_BENCH_SSF_N", 200)));
    user_disable(&runtime, env_count("TETHER_BENCH_SSF_SESSIONS", 100_000));
    integration_disable(&runtime, env_count("TETHER_BENCH_SSF_USERS", 1_000));
}

async fn latency(n: usize) {
    let dir = support::data_dir();
    let app = App::open(&config(dir.path())).await.unwrap();
    let workers = app.start_workers();
    let services = app.services.clone();
    let jwks = services.api.set_keys.jwks().unwrap();
    let (url, mut got) = push_receiver(jwks).await;
    stream(&services, Some(url)).await;
    let chain = support::chain(&services).await;
    let user = support::delegated_user(&services, chain).await;
    let sessions = support::sessions(&services, user.delegation, n, 50).await;
    let mut waits = Vec::with_capacity(n);
    for (id, _) in sessions {
        let start = Instant::now();
        services
            .writer
            .execute(move |tx| {
                ops::sessions::revoke_session(
                    tx,
                    &support::grant::<Owner>(&support::admin()),
                    id,
                    WithReason { reason: None },
                )
            })
            .await
            .unwrap();
        let (claims, at) =
            tokio::time::timeout(Duration::from_secs(10), got.recv()).await.expect("SET in time").unwrap();
        assert_eq!(claims["sub_id"]["session"]["id"], id.to_string());
        waits.push(at - start);
    }
    waits.sort();
    println!(
        "revocation -> verified SET at a loopback push receiver, {n} one at a time: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        support::micros(support::percentile(&waits, 0.50)) / 1000.0,
        support::micros(support::percentile(&waits, 0.99)) / 1000.0,
        support::micros(*waits.last().unwrap()) / 1000.0,
    );
    workers.stop().await;
}

/// `users` users, each with a delegation on the chain and `per_user` active sessions, written
/// straight into the database (the App must be closed).
fn bulk(dir: &Path, chain: support::Chain, users: usize, per_user: usize) -> Vec<UserId> {
    use rusqlite::params;
    let mut conn = rusqlite::Connection::open(tether::store::database_path(dir)).unwrap();
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF;").unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let scopes = r#"["mail:read","mail:send"]"#;
    let tx = conn.transaction().unwrap();
    let mut ids = Vec::new();
    {
        let mut user_st = tx
            .prepare("INSERT INTO users (id, external_id, permissions, status, created_at) VALUES (?1, ?2, ?3, 'active', ?4)")
            .unwrap();
        let mut delegation_st = tx
            .prepare(
                "INSERT INTO delegations (id, user_id, agent_id, integration_id, platform_id, scopes, status, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'active', ?7)",
            )
            .unwrap();
        let mut session_st = tx
            .prepare(
                "INSERT INTO sessions (id, delegation_id, user_id, agent_id, integration_id, platform_id, depth,
                                       created_seq, scopes, status, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, 1, ?7, 'active', ?8, ?9)",
            )
            .unwrap();
        let (agent, integration, platform) =
            (chain.agent.to_string(), chain.integration.to_string(), chain.platform.to_string());
        for u in 0..users {
            let (user, delegation) = (UserId::generate(), DelegationId::generate().to_string());
            user_st.execute(params![user.to_string(), format!("idp|ssf-bench-{u}"), scopes, now]).unwrap();
            delegation_st
                .execute(params![delegation, user.to_string(), agent, integration, platform, scopes, now])
                .unwrap();
            for _ in 0..per_user {
                session_st
                    .execute(params![
                        SessionId::generate().to_string(),
                        delegation,
                        user.to_string(),
                        agent,
                        integration,
                        platform,
                        scopes,
                        now - 60_000,
                        now + 24 * 3600 * 1000
                    ])
                    .unwrap();
            }
            ids.push(user);
        }
    }
    tx.commit().unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); ANALYZE;").unwrap();
    ids
}

/// Opens an App, builds the chain, closes it, and bulk-writes users and sessions on it.
fn seeded(
    runtime: &tokio::runtime::Runtime,
    dir: &Path,
    users: usize,
    per_user: usize,
) -> (support::Chain, Vec<UserId>) {
    let chain = runtime.block_on(async {
        let app = App::open(&config(dir)).await.unwrap();
        let chain = support::chain(&app.services).await;
        drop(app);
        tokio::time::sleep(Duration::from_millis(200)).await;
        chain
    });
    let users = bulk(dir, chain, users, per_user);
    (chain, users)
}

fn user_disable(runtime: &tokio::runtime::Runtime, sessions: usize) {
    for with_stream in [false, true] {
        let dir = support::data_dir();
        let (_, users) = seeded(runtime, dir.path(), 1, sessions);
        let (took, stream) = runtime.block_on(async {
            let app = App::open(&config(dir.path())).await.unwrap();
            let services = app.services.clone();
            let stream = if with_stream { Some(stream(&services, None).await) } else { None };
            let user = users[0];
            let start = Instant::now();
            let receipt = services
                .writer
                .execute(move |tx| {
                    ops::users::disable_user(
                        tx,
                        &support::grant::<tether::domain::access::Admin>(&support::admin()),
                        user,
                        WithReason { reason: None },
                    )
                })
                .await
                .unwrap();
            assert_eq!(receipt.revoked.len(), sessions);
            (start.elapsed(), stream)
        });
        match stream {
            Some(stream) => println!(
                "user with {sessions} sessions disabled, one poll stream: {} SETs queued for it; cascade {:.0} ms",
                outbox_count(dir.path(), &stream),
                took.as_secs_f64() * 1000.0
            ),
            None => println!(
                "user with {sessions} sessions disabled, no stream: cascade {:.0} ms",
                took.as_secs_f64() * 1000.0
            ),
        }
    }
}

fn integration_disable(runtime: &tokio::runtime::Runtime, users: usize) {
    let dir = support::data_dir();
    let (chain, _) = seeded(runtime, dir.path(), users, 2);
    let (count, took, delivered, stream) = runtime.block_on(async {
        let app = App::open(&config(dir.path())).await.unwrap();
        let workers = app.start_workers();
        let services = app.services.clone();
        let jwks = services.api.set_keys.jwks().unwrap();
        let (url, mut got) = push_receiver(jwks).await;
        let stream = stream(&services, Some(url)).await;
        let admin: PlatformScope = support::grant(&support::admin());
        let start = Instant::now();
        let integration = chain.integration;
        let receipt = services
            .writer
            .execute(move |tx| {
                ops::platforms::disable_integration(tx, &admin, integration, WithReason { reason: None })
            })
            .await
            .unwrap();
        let cascade = start.elapsed();
        assert_eq!(receipt.revoked.len(), users * 2);
        let mut n = 0;
        while n < users {
            tokio::time::timeout(Duration::from_secs(30), got.recv()).await.expect("all SETs").unwrap();
            n += 1;
        }
        let delivered = start.elapsed();
        workers.stop().await;
        (n, cascade, delivered, stream)
    });
    println!(
        "integration used by {users} users (2 sessions each) disabled: {} SETs queued, {count} verified at a push receiver \
         {:.2} s after the call (cascade {:.0} ms)",
        outbox_count(dir.path(), &stream),
        delivered.as_secs_f64(),
        took.as_secs_f64() * 1000.0
    );
}
