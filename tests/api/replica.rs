//! Nodes with a read replica (`--read-database`; docs/architecture.md, "Read replica") on a real
//! PostgreSQL streaming standby: listings are answered from the replica, and are stale while its
//! replay is paused, while single-object reads, authorize and revocation stay on the primary and
//! stay correct. Needs tests/pg/start.sh and its `tether_pg_start_replica` (`.ci/run` runs both);
//! without `TETHER_TEST_REPLICA_URL` the test says so and passes only outside CI.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cluster::{fresh_database, one_cluster_at_a_time};
use crate::instance::{admin_credential, http, ok, Server};

const SCOPES: &str = "mail:read";

/// The replica's server URL, or `None` (outside CI) when there is none.
fn replica_server() -> Option<String> {
    let Ok(url) = std::env::var("TETHER_TEST_REPLICA_URL") else {
        assert!(
            std::env::var("CI").is_err(),
            "CI must run the replica test: TETHER_TEST_REPLICA_URL is not set (tether_pg_start_replica)"
        );
        eprintln!("skipped: TETHER_TEST_REPLICA_URL is not set (source tests/pg/start.sh; tether_pg_start_replica)");
        return None;
    };
    Some(url)
}

/// `database` (a URL on the primary) as the replica serves it, once replay has created it there.
fn on_replica(replica_server: &str, database: &str) -> String {
    let (_, name) = database.rsplit_once('/').expect("a database in the URL");
    let (base, _) = replica_server.rsplit_once('/').expect("a database in the URL");
    let url = format!("{base}/{name}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match postgres::Client::connect(&url, postgres::NoTls) {
            Ok(_) => return url,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("the replica never showed {name}: {e}"),
        }
    }
}

/// The replica's WAL replay, paused until dropped (however the test ends: the standby serves
/// the rest of the run).
struct PausedReplay(postgres::Client);

impl PausedReplay {
    fn pause(replica: &str) -> PausedReplay {
        let mut client = postgres::Client::connect(replica, postgres::NoTls).expect("connect to the replica");
        client.batch_execute("SELECT pg_wal_replay_pause()").expect("pause replay");
        PausedReplay(client)
    }

    /// Waits until replay has stopped, not merely been asked to: the standby pauses before the
    /// next record it would apply, and the nodes write (leases) all the time.
    fn wait_paused(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let row = self.0.query_one("SELECT pg_get_wal_replay_pause_state()", &[]).expect("pause state");
            if row.get::<_, String>(0) == "paused" {
                return;
            }
            assert!(Instant::now() < deadline, "replay did not pause");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PausedReplay {
    fn drop(&mut self) {
        let _ = self.0.batch_execute("SELECT pg_wal_replay_resume()");
    }
}

/// Opens a session of `delegation` through `address`: `(id, token)`.
fn open_session(address: &str, platform: &str, delegation: &Value) -> (String, String) {
    let body = json!({"delegation_id": delegation, "scopes": [SCOPES]});
    let created = ok(address, "POST", "/v1/sessions", platform, body);
    (created["session"]["id"].as_str().expect("id").to_owned(), created["token"].as_str().expect("token").to_owned())
}

fn decision(address: &str, verifier: &str, token: &str) -> String {
    let body = json!({"token": token, "scope": SCOPES});
    let (status, answer) = http(address, "POST", "/v1/authorize", verifier, Some(&body)).expect("authorize");
    assert_eq!(status, 200, "authorize: {answer}");
    answer["decision"].as_str().expect("decision").to_owned()
}

/// The sessions `GET /v1/sessions` lists through `address`: id → status.
fn listed(address: &str, platform: &str) -> Vec<(String, String)> {
    let page = ok(address, "GET", "/v1/sessions?limit=1000", platform, Value::Null);
    let items = page["items"].as_array().expect("items");
    items.iter().map(|s| (s["id"].as_str().unwrap().to_owned(), s["status"].as_str().unwrap().to_owned())).collect()
}

fn status_of<'a>(listing: &'a [(String, String)], id: &str) -> Option<&'a str> {
    listing.iter().find(|(listed, _)| listed == id).map(|(_, status)| status.as_str())
}

/// The subjects of the `session.revoked` events `GET /v1/audit` lists through `address`.
fn revocations_listed(address: &str, auditor: &str) -> Vec<String> {
    let page = ok(address, "GET", "/v1/audit?action=session.revoked", auditor, Value::Null);
    page["items"].as_array().expect("items").iter().map(|e| e["subject"]["id"].as_str().unwrap().to_owned()).collect()
}

/// Polls `check` until it holds, up to `limit`; how long that took.
fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

#[test]
fn listings_come_from_the_replica_and_what_follows_a_write_from_the_primary_while_replay_lags() {
    let Some(replica_server) = replica_server() else { return };
    let _turn = one_cluster_at_a_time();
    let Some(database) = fresh_database() else { return };
    let replica = on_replica(&replica_server, &database);
    let dir = tempfile::tempdir().expect("tempdir");
    let flags = ["--database", database.as_str(), "--read-database", replica.as_str()];
    // Two nodes: a write through one, its reads through the other, so the other learns what it
    // checks from the database and not from its own memory of the write.
    let nodes: Vec<Server> = (0..2)
        .map(|_| {
            let mut node = Server::start(dir.path(), "127.0.0.1:0", &flags);
            node.wait_listening(Duration::from_secs(60));
            node
        })
        .collect();
    let (writer, reader) = (nodes[0].address(), nodes[1].address());

    let admin = admin_credential(dir.path());
    let platform_id = ok(writer, "POST", "/v1/platforms", &admin, json!({"name": "p"}))["id"].clone();
    let platform =
        ok(writer, "POST", "/v1/credentials", &admin, json!({"role": "platform", "platform_id": platform_id}))
            ["credential"]
            .as_str()
            .expect("credential")
            .to_owned();
    let verifier = ok(writer, "POST", "/v1/credentials", &admin, json!({"role": "verifier"}))["credential"]
        .as_str()
        .unwrap()
        .to_owned();
    let scopes = json!([SCOPES]);
    let agent = ok(writer, "POST", "/v1/agents", &platform, json!({"name": "a", "scopes": scopes}))["id"].clone();
    let integration =
        ok(writer, "POST", "/v1/integrations", &platform, json!({"name": "i", "scopes": scopes}))["id"].clone();
    let user =
        ok(writer, "POST", "/v1/users", &admin, json!({"external_id": "idp|1", "permissions": scopes}))["id"].clone();
    let body = json!({"user_id": user, "agent_id": agent, "integration_id": integration, "scopes": scopes});
    let delegation = ok(writer, "POST", "/v1/delegations", &platform, body)["id"].clone();

    // Replay running: the listing catches up with the sessions opened.
    let opened: Vec<(String, String)> = (0..3).map(|_| open_session(writer, &platform, &delegation)).collect();
    let caught_up = eventually(Duration::from_secs(30), "the listing shows the sessions opened", || {
        let listing = listed(reader, &platform);
        opened.iter().all(|(id, _)| status_of(&listing, id) == Some("active"))
    });
    eprintln!("the replica's listing caught up in {caught_up:?}");

    let mut paused = PausedReplay::pause(&replica);
    paused.wait_paused();
    // Replay paused: whatever is written from now on is on the primary only.
    let (fresh, fresh_token) = open_session(writer, &platform, &delegation);
    let (revoked, revoked_token) = &opened[0];
    let late_verifier = ok(writer, "POST", "/v1/credentials", &admin, json!({"role": "verifier"}))["credential"]
        .as_str()
        .expect("credential")
        .to_owned();
    ok(writer, "POST", &format!("/v1/sessions/{revoked}/revoke"), &platform, json!({"reason": "test"}));

    // What decides access, and a single object read right after its write, are the primary's.
    let got = ok(reader, "GET", &format!("/v1/sessions/{fresh}"), &platform, Value::Null);
    assert_eq!(got["status"], json!("active"), "a session just opened reads back: {got}");
    assert_eq!(decision(reader, &verifier, &fresh_token), "allow", "a session just opened is usable on every node");
    let got = ok(reader, "GET", &format!("/v1/sessions/{revoked}"), &platform, Value::Null);
    assert_eq!(got["status"], json!("revoked"), "a revocation reads back: {got}");
    assert_eq!(decision(reader, &verifier, revoked_token), "deny", "a revoked session is refused at once");
    assert_eq!(decision(reader, &verifier, &opened[1].1), "allow");
    // A credential minted on the other node is looked up on the primary the first time it is used.
    assert_eq!(decision(reader, &late_verifier, &opened[1].1), "allow", "a credential just minted works at once");

    // The listings are the replica's: as they were when replay stopped, on either node, for as
    // long as it stays stopped.
    for _ in 0..5 {
        for node in [writer, reader] {
            let listing = listed(node, &platform);
            assert_eq!(status_of(&listing, &fresh), None, "the listing is the paused replica's: {listing:?}");
            assert_eq!(status_of(&listing, revoked), Some("active"), "the revocation is not replayed yet");
            let revocations = revocations_listed(node, &admin);
            assert!(!revocations.contains(revoked), "the audit page is the replica's too: {revocations:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    // Replay resumed: the listings catch up, and nothing was refused meanwhile.
    drop(paused);
    let caught_up = eventually(Duration::from_secs(30), "the listing shows the writes made while paused", || {
        let listing = listed(reader, &platform);
        status_of(&listing, &fresh) == Some("active") && status_of(&listing, revoked) == Some("revoked")
    });
    eprintln!("the replica caught up with the paused writes in {caught_up:?} after resuming");
    eventually(Duration::from_secs(30), "the audit page shows the revocation", || {
        revocations_listed(reader, &admin).contains(revoked)
    });
    assert_eq!(decision(reader, &verifier, revoked_token), "deny");
    drop(nodes);
}
