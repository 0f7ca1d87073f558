//! Token lifecycle: short-lived access tokens and refresh, refresh-token reuse detection, key
//! rotation and retirement (API and key files), step-up, sub-agent chains in introspection, and
//! the revocation feed staying bounded.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use tether::domain::Timestamp;
use tether::tokens::{KeyPurpose, KeyRing};

use crate::helpers::{TestApp, World};

/// Opens a session on `world`'s delegation and returns the whole answer
/// (`{session, token, token_expires_at, refresh_token}`).
async fn open(app: &TestApp, world: &World, scopes: &[&str], ttl_seconds: Option<i64>) -> Value {
    let mut body = json!({"delegation_id": world.delegation, "scopes": scopes});
    if let Some(ttl) = ttl_seconds {
        body["ttl_seconds"] = json!(ttl);
    }
    app.post("/v1/sessions", &world.platform.credential, body).await.ok().clone()
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_else(|| panic!("expected a string, got {value}")).to_owned()
}

fn time(value: &Value) -> Timestamp {
    Timestamp::parse_rfc3339(value.as_str().unwrap_or_default())
        .unwrap_or_else(|| panic!("expected an RFC 3339 time, got {value}"))
}

/// POST /v1/sessions/{id}/refresh as `credential`.
async fn refresh(app: &TestApp, credential: &str, session: &str, refresh_token: &str) -> crate::helpers::Answer {
    app.post(&format!("/v1/sessions/{session}/refresh"), credential, json!({"refresh_token": refresh_token})).await
}

async fn session_status(app: &TestApp, session: &str) -> Value {
    app.get(&format!("/v1/sessions/{session}"), &app.admin).await.ok().clone()
}

/// The audit events matching a query string (e.g. `action=key.added&subject=agent:2`).
async fn audit(app: &TestApp, admin: &str, query: &str) -> Vec<Value> {
    let page = app.get(&format!("/v1/audit?{query}&limit=1000"), admin).await;
    page.ok()["items"].as_array().cloned().unwrap_or_default()
}

/// `(kid, status)` of the keys of `purpose` in GET /v1/keys, in kid order.
async fn keys(app: &TestApp, credential: &str, purpose: &str) -> Vec<(u64, String)> {
    let answer = app.get("/v1/keys", credential).await;
    let mut keys: Vec<(u64, String)> = answer.ok()["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("no keys: {}", answer.text))
        .iter()
        .filter(|k| k["purpose"] == purpose)
        .map(|k| {
            assert_eq!(k["algorithm"], "ed25519", "{k}");
            (k["kid"].as_u64().unwrap_or_else(|| panic!("no kid: {k}")), text(&k["status"]))
        })
        .collect();
    keys.sort();
    keys
}

fn statuses(list: &[(u64, &str)]) -> Vec<(u64, String)> {
    list.iter().map(|(k, s)| (*k, (*s).to_owned())).collect()
}

/// The root key id a biscuit (agent token or API credential) names.
fn kid_of(token: &str) -> u32 {
    match biscuit_auth::UnverifiedBiscuit::from_base64(token).map(|b| b.root_key_id()) {
        Ok(Some(kid)) => kid,
        other => panic!("not a biscuit with a root key id: {other:?}"),
    }
}

/// The revocation feed's entries for one session.
async fn feed_for(app: &TestApp, verifier: &str, session: &str) -> Vec<Value> {
    let page = app.get("/v1/revocations?limit=1000", verifier).await;
    let items = page.ok()["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(page.body["next_cursor"], Value::Null, "one page holds this test's feed");
    items.into_iter().filter(|i| i["session_id"] == session).collect()
}

/// Revocation-feed rows stored for `session`, expired or not (read as of the epoch).
async fn stored_feed_rows(app: &TestApp, session: &str) -> usize {
    let rows = app
        .app
        .services
        .readers
        .read(|conn| tether::store::feed::revocation_feed(conn, 0, 1000, Timestamp(0)))
        .await
        .unwrap_or_else(|e| panic!("reading the feed: {e}"));
    rows.items.iter().filter(|(_, _, s, _)| s.to_string() == session).count()
}

/// Percent-encodes a token for an `application/x-www-form-urlencoded` body.
fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Access-token lifetime and refresh

#[tokio::test]
async fn a_token_past_its_ttl_is_denied_token_expired_while_the_session_stays_active_and_a_refresh_gives_a_working_one()
{
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    let opened = open(&app, &world, &["mail:read"], Some(3600)).await;
    let session = text(&opened["session"]["id"]);
    let token = text(&opened["token"]);
    let token_expires = time(&opened["token_expires_at"]);
    let session_expires = time(&opened["session"]["expires_at"]);
    assert!(token_expires <= session_expires, "token {token_expires:?} outlives session {session_expires:?}");
    assert!(token_expires < session_expires, "a one-hour session outlives a 15-minute token");
    assert_eq!(app.authorize(&verifier, &token, "mail:read").await, ("allow".into(), "allowed".into()));

    app.clock.advance_seconds(901);
    assert_eq!(app.authorize(&verifier, &token, "mail:read").await, ("deny".into(), "token_expired".into()));
    assert_eq!(session_status(&app, &session).await["status"], "active");

    let refreshed = refresh(&app, &world.platform.credential, &session, &text(&opened["refresh_token"])).await;
    let refreshed = refreshed.ok();
    let new_token = text(&refreshed["token"]);
    assert!(time(&refreshed["token_expires_at"]) <= session_expires);
    assert_eq!(app.authorize(&verifier, &new_token, "mail:read").await, ("allow".into(), "allowed".into()));
    assert_eq!(
        app.authorize(&verifier, &token, "mail:read").await,
        ("deny".into(), "token_expired".into()),
        "the old token stays expired"
    );
}

/// A refreshed token is cached as it is minted (its first check skips verification): it must
/// still say exactly what a verified one would, and die with its session.
#[tokio::test]
async fn a_refreshed_token_is_allowed_at_once_answers_its_claims_and_dies_with_its_session() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let world = app.world(&["mail:read", "mail:send"], &["mail:read", "mail:send"]).await;
    let opened = open(&app, &world, &["mail:read"], Some(3600)).await;
    let session = text(&opened["session"]["id"]);
    let refreshed = refresh(&app, &world.platform.credential, &session, &text(&opened["refresh_token"])).await;
    let refreshed = refreshed.ok().clone();
    assert_eq!(
        refreshed.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()),
        Some(vec!["refresh_token".to_owned(), "token".to_owned(), "token_expires_at".to_owned()]),
        "the answer carries the tokens and nothing else: {refreshed}"
    );
    let new_token = text(&refreshed["token"]);

    let allowed = app.post("/v1/authorize", &verifier, json!({"token": new_token, "scope": "mail:read"})).await;
    let allowed = allowed.ok();
    assert_eq!((allowed["decision"].as_str(), allowed["session_id"].as_str()), (Some("allow"), Some(session.as_str())));
    assert_eq!(allowed["scopes"], json!(["mail:read"]));
    assert_eq!(allowed["expires_at"], refreshed["token_expires_at"]);
    assert_eq!(app.authorize(&verifier, &new_token, "mail:send").await, ("deny".into(), "scope_not_granted".into()));

    app.post(&format!("/v1/sessions/{session}/revoke"), &world.platform.credential, json!({})).await.ok();
    assert_eq!(app.authorize(&verifier, &new_token, "mail:read").await, ("deny".into(), "session_revoked".into()));
}

#[tokio::test]
async fn with_a_session_shorter_than_the_token_ttl_the_token_expires_with_the_session() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    let opened = open(&app, &world, &["mail:read"], Some(60)).await;
    let session = text(&opened["session"]["id"]);
    let token = text(&opened["token"]);
    assert_eq!(
        time(&opened["token_expires_at"]),
        time(&opened["session"]["expires_at"]),
        "the token's lifetime is cut to the session's"
    );

    app.clock.advance_seconds(55);
    assert_eq!(app.authorize(&verifier, &token, "mail:read").await, ("allow".into(), "allowed".into()));
    app.clock.advance_seconds(6);
    assert_eq!(app.authorize(&verifier, &token, "mail:read").await, ("deny".into(), "session_expired".into()));
    assert_eq!(session_status(&app, &session).await["status"], "expired");
}

// ---------------------------------------------------------------------------------------------
// Refresh tokens

#[tokio::test]
async fn refresh_rotates_both_tokens_and_refuses_unknown_or_foreign_refresh_tokens() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    let opened = open(&app, &world, &["mail:read"], None).await;
    let session = text(&opened["session"]["id"]);
    let token0 = text(&opened["token"]);
    let rt0 = text(&opened["refresh_token"]);
    assert!(!rt0.is_empty());

    // An unknown refresh token: invalid_grant, and the session is untouched.
    refresh(&app, &world.platform.credential, &session, "rt_not-a-real-refresh-token")
        .await
        .problem(400, "invalid_grant");
    assert_eq!(session_status(&app, &session).await["status"], "active");
    assert_eq!(app.authorize(&verifier, &token0, "mail:read").await.0, "allow");

    // Another session's refresh token: invalid_grant, and it is not consumed by the attempt.
    let other = open(&app, &world, &["mail:read"], None).await;
    let other_session = text(&other["session"]["id"]);
    let other_rt = text(&other["refresh_token"]);
    refresh(&app, &world.platform.credential, &session, &other_rt).await.problem(400, "invalid_grant");
    assert_eq!(session_status(&app, &session).await["status"], "active");
    assert_eq!(session_status(&app, &other_session).await["status"], "active");

    // Another platform's credential: 404 (ids cannot be probed), and rt0 is not consumed.
    let stranger = app.platform("stranger").await;
    refresh(&app, &stranger.credential, &session, &rt0).await.problem(404, "not_found");
    assert_eq!(session_status(&app, &session).await["status"], "active");

    // The owner with the right token: new token and new refresh token, both different.
    let refreshed = refresh(&app, &world.platform.credential, &session, &rt0).await;
    let refreshed = refreshed.ok();
    let token1 = text(&refreshed["token"]);
    let rt1 = text(&refreshed["refresh_token"]);
    assert_ne!(token1, token0);
    assert_ne!(rt1, rt0);
    assert_eq!(app.authorize(&verifier, &token1, "mail:read").await, ("allow".into(), "allowed".into()));

    // The other session's refresh token still works for its own session.
    refresh(&app, &world.platform.credential, &other_session, &other_rt).await.ok();
    // An admin may refresh too.
    refresh(&app, &app.admin, &session, &rt1).await.ok();
    assert_eq!(session_status(&app, &session).await["status"], "active");
}

#[tokio::test]
async fn replaying_a_rotated_refresh_token_revokes_the_session_and_audits_the_reuse() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    let opened = open(&app, &world, &["mail:read"], None).await;
    let session = text(&opened["session"]["id"]);
    let token0 = text(&opened["token"]);
    let rt0 = text(&opened["refresh_token"]);

    let refreshed = refresh(&app, &world.platform.credential, &session, &rt0).await;
    let token1 = text(&refreshed.ok()["token"]);
    let rt1 = text(&refreshed.body["refresh_token"]);
    assert_eq!(app.authorize(&verifier, &token1, "mail:read").await.0, "allow");

    // The replay: answered invalid_grant, and the session is gone.
    refresh(&app, &world.platform.credential, &session, &rt0).await.problem(400, "invalid_grant");
    assert_eq!(app.authorize(&verifier, &token1, "mail:read").await, ("deny".into(), "session_revoked".into()));
    assert_eq!(app.authorize(&verifier, &token0, "mail:read").await, ("deny".into(), "session_revoked".into()));
    let record = session_status(&app, &session).await;
    assert_eq!(record["status"], "revoked");
    assert_eq!(record["revoked_reason"], "refresh_token_reused");

    let reuse = audit(&app, &app.admin, &format!("action=token.revoked_reuse&subject={session}")).await;
    assert_eq!(reuse.len(), 1, "{reuse:?}");
    let reuse_seq = reuse[0]["seq"].as_i64().expect("seq");
    let revoked = audit(&app, &app.admin, &format!("action=session.revoked&subject={session}")).await;
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert_eq!(revoked[0]["cause_seq"].as_i64(), Some(reuse_seq));
    assert_eq!(revoked[0]["reason"], "refresh_token_reused");
    assert_eq!(record["revoked_by_seq"], revoked[0]["seq"]);
    // The platform's own webhooks and stream see the refresh and the reuse: both name it.
    assert_eq!(reuse[0]["details"]["platform_id"], world.platform.id.as_str());
    let refreshed = audit(&app, &app.admin, &format!("action=session.refreshed&subject={session}")).await;
    assert_eq!(refreshed[0]["details"]["platform_id"], world.platform.id.as_str(), "{refreshed:?}");
    assert_eq!(refreshed[0]["details"]["user_id"], world.user.as_str());

    // An auditor's coverage report for the reuse: the session, revoked by the event it caused.
    let auditor = app.auditor().await;
    let report = app.get(&format!("/v1/audit/coverage?event={reuse_seq}"), &auditor).await;
    let report = report.ok();
    assert_eq!(report["survivors"], serde_json::json!([]), "{report}");
    assert_eq!(report["sessions"].as_array().map(Vec::len), Some(1), "{report}");
    assert_eq!(report["sessions"][0]["session_id"], session.as_str());
    assert_eq!(report["sessions"][0]["revoked_by_seq"], revoked[0]["seq"]);

    // The refresh token issued before the replay cannot bring the session back.
    let late = refresh(&app, &world.platform.credential, &session, &rt1).await;
    assert!(!late.status.is_success(), "{}", late.text);
    // Replaying again is refused without a second revocation.
    refresh(&app, &world.platform.credential, &session, &rt0).await.problem(400, "invalid_grant");
    assert_eq!(session_status(&app, &session).await["status"], "revoked");
    assert_eq!(audit(&app, &app.admin, &format!("action=token.revoked_reuse&subject={session}")).await.len(), 1);
    assert_eq!(audit(&app, &app.admin, &format!("action=session.revoked&subject={session}")).await.len(), 1);
}

/// POST /v1/sessions/{id}/refresh straight through a router clone (for tasks of their own).
async fn refresh_on(
    router: axum::Router,
    credential: String,
    session: String,
    refresh_token: String,
) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("/v1/sessions/{session}/refresh"))
        .header("authorization", format!("Bearer {credential}"))
        .header("content-type", "application/json")
        .body(Body::from(json!({"refresh_token": refresh_token}).to_string()))
        .unwrap_or_else(|e| panic!("request: {e}"));
    let response = router.oneshot(request).await.expect("response");
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap_or_else(|e| panic!("body: {e}")).to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refreshes_with_one_refresh_token_let_exactly_one_win_and_revoke_the_session_as_reuse() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    let opened = open(&app, &world, &["mail:read"], None).await;
    let session = text(&opened["session"]["id"]);
    let rt0 = text(&opened["refresh_token"]);

    const TASKS: usize = 8;
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (router, barrier) = (app.router.clone(), barrier.clone());
            let (credential, session, rt) = (world.platform.credential.clone(), session.clone(), rt0.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                refresh_on(router, credential, session, rt).await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("task"));
    }

    let winners: Vec<&Value> = answers.iter().filter(|(s, _)| *s == StatusCode::OK).map(|(_, b)| b).collect();
    assert_eq!(winners.len(), 1, "exactly one refresh succeeds: {answers:?}");
    for (status, body) in answers.iter().filter(|(s, _)| *s != StatusCode::OK) {
        assert_eq!(*status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["code"], "invalid_grant", "{body}");
    }

    // Strict reuse detection: the losers' replays revoked the session, the winner's token too.
    let record = session_status(&app, &session).await;
    assert_eq!(record["status"], "revoked");
    assert_eq!(record["revoked_reason"], "refresh_token_reused");
    let winner_token = text(&winners[0]["token"]);
    assert_eq!(app.authorize(&verifier, &winner_token, "mail:read").await, ("deny".into(), "session_revoked".into()));
    let reuse = audit(&app, &app.admin, &format!("action=token.revoked_reuse&subject={session}")).await;
    assert_eq!(reuse.len(), 1, "one reuse revokes the session once: {reuse:?}");
    let revoked = audit(&app, &app.admin, &format!("action=session.revoked&subject={session}")).await;
    assert_eq!(revoked.len(), 1, "{revoked:?}");
}

// ---------------------------------------------------------------------------------------------
// Key rotation and retirement

#[tokio::test]
async fn rotating_then_retiring_the_agent_key_keeps_old_tokens_until_retirement_and_signs_new_ones_with_the_new_key() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    let old = open(&app, &world, &["mail:read"], None).await;
    let old_session = text(&old["session"]["id"]);
    let old_token = text(&old["token"]);
    assert_eq!(kid_of(&old_token), 1);
    assert_eq!(keys(&app, &app.admin, "agent").await, statuses(&[(1, "active")]));

    let rotated = app.post("/v1/keys/rotate", &app.admin, json!({"purpose": "agent"})).await;
    rotated.ok();
    assert_eq!(keys(&app, &app.admin, "agent").await, statuses(&[(1, "active"), (2, "active")]));
    assert_eq!(keys(&app, &verifier, "agent").await, statuses(&[(1, "active"), (2, "active")]));
    assert_eq!(app.authorize(&verifier, &old_token, "mail:read").await, ("allow".into(), "allowed".into()));

    let new = open(&app, &world, &["mail:read"], None).await;
    let new_token = text(&new["token"]);
    assert_eq!(kid_of(&new_token), 2, "new sessions' tokens are signed by the newest key");
    assert_eq!(app.authorize(&verifier, &new_token, "mail:read").await, ("allow".into(), "allowed".into()));

    app.post("/v1/keys/1/retire", &app.admin, json!({"purpose": "agent"})).await.ok();
    assert_eq!(keys(&app, &app.admin, "agent").await, statuses(&[(1, "retired"), (2, "active")]));
    assert_eq!(app.authorize(&verifier, &old_token, "mail:read").await, ("deny".into(), "unknown_key".into()));
    assert_eq!(app.authorize(&verifier, &new_token, "mail:read").await, ("allow".into(), "allowed".into()));

    // The session itself is fine: a refresh gives it a token under the new key.
    let refreshed = refresh(&app, &world.platform.credential, &old_session, &text(&old["refresh_token"])).await;
    let refreshed_token = text(&refreshed.ok()["token"]);
    assert_eq!(kid_of(&refreshed_token), 2);
    assert_eq!(app.authorize(&verifier, &refreshed_token, "mail:read").await, ("allow".into(), "allowed".into()));

    let added = audit(&app, &app.admin, "action=key.added&subject=agent:2").await;
    assert_eq!(added.len(), 1, "{added:?}");
    assert_eq!(added[0]["actor"]["kind"], "admin");
    let retired = audit(&app, &app.admin, "action=key.retired&subject=agent:1").await;
    assert_eq!(retired.len(), 1, "{retired:?}");
    assert_eq!(retired[0]["actor"]["kind"], "admin");

    // The only active key left cannot be retired.
    app.post("/v1/keys/2/retire", &app.admin, json!({"purpose": "agent"})).await.problem(409, "conflict");
    assert_eq!(keys(&app, &app.admin, "agent").await, statuses(&[(1, "retired"), (2, "active")]));
    assert_eq!(app.authorize(&verifier, &new_token, "mail:read").await.0, "allow");
    assert!(audit(&app, &app.admin, "action=key.retired&subject=agent:2").await.is_empty());
}

#[tokio::test]
async fn a_retired_key_whose_marker_is_removed_by_hand_is_audited_as_reactivated() {
    let app = TestApp::new().await;
    app.post("/v1/keys/rotate", &app.admin, json!({"purpose": "agent"})).await.ok();
    app.post("/v1/keys/1/retire", &app.admin, json!({"purpose": "agent"})).await.ok();
    std::fs::remove_file(app.dir.path().join("keys").join("agent-1.retired")).expect("the retired marker");
    app.app.services.sync_keys().await.expect("sync");

    assert_eq!(keys(&app, &app.admin, "agent").await, statuses(&[(1, "active"), (2, "active")]));
    let back = audit(&app, &app.admin, "action=key.reactivated&subject=agent:1").await;
    assert_eq!(back.len(), 1, "{back:?}");
    assert_eq!(back[0]["details"]["status"], "active");
    assert_eq!(audit(&app, &app.admin, "action=key.retired&subject=agent:1").await.len(), 1, "retired once only");
}

#[tokio::test]
async fn a_key_change_the_audit_log_missed_is_recorded_at_the_next_sync() {
    let app = TestApp::new().await;
    // The ring changes (as the keys API does first) but its audit write never happens.
    let kid = app.app.services.env.agent_keys.rotate().expect("rotate");
    assert!(audit(&app, &app.admin, &format!("action=key.added&subject=agent:{kid}")).await.is_empty());

    app.app.services.sync_keys().await.expect("sync");
    let added = audit(&app, &app.admin, &format!("action=key.added&subject=agent:{kid}")).await;
    assert_eq!(added.len(), 1, "{added:?}");
    app.app.services.sync_keys().await.expect("sync again");
    assert_eq!(audit(&app, &app.admin, &format!("action=key.added&subject=agent:{kid}")).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_sync_that_began_before_an_admin_retired_a_key_does_not_bring_it_back() {
    let app = TestApp::new().await;
    app.post("/v1/keys/rotate", &app.admin, json!({"purpose": "agent"})).await.ok();
    let services = app.app.services.clone();
    // Busy read connections hold the sync between its look at the ring and its look at the log.
    let busy: Vec<_> = (0..16)
        .map(|_| {
            let readers = services.readers.clone();
            tokio::spawn(async move {
                readers
                    .read(|_| {
                        std::thread::sleep(std::time::Duration::from_millis(300));
                        Ok(())
                    })
                    .await
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    let sync = tokio::spawn({
        let services = services.clone();
        async move { services.sync_keys().await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    app.post("/v1/keys/1/retire", &app.admin, json!({"purpose": "agent"})).await.ok();
    sync.await.expect("task").expect("sync");
    for read in busy {
        read.await.expect("task").expect("read");
    }

    let history: Vec<String> = audit(&app, &app.admin, "subject=agent:1")
        .await
        .iter()
        .map(|e| format!("{} by {}", e["action"].as_str().unwrap_or("?"), e["actor"]["kind"].as_str().unwrap_or("?")))
        .collect();
    assert!(history.iter().all(|h| !h.starts_with("key.reactivated")), "{history:?}");
    assert!(history.contains(&"key.retired by admin".to_owned()), "{history:?}");
    assert_eq!(keys(&app, &app.admin, "agent").await, statuses(&[(1, "retired"), (2, "active")]));
}

#[tokio::test]
async fn the_only_active_key_of_a_fresh_instance_cannot_be_retired() {
    let app = TestApp::new().await;
    app.post("/v1/keys/1/retire", &app.admin, json!({"purpose": "agent"})).await.problem(409, "conflict");
    app.post("/v1/keys/1/retire", &app.admin, json!({"purpose": "api"})).await.problem(409, "conflict");
    assert_eq!(keys(&app, &app.admin, "agent").await, statuses(&[(1, "active")]));
    assert_eq!(keys(&app, &app.admin, "api").await, statuses(&[(1, "active")]));
    assert!(audit(&app, &app.admin, "action=key.retired").await.is_empty());
}

#[tokio::test]
async fn retiring_the_api_key_ends_credentials_minted_under_it_and_key_statuses_survive_a_restart() {
    let app = TestApp::new().await;
    let old_verifier = app.verifier().await;
    assert_eq!(kid_of(&old_verifier), 1);
    assert_eq!(kid_of(&app.admin), 1);

    app.post("/v1/keys/rotate", &app.admin, json!({"purpose": "api"})).await.ok();
    assert_eq!(keys(&app, &app.admin, "api").await, statuses(&[(1, "active"), (2, "active")]));
    // Credentials minted before the retirement but after the rotation are under the new key.
    let admin = app.credential(json!({"role": "admin"})).await;
    let new_verifier = app.verifier().await;
    assert_eq!(kid_of(&admin), 2);
    assert_eq!(kid_of(&new_verifier), 2);
    app.get("/v1/keys", &old_verifier).await.ok();

    app.post("/v1/keys/1/retire", &admin, json!({"purpose": "api"})).await.ok();
    app.get("/v1/keys", &old_verifier).await.problem(401, "unauthenticated");
    app.get("/v1/keys", &app.admin).await.problem(401, "unauthenticated");
    app.get("/v1/keys", &new_verifier).await.ok();
    assert_eq!(keys(&app, &admin, "api").await, statuses(&[(1, "retired"), (2, "active")]));
    assert_eq!(audit(&app, &admin, "action=key.added&subject=api:2").await.len(), 1);
    assert_eq!(audit(&app, &admin, "action=key.retired&subject=api:1").await.len(), 1);

    // Agent keys too, so the restart has both purposes to keep.
    app.post("/v1/keys/rotate", &admin, json!({"purpose": "agent"})).await.ok();
    app.post("/v1/keys/1/retire", &admin, json!({})).await.ok();
    assert_eq!(keys(&app, &admin, "agent").await, statuses(&[(1, "retired"), (2, "active")]));
    let head = app.app.services.writer_head_seq().await.expect("head");

    let app = app.restart().await;
    assert_eq!(keys(&app, &admin, "agent").await, statuses(&[(1, "retired"), (2, "active")]));
    assert_eq!(keys(&app, &admin, "api").await, statuses(&[(1, "retired"), (2, "active")]));
    app.get("/v1/keys", &old_verifier).await.problem(401, "unauthenticated");
    app.get("/v1/keys", &new_verifier).await.ok();
    assert_eq!(
        app.app.services.writer_head_seq().await.expect("head"),
        head,
        "a restart with unchanged key files records nothing"
    );
}

#[tokio::test]
async fn key_files_changed_beside_a_running_instance_are_picked_up_by_sync_and_audited_once() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    let old = open(&app, &world, &["mail:read"], None).await;
    let old_token = text(&old["token"]);

    // What `tether keys rotate --purpose agent` does: a second ring on the same files.
    let files = KeyRing::load_or_create(&app.dir.path().join("keys"), KeyPurpose::Agent).expect("key files");
    assert_eq!(files.rotate().expect("rotate"), 2);
    assert_eq!(keys(&app, &app.admin, "agent").await, statuses(&[(1, "active")]), "not seen before a sync");

    app.app.services.sync_keys().await.expect("sync");
    assert_eq!(keys(&app, &app.admin, "agent").await, statuses(&[(1, "active"), (2, "active")]));
    let added = audit(&app, &app.admin, "action=key.added&subject=agent:2").await;
    assert_eq!(added.len(), 1, "{added:?}");
    assert_eq!(added[0]["actor"]["kind"], "system");
    let new_token = text(&open(&app, &world, &["mail:read"], None).await["token"]);
    assert_eq!(kid_of(&new_token), 2);

    let head = app.app.services.writer_head_seq().await.expect("head");
    app.app.services.sync_keys().await.expect("sync again");
    assert_eq!(app.app.services.writer_head_seq().await.expect("head"), head, "an unchanged sync writes nothing");

    // `tether keys retire 1 --purpose agent`.
    files.retire(1).expect("retire");
    assert_eq!(app.authorize(&verifier, &old_token, "mail:read").await.0, "allow", "not retired before a sync");
    app.app.services.sync_keys().await.expect("sync");
    assert_eq!(keys(&app, &app.admin, "agent").await, statuses(&[(1, "retired"), (2, "active")]));
    assert_eq!(app.authorize(&verifier, &old_token, "mail:read").await, ("deny".into(), "unknown_key".into()));
    assert_eq!(app.authorize(&verifier, &new_token, "mail:read").await, ("allow".into(), "allowed".into()));
    let retired = audit(&app, &app.admin, "action=key.retired&subject=agent:1").await;
    assert_eq!(retired.len(), 1, "{retired:?}");

    let head = app.app.services.writer_head_seq().await.expect("head");
    app.app.services.sync_keys().await.expect("sync again");
    assert_eq!(app.app.services.writer_head_seq().await.expect("head"), head);
    assert_eq!(audit(&app, &app.admin, "action=key.retired&subject=agent:1").await.len(), 1);
    assert_eq!(audit(&app, &app.admin, "action=key.added&subject=agent:2").await.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Step-up

#[tokio::test]
async fn a_token_older_than_five_minutes_needs_reauthentication_for_an_admin_scope_but_not_for_others() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let scopes = ["repo:read", "repo:admin"];
    let world = app.world(&scopes, &scopes).await;
    let opened = open(&app, &world, &scopes, Some(4 * 3600)).await;
    let session = text(&opened["session"]["id"]);
    let token = text(&opened["token"]);
    assert_eq!(app.authorize(&verifier, &token, "repo:admin").await, ("allow".into(), "allowed".into()));

    app.clock.advance_seconds(301);
    assert_eq!(
        app.authorize(&verifier, &token, "repo:admin").await,
        ("deny".into(), "reauthentication_required".into())
    );
    assert_eq!(app.authorize(&verifier, &token, "repo:read").await, ("allow".into(), "allowed".into()));

    let refreshed = refresh(&app, &world.platform.credential, &session, &text(&opened["refresh_token"])).await;
    let fresh = text(&refreshed.ok()["token"]);
    assert_eq!(app.authorize(&verifier, &fresh, "repo:admin").await, ("allow".into(), "allowed".into()));
    assert_eq!(
        app.authorize(&verifier, &token, "repo:admin").await,
        ("deny".into(), "reauthentication_required".into()),
        "the old token stays too old"
    );
}

// ---------------------------------------------------------------------------------------------
// Sub-agent chains

#[tokio::test]
async fn a_sub_agent_token_is_allowed_and_introspection_shows_the_agent_chain() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let scopes = ["mail:read", "mail:send"];
    let world = app.world(&scopes, &scopes).await;
    let child_agent = app.agent(&world.platform, &scopes).await;
    let child_delegation =
        app.delegation(&world.platform, &world.user, &child_agent, &world.integration, &["mail:read"]).await;
    let parent = open(&app, &world, &scopes, None).await;
    let parent_session = text(&parent["session"]["id"]);

    let child = app
        .post(
            "/v1/sessions",
            &world.platform.credential,
            json!({"delegation_id": child_delegation, "scopes": ["mail:read"], "parent_session_id": parent_session}),
        )
        .await;
    let child = child.ok();
    assert_eq!(child["session"]["parent_session_id"], parent_session.as_str());
    assert_eq!(child["session"]["agent_id"], child_agent.as_str());
    let child_token = text(&child["token"]);
    assert_eq!(app.authorize(&verifier, &child_token, "mail:read").await, ("allow".into(), "allowed".into()));

    let introspected = app
        .request(
            Method::POST,
            "/oauth2/introspect",
            Some(&verifier),
            Some("application/x-www-form-urlencoded"),
            Body::from(format!("token={}", form_encode(&child_token))),
        )
        .await;
    let body = introspected.ok();
    assert_eq!(body["active"], true, "{body}");
    assert_eq!(body["sub"], world.user.as_str());
    assert_eq!(body["act"]["sub"], child_agent.as_str(), "{body}");
    assert_eq!(body["act"]["act"]["sub"], world.agent.as_str(), "{body}");
    assert_eq!(body["act"]["act"].get("act"), None, "the parent is a top-level session: {body}");
}

// ---------------------------------------------------------------------------------------------
// The revocation feed

#[tokio::test]
async fn the_revocation_feed_lists_only_unexpired_tokens_of_a_revoked_session_and_purging_empties_it() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    let opened = open(&app, &world, &["mail:read"], Some(4 * 3600)).await;
    let session = text(&opened["session"]["id"]);

    // 30 refreshes a minute apart: by the last one, the first 16 tokens (the session's own
    // included) have expired.
    const REFRESHES: usize = 30;
    let mut refresh_token = text(&opened["refresh_token"]);
    let mut expiries = vec![text(&opened["token_expires_at"])];
    for _ in 0..REFRESHES {
        app.clock.advance_seconds(60);
        let refreshed = refresh(&app, &world.platform.credential, &session, &refresh_token).await;
        refresh_token = text(&refreshed.ok()["refresh_token"]);
        expiries.push(text(&refreshed.body["token_expires_at"]));
    }
    assert!(feed_for(&app, &verifier, &session).await.is_empty(), "an active session has nothing on the feed");

    app.post(&format!("/v1/sessions/{session}/revoke"), &world.platform.credential, json!({"reason": "done"}))
        .await
        .ok();
    let before = app.clock.now();
    let entries = feed_for(&app, &verifier, &session).await;
    for entry in &entries {
        assert!(time(&entry["expires_at"]) > before, "an expired token on the feed: {entry}");
    }
    let mut listed: Vec<String> = entries.iter().map(|e| text(&e["expires_at"])).collect();
    listed.sort();
    let live: Vec<String> = expiries[16..].to_vec();
    assert_eq!(live.len(), 15);
    assert_eq!(listed, live, "exactly the revoked session's unexpired tokens");
    let mut ids: Vec<String> = entries.iter().map(|e| text(&e["revocation_id"])).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), entries.len(), "one entry per token");

    // Rows kept in the database (read with a time in the past, so expiry filters nothing).
    assert_eq!(stored_feed_rows(&app, &session).await, 15);

    app.clock.advance_seconds(901);
    assert!(feed_for(&app, &verifier, &session).await.is_empty());
    app.app.services.purge_expired().await;
    assert!(feed_for(&app, &verifier, &session).await.is_empty());
    assert_eq!(stored_feed_rows(&app, &session).await, 0, "purging drops the expired entries themselves");
}
