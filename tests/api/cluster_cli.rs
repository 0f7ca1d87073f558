//! The one-shot commands on a cluster (docs/architecture.md, "Running several nodes"): `tether
//! credential mint --database`, `tether console-link --database` and `tether keys` work on the
//! data directory the nodes share, and a one-shot command never joins the cluster, so no revoker
//! waits for it.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cluster::{fresh_database, listening_nodes, one_cluster_at_a_time};
use crate::instance::{admin_credential, http, Server};

/// `tether ARGS --data-dir DIR`: (succeeded, stdout, stderr).
fn cli(args: &[&str], dir: &Path) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("TETHER_DATABASE_URL")
        .output()
        .expect("run tether");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (output.status.success(), text(&output.stdout), text(&output.stderr))
}

/// The node rows in the cluster's database.
fn node_rows(database: &str) -> i64 {
    let mut client = postgres::Client::connect(database, postgres::NoTls).expect("connect");
    client.query_one("SELECT count(*) FROM tether_nodes", &[]).expect("count nodes").get(0)
}

#[test]
fn a_credential_minted_on_the_cluster_database_works_on_every_node_and_the_mint_holds_no_lease() {
    let _turn = one_cluster_at_a_time();
    let Some(database) = fresh_database() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = listening_nodes(dir.path(), &database, 2, &[]);
    assert_eq!(node_rows(&database), 2);

    // A node's data directory holds keys only: without --database there is nothing to write to.
    let (minted, _, stderr) = cli(&["credential", "mint", "--role", "auditor"], dir.path());
    assert!(!minted, "a mint without --database on a keys-only directory must fail");
    assert!(stderr.contains("--database"), "the error names what is missing: {stderr}");

    let (minted, stdout, stderr) =
        cli(&["credential", "mint", "--role", "auditor", "--database", &database], dir.path());
    assert!(minted, "{stderr}");
    let auditor = stdout.trim();
    for node in &nodes {
        let (status, report) = http(node.address(), "GET", "/v1/audit/verify", auditor, None).expect("verify");
        assert_eq!((status, &report["ok"]), (200, &json!(true)), "on {}: {report}", node.address());
    }
    // The mint's audit event is on the one chain every node reads.
    let admin = admin_credential(dir.path());
    let (status, events) =
        http(nodes[1].address(), "GET", "/v1/audit?action=credential.created", &admin, None).expect("audit events");
    assert_eq!(status, 200, "{events}");
    let issued = events["items"].as_array().expect("items");
    assert!(
        issued.iter().any(|e| e["actor"]["id"] == "cli" && e["details"]["role"] == "auditor"),
        "the mint is audited as the CLI's: {events}"
    );
    assert_eq!(node_rows(&database), 2, "the one-shot command left no node row behind");

    let (linked, stdout, stderr) = cli(
        &["console-link", "--role", "auditor", "--database", &database, "--public-url", "https://tether.example"],
        dir.path(),
    );
    assert!(linked, "{stderr}");
    assert!(stdout.trim().starts_with("https://tether.example/console/open?link="), "{stdout}");

    // A revocation answers without waiting for the processes that have come and gone.
    let since = Instant::now();
    let (status, body) = http(nodes[0].address(), "GET", "/v1/credentials", &admin, None).expect("list credentials");
    assert_eq!(status, 200, "{body}");
    let minted_id = body["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|c| c["role"] == "auditor")
        .map(|c| c["id"].as_str().expect("id").to_owned())
        .expect("the minted credential is listed");
    let (status, body) =
        http(nodes[0].address(), "POST", &format!("/v1/credentials/{minted_id}/revoke"), &admin, Some(&Value::Null))
            .expect("revoke");
    assert_eq!(status, 200, "{body}");
    assert!(
        since.elapsed() < Duration::from_secs(2),
        "a revoke waited {:?}: for a lease nobody renews?",
        since.elapsed()
    );
    let (status, _) = http(nodes[1].address(), "GET", "/v1/audit/verify", auditor, None).expect("verify");
    assert_eq!(status, 401, "the revoked credential is refused on the other node");
}

#[test]
fn keys_commands_work_on_a_data_directory_that_holds_only_keys() {
    let _turn = one_cluster_at_a_time();
    let Some(database) = fresh_database() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = Server::start(dir.path(), "127.0.0.1:0", &["--database", &database]);
    node.wait_listening(Duration::from_secs(60));
    assert!(!dir.path().join("tether.db").exists(), "a cluster node keeps no SQLite database");

    let (rotated, stdout, stderr) = cli(&["keys", "rotate", "--purpose", "agent"], dir.path());
    assert!(rotated, "{stderr}");
    assert!(stdout.contains("added agent key"), "{stdout}");

    let elsewhere = tempfile::tempdir().expect("tempdir");
    let (rotated, _, stderr) = cli(&["keys", "rotate"], elsewhere.path());
    assert!(!rotated, "a directory with neither a database nor keys is refused");
    assert!(stderr.contains("no tether instance"), "{stderr}");
}
