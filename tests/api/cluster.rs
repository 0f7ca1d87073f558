//! Three `tether serve` nodes on one PostgreSQL database (issue 21; docs/architecture.md,
//! "Running several nodes"): a revocation made on one node is never allowed by another once the
//! revoking call has returned. Needs a PostgreSQL server: `.ci/run` starts one
//! (tests/pg/start.sh) and sets `TETHER_TEST_DATABASE_URL`; without it these tests say so and
//! pass only outside CI.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::instance::{admin_credential, http, ok, Server};

/// A fresh database on the test server, or `None` (outside CI) when there is no server.
fn fresh_database() -> Option<String> {
    let Ok(admin_url) = std::env::var("TETHER_TEST_DATABASE_URL") else {
        assert!(std::env::var("CI").is_err(), "CI must run the cluster tests: TETHER_TEST_DATABASE_URL is not set");
        eprintln!("skipped: TETHER_TEST_DATABASE_URL is not set (source tests/pg/start.sh)");
        return None;
    };
    let name = format!("tether_cluster_{}", uuid::Uuid::now_v7().simple());
    let mut client = postgres::Client::connect(&admin_url, postgres::NoTls).expect("connect to the test server");
    client.batch_execute(&format!("CREATE DATABASE {name}")).expect("create database");
    let (base, _) = admin_url.rsplit_once('/').expect("a database in the URL");
    Some(format!("{base}/{name}"))
}

/// Starts a node on `database` sharing the keys in `dir`.
fn node(dir: &Path, database: &str) -> Server {
    let mut server = Server::start(dir, "127.0.0.1:0", &["--database", database]);
    server.wait_listening(Duration::from_secs(60));
    server
}

fn credential(address: &str, admin: &str, body: Value) -> String {
    ok(address, "POST", "/v1/credentials", admin, body)["credential"].as_str().expect("credential").to_owned()
}

fn decision(address: &str, verifier: &str, token: &str) -> (u16, String) {
    let body = json!({"token": token, "scope": "mail:read"});
    let (status, answer) = http(address, "POST", "/v1/authorize", verifier, Some(&body)).expect("authorize");
    (status, answer["decision"].as_str().unwrap_or("none").to_owned())
}

#[test]
fn a_session_revoked_on_one_node_is_denied_by_every_other_node_once_the_revoke_returns() {
    let Some(database) = fresh_database() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    // The first node creates the schema, the keys and the admin credential; the others share
    // the keys directory, as nodes must.
    let first = node(dir.path(), &database);
    let nodes = [first, node(dir.path(), &database), node(dir.path(), &database)];
    let at: Vec<String> = nodes.iter().map(|n| n.address().to_owned()).collect();
    let admin = admin_credential(dir.path());

    let platform_id = ok(&at[0], "POST", "/v1/platforms", &admin, json!({"name": "p"}))["id"].clone();
    let platform = credential(&at[1], &admin, json!({"role": "platform", "platform_id": platform_id}));
    let verifier = credential(&at[2], &admin, json!({"role": "verifier"}));
    let scopes = json!(["mail:read"]);
    let user = ok(&at[0], "POST", "/v1/users", &admin, json!({"external_id": "idp|1", "permissions": scopes}));
    let agent = ok(&at[1], "POST", "/v1/agents", &platform, json!({"name": "a", "scopes": scopes}));
    let integration = ok(&at[2], "POST", "/v1/integrations", &platform, json!({"name": "i", "scopes": scopes}));
    let delegation = ok(
        &at[0],
        "POST",
        "/v1/delegations",
        &platform,
        json!({"user_id": user["id"], "agent_id": agent["id"], "integration_id": integration["id"], "scopes": scopes}),
    );

    let rounds: usize = std::env::var("TETHER_CLUSTER_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(300);
    let (mut stale_allows, mut allows_before) = (0, 0);
    for round in 0..rounds {
        let (opener, revoker) = (round % 3, (round + 1) % 3);
        let session = ok(
            &at[opener],
            "POST",
            "/v1/sessions",
            &platform,
            json!({"delegation_id": delegation["id"], "scopes": scopes}),
        );
        let (id, token) = (session["session"]["id"].as_str().unwrap(), session["token"].as_str().unwrap());
        // A session made on one node is usable on every node at once.
        for address in &at {
            // A node may answer 503 for a moment (its lease renewal was slow on a loaded
            // machine); it must allow within a few seconds.
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            loop {
                let (status, answer) = decision(address, &verifier, token);
                if (status, answer.as_str()) == (200, "allow") {
                    break;
                }
                assert!(
                    status == 503 && std::time::Instant::now() < deadline,
                    "round {round}: {address}: {status} {answer}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            allows_before += 1;
        }
        ok(&at[revoker], "POST", &format!("/v1/sessions/{id}/revoke"), &platform, json!({"reason": "test"}));
        for address in &at {
            let (status, answer) = decision(address, &verifier, token);
            if answer == "allow" {
                stale_allows += 1;
                eprintln!("round {round}: {address} allowed a session revoked at {}", at[revoker]);
            }
            assert!(status == 200 || status == 503, "round {round}: {address}: {status}");
        }
    }
    assert_eq!(allows_before, rounds * 3);
    assert_eq!(stale_allows, 0, "no node allowed a session after its revocation had returned");

    let report = ok(&at[1], "GET", "/v1/audit/verify", &admin, Value::Null);
    assert_eq!(report["ok"], json!(true), "one chain across the nodes: {report}");
}

#[test]
fn a_paused_node_delays_a_revocation_by_at_most_its_lease_and_denies_until_it_catches_up() {
    let Some(database) = fresh_database() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let first = node(dir.path(), &database);
    let nodes = [first, node(dir.path(), &database)];
    let at: Vec<String> = nodes.iter().map(|n| n.address().to_owned()).collect();
    let admin = admin_credential(dir.path());
    let platform_id = ok(&at[0], "POST", "/v1/platforms", &admin, json!({"name": "p"}))["id"].clone();
    let platform = credential(&at[0], &admin, json!({"role": "platform", "platform_id": platform_id}));
    let verifier = credential(&at[0], &admin, json!({"role": "verifier"}));
    let scopes = json!(["mail:read"]);
    let user = ok(&at[0], "POST", "/v1/users", &admin, json!({"external_id": "idp|1", "permissions": scopes}));
    let agent = ok(&at[0], "POST", "/v1/agents", &platform, json!({"name": "a", "scopes": scopes}));
    let integration = ok(&at[0], "POST", "/v1/integrations", &platform, json!({"name": "i", "scopes": scopes}));
    let delegation = ok(
        &at[0],
        "POST",
        "/v1/delegations",
        &platform,
        json!({"user_id": user["id"], "agent_id": agent["id"], "integration_id": integration["id"], "scopes": scopes}),
    );
    let session =
        ok(&at[0], "POST", "/v1/sessions", &platform, json!({"delegation_id": delegation["id"], "scopes": scopes}));
    let (id, token) = (session["session"]["id"].as_str().unwrap(), session["token"].as_str().unwrap());
    assert_eq!(decision(&at[1], &verifier, token), (200, "allow".to_owned()));

    let paused = nodes[1].pid().to_string();
    let signal = |name: &str| {
        assert!(std::process::Command::new("kill").args([name, &paused]).status().expect("kill").success());
    };
    signal("-STOP");
    let started = std::time::Instant::now();
    ok(&at[0], "POST", &format!("/v1/sessions/{id}/revoke"), &platform, json!({"reason": "test"}));
    let waited = started.elapsed();
    signal("-CONT");
    // The bound is the lease (2 s); the margin is for a loaded machine, not for tether.
    assert!(waited < Duration::from_secs(6), "the revoke waited {waited:?} for a paused node");
    // Continued, the paused node has no live lease and has not applied the revocation: it may
    // answer 503 for a moment, and then deny; it never allows.
    for _ in 0..50 {
        let (status, answer) = decision(&at[1], &verifier, token);
        assert_ne!(answer, "allow", "the continued node allowed a revoked session (status {status})");
        if status == 200 {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the continued node never caught up");
}
