//! What survives a restart (sessions, revocations, audit events, keys, credentials), what the
//! audit log proves (the chain verifies; a row changed behind tether's back is found by seq, by
//! the API and by the CLI), how the log is read (export, filters), and what guards start-up and
//! the files on disk (a bad policy stops it; private files are 0600).

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use axum::body::Body;
use axum::http::Method;
use serde_json::{json, Value};

use tether::{App, Config};

use crate::helpers::{RawDb, TestApp};

fn allow() -> (String, String) {
    ("allow".into(), "allowed".into())
}

fn deny(reason: &str) -> (String, String) {
    ("deny".into(), reason.into())
}

/// The audit log as exported: (content type, one parsed event per line, in order).
async fn export(app: &TestApp, credential: &str) -> (String, Vec<Value>) {
    let answer = app.request(Method::GET, "/v1/audit/export", Some(credential), None, Body::empty()).await;
    assert!(answer.status.is_success(), "{}: {}", answer.status, answer.text);
    assert!(answer.text.ends_with('\n'), "every line ends with a newline");
    let events = answer
        .text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("line {line:?} is not JSON: {e}")))
        .collect();
    (answer.content_type, events)
}

async fn verify(app: &TestApp) -> Value {
    app.get("/v1/audit/verify", &app.admin).await.ok().clone()
}

/// The events of GET /v1/audit?{query}, every page.
async fn audit(app: &TestApp, query: &str) -> Vec<Value> {
    let page = app.get(&format!("/v1/audit?{query}&limit=1000"), &app.admin).await;
    assert_eq!(page.ok()["next_cursor"], Value::Null, "one page holds this test's events");
    page.body["items"].as_array().cloned().unwrap_or_default()
}

fn field<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().map(|e| &e[name]).collect()
}

/// Runs `tether audit verify` on the app's database: (success, stdout, stderr).
fn cli_verify(app: &TestApp) -> (bool, String, String) {
    run(app.tether_command(&["audit", "verify"]))
}

/// Opens the database directly, as someone with write access to it could.
fn open_db(app: &TestApp) -> RawDb {
    app.raw_db()
}

/// The statement that drops one of the triggers keeping a table append-only.
fn drop_trigger(db: &RawDb, trigger: &str, table: &str) -> String {
    if db.is_postgres() {
        format!("DROP TRIGGER {trigger} ON {table}")
    } else {
        format!("DROP TRIGGER {trigger}")
    }
}

#[tokio::test]
async fn a_restart_keeps_every_session_revocation_audit_event_and_key() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    let (live, live_token) = app.session(&world.platform, &world.delegation, &["mail:read"]).await;
    let (revoked, revoked_token) = app.session(&world.platform, &world.delegation, &["mail:read"]).await;
    let receipt = app
        .post(&format!("/v1/sessions/{revoked}/revoke"), &world.platform.credential, json!({"reason": "done"}))
        .await;
    let revoked_by = receipt.ok()["cause"]["seq"].clone();
    let keys_before = app.get("/v1/keys", &app.admin).await.ok().clone();
    let (_, events_before) = export(&app, &app.admin).await;
    let sessions_before = app.get("/v1/sessions", &app.admin).await.ok()["items"].clone();

    let app = app.restart().await;

    assert_eq!(app.authorize(&verifier, &live_token, "mail:read").await, allow(), "a token minted before");
    assert_eq!(app.authorize(&verifier, &revoked_token, "mail:read").await, deny("session_revoked"));
    let after = app.get(&format!("/v1/sessions/{revoked}"), &app.admin).await;
    assert_eq!(after.ok()["status"], "revoked");
    assert_eq!(after.body["revoked_reason"], "done");
    assert_eq!(after.body["revoked_by_seq"], revoked_by);
    assert_eq!(app.get(&format!("/v1/sessions/{live}"), &app.admin).await.ok()["status"], "active");
    let sessions_after = app.get("/v1/sessions", &app.admin).await.ok()["items"].clone();
    assert_eq!(
        field(sessions_after.as_array().expect("items"), "id"),
        field(sessions_before.as_array().expect("items"), "id")
    );
    assert_eq!(app.get("/v1/keys", &app.admin).await.ok().clone(), keys_before, "the same keys");
    let (_, events_after) = export(&app, &app.admin).await;
    assert!(events_after.len() >= events_before.len());
    assert_eq!(events_after[..events_before.len()], events_before[..], "every earlier event, unchanged");
    assert_eq!(verify(&app).await["ok"], true);
    // The revocation feed still carries the revoked session for offline verifiers.
    let feed = app.get("/v1/revocations?limit=1000", &verifier).await;
    let fed: Vec<&Value> = feed.ok()["items"].as_array().expect("items").iter().map(|i| &i["session_id"]).collect();
    assert!(fed.contains(&&json!(revoked)), "{}", feed.text);
    // A session opened after the restart works too (the platform's credential survived).
    let (_, fresh) = app.session(&world.platform, &world.delegation, &["mail:read"]).await;
    assert_eq!(app.authorize(&verifier, &fresh, "mail:read").await, allow());
}

#[tokio::test]
async fn the_admin_credential_in_admin_credential_still_works_after_a_restart_and_is_not_reissued() {
    let app = TestApp::new().await;
    let first = app.app.first_admin_credential.clone().expect("the first start mints the admin credential");
    let file = std::fs::read_to_string(app.dir.path().join("admin.credential")).expect("admin.credential");
    assert_eq!(file.trim(), first);
    let credentials_before = app.get("/v1/credentials", &app.admin).await.ok()["items"].clone();

    let app = app.restart().await;

    assert!(app.app.first_admin_credential.is_none(), "a later start mints no new admin credential");
    assert_eq!(app.admin, first, "the harness read it back from admin.credential");
    app.post("/v1/platforms", &app.admin, json!({"name": "after restart"})).await.ok();
    let credentials_after = app.get("/v1/credentials", &app.admin).await.ok()["items"].clone();
    assert_eq!(credentials_after, credentials_before);
}

#[tokio::test]
async fn the_audit_chain_verifies_after_the_walkthrough() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let world = app.world(&["mail:read", "mail:send"], &["mail:read", "mail:send"]).await;
    let (session, token) = app.session(&world.platform, &world.delegation, &["mail:read"]).await;
    app.session(&world.platform, &world.delegation, &["mail:send"]).await;
    assert_eq!(app.authorize(&verifier, &token, "mail:read").await, allow());
    app.post(&format!("/v1/sessions/{session}/revoke"), &world.platform.credential, json!({})).await.ok();
    assert_eq!(app.authorize(&verifier, &token, "mail:read").await, deny("session_revoked"));
    app.post(&format!("/v1/users/{}/disable", world.user), &app.admin, json!({"reason": "offboarded"})).await.ok();

    let report = verify(&app).await;
    let (_, events) = export(&app, &app.admin).await;

    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["first_broken_seq"], Value::Null);
    assert_eq!(report["checked"].as_u64(), Some(events.len() as u64));
    assert_eq!(report["head_seq"], events.last().expect("events")["seq"]);
    assert_eq!(report["head_hash"], events.last().expect("events")["hash"]);
    for pair in events.windows(2) {
        assert_eq!(pair[1]["prev_hash"], pair[0]["hash"], "event {} links to {}", pair[1]["seq"], pair[0]["seq"]);
    }
    let (ok, _, stderr) = cli_verify(&app);
    assert!(ok, "`tether audit verify` on an intact chain exits 0; stderr: {stderr}");
}

/// On PostgreSQL the store's verify reads the shared database's chain, and `tether audit verify`
/// and `export` read it given `--database` alone (no data directory).
#[tokio::test]
async fn a_postgresql_chain_verifies_through_the_store_and_the_cli_given_its_database() {
    let app = TestApp::new().await;
    let Some(url) = app.database_url() else {
        eprintln!("skipped on SQLite: this test is about a PostgreSQL database (TETHER_TEST_BACKEND=postgres)");
        return;
    };
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    let (session, _) = app.session(&world.platform, &world.delegation, &["mail:read"]).await;
    app.post(&format!("/v1/sessions/{session}/revoke"), &app.admin, json!({})).await.ok();
    let api = verify(&app).await;
    assert_eq!(api["ok"], true, "{api}");

    let store_url = url.clone();
    let report = tokio::task::spawn_blocking(move || {
        let target = tether::store::postgres::PgTarget::new(&store_url, None)?;
        let readers = tether::store::ReadPool::open(&tether::store::Database::Postgres(target), 1)?;
        readers.read_now(tether::store::audit::verify_audit)
    })
    .await
    .expect("verify task")
    .expect("verify through the store");
    let report = serde_json::to_value(&report).expect("report");
    assert_eq!(report, api, "the store reads the chain the API verified");

    let nowhere = tempfile::tempdir().expect("tempdir");
    let cli = |args: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tether"));
        command.args(args).args(["--database", &url]).current_dir(nowhere.path()).env_remove("TETHER_DATABASE_URL");
        run(command)
    };
    let (ok, stdout, stderr) = cli(&["audit", "verify"]);
    assert!(ok, "{stderr}");
    assert_eq!(serde_json::from_str::<Value>(&stdout).expect("a JSON report"), api);
    let (ok, stdout, stderr) = cli(&["audit", "export"]);
    assert!(ok, "{stderr}");
    let (_, exported) = export(&app, &app.admin).await;
    let printed: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(printed.len() as i64, api["head_seq"].as_i64().expect("head_seq"));
    assert_eq!(printed, exported);
}

#[tokio::test]
async fn the_audit_table_refuses_updates_and_deletes() {
    let app = TestApp::new().await;
    let mut db = open_db(&app);

    let update = db.execute("UPDATE audit_events SET reason = 'rewritten' WHERE seq = 1", &[]);
    let delete = db.execute("DELETE FROM audit_events WHERE seq = 1", &[]);

    assert!(update.is_err(), "an UPDATE went through");
    assert!(delete.is_err(), "a DELETE went through");
    assert_eq!(verify(&app).await["ok"], true);
}

#[tokio::test]
async fn a_row_changed_behind_tethers_back_is_reported_by_its_seq_by_the_api_and_the_cli() {
    let app = TestApp::new().await;
    app.world(&["mail:read"], &["mail:read"]).await;
    assert_eq!(verify(&app).await["ok"], true);
    let (ok, _, stderr) = cli_verify(&app);
    assert!(ok, "intact chain: {stderr}");

    let mut db = open_db(&app);
    let drop = drop_trigger(&db, "audit_events_no_update", "audit_events");
    db.execute_batch(&format!("{drop}; UPDATE audit_events SET reason = 'rewritten' WHERE seq = 3;")).expect("tamper");

    let report = verify(&app).await;
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["first_broken_seq"], 3, "{report}");
    let (ok, stdout, stderr) = cli_verify(&app);
    assert!(!ok, "`tether audit verify` must exit non-zero on a broken chain; stdout: {stdout}");
    assert!(stderr.contains("seq 3"), "stderr names the broken seq: {stderr:?}");
}

#[tokio::test]
async fn details_rewritten_to_parse_the_same_are_still_a_broken_link() {
    let app = TestApp::new().await;
    app.world(&["mail:read"], &["mail:read"]).await;
    let mut db = open_db(&app);
    let stored: String = db.query_one("SELECT details FROM audit_events WHERE seq = 3", &[]).expect("details of seq 3");
    let original: Value = serde_json::from_str(&stored).expect("stored details are JSON");
    let object = original.as_object().expect("details of seq 3 are an object");
    let (key, value) = object.iter().next().expect("seq 3 has some details");
    // A duplicate key: serde_json keeps the last, SQLite's json_extract the first; so does a
    // reader of the file. Spelled differently, it still parses to the same value.
    let respelled = format!("{{{}:\"forged\",{}", serde_json::to_string(key).expect("key"), &stored[1..]);
    assert_eq!(serde_json::from_str::<Value>(&respelled).expect("JSON"), original, "parses the same: {value}");

    let drop = drop_trigger(&db, "audit_events_no_update", "audit_events");
    db.execute(&drop, &[])
        .and_then(|_| db.execute("UPDATE audit_events SET details = ?1 WHERE seq = 3", &[&respelled]))
        .expect("tamper");

    let report = verify(&app).await;
    assert_eq!((report["ok"].clone(), report["first_broken_seq"].clone()), (json!(false), json!(3)), "{report}");
    let (ok, _, stderr) = cli_verify(&app);
    assert!(!ok && stderr.contains("seq 3"), "{stderr}");
    // The export carries the stored text itself, so a re-verifier sees what tether hashed.
    let answer = app.request(Method::GET, "/v1/audit/export", Some(&app.admin), None, Body::empty()).await;
    assert!(answer.text.contains(&format!("\"details\":{respelled}")), "{}", answer.text);
}

#[tokio::test]
async fn an_actor_kind_tether_does_not_know_is_a_broken_link_not_an_error() {
    let app = TestApp::new().await;
    app.world(&["mail:read"], &["mail:read"]).await;
    let head = verify(&app).await["head_seq"].as_i64().expect("head_seq");

    broken_at_after(
        &app,
        2,
        ("audit_events_no_update", "audit_events"),
        "UPDATE audit_events SET actor_kind = 'root' WHERE seq = 2",
    )
    .await;
    // The export still reads every row, the tampered one as stored.
    let (_, events) = export(&app, &app.admin).await;
    assert_eq!(events.len() as i64, head);
    assert_eq!(events[1]["actor"]["kind"], "root");
}

#[tokio::test]
async fn details_that_are_not_utf8_are_a_broken_link_not_an_error() {
    let app = TestApp::new().await;
    if app.database_url().is_some() {
        eprintln!("skipped on PostgreSQL: its text columns refuse bytes that are not UTF-8, so no row can hold them");
        return;
    }
    app.world(&["mail:read"], &["mail:read"]).await;
    broken_at_after(
        &app,
        2,
        ("audit_events_no_update", "audit_events"),
        "UPDATE audit_events SET details = CAST(X'7BFF7D' AS TEXT) WHERE seq = 2",
    )
    .await;
}

/// Drops `trigger` (of the table) and runs `tamper` on the database behind tether's back, then
/// checks that the API's verify and `tether audit verify` (exit code 2) both report the chain
/// broken at `seq`.
async fn broken_at_after(app: &TestApp, seq: i64, (trigger, table): (&str, &str), tamper: &str) {
    let mut db = open_db(app);
    let drop = drop_trigger(&db, trigger, table);
    db.execute_batch(&format!("{drop}; {tamper};")).expect("tamper");
    let report = verify(app).await;
    assert_eq!((report["ok"].clone(), report["first_broken_seq"].clone()), (json!(false), json!(seq)), "{report}");
    let output = app.tether_command(&["audit", "verify"]).output().expect("run tether");
    assert_eq!(output.status.code(), Some(2), "{}", String::from_utf8_lossy(&output.stderr));
}

#[tokio::test]
async fn the_cli_export_fails_when_its_output_cannot_be_written() {
    let app = TestApp::new().await;
    app.world(&["mail:read"], &["mail:read"]).await;
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else { return };
    let output = app.tether_command(&["audit", "export"]).stdout(full).output().expect("run tether");
    assert!(!output.status.success(), "an export that wrote nothing claimed success");
    assert!(String::from_utf8_lossy(&output.stderr).contains("incomplete"), "{output:?}");
}

#[tokio::test]
async fn a_deleted_row_is_reported_at_its_seq() {
    let app = TestApp::new().await;
    app.world(&["mail:read"], &["mail:read"]).await;
    let head = verify(&app).await["head_seq"].as_i64().expect("head_seq");
    assert!(head > 6, "enough events to delete one in the middle: {head}");

    let mut db = open_db(&app);
    let drop = drop_trigger(&db, "audit_events_no_delete", "audit_events");
    db.execute_batch(&format!("{drop}; DELETE FROM audit_events WHERE seq = 5;")).expect("tamper");

    let report = verify(&app).await;
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["first_broken_seq"], 5, "{report}");
    let (ok, _, stderr) = cli_verify(&app);
    assert!(!ok && stderr.contains("seq 5"), "{stderr}");
}

#[tokio::test]
async fn the_export_is_ndjson_with_one_line_per_event_in_seq_order() {
    let app = TestApp::new().await;
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    let (session, _) = app.session(&world.platform, &world.delegation, &["mail:read"]).await;
    app.post(&format!("/v1/sessions/{session}/revoke"), &app.admin, json!({})).await.ok();
    let auditor = app.auditor().await;
    let head = verify(&app).await["head_seq"].as_i64().expect("head_seq");

    let (content_type, events) = export(&app, &auditor).await;

    assert_eq!(content_type, "application/x-ndjson");
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().expect("seq")).collect();
    assert_eq!(seqs, (1..=head).collect::<Vec<_>>());
    for key in ["seq", "id", "at", "actor", "action", "subject", "cause_seq", "reason", "details", "prev_hash", "hash"]
    {
        assert!(events.iter().all(|e| e.get(key).is_some()), "every event has `{key}`");
    }
    let listed = audit(&app, "").await;
    assert_eq!(listed, events, "the export and the listing are the same events");
}

#[tokio::test]
async fn the_audit_listing_filters_by_action_subject_cause_and_actor() {
    let app = TestApp::new().await;
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    let (first, _) = app.session(&world.platform, &world.delegation, &["mail:read"]).await;
    let (second, _) = app.session(&world.platform, &world.delegation, &["mail:read"]).await;
    let other = app.world(&["mail:read"], &["mail:read"]).await;
    let (direct, _) = app.session(&other.platform, &other.delegation, &["mail:read"]).await;
    let direct_receipt =
        app.post(&format!("/v1/sessions/{direct}/revoke"), &other.platform.credential, json!({})).await;
    let direct_seq = direct_receipt.ok()["cause"]["seq"].clone();
    let disabled = app.post(&format!("/v1/users/{}/disable", world.user), &app.admin, json!({"reason": "left"})).await;
    let cause = disabled.ok()["cause"]["seq"].as_i64().expect("cause seq");

    let revocations = audit(&app, "action=session.revoked").await;
    let subjects: BTreeSet<&str> = revocations.iter().map(|e| e["subject"]["id"].as_str().expect("id")).collect();
    assert_eq!(subjects, [first.as_str(), second.as_str(), direct.as_str()].into());
    assert!(revocations.iter().all(|e| e["action"] == "session.revoked"));

    let of_first = audit(&app, &format!("subject={first}")).await;
    assert_eq!(field(&of_first, "action"), vec!["session.created", "session.revoked"]);
    assert!(of_first.iter().all(|e| e["subject"]["id"] == first.as_str()));

    let caused = audit(&app, &format!("cause_seq={cause}")).await;
    let caused_subjects: BTreeSet<&str> = caused.iter().map(|e| e["subject"]["id"].as_str().expect("id")).collect();
    assert_eq!(caused_subjects, [first.as_str(), second.as_str()].into(), "exactly the user's sessions");
    assert!(caused.iter().all(|e| e["cause_seq"] == cause && e["action"] == "session.revoked"));
    assert!(caused.iter().all(|e| e["reason"] == "user_disabled"));

    let trigger = audit(&app, &format!("action=user.disabled&subject={}", world.user)).await;
    assert_eq!(field(&trigger, "seq"), vec![&json!(cause)]);
    assert_eq!(trigger[0]["reason"], "left");
    let direct_events = audit(&app, &format!("action=session.revoked&subject={direct}")).await;
    assert_eq!(field(&direct_events, "seq"), vec![&direct_seq]);

    let by_other = audit(&app, &format!("actor={}", other.platform.id)).await;
    assert!(!by_other.is_empty());
    assert!(by_other.iter().all(|e| e["actor"]["id"] == other.platform.id.as_str()), "{by_other:?}");
    assert!(field(&by_other, "subject").iter().any(|s| s["id"] == direct.as_str()));

    assert!(audit(&app, "action=no.such.action").await.is_empty());
}

/// A directory holding `agent.datalog` with `source`.
fn policy_dir(source: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("agent.datalog"), source).expect("write policy");
    dir
}

/// Opens tether on a fresh data directory with `policy`; returns the error message and whether
/// a database was created.
async fn open_with_policy(policy: &Path) -> (String, bool) {
    let data = tempfile::tempdir().expect("tempdir");
    let data_dir = data.path().join("data");
    let mut config = Config::new(&data_dir);
    config.policy_dir = Some(policy.to_owned());
    config.database_url = crate::helpers::fresh_database_url().await;
    let message = match App::open(&config).await {
        Ok(_) => panic!("tether started with the policy in {}", policy.display()),
        Err(e) => e.to_string(),
    };
    (message, data_dir.join("tether.db").exists())
}

#[tokio::test]
async fn a_policy_file_that_does_not_parse_stops_start_up_naming_the_file() {
    let policy = policy_dir("allow if requested_scope($s), scope($s\ndeny if true;\n");

    let (message, created) = open_with_policy(policy.path()).await;

    assert!(message.contains("agent.datalog"), "{message}");
    assert!(!created, "start-up stopped before a database was created");
}

#[tokio::test]
async fn a_missing_policy_file_or_one_without_an_allow_stops_start_up_naming_the_file() {
    let empty = tempfile::tempdir().expect("tempdir");
    let deny_all = policy_dir("deny if true;\n");

    let (missing, _) = open_with_policy(empty.path()).await;
    let (no_allow, _) = open_with_policy(deny_all.path()).await;

    assert!(missing.contains("agent.datalog"), "{missing}");
    assert!(no_allow.contains("agent.datalog"), "{no_allow}");
}

/// A running app whose policy is the one in `policy` (a directory from [`policy_dir`]).
async fn app_with_policy(policy: &tempfile::TempDir) -> TestApp {
    let path = policy.path().to_owned();
    TestApp::open(tempfile::tempdir().expect("tempdir"), move |dir| {
        let mut config = Config::new(dir);
        config.policy_dir = Some(path.clone());
        config
    })
    .await
}

#[tokio::test]
async fn a_policy_directory_replaces_the_built_in_policy() {
    let policy = policy_dir("allow if requested_scope($s), scope($s), $s != \"mail:send\";\ndeny if true;\n");
    let app = app_with_policy(&policy).await;
    let verifier = app.verifier().await;
    let world = app.world(&["mail:read", "mail:send"], &["mail:read", "mail:send"]).await;
    let (_, token) = app.session(&world.platform, &world.delegation, &["mail:read", "mail:send"]).await;

    assert_eq!(app.authorize(&verifier, &token, "mail:read").await, allow());
    assert_eq!(app.authorize(&verifier, &token, "mail:send").await, deny("policy_denied"));
}

#[tokio::test]
async fn a_policy_that_reads_the_resource_is_asked_again_for_each_resource_within_a_second() {
    let policy = policy_dir(
        "allow if requested_scope($s), scope($s), resource($r), $r.starts_with(\"inbox/\");\ndeny if true;\n",
    );
    let app = app_with_policy(&policy).await;
    let verifier = app.verifier().await;
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    let (_, token) = app.session(&world.platform, &world.delegation, &["mail:read"]).await;
    let ask = |resource: &str| json!({"token": token, "scope": "mail:read", "resource": resource});

    // Back to back, so within the same second as a rule: a remembered outcome must not cross
    // resources when the policy reads them.
    let inbox = app.post("/v1/authorize", &verifier, ask("inbox/1")).await;
    let sent = app.post("/v1/authorize", &verifier, ask("sent/1")).await;
    let inbox_again = app.post("/v1/authorize", &verifier, ask("inbox/2")).await;
    assert_eq!(inbox.ok()["decision"], "allow", "{}", inbox.text);
    assert_eq!(sent.ok()["decision"], "deny", "{}", sent.text);
    assert_eq!(inbox_again.ok()["decision"], "allow", "{}", inbox_again.text);
}

#[tokio::test]
async fn key_files_and_the_admin_credential_are_readable_by_their_owner_only() {
    let app = TestApp::new().await;
    let mode = |path: &Path| std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777;

    let keys: Vec<_> = std::fs::read_dir(app.dir.path().join("keys"))
        .expect("keys dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "key"))
        .collect();
    let names: BTreeSet<String> =
        keys.iter().map(|p| p.file_name().expect("name").to_string_lossy().into_owned()).collect();
    assert!(names.contains("agent-1.key") && names.contains("api-1.key"), "{names:?}");
    for key in &keys {
        assert_eq!(mode(key), 0o600, "{}", key.display());
    }
    assert_eq!(mode(&app.dir.path().join("admin.credential")), 0o600);

    // A rotated key is written the same way.
    app.post("/v1/keys/rotate", &app.admin, json!({"purpose": "agent"})).await.ok();
    assert_eq!(mode(&app.dir.path().join("keys").join("agent-2.key")), 0o600);
}

/// Runs the tether binary with `args`: (success, stdout, stderr).
fn cli(args: &[&str], dir: &Path) -> (bool, String, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tether"));
    command.args(args).arg("--data-dir").arg(dir);
    run(command)
}

/// Runs a `tether` command: (success, stdout, stderr).
fn run(mut command: std::process::Command) -> (bool, String, String) {
    let output = command.output().expect("run tether");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_cli_export_prints_the_same_events_as_the_api_export() {
    let app = TestApp::new().await;
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    let (session, _) = app.session(&world.platform, &world.delegation, &["mail:read"]).await;
    app.post(&format!("/v1/sessions/{session}/revoke"), &app.admin, json!({})).await.ok();
    let (_, events) = export(&app, &app.admin).await;

    let (ok, stdout, stderr) = run(app.tether_command(&["audit", "export"]));

    assert!(ok, "{stderr}");
    let printed: Vec<Value> =
        stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}"))).collect();
    assert_eq!(printed, events);
}

#[tokio::test]
async fn a_credential_minted_by_the_cli_on_a_live_data_directory_works_at_once_and_the_chain_holds() {
    let app = TestApp::new().await;
    if app.database_url().is_some() {
        eprintln!("skipped on PostgreSQL: `tether credential mint` writes to the data directory's SQLite database");
        return;
    }
    app.world(&["mail:read"], &["mail:read"]).await;

    let (ok, stdout, stderr) = cli(&["credential", "mint", "--role", "auditor"], app.dir.path());

    assert!(ok, "{stderr}");
    let credential = stdout.trim();
    let report = app.get("/v1/audit/verify", credential).await;
    assert_eq!(report.ok()["ok"], true, "{}", report.text);
    // The running instance keeps appending to the chain the other process extended.
    app.platform("after the cli").await;
    let report = verify(&app).await;
    assert_eq!(report["ok"], true, "{report}");
    let minted = audit(&app, "action=credential.created").await;
    assert!(minted.iter().any(|e| e["details"]["role"] == "auditor"), "the CLI's mint is on record");
}

#[tokio::test]
async fn an_export_nobody_reads_leaves_every_other_read_answering() {
    use tower::ServiceExt;
    let app = TestApp::new().await;
    let user = app.user("idp|exported", &["mail:read"]).await;
    // Well over what the export may buffer (8 chunks of ~60 KiB): it has to wait for its reader.
    let path = format!("/v1/users/{user}/lifecycle-events");
    let writes = (0..1500).map(|_| app.post(&path, &app.admin, json!({"type": "password_reset"})));
    for answer in futures_util::future::join_all(writes).await {
        answer.ok();
    }

    let request = axum::http::Request::get("/v1/audit/export")
        .header("authorization", format!("Bearer {}", app.admin))
        .body(Body::empty())
        .expect("request");
    let unread = app.router.clone().oneshot(request).await.expect("export answered");
    assert_eq!(unread.status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    for _ in 0..12 {
        let read = tokio::time::timeout(std::time::Duration::from_secs(10), app.get("/v1/platforms", &app.admin))
            .await
            .expect("a read waited behind the stalled export");
        read.ok();
    }
    drop(unread);
}

#[test]
fn cli_commands_on_a_directory_without_an_instance_refuse_and_create_nothing() {
    let empty = tempfile::tempdir().expect("tempdir");
    let mistyped = empty.path().join("tether-dta");
    for args in [&["credential", "mint", "--role", "admin"][..], &["keys", "rotate"][..], &["keys", "retire", "1"][..]]
    {
        let (ok, _, stderr) = cli(args, &mistyped);
        assert!(!ok, "{args:?} succeeded on a directory without an instance");
        assert!(stderr.contains("no tether instance"), "{args:?}: {stderr}");
        assert!(!mistyped.exists(), "{args:?} created {}", mistyped.display());
    }
}

#[tokio::test]
async fn a_new_instance_keeps_its_directory_database_and_admin_credential_to_its_owner() {
    let parent = tempfile::tempdir().expect("tempdir");
    let data_dir = parent.path().join("data");
    std::fs::create_dir(&data_dir).expect("data dir");
    // Someone planted a symlink where the first admin credential will be written.
    let elsewhere = parent.path().join("elsewhere");
    std::fs::write(&elsewhere, "untouched").expect("target");
    std::os::unix::fs::symlink(&elsewhere, data_dir.join("admin.credential")).expect("symlink");
    let mut config = Config::new(&data_dir);
    config.database_url = crate::helpers::fresh_database_url().await;
    let app = App::open(&config).await.expect("open");
    let credential = app.first_admin_credential.clone().expect("first start");

    let mode = |name: &str| std::fs::symlink_metadata(data_dir.join(name)).expect(name).permissions().mode() & 0o777;
    if config.database_url.is_none() {
        assert_eq!(mode("tether.db"), 0o600);
        assert_eq!(mode("tether.db-wal"), 0o600);
    }
    assert_eq!(mode("admin.credential"), 0o600);
    assert!(std::fs::symlink_metadata(data_dir.join("admin.credential")).expect("file").file_type().is_file());
    assert_eq!(std::fs::read_to_string(data_dir.join("admin.credential")).expect("read").trim(), credential);
    assert_eq!(std::fs::read_to_string(&elsewhere).expect("read"), "untouched", "the symlink was followed");

    let fresh = parent.path().join("created-by-tether");
    let mut config = Config::new(&fresh);
    config.database_url = crate::helpers::fresh_database_url().await;
    drop(App::open(&config).await.expect("open"));
    assert_eq!(std::fs::metadata(&fresh).expect("dir").permissions().mode() & 0o777, 0o700);
    drop(app);
}

/// The sessions a cascade revokes on one chain share their details: stored once, read and
/// exported in full on every event, and a change to the shared text behind tether's back breaks
/// the chain at the first event that carries it.
#[tokio::test]
async fn a_cascades_shared_details_are_stored_once_and_a_change_to_them_breaks_the_chain() {
    let app = TestApp::new().await;
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    for _ in 0..3 {
        app.session(&world.platform, &world.delegation, &["mail:read"]).await;
    }
    let disabled = app.post(&format!("/v1/users/{}/disable", world.user), &app.admin, json!({"reason": "left"})).await;
    let cause = disabled.ok()["cause"]["seq"].as_i64().expect("cause seq");
    let revoked = audit(&app, &format!("cause_seq={cause}&action=session.revoked")).await;
    assert_eq!(revoked.len(), 3, "{revoked:?}");
    for event in &revoked {
        let details = &event["details"];
        assert_eq!(
            (&details["user_id"], &details["delegation_id"], &details["trigger"]),
            (&json!(world.user), &json!(world.delegation), &json!("user.disabled")),
            "{event}"
        );
    }
    let auditor = app.auditor().await;
    let (_, exported) = export(&app, &auditor).await;
    let exported: Vec<&Value> = exported.iter().filter(|e| e["cause_seq"] == cause).collect();
    assert_eq!(
        exported.iter().map(|e| &e["details"]).collect::<Vec<_>>(),
        revoked.iter().map(|e| &e["details"]).collect::<Vec<_>>()
    );

    let mut db = open_db(&app);
    let mut count = |sql: &str| db.query_one::<i64>(sql, &[]).expect("count");
    assert_eq!(count("SELECT count(*) FROM audit_details"), 1, "one chain, stored once");
    assert_eq!(count("SELECT count(*) FROM audit_events WHERE details_id IS NOT NULL AND details = ''"), 3);
    assert_eq!(verify(&app).await["ok"], true);
    assert!(db.execute("UPDATE audit_details SET text = '{}'", &[]).is_err(), "append-only");
    assert!(db.execute("DELETE FROM audit_details", &[]).is_err(), "append-only");
    drop(db);

    let first = revoked[0]["seq"].as_i64().expect("seq");
    let tamper = format!("UPDATE audit_details SET text = '{{\"user_id\":\"{}\"}}'", world.user);
    broken_at_after(&app, first, ("audit_details_no_update", "audit_details"), &tamper).await;
}

/// Log output captured in memory.
#[derive(Clone, Default)]
struct CapturedLog(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLog {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_500_is_logged_with_its_cause_inside_the_request_span_and_answered_without_it() {
    let app = TestApp::new().await;
    open_db(&app).execute_batch("ALTER TABLE platforms RENAME TO platforms_away").expect("rename");
    let log = CapturedLog::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
    // The test's runtime runs the router on this thread, so the subscriber sees the request.
    // Callsites cache whether any subscriber wants them. While at most one dispatcher exists,
    // a callsite first reached on another test's thread asks only that thread's (none) and is
    // cached as "never" for every thread, the request span included. A second live dispatcher
    // makes every registration ask all of them, this test's subscriber among them.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    let answer = {
        let _guard = tracing::subscriber::set_default(subscriber);
        tracing::callsite::rebuild_interest_cache();
        app.get("/v1/platforms", &app.admin).await
    };
    assert_eq!(answer.status, 500, "{}", answer.text);
    assert_eq!(answer.content_type, "application/problem+json");
    assert!(!answer.text.contains("platforms"), "the answer says nothing of the cause: {}", answer.text);

    let log = String::from_utf8(log.0.lock().expect("log buffer").clone()).expect("utf-8");
    let line = log.lines().find(|l| l.contains("internal error")).unwrap_or_else(|| panic!("no error line: {log}"));
    let cause = match app.database_url() {
        Some(_) => "relation \"platforms\" does not exist",
        None => "no such table: platforms",
    };
    assert!(line.contains(cause), "the cause is logged: {line}");
    assert!(line.contains("request{") && line.contains("path=/v1/platforms"), "inside the request span: {line}");
    assert!(line.contains("caller=cred_"), "with the caller: {line}");
}
