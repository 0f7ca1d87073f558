//! Every cascade trigger of DESIGN.md against a scene with bystanders: the receipt is exact, each
//! revoked session is audited under the trigger and denied at once, everything else is untouched,
//! a repeated trigger is harmless, and while a link is inactive no session can be opened.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::helpers::{receipt_reasons, Answer, Opened, Scene, TestApp, SCENE_SCOPES};

/// What a trigger must revoke: scene session name → the reasons accepted for it. Two reasons are
/// accepted only for a sub-agent session the trigger reaches both itself and through its parent.
#[derive(Default)]
struct Expect(Vec<(&'static str, Vec<String>)>);

impl Expect {
    /// Sessions the trigger reaches itself, with exactly `reason`.
    fn direct(mut self, names: &[&'static str], reason: &str) -> Self {
        self.0.extend(names.iter().map(|n| (*n, vec![reason.to_owned()])));
        self
    }

    /// Sub-agent sessions reached only through a revoked parent.
    fn via_parent(self, names: &[&'static str]) -> Self {
        self.direct(names, "parent_session_revoked")
    }

    /// Sub-agent sessions reached both ways: either reason is a true account.
    fn either(mut self, names: &[&'static str], reason: &str) -> Self {
        self.0.extend(names.iter().map(|n| (*n, vec![reason.to_owned(), "parent_session_revoked".to_owned()])));
        self
    }

    fn names(&self) -> BTreeSet<&'static str> {
        self.0.iter().map(|(n, _)| *n).collect()
    }
}

/// Every session of a user-wide trigger: the user's own sessions with `reason`; their sub-agent
/// sessions are the user's too and their parents are revoked as well.
fn user_wide(reason: &str) -> Expect {
    Expect::default().direct(&["u1", "u2", "u3", "u4", "u5"], reason).either(&["u1c", "u1cc", "u3c"], reason)
}

/// Asserts a trigger's whole effect and returns its cause seq:
/// - the receipt lists exactly the expected sessions, once each, with an accepted reason and the
///   session's own user, agent and integration;
/// - the audit range ends at the chain head, which verifies;
/// - each revoked session has one `session.revoked` event caused by the trigger (or is the
///   trigger itself), carrying the same reason and recorded as the session's `revoked_by_seq`;
/// - each revoked session reads `revoked` and denies with `session_revoked`;
/// - every other scene session not in `already` (revoked earlier) reads `active` and allows.
async fn assert_cascade(
    app: &TestApp,
    scene: &Scene,
    verifier: &str,
    receipt: &Value,
    expected: &Expect,
    already: &[&str],
) -> i64 {
    let name_of: BTreeMap<&str, &str> = scene.sessions.iter().map(|(n, s)| (s.id.as_str(), *n)).collect();
    let named = |ids: &mut dyn Iterator<Item = &String>| -> BTreeSet<String> {
        ids.map(|id| name_of.get(id.as_str()).map_or_else(|| id.clone(), |n| (*n).to_owned())).collect()
    };
    let cause = receipt["cause"]["seq"].as_i64().unwrap_or_else(|| panic!("receipt without cause: {receipt}"));
    let reasons = receipt_reasons(receipt);
    let want: BTreeMap<String, (&str, &Vec<String>)> =
        expected.0.iter().map(|(n, r)| (scene.s(n).id.clone(), (*n, r))).collect();
    assert_eq!(
        named(&mut reasons.keys()),
        named(&mut want.keys()),
        "the receipt's revoked sessions (left) differ from the expected ones (right): {receipt}"
    );
    for (id, reason) in &reasons {
        let (name, accepted) = want[id];
        assert!(accepted.contains(reason), "{name} revoked with reason {reason}; expected one of {accepted:?}");
    }

    // The audit range ends at the head, before anything else is written.
    let verify = app.get("/v1/audit/verify", &app.admin).await;
    assert_eq!(verify.ok()["ok"], true, "{}", verify.text);
    assert_eq!(receipt["audit"]["from_seq"].as_i64(), Some(cause), "{receipt}");
    assert_eq!(receipt["audit"]["to_seq"], verify.body["head_seq"], "{receipt}");
    assert_eq!(receipt["audit"]["head_hash"], verify.body["head_hash"], "{receipt}");

    // One `session.revoked` event per session, caused by the trigger (or the trigger itself).
    let mut events: BTreeMap<String, Value> = BTreeMap::new();
    for event in app.all_pages(&format!("/v1/audit?cause_seq={cause}&action=session.revoked")).await {
        assert_eq!(event["subject"]["kind"], "session", "{event}");
        let id = event["subject"]["id"].as_str().expect("subject id").to_owned();
        assert!(events.insert(id.clone(), event).is_none(), "two session.revoked events for {id} under {cause}");
    }
    if receipt["cause"]["action"] == "session.revoked" {
        let first = app.get(&format!("/v1/audit?after_seq={}&limit=1", cause - 1), &app.admin).await;
        let event = first.ok()["items"][0].clone();
        assert_eq!(event["seq"].as_i64(), Some(cause), "{event}");
        assert_eq!(event["action"], "session.revoked", "{event}");
        assert!(event["cause_seq"].is_null(), "a direct revocation is its own cause: {event}");
        let id = event["subject"]["id"].as_str().expect("subject id").to_owned();
        assert_eq!(receipt["cause"]["subject"]["id"], id.as_str());
        assert!(events.insert(id, event).is_none(), "the trigger's subject was revoked twice");
    }
    assert_eq!(
        named(&mut events.keys()),
        named(&mut reasons.keys()),
        "sessions with a session.revoked event under {cause} (left) differ from the receipt (right)"
    );

    for (id, reason) in &reasons {
        let name = want[id].0;
        let event = &events[id];
        assert_eq!(event["reason"].as_str(), Some(reason.as_str()), "{name}'s event: {event}");
        let session = app.session_json(id).await;
        assert_eq!(session["status"], "revoked", "{name}: {session}");
        assert_eq!(session["revoked_reason"].as_str(), Some(reason.as_str()), "{name}: {session}");
        assert_eq!(session["revoked_by_seq"], event["seq"], "{name}: {session}");
        let entry = receipt["revoked"]
            .as_array()
            .and_then(|r| r.iter().find(|e| e["session_id"] == id.as_str()))
            .expect("receipt entry");
        for key in ["user_id", "agent_id", "integration_id"] {
            assert_eq!(entry[key], session[key], "{name}'s receipt entry names the wrong {key}");
        }
        // Events under one trigger share encoded details per delegation: each must still name
        // its own session's objects.
        for key in ["user_id", "agent_id", "integration_id", "delegation_id", "platform_id"] {
            assert_eq!(event["details"][key], session[key], "{name}'s event names the wrong {key}: {event}");
        }
    }

    // Bystanders are untouched; the revoked are denied on the very next call.
    let expected_names = expected.names();
    for name in scene.names() {
        if expected_names.contains(name) || already.contains(&name) {
            continue;
        }
        let s = scene.s(name);
        assert_eq!(app.session_status(&s.id).await, "active", "bystander {name} was touched");
        assert_eq!(
            app.authorize(verifier, &s.token, &s.scope).await,
            ("allow".into(), "allowed".into()),
            "bystander {name} no longer allows"
        );
    }
    for name in &expected_names {
        let s = scene.s(name);
        assert_eq!(
            app.authorize(verifier, &s.token, &s.scope).await,
            ("deny".into(), "session_revoked".into()),
            "revoked {name} is still honoured"
        );
    }
    cause
}

/// Repeats a trigger: nothing revoked, nothing written.
async fn assert_repeat_is_harmless(app: &TestApp, path: &str, credential: &str) {
    let before = app.head_seq().await;
    let receipt = app.trigger(path, credential, json!({"reason": "again"})).await;
    assert_eq!(receipt["revoked"], json!([]), "a repeated trigger revoked sessions: {receipt}");
    assert_eq!(app.head_seq().await, before, "a repeated trigger wrote audit events: {receipt}");
    assert_eq!(receipt["audit"]["to_seq"].as_i64(), Some(before), "{receipt}");
    assert_eq!(receipt["audit"]["from_seq"].as_i64(), Some(before + 1), "an empty range: {receipt}");
}

/// A 409 `conflict` whose detail names `id` and says `what` of it.
#[track_caller]
fn assert_refused(answer: &Answer, id: &str, what: &str) {
    let detail = answer.problem(409, "conflict");
    assert!(detail.contains(id) && detail.contains(what), "the refusal should name {id} as {what}: {detail}");
}

async fn assert_delegations(app: &TestApp, scene: &Scene, revoked: &[&str]) {
    for (name, id) in &scene.delegations {
        let d = app.get(&format!("/v1/delegations/{id}"), &app.admin).await;
        let want = if revoked.contains(name) { "revoked" } else { "active" };
        assert_eq!(d.ok()["status"], want, "delegation {name}: {}", d.text);
    }
}

fn assert_cause(receipt: &Value, action: &str, kind: &str, id: &str) {
    assert_eq!(receipt["cause"]["action"], action, "{receipt}");
    assert_eq!(receipt["cause"]["subject"], json!({"kind": kind, "id": id}), "{receipt}");
}

fn scopes_of(value: &Value) -> BTreeSet<String> {
    value["scopes"].as_array().expect("scopes").iter().map(|s| s.as_str().expect("scope").to_owned()).collect()
}

#[tokio::test]
async fn disabling_a_user_revokes_every_session_of_theirs_and_nothing_else() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let scene = Scene::new(&app).await;
    let path = format!("/v1/users/{}/disable", scene.u);

    let receipt = app.trigger(&path, &app.admin, json!({"reason": "offboarded"})).await;
    assert_cause(&receipt, "user.disabled", "user", &scene.u);
    assert_cascade(&app, &scene, &verifier, &receipt, &user_wide("user_disabled"), &[]).await;
    assert_delegations(&app, &scene, &[]).await;
    assert_eq!(app.get(&format!("/v1/users/{}", scene.u), &app.admin).await.ok()["status"], "disabled");

    assert_repeat_is_harmless(&app, &path, &app.admin).await;

    // While disabled, no session opens on the user's (still active) delegations.
    for d in ["u_a1_i1", "u_b1_j1"] {
        let platform = if d == "u_b1_j1" { &scene.p2 } else { &scene.p1 };
        let refused =
            app.open_session(&platform.credential, json!({"delegation_id": scene.d(d), "scopes": ["mail:read"]})).await;
        assert_refused(&refused, &scene.u, "disabled");
    }

    // Enabled again: new sessions open; the old ones stay revoked.
    let enabled = app.post(&format!("/v1/users/{}/enable", scene.u), &app.admin, json!({})).await;
    assert_eq!(enabled.ok()["status"], "active");
    let fresh = app.opened(&scene.p1, scene.d("u_a1_i1"), &["mail:read"], None).await;
    assert_eq!(app.authorize(&verifier, &fresh.token, "mail:read").await.0, "allow");
    let old = scene.s("u1");
    assert_eq!(app.session_status(&old.id).await, "revoked");
    assert_eq!(app.authorize(&verifier, &old.token, &old.scope).await, ("deny".into(), "session_revoked".into()));
}

#[tokio::test]
async fn each_lifecycle_event_revokes_every_session_of_the_user_who_stays_active() {
    for kind in ["password_reset", "credential_compromised", "mfa_reset"] {
        let app = TestApp::new().await;
        let verifier = app.verifier().await;
        let scene = Scene::new(&app).await;
        let path = format!("/v1/users/{}/lifecycle-events", scene.u);

        let receipt = app.trigger(&path, &app.admin, json!({"type": kind})).await;
        assert_cause(&receipt, &format!("user.{kind}"), "user", &scene.u);
        assert_cascade(&app, &scene, &verifier, &receipt, &user_wide(kind), &[]).await;
        assert_delegations(&app, &scene, &[]).await;
        assert_eq!(app.get(&format!("/v1/users/{}", scene.u), &app.admin).await.ok()["status"], "active");

        // The same event again is recorded but finds nothing left to revoke.
        let again = app.trigger(&path, &app.admin, json!({"type": kind})).await;
        assert_eq!(again["revoked"], json!([]), "{kind} repeated: {again}");
        assert_eq!(again["cause"]["action"], format!("user.{kind}"));

        // The user is still active: a new session opens and allows.
        let fresh = app.opened(&scene.p1, scene.d("u_a2_i1"), &["mail:send"], None).await;
        assert_eq!(app.authorize(&verifier, &fresh.token, "mail:send").await.0, "allow", "{kind}");
    }
}

#[tokio::test]
async fn signing_out_all_agents_revokes_the_users_sessions_but_keeps_the_user_and_their_consent() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let scene = Scene::new(&app).await;
    let me = app.user_credential(&scene.u).await;
    let path = format!("/v1/users/{}/sign-out-all", scene.u);

    let receipt = app.trigger(&path, &me, json!({})).await;
    assert_cause(&receipt, "user.signed_out_all", "user", &scene.u);
    assert_cascade(&app, &scene, &verifier, &receipt, &user_wide("sign_out_all"), &[]).await;
    assert_delegations(&app, &scene, &[]).await;
    assert_eq!(app.get(&format!("/v1/users/{}", scene.u), &app.admin).await.ok()["status"], "active");

    let again = app.trigger(&path, &me, json!({})).await;
    assert_eq!(again["revoked"], json!([]), "{again}");

    let fresh = app.opened(&scene.p1, scene.d("u_a1_i1"), &["cal:read"], None).await;
    assert_eq!(app.authorize(&verifier, &fresh.token, "cal:read").await.0, "allow");
}

#[tokio::test]
async fn narrowing_permissions_revokes_only_sessions_holding_a_removed_scope_and_narrows_consent() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let mut scene = Scene::new(&app).await;

    let receipt = app.set_permissions(&scene.u, &["mail:read", "cal:read"]).await;
    assert_cause(&receipt, "user.permissions_changed", "user", &scene.u);
    let expected = Expect::default().direct(&["u2", "u3"], "permission_removed:mail:send").via_parent(&["u3c"]);
    assert_cascade(&app, &scene, &verifier, &receipt, &expected, &[]).await;
    assert_delegations(&app, &scene, &[]).await;

    // The user's delegations shrink to the new permissions; another user's stay whole.
    let narrowed: BTreeSet<String> = ["cal:read", "mail:read"].map(String::from).into();
    let whole: BTreeSet<String> = SCENE_SCOPES.map(String::from).into();
    for (name, id) in &scene.delegations {
        let d = app.get(&format!("/v1/delegations/{id}"), &app.admin).await;
        let want = if name.starts_with("u_") { &narrowed } else { &whole };
        assert_eq!(&scopes_of(d.ok()), want, "delegation {name}");
    }
    // Each narrowing is on record with the ids its platform's and user's webhooks filter on.
    let d = app.get(&format!("/v1/delegations/{}", scene.d("u_a1_i1")), &app.admin).await;
    let d = d.ok().clone();
    let events =
        app.get(&format!("/v1/audit?action=delegation.narrowed&subject={}", scene.d("u_a1_i1")), &app.admin).await;
    let narrowing = &events.ok()["items"][0];
    assert_eq!(narrowing["details"]["platform_id"], d["platform_id"], "{narrowing}");
    assert_eq!(narrowing["details"]["user_id"], scene.u.as_str(), "{narrowing}");
    let refused = app
        .open_session(&scene.p1.credential, json!({"delegation_id": scene.d("u_a1_i1"), "scopes": ["mail:send"]}))
        .await;
    assert!(refused.problem(403, "scope_not_grantable").contains("mail:send"));

    // The same permissions again change nothing and write nothing.
    let before = app.head_seq().await;
    let again = app.set_permissions(&scene.u, &["cal:read", "mail:read"]).await;
    assert_eq!(again["revoked"], json!([]), "{again}");
    assert_eq!(app.head_seq().await, before, "an unchanged permission set wrote events");

    // Widening revokes nothing and does not widen consent.
    let widened = app.set_permissions(&scene.u, &SCENE_SCOPES).await;
    assert_eq!(widened["revoked"], json!([]), "{widened}");
    let d = app.get(&format!("/v1/delegations/{}", scene.d("u_a1_i1")), &app.admin).await;
    assert_eq!(scopes_of(d.ok()), narrowed, "consent was widened with the permissions");

    // Removing a second scope reaches the sessions holding it, sub-agent sessions included.
    let fresh = app.opened(&scene.p1, scene.d("u_a1_i2"), &["mail:read", "cal:read"], None).await;
    scene.sessions.insert("fresh", fresh);
    let receipt = app.set_permissions(&scene.u, &["cal:read", "mail:send"]).await;
    let expected = Expect::default()
        .direct(&["u1", "u5", "fresh"], "permission_removed:mail:read")
        .either(&["u1c", "u1cc"], "permission_removed:mail:read");
    assert_cascade(&app, &scene, &verifier, &receipt, &expected, &["u2", "u3", "u3c"]).await;
    let d = app.get(&format!("/v1/delegations/{}", scene.d("u_a1_i1")), &app.admin).await;
    assert_eq!(scopes_of(d.ok()), ["cal:read".to_owned()].into(), "consent not narrowed again");
}

#[tokio::test]
async fn disconnecting_an_agent_revokes_the_users_consent_to_it_and_its_sessions() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let scene = Scene::new(&app).await;
    let me = app.user_credential(&scene.u).await;
    let path = format!("/v1/users/{}/agents/{}/disconnect", scene.u, scene.a1);

    let receipt = app.trigger(&path, &me, json!({"reason": "no longer used"})).await;
    assert_cause(&receipt, "user.agent_disconnected", "user", &scene.u);
    // u1c and u1cc act through agent a2: only their parent u1 ties them to a1.
    let expected = Expect::default().direct(&["u1", "u2", "u4"], "agent_disconnected").via_parent(&["u1c", "u1cc"]);
    assert_cascade(&app, &scene, &verifier, &receipt, &expected, &[]).await;
    assert_delegations(&app, &scene, &["u_a1_i1", "u_a1_i2"]).await;

    assert_repeat_is_harmless(&app, &path, &me).await;
    let refused = app
        .open_session(&scene.p1.credential, json!({"delegation_id": scene.d("u_a1_i1"), "scopes": ["mail:read"]}))
        .await;
    assert_refused(&refused, scene.d("u_a1_i1"), "revoked");

    // The agent itself is fine: renewed consent opens sessions again.
    let renewed = app.delegation(&scene.p1, &scene.u, &scene.a1, &scene.i1, &["mail:read"]).await;
    let fresh = app.opened(&scene.p1, &renewed, &["mail:read"], None).await;
    assert_eq!(app.authorize(&verifier, &fresh.token, "mail:read").await.0, "allow");
}

#[tokio::test]
async fn disconnecting_an_integration_revokes_the_users_consent_through_it_and_its_sessions() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let scene = Scene::new(&app).await;
    let me = app.user_credential(&scene.u).await;
    let path = format!("/v1/users/{}/integrations/{}/disconnect", scene.u, scene.i1);

    let receipt = app.trigger(&path, &me, json!({})).await;
    assert_cause(&receipt, "user.integration_disconnected", "user", &scene.u);
    let expected = Expect::default()
        .direct(&["u1", "u2", "u3"], "integration_disconnected")
        .either(&["u1c", "u1cc", "u3c"], "integration_disconnected");
    assert_cascade(&app, &scene, &verifier, &receipt, &expected, &[]).await;
    assert_delegations(&app, &scene, &["u_a1_i1", "u_a2_i1"]).await;

    assert_repeat_is_harmless(&app, &path, &me).await;
    let refused = app
        .open_session(&scene.p1.credential, json!({"delegation_id": scene.d("u_a2_i1"), "scopes": ["mail:read"]}))
        .await;
    assert_refused(&refused, scene.d("u_a2_i1"), "revoked");
}

#[tokio::test]
async fn revoking_a_delegation_revokes_its_sessions_and_their_sub_agent_sessions_only() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let scene = Scene::new(&app).await;
    let path = format!("/v1/delegations/{}/revoke", scene.d("u_a2_i1"));

    let receipt = app.trigger(&path, &scene.p1.credential, json!({"reason": "consent withdrawn"})).await;
    assert_cause(&receipt, "delegation.revoked", "delegation", scene.d("u_a2_i1"));
    // u1c is on this delegation, its parent u1 is not: u1 stays active.
    let expected =
        Expect::default().direct(&["u3", "u1c"], "delegation_revoked").either(&["u1cc", "u3c"], "delegation_revoked");
    assert_cascade(&app, &scene, &verifier, &receipt, &expected, &[]).await;
    assert_delegations(&app, &scene, &["u_a2_i1"]).await;

    assert_repeat_is_harmless(&app, &path, &scene.p1.credential).await;
    let refused = app
        .open_session(&scene.p1.credential, json!({"delegation_id": scene.d("u_a2_i1"), "scopes": ["mail:read"]}))
        .await;
    assert_refused(&refused, scene.d("u_a2_i1"), "revoked");
}

#[tokio::test]
async fn disabling_an_integration_revokes_every_delegation_through_it_for_every_user() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let scene = Scene::new(&app).await;
    let path = format!("/v1/integrations/{}/disable", scene.i1);

    let receipt = app.trigger(&path, &scene.p1.credential, json!({"reason": "connector retired"})).await;
    assert_cause(&receipt, "integration.disabled", "integration", &scene.i1);
    let expected = Expect::default()
        .direct(&["u1", "u2", "u3", "v1"], "integration_disabled")
        .either(&["u1c", "u1cc", "u3c"], "integration_disabled");
    assert_cascade(&app, &scene, &verifier, &receipt, &expected, &[]).await;
    assert_delegations(&app, &scene, &["u_a1_i1", "u_a2_i1", "v_a1_i1"]).await;
    assert_eq!(app.get(&format!("/v1/integrations/{}", scene.i1), &app.admin).await.ok()["status"], "disabled");

    assert_repeat_is_harmless(&app, &path, &scene.p1.credential).await;
    let refused = app
        .post(
            "/v1/delegations",
            &scene.p1.credential,
            json!({"user_id": scene.u, "agent_id": scene.a1, "integration_id": scene.i1, "scopes": ["mail:read"]}),
        )
        .await;
    assert_refused(&refused, &scene.i1, "disabled");
    let refused = app
        .open_session(&scene.p1.credential, json!({"delegation_id": scene.d("v_a1_i1"), "scopes": ["mail:read"]}))
        .await;
    assert_refused(&refused, scene.d("v_a1_i1"), "revoked");
}

#[tokio::test]
async fn suspending_an_agent_revokes_all_its_delegations_until_it_resumes() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let scene = Scene::new(&app).await;
    let path = format!("/v1/agents/{}/suspend", scene.a1);

    let receipt = app.trigger(&path, &scene.p1.credential, json!({"reason": "misbehaving"})).await;
    assert_cause(&receipt, "agent.suspended", "agent", &scene.a1);
    let expected = Expect::default().direct(&["u1", "u2", "u4", "v1"], "agent_suspended").via_parent(&["u1c", "u1cc"]);
    assert_cascade(&app, &scene, &verifier, &receipt, &expected, &[]).await;
    assert_delegations(&app, &scene, &["u_a1_i1", "u_a1_i2", "v_a1_i1"]).await;
    assert_eq!(app.get(&format!("/v1/agents/{}", scene.a1), &app.admin).await.ok()["status"], "suspended");

    assert_repeat_is_harmless(&app, &path, &scene.p1.credential).await;
    let new_delegation =
        json!({"user_id": scene.v, "agent_id": scene.a1, "integration_id": scene.i2, "scopes": ["mail:read"]});
    let refused = app.post("/v1/delegations", &scene.p1.credential, new_delegation.clone()).await;
    assert_refused(&refused, &scene.a1, "suspended");
    let refused = app
        .open_session(&scene.p1.credential, json!({"delegation_id": scene.d("u_a1_i1"), "scopes": ["mail:read"]}))
        .await;
    assert_refused(&refused, scene.d("u_a1_i1"), "revoked");

    // Resumed: new consent and sessions work again; nothing revoked comes back.
    let resumed = app.post(&format!("/v1/agents/{}/resume", scene.a1), &scene.p1.credential, json!({})).await;
    assert_eq!(resumed.ok()["status"], "active");
    let delegation = app.post("/v1/delegations", &scene.p1.credential, new_delegation).await;
    let delegation = delegation.ok()["id"].as_str().expect("delegation id").to_owned();
    let fresh = app.opened(&scene.p1, &delegation, &["mail:read"], None).await;
    assert_eq!(app.authorize(&verifier, &fresh.token, "mail:read").await, ("allow".into(), "allowed".into()));
    for name in ["u1", "v1"] {
        let s = scene.s(name);
        assert_eq!(app.authorize(&verifier, &s.token, &s.scope).await.1, "session_revoked", "{name} came back");
    }
    assert_delegations(&app, &scene, &["u_a1_i1", "u_a1_i2", "v_a1_i1"]).await;
}

#[tokio::test]
async fn deregistering_an_agent_revokes_all_its_delegations_for_good() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let scene = Scene::new(&app).await;
    let path = format!("/v1/agents/{}/deregister", scene.a2);

    let receipt = app.trigger(&path, &scene.p1.credential, json!({"reason": "retired"})).await;
    assert_cause(&receipt, "agent.deregistered", "agent", &scene.a2);
    // u1c acts through a2 under u1, which does not: u1 stays active.
    let expected = Expect::default()
        .direct(&["u3", "u1c", "v2"], "agent_deregistered")
        .either(&["u1cc", "u3c"], "agent_deregistered");
    assert_cascade(&app, &scene, &verifier, &receipt, &expected, &[]).await;
    assert_delegations(&app, &scene, &["u_a2_i1", "v_a2_i2"]).await;

    assert_repeat_is_harmless(&app, &path, &scene.p1.credential).await;
    for action in ["resume", "suspend"] {
        let refused = app.post(&format!("/v1/agents/{}/{action}", scene.a2), &scene.p1.credential, json!({})).await;
        assert_refused(&refused, &scene.a2, "deregistered");
    }
    let refused = app
        .post(
            "/v1/delegations",
            &scene.p1.credential,
            json!({"user_id": scene.u, "agent_id": scene.a2, "integration_id": scene.i2, "scopes": ["mail:read"]}),
        )
        .await;
    assert_refused(&refused, &scene.a2, "deregistered");
}

#[tokio::test]
async fn disabling_a_platform_revokes_everything_under_it_and_nothing_on_another_platform() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let scene = Scene::new(&app).await;
    let path = format!("/v1/platforms/{}/disable", scene.p1.id);

    let receipt = app.trigger(&path, &app.admin, json!({"reason": "contract ended"})).await;
    assert_cause(&receipt, "platform.disabled", "platform", &scene.p1.id);
    let expected = Expect::default()
        .direct(&["u1", "u2", "u3", "u4", "v1", "v2"], "platform_disabled")
        .either(&["u1c", "u1cc", "u3c"], "platform_disabled");
    assert_cascade(&app, &scene, &verifier, &receipt, &expected, &[]).await;
    assert_delegations(&app, &scene, &["u_a1_i1", "u_a2_i1", "u_a1_i2", "v_a1_i1", "v_a2_i2"]).await;

    assert_repeat_is_harmless(&app, &path, &app.admin).await;

    // The platform's credentials were revoked with it, caused by the trigger: it can neither
    // write nor read any more.
    let cause = receipt["cause"]["seq"].as_i64().expect("cause seq");
    let revoked = app.get(&format!("/v1/audit?action=credential.revoked&cause_seq={cause}"), &app.admin).await;
    let revoked = revoked.ok()["items"].as_array().expect("items").clone();
    assert_eq!(revoked.len(), 1, "the platform's one credential: {revoked:?}");
    assert_eq!(revoked[0]["reason"], "platform_disabled");
    assert_eq!(revoked[0]["details"]["platform_id"], scene.p1.id.as_str(), "so the platform's webhooks see it");
    let p1_credential = revoked[0]["subject"]["id"].as_str().expect("credential id").to_owned();
    let listed = app.get("/v1/credentials?limit=1000", &app.admin).await.ok().clone();
    for credential in listed["items"].as_array().expect("items") {
        let on_p1 = credential["platform_id"] == scene.p1.id.as_str();
        assert_eq!(credential["revoked_at"].is_null(), !on_p1, "{credential}");
        assert_eq!(credential["id"] == p1_credential.as_str(), on_p1, "{credential}");
    }
    let write = app.post("/v1/agents", &scene.p1.credential, json!({"name": "late", "scopes": ["mail:read"]})).await;
    assert!(write.problem(401, "unauthenticated").contains("revoked"), "{}", write.text);
    let read = app.get(&format!("/v1/platforms/{}", scene.p1.id), &scene.p1.credential).await;
    assert!(read.problem(401, "unauthenticated").contains("revoked"), "{}", read.text);

    // Nothing new under it, even from an admin: not a credential either.
    let refused =
        app.post("/v1/credentials", &app.admin, json!({"role": "platform", "platform_id": scene.p1.id})).await;
    assert_refused(&refused, &scene.p1.id, "disabled");
    let refused = app
        .post("/v1/agents", &app.admin, json!({"name": "late", "scopes": ["mail:read"], "platform_id": scene.p1.id}))
        .await;
    assert_refused(&refused, &scene.p1.id, "disabled");
    let refused = app
        .post(
            "/v1/delegations",
            &app.admin,
            json!({"user_id": scene.u, "agent_id": scene.a1, "integration_id": scene.i1, "scopes": ["mail:read"]}),
        )
        .await;
    assert_refused(&refused, &scene.p1.id, "disabled");
    let refused =
        app.open_session(&app.admin, json!({"delegation_id": scene.d("u_a1_i1"), "scopes": ["mail:read"]})).await;
    assert_refused(&refused, scene.d("u_a1_i1"), "revoked");

    // The other platform carries on.
    let fresh = app.opened(&scene.p2, scene.d("u_b1_j1"), &["mail:send"], None).await;
    assert_eq!(app.authorize(&verifier, &fresh.token, "mail:send").await.0, "allow");
}

#[tokio::test]
async fn revoking_a_session_revokes_its_sub_agent_sessions_recursively_and_nothing_else() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let scene = Scene::new(&app).await;
    let me = app.user_credential(&scene.u).await;
    let path = format!("/v1/sessions/{}/revoke", scene.s("u1").id);

    let receipt = app.trigger(&path, &me, json!({})).await;
    assert_cause(&receipt, "session.revoked", "session", &scene.s("u1").id);
    let expected = Expect::default().direct(&["u1"], "session_revoked").via_parent(&["u1c", "u1cc"]);
    assert_cascade(&app, &scene, &verifier, &receipt, &expected, &[]).await;
    assert_delegations(&app, &scene, &[]).await;

    assert_repeat_is_harmless(&app, &path, &me).await;
    let refused = app
        .open_session(
            &scene.p1.credential,
            json!({"delegation_id": scene.d("u_a1_i1"), "scopes": ["mail:read"], "parent_session_id": scene.s("u1").id}),
        )
        .await;
    assert_refused(&refused, &scene.s("u1").id, "revoked");

    // A leaf: only itself; its parent stays.
    let receipt =
        app.trigger(&format!("/v1/sessions/{}/revoke", scene.s("u3c").id), &scene.p1.credential, json!({})).await;
    let expected = Expect::default().direct(&["u3c"], "session_revoked");
    assert_cascade(&app, &scene, &verifier, &receipt, &expected, &["u1", "u1c", "u1cc"]).await;
}

/// The session an open answered, holding `scope`.
fn opened_from(answer: &Answer, scope: &str) -> Opened {
    let body = answer.ok();
    Opened {
        id: body["session"]["id"].as_str().expect("session id").to_owned(),
        token: body["token"].as_str().expect("token").to_owned(),
        scope: scope.to_owned(),
    }
}

#[tokio::test]
async fn sub_agent_sessions_stay_within_their_parent_and_nest_at_most_four_deep() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let mut scene = Scene::new(&app).await;
    let p1 = scene.p1.credential.clone();
    let root = app
        .open_session(
            &p1,
            json!({"delegation_id": scene.d("u_a1_i1"), "scopes": ["mail:read", "mail:send"], "ttl_seconds": 600}),
        )
        .await;
    let root = opened_from(&root, "mail:send");
    let root_expiry = app.session_json(&root.id).await["expires_at"].as_str().expect("expires_at").to_owned();
    // Sub-agents act through another agent (a2), whose delegation grants all three scopes.
    let sub_delegation = scene.d("u_a2_i1").to_owned();
    let sub = |scopes: Value, ttl: i64, parent: &str| json!({"delegation_id": sub_delegation, "scopes": scopes, "ttl_seconds": ttl, "parent_session_id": parent});

    // Scopes: within the parent's, even where the sub-agent's own delegation grants more.
    let refused = app.open_session(&p1, sub(json!(["mail:read", "cal:read"]), 60, &root.id)).await;
    let detail = refused.problem(403, "scope_not_grantable");
    assert!(detail.contains("cal:read") && !detail.contains("mail:read"), "{detail}");

    // Expiry: never past the parent's.
    let long = opened_from(&app.open_session(&p1, sub(json!(["mail:send"]), 3600, &root.id)).await, "mail:send");
    assert_eq!(app.session_json(&long.id).await["expires_at"], root_expiry.as_str(), "outlives its parent");
    let short = opened_from(&app.open_session(&p1, sub(json!(["mail:read"]), 60, &root.id)).await, "mail:read");
    let short_expiry = app.session_json(&short.id).await["expires_at"].as_str().expect("expires_at").to_owned();
    assert!(short_expiry < root_expiry, "{short_expiry} should be before {root_expiry}");

    // Depth: four nested levels below the root, not five.
    let mut chain = vec![root.clone()];
    for _ in 0..4 {
        let parent = chain.last().expect("parent").id.clone();
        chain.push(opened_from(&app.open_session(&p1, sub(json!(["mail:read"]), 600, &parent)).await, "mail:read"));
    }
    let too_deep = app.open_session(&p1, sub(json!(["mail:read"]), 600, &chain[4].id)).await;
    too_deep.problem(409, "conflict");

    // Revoking the root reaches every level and both siblings; the rest of the scene stays.
    for (name, opened) in ["root", "c1", "c2", "c3", "c4"].into_iter().zip(chain) {
        scene.sessions.insert(name, opened);
    }
    scene.sessions.insert("long", long);
    scene.sessions.insert("short", short);
    let receipt = app.trigger(&format!("/v1/sessions/{}/revoke", root.id), &p1, json!({})).await;
    let expected =
        Expect::default().direct(&["root"], "session_revoked").via_parent(&["c1", "c2", "c3", "c4", "long", "short"]);
    assert_cascade(&app, &scene, &verifier, &receipt, &expected, &[]).await;

    // Past the root's expiry its sub-agent sessions are over too, revoked or not.
    let other_root = opened_from(
        &app.open_session(
            &p1,
            json!({"delegation_id": scene.d("u_a1_i1"), "scopes": ["mail:read"], "ttl_seconds": 300}),
        )
        .await,
        "mail:read",
    );
    let other_child =
        opened_from(&app.open_session(&p1, sub(json!(["mail:read"]), 3600, &other_root.id)).await, "mail:read");
    assert_eq!(app.authorize(&verifier, &other_child.token, "mail:read").await.0, "allow");
    app.clock.advance_seconds(301);
    for s in [&other_root, &other_child] {
        assert_eq!(app.session_status(&s.id).await, "expired");
        assert_eq!(app.authorize(&verifier, &s.token, "mail:read").await, ("deny".into(), "session_expired".into()));
    }
}
