//! Shared set-up for tether's benchmarks: an App on a temporary data directory and a chain
//! (platform, agent, integration, users, delegations, sessions) created through the real write
//! commands, each committed by the group-commit writer like an API call would be.
//!
//! The data directory is on the same file system as the build (ext4 here, not tmpfs), so
//! `synchronous=FULL` commits pay a real fsync. `TETHER_BENCH_DIR` moves it.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tether::domain::access::Capability;
use tether::domain::*;
use tether::ops::delegations::NewDelegation;
use tether::ops::platforms::{NewAgent, NewIntegration, NewPlatform};
use tether::ops::sessions::NewSession;
use tether::ops::users::NewUser;
use tether::ops::{self, Env};
use tether::tokens::AgentClaims;
use tether::{App, Config, Services};

/// A temporary data directory (kept until dropped).
pub fn data_dir() -> tempfile::TempDir {
    match std::env::var_os("TETHER_BENCH_DIR") {
        Some(parent) => {
            std::fs::create_dir_all(&parent).expect("create TETHER_BENCH_DIR");
            tempfile::tempdir_in(parent).expect("tempdir")
        }
        None => tempfile::tempdir().expect("tempdir"),
    }
}

pub async fn open(dir: &std::path::Path) -> App {
    App::open(&Config::new(dir)).await.expect("open tether")
}

/// An admin caller for commands run straight through the writer.
/// The capability a command takes, granted to `caller` as the API's credential check would.
pub fn grant<C: Capability>(caller: &Caller) -> C {
    C::grant(caller).expect("the caller's role holds this capability")
}

pub fn admin() -> Caller {
    Caller { credential: CredentialId::generate(), role: Role::Admin }
}

/// A credential for `role` written to the store, as `tether credential mint` would.
pub async fn stored_credential(services: &Services, role: Role) -> ops::credentials::CreatedCredential {
    let env = services.env.clone();
    services
        .writer
        .execute(move |tx| {
            ops::credentials::issue_credential(tx, &env, Actor::system(), role, Some("bench".into()), None)
        })
        .await
        .expect("bench credential")
}

/// An admin caller whose credential is in the store, for paths that check it is still live
/// (`api::Context::open_session`, like every API write).
pub async fn stored_admin(services: &Services) -> Caller {
    Caller { credential: stored_credential(services, Role::Admin).await.record.id, role: Role::Admin }
}

pub fn scopes(list: &[&str]) -> ScopeSet {
    list.iter().map(|s| Scope::parse(s).expect("scope")).collect()
}

pub const SCOPES: &[&str] = &["mail:read", "mail:send", "calendar:read"];

/// The objects a chain of sessions stands on.
#[derive(Clone, Copy, Debug)]
pub struct Chain {
    pub platform: PlatformId,
    pub agent: AgentId,
    pub integration: IntegrationId,
}

/// One user with one delegation on the chain.
#[derive(Clone, Copy, Debug)]
pub struct Delegated {
    pub user: UserId,
    pub delegation: DelegationId,
}

pub async fn chain(services: &Services) -> Chain {
    let admin = admin();
    let platform = services
        .writer
        .execute(move |tx| {
            ops::platforms::create_platform(
                tx,
                &grant(&admin),
                NewPlatform { name: Name::parse("bench").expect("name") },
            )
        })
        .await
        .expect("platform");
    let agent = services
        .writer
        .execute(move |tx| {
            ops::platforms::create_agent(
                tx,
                &grant(&admin),
                NewAgent {
                    name: Name::parse("bench agent").expect("name"),
                    scopes: scopes(SCOPES),
                    platform_id: Some(platform.id),
                },
            )
        })
        .await
        .expect("agent");
    let integration = services
        .writer
        .execute(move |tx| {
            ops::platforms::create_integration(
                tx,
                &grant(&admin),
                NewIntegration {
                    name: Name::parse("bench integration").expect("name"),
                    scopes: scopes(SCOPES),
                    platform_id: Some(platform.id),
                },
            )
        })
        .await
        .expect("integration");
    Chain { platform: platform.id, agent: agent.id, integration: integration.id }
}

/// A new user delegating the chain's agent through its integration.
pub async fn delegated_user(services: &Services, chain: Chain) -> Delegated {
    let admin = admin();
    let user = services
        .writer
        .execute(move |tx| {
            ops::users::create_user(
                tx,
                &grant::<tether::domain::access::Admin>(&admin),
                NewUser {
                    external_id: ExternalId::parse(&format!("idp|{}", uuid::Uuid::now_v7().simple()))
                        .expect("external id"),
                    user_name: None,
                    email: None,
                    display_name: None,
                    permissions: scopes(SCOPES),
                },
            )
        })
        .await
        .expect("user");
    let delegation = services
        .writer
        .execute(move |tx| {
            ops::delegations::create_delegation(
                tx,
                &grant(&admin),
                NewDelegation {
                    user_id: user.id,
                    agent_id: chain.agent,
                    integration_id: chain.integration,
                    scopes: scopes(SCOPES),
                },
            )
        })
        .await
        .expect("delegation");
    Delegated { user: user.id, delegation: delegation.id }
}

pub fn new_session(delegation: DelegationId) -> NewSession {
    NewSession {
        delegation_id: delegation,
        scopes: scopes(&["mail:read", "mail:send"]),
        ttl_seconds: Some(SessionTtl::parse(24 * 3600).expect("ttl")),
        parent_session_id: None,
        metadata: None,
    }
}

/// Creates `n` sessions on `delegation` (the real `create_session` command: chain check, token
/// mint, audit event, rows), `per_command` per writer command and up to 8 commands in flight.
/// Returns (session id, access token) pairs.
pub async fn sessions(
    services: &Arc<Services>,
    delegation: DelegationId,
    n: usize,
    per_command: usize,
) -> Vec<(SessionId, String)> {
    sessions_created(services, delegation, n, per_command).await.into_iter().map(|c| (c.session.id, c.token)).collect()
}

/// As [`sessions`], keeping everything `create_session` answered (the refresh token too).
pub async fn sessions_created(
    services: &Arc<Services>,
    delegation: DelegationId,
    n: usize,
    per_command: usize,
) -> Vec<ops::sessions::SessionCreated> {
    let mut out = Vec::with_capacity(n);
    let mut pending = Vec::new();
    let mut left = n;
    while left > 0 || !pending.is_empty() {
        while left > 0 && pending.len() < 8 {
            let count = left.min(per_command.max(1));
            left -= count;
            let services = services.clone();
            let env: Arc<Env> = services.env.clone();
            pending.push(tokio::spawn(async move {
                let admin = admin();
                services
                    .writer
                    .execute(move |tx| {
                        (0..count)
                            .map(|_| {
                                ops::sessions::create_session(tx, &env, &grant(&admin), new_session(delegation), None)
                            })
                            .collect::<Result<Vec<_>>>()
                    })
                    .await
                    .expect("sessions")
            }));
        }
        let first = pending.remove(0);
        out.extend(first.await.expect("join"));
    }
    out
}

/// Bulk-inserts `total` sessions straight into `tether.db` with rusqlite (bench-only SQL,
/// columns as migrations/ leave them, `synchronous=OFF`, one transaction): far faster than the
/// writer (no audit event, no token), for state that only has to be *stored*. The App must not
/// be open on `dir`. 1,000 users with a delegation each on `chain`; the last `live` sessions are
/// active and unexpired (in the live view at the next start, but without tokens); of the others,
/// half are revoked and half left `active` past their expiry (as an unswept store holds them),
/// older rows first, like a store that has run for a while. `created_seq` starts at `first_seq`
/// (above any audit seq the store will reach in the run: coverage reports compare them).
pub fn bulk_sessions(dir: &Path, chain: Chain, total: usize, live: usize, first_seq: i64) {
    use rusqlite::params;
    let db = tether::store::database_path(dir);
    let mut conn = rusqlite::Connection::open(&db).expect("open db");
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF; PRAGMA cache_size = -262144;")
        .expect("pragmas");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64;
    let users = 1_000usize;
    let scopes = r#"["mail:read","mail:send"]"#;
    let tx = conn.transaction().expect("transaction");
    let mut delegations = Vec::with_capacity(users);
    {
        let mut user_st = tx
            .prepare("INSERT INTO users (id, external_id, permissions, status, created_at) VALUES (?1, ?2, ?3, 'active', ?4)")
            .expect("users");
        let mut delegation_st = tx
            .prepare(
                "INSERT INTO delegations (id, user_id, agent_id, integration_id, platform_id, scopes, status, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'active', ?7)",
            )
            .expect("delegations");
        for u in 0..users {
            let user = UserId::generate().to_string();
            let delegation = DelegationId::generate().to_string();
            user_st
                .execute(params![user, format!("idp|bulk-{}-{u}", uuid::Uuid::now_v7().simple()), scopes, now])
                .expect("user");
            delegation_st
                .execute(params![
                    delegation,
                    user,
                    chain.agent.to_string(),
                    chain.integration.to_string(),
                    chain.platform.to_string(),
                    scopes,
                    now
                ])
                .expect("delegation");
            delegations.push((user, delegation));
        }
        let mut session_st = tx
            .prepare(
                "INSERT INTO sessions (id, delegation_id, user_id, agent_id, integration_id, platform_id, depth,
                                       created_seq, scopes, status, created_at, expires_at, revoked_at,
                                       revoked_reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )
            .expect("sessions");
        let (agent, integration, platform) =
            (chain.agent.to_string(), chain.integration.to_string(), chain.platform.to_string());
        let day = 24 * 3600 * 1000;
        for i in 0..total {
            let (user, delegation) = &delegations[i % users];
            let is_live = i >= total - live.min(total);
            let (status, created, expires, revoked_at, reason) = if is_live {
                ("active", now - 60_000, now + day, None, None)
            } else if i % 2 == 0 {
                ("revoked", now - 3 * day, now - 2 * day, Some(now - 2 * day - 1), Some("user_disabled"))
            } else {
                ("active", now - 3 * day, now - 2 * day, None, None)
            };
            session_st
                .execute(params![
                    SessionId::generate().to_string(),
                    delegation,
                    user,
                    agent,
                    integration,
                    platform,
                    i as i64 + first_seq,
                    scopes,
                    status,
                    created,
                    expires,
                    revoked_at,
                    reason,
                ])
                .expect("session");
        }
    }
    tx.commit().expect("commit");
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); ANALYZE;").expect("checkpoint");
}

/// A new token of an existing session, minted on the app's agent key ring exactly as a refresh
/// would (same claims, new signature and revocation id).
pub fn remint(services: &Services, claims: &AgentClaims) -> String {
    tether::tokens::agent::mint(&services.env.agent_keys, claims).expect("mint").token
}

/// Resident memory of this process, in bytes (VmRSS of /proc/self/status).
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// The percentile `p` (0..=100) of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The machine, for the record: CPU model and count.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split(':').nth(1)))
        .map(|m| m.trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    format!("{cores} × {model}")
}

/// Average fsync latency of this file system (what one durable group commit costs at least).
pub fn fsync_latency(dir: &std::path::Path, rounds: usize) -> Duration {
    use std::io::Write;
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path).expect("probe file");
    let block = [7u8; 4096];
    let start = Instant::now();
    for _ in 0..rounds {
        file.write_all(&block).expect("write");
        file.sync_data().expect("fdatasync");
    }
    let took = start.elapsed() / rounds as u32;
    let _ = std::fs::remove_file(path);
    took
}
