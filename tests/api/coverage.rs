//! Coverage reports: after each kind of trigger, GET /v1/audit/coverage?event=SEQ lists every
//! session that was active for the trigger's subject (and their sub-agent sessions), each with the
//! event that revoked it, and no survivors; sessions outside that moment are not counted.

use std::collections::BTreeSet;

use axum::http::Method;
use serde_json::{json, Value};

use crate::helpers::{receipt_reasons, Scene, TestApp};

/// Active sessions for which `base` holds, and their sub-agent sessions recursively, read through
/// the API (independently of any receipt).
async fn reach(app: &TestApp, base: impl Fn(&Value) -> bool) -> BTreeSet<String> {
    let active = app.all_pages("/v1/sessions?status=active").await;
    let mut reached: BTreeSet<String> =
        active.iter().filter(|s| base(s)).map(|s| s["id"].as_str().expect("id").to_owned()).collect();
    loop {
        let before = reached.len();
        for s in &active {
            if s["parent_session_id"].as_str().is_some_and(|p| reached.contains(p)) {
                reached.insert(s["id"].as_str().expect("id").to_owned());
            }
        }
        if reached.len() == before {
            return reached;
        }
    }
}

/// Asserts the coverage report of `cause`: exactly `expected`, each revoked by the trigger or an
/// event it caused (the session's own `revoked_by_seq`), no survivors. Returns the report.
async fn assert_covered(app: &TestApp, auditor: &str, cause: i64, expected: &BTreeSet<String>) -> Value {
    let report = app.get(&format!("/v1/audit/coverage?event={cause}"), auditor).await;
    let report = report.ok().clone();
    assert_eq!(report["event"]["seq"].as_i64(), Some(cause), "{report}");
    assert_eq!(report["survivors"], json!([]), "survivors: {report}");
    let listed = report["sessions"].as_array().expect("sessions");
    let ids: BTreeSet<String> =
        listed.iter().map(|s| s["session_id"].as_str().expect("session_id").to_owned()).collect();
    assert_eq!(ids.len(), listed.len(), "a session listed twice: {report}");
    assert_eq!(&ids, expected, "covered sessions (left) differ from those active for the subject (right)");
    let caused: BTreeSet<i64> = app
        .all_pages(&format!("/v1/audit?cause_seq={cause}"))
        .await
        .iter()
        .map(|e| e["seq"].as_i64().expect("seq"))
        .collect();
    for entry in listed {
        let id = entry["session_id"].as_str().expect("session_id");
        let by = entry["revoked_by_seq"].as_i64().unwrap_or_else(|| panic!("{id} not revoked: {report}"));
        assert!(by == cause || caused.contains(&by), "{id} revoked by {by}, not by {cause} or its effects");
        let session = app.session_json(id).await;
        assert_eq!(session["status"], "revoked", "{session}");
        assert_eq!(session["revoked_by_seq"].as_i64(), Some(by), "{session}");
    }
    report
}

/// The kinds of trigger, each pulled on a fresh [`Scene`].
#[derive(Debug, Clone, Copy)]
enum Kind {
    Lifecycle(&'static str),
    SignOutAll,
    NarrowPermissions,
    DisconnectAgent,
    DisconnectIntegration,
    RevokeDelegation,
    DisableIntegration,
    SuspendAgent,
    DeregisterAgent,
    DisablePlatform,
    RevokeSession,
}

/// Pulls `kind` on a fresh scene and checks its coverage against the sessions that were active
/// for its subject just before.
async fn covered_after(kind: Kind) {
    let app = TestApp::new().await;
    let auditor = app.auditor().await;
    let scene = Scene::new(&app).await;
    let s = |v: &Value, key: &str, want: &str| v[key].as_str() == Some(want);
    let (u, a1, a2, i1, p1) = (&scene.u, &scene.a1, &scene.a2, &scene.i1, &scene.p1.id);
    let (u_a2_i1, u1) = (scene.d("u_a2_i1").to_owned(), scene.s("u1").id.clone());
    let expected = match kind {
        Kind::Lifecycle(_) | Kind::SignOutAll => reach(&app, |v| s(v, "user_id", u)).await,
        Kind::NarrowPermissions => {
            reach(&app, |v| s(v, "user_id", u) && v["scopes"].as_array().expect("scopes").contains(&json!("mail:send")))
                .await
        }
        Kind::DisconnectAgent => reach(&app, |v| s(v, "user_id", u) && s(v, "agent_id", a1)).await,
        Kind::DisconnectIntegration => reach(&app, |v| s(v, "user_id", u) && s(v, "integration_id", i1)).await,
        Kind::RevokeDelegation => reach(&app, |v| s(v, "delegation_id", &u_a2_i1)).await,
        Kind::DisableIntegration => reach(&app, |v| s(v, "integration_id", i1)).await,
        Kind::SuspendAgent => reach(&app, |v| s(v, "agent_id", a1)).await,
        Kind::DeregisterAgent => reach(&app, |v| s(v, "agent_id", a2)).await,
        Kind::DisablePlatform => reach(&app, |v| s(v, "platform_id", p1)).await,
        Kind::RevokeSession => reach(&app, |v| s(v, "id", &u1)).await,
    };
    let platform = scene.p1.credential.clone();
    let (path, credential, body) = match kind {
        Kind::Lifecycle(t) => (format!("/v1/users/{u}/lifecycle-events"), app.admin.clone(), json!({"type": t})),
        Kind::SignOutAll => (format!("/v1/users/{u}/sign-out-all"), app.user_credential(u).await, json!({})),
        Kind::NarrowPermissions => {
            (format!("/v1/users/{u}/permissions"), app.admin.clone(), json!({"permissions": ["mail:read", "cal:read"]}))
        }
        Kind::DisconnectAgent => (format!("/v1/users/{u}/agents/{a1}/disconnect"), app.admin.clone(), json!({})),
        Kind::DisconnectIntegration => {
            (format!("/v1/users/{u}/integrations/{i1}/disconnect"), app.user_credential(u).await, json!({}))
        }
        Kind::RevokeDelegation => (format!("/v1/delegations/{u_a2_i1}/revoke"), platform, json!({})),
        Kind::DisableIntegration => (format!("/v1/integrations/{i1}/disable"), platform, json!({})),
        Kind::SuspendAgent => (format!("/v1/agents/{a1}/suspend"), platform, json!({})),
        Kind::DeregisterAgent => (format!("/v1/agents/{a2}/deregister"), platform, json!({})),
        Kind::DisablePlatform => (format!("/v1/platforms/{p1}/disable"), app.admin.clone(), json!({})),
        Kind::RevokeSession => (format!("/v1/sessions/{u1}/revoke"), platform, json!({})),
    };
    let all_active = reach(&app, |_| true).await;
    assert!(!expected.is_empty() && expected.len() < all_active.len(), "{kind:?}: the scene needs both sides");

    let receipt = match kind {
        Kind::NarrowPermissions => app.call(Method::PUT, &path, &credential, Some(body)).await.ok()["receipt"].clone(),
        _ => app.trigger(&path, &credential, body).await,
    };
    let revoked: BTreeSet<String> = receipt_reasons(&receipt).into_keys().collect();
    assert_eq!(revoked, expected, "{kind:?}: the receipt (left) differs from the sessions active for the subject");
    let cause = receipt["cause"]["seq"].as_i64().expect("cause seq");
    assert_covered(&app, &auditor, cause, &expected).await;

    // Sessions opened afterwards, for the same user, are not the trigger's concern.
    let later = app.opened(&scene.p2, scene.d("u_b1_j1"), &["mail:read"], None).await;
    let report = assert_covered(&app, &auditor, cause, &expected).await;
    assert!(!report.to_string().contains(&later.id), "{kind:?}: a later session is counted");
}

#[tokio::test]
async fn coverage_of_a_user_disable_lists_the_sessions_active_then_and_no_others() {
    let app = TestApp::new().await;
    let auditor = app.auditor().await;
    let scene = Scene::new(&app).await;
    let verifier = app.verifier().await;

    // Before the trigger: one session revoked by hand, one expired.
    app.trigger(&format!("/v1/sessions/{}/revoke", scene.s("u2").id), &app.admin, json!({})).await;
    let short = app
        .open_session(
            &scene.p1.credential,
            json!({"delegation_id": scene.d("u_a1_i2"), "scopes": ["cal:read"], "ttl_seconds": 60}),
        )
        .await;
    let short = short.ok()["session"]["id"].as_str().expect("id").to_owned();
    app.clock.advance_seconds(120);
    assert_eq!(app.session_status(&short).await, "expired");

    let expected = reach(&app, |v| v["user_id"] == scene.u.as_str()).await;
    assert_eq!(expected.len(), 7, "u1 u3 u4 u5 u1c u1cc u3c");
    let receipt = app.trigger(&format!("/v1/users/{}/disable", scene.u), &app.admin, json!({})).await;
    let cause = receipt["cause"]["seq"].as_i64().expect("cause seq");
    let report = assert_covered(&app, &auditor, cause, &expected).await;
    assert!(!report.to_string().contains(&scene.s("u2").id), "a session revoked before is counted");
    assert!(!report.to_string().contains(&short), "an expired session is counted");

    // Enabled again, a new session: not counted by the old event; a second disable covers it alone.
    app.post(&format!("/v1/users/{}/enable", scene.u), &app.admin, json!({})).await.ok();
    let fresh = app.opened(&scene.p1, scene.d("u_a1_i1"), &["mail:read"], None).await;
    assert_eq!(app.authorize(&verifier, &fresh.token, "mail:read").await.0, "allow");
    let again = assert_covered(&app, &auditor, cause, &expected).await;
    assert_eq!(again["sessions"], report["sessions"], "the old report changed");
    let second = app.trigger(&format!("/v1/users/{}/disable", scene.u), &app.admin, json!({})).await;
    let second = second["cause"]["seq"].as_i64().expect("cause seq");
    assert_ne!(second, cause, "the second disable is an event of its own");
    assert_covered(&app, &auditor, second, &[fresh.id].into()).await;

    // A trigger that found nothing: an empty, complete report.
    let path = format!("/v1/users/{}/lifecycle-events", scene.u);
    let reset = app.trigger(&path, &app.admin, json!({"type": "mfa_reset"})).await;
    let reset = reset["cause"]["seq"].as_i64().expect("cause seq");
    assert_covered(&app, &auditor, reset, &BTreeSet::new()).await;
}

#[tokio::test]
async fn coverage_after_each_lifecycle_event() {
    for kind in ["password_reset", "credential_compromised", "mfa_reset"] {
        covered_after(Kind::Lifecycle(kind)).await;
    }
}

#[tokio::test]
async fn coverage_after_sign_out_all() {
    covered_after(Kind::SignOutAll).await;
}

#[tokio::test]
async fn coverage_after_a_permission_is_removed_counts_only_sessions_holding_it() {
    covered_after(Kind::NarrowPermissions).await;
}

#[tokio::test]
async fn coverage_after_disconnecting_an_agent() {
    covered_after(Kind::DisconnectAgent).await;
}

#[tokio::test]
async fn coverage_after_disconnecting_an_integration() {
    covered_after(Kind::DisconnectIntegration).await;
}

#[tokio::test]
async fn coverage_after_revoking_a_delegation() {
    covered_after(Kind::RevokeDelegation).await;
}

#[tokio::test]
async fn coverage_after_disabling_an_integration() {
    covered_after(Kind::DisableIntegration).await;
}

#[tokio::test]
async fn coverage_after_suspending_an_agent() {
    covered_after(Kind::SuspendAgent).await;
}

#[tokio::test]
async fn coverage_after_deregistering_an_agent() {
    covered_after(Kind::DeregisterAgent).await;
}

#[tokio::test]
async fn coverage_after_disabling_a_platform() {
    covered_after(Kind::DisablePlatform).await;
}

#[tokio::test]
async fn coverage_after_revoking_a_session_includes_its_sub_agent_sessions() {
    covered_after(Kind::RevokeSession).await;
}

/// Suspends agent a1, then presents u1's token: denied, and the denial is audited on the session
/// after its revocation. Returns the suspension's seq.
async fn suspend_a1_then_use_u1(app: &TestApp, scene: &Scene) -> i64 {
    let receipt = app.trigger(&format!("/v1/agents/{}/suspend", scene.a1), &scene.p1.credential, json!({})).await;
    let u1 = scene.s("u1");
    assert_eq!(app.authorize(&app.verifier().await, &u1.token, &u1.scope).await.1, "session_revoked");
    receipt["cause"]["seq"].as_i64().expect("cause seq")
}

#[tokio::test]
async fn coverage_refuses_events_that_are_not_triggers_and_unknown_seqs() {
    let app = TestApp::new().await;
    let auditor = app.auditor().await;
    let scene = Scene::new(&app).await;
    let cause = suspend_a1_then_use_u1(&app, &scene).await;
    let u1 = scene.s("u1");

    let first = |query: String| {
        let app = &app;
        async move {
            let page = app.get(&format!("/v1/audit?{query}&limit=1"), &app.admin).await;
            page.ok()["items"][0]["seq"].as_i64().unwrap_or_else(|| panic!("no event for {query}: {}", page.text))
        }
    };
    let not_triggers = [
        first(format!("action=user.created&subject={}", scene.u)).await,
        first(format!("action=session.created&subject={}", u1.id)).await,
        first(format!("action=agent.created&subject={}", scene.a1)).await,
        // Revocations caused by the suspension are its effects, not triggers of their own.
        first(format!("action=delegation.revoked&cause_seq={cause}")).await,
        first(format!("action=session.revoked&cause_seq={cause}")).await,
        first(format!("action=authorize.revoked_token_used&subject={}", u1.id)).await,
    ];
    for seq in not_triggers {
        let answer = app.get(&format!("/v1/audit/coverage?event={seq}"), &auditor).await;
        answer.problem(400, "invalid_request");
    }
    let head = app.head_seq().await;
    for seq in [head + 1, head + 1000] {
        app.get(&format!("/v1/audit/coverage?event={seq}"), &auditor).await.problem(404, "not_found");
    }
    for bad in ["abc", "-1", "1.5", ""] {
        app.get(&format!("/v1/audit/coverage?event={bad}"), &auditor).await.problem(400, "invalid_request");
    }
    app.get("/v1/audit/coverage", &auditor).await.problem(400, "invalid_request");
    // The trigger itself still reports.
    assert_eq!(app.get(&format!("/v1/audit/coverage?event={cause}"), &auditor).await.ok()["survivors"], json!([]));
}

/// A session a cascade revoked has that revocation among its events when an auditor queries by
/// subject (the subject index leaves such events out; they are found through the session), in seq
/// order on one page and page by page, and revoking the session again points back to it.
#[tokio::test]
async fn an_audit_query_by_subject_finds_the_cascade_revocation_of_a_session() {
    let app = TestApp::new().await;
    let scene = Scene::new(&app).await;
    let cause = suspend_a1_then_use_u1(&app, &scene).await;
    let u1 = scene.s("u1");

    let events = |query: String| {
        let app = &app;
        async move {
            let page = app.get(&format!("/v1/audit?subject={}{query}", u1.id), &app.admin).await;
            page.ok()["items"].as_array().expect("items").clone()
        }
    };
    let all = events(String::new()).await;
    let actions: Vec<&str> = all.iter().map(|e| e["action"].as_str().expect("action")).collect();
    assert_eq!(actions, ["session.created", "session.revoked", "authorize.revoked_token_used"], "{all:?}");
    assert_eq!(all[1]["cause_seq"].as_i64(), Some(cause), "revoked by the suspension: {all:?}");
    let revoked_seq = all[1]["seq"].as_i64().expect("seq");

    let mut walked = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = app.get(&format!("/v1/audit?subject={}&limit=1{cursor}", u1.id), &app.admin).await;
        let page = page.ok();
        walked.extend(page["items"].as_array().expect("items").iter().map(|e| e["seq"].clone()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(walked, all.iter().map(|e| e["seq"].clone()).collect::<Vec<_>>(), "page by page, the same events");

    let revoked = events("&action=session.revoked".into()).await;
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert_eq!(revoked[0]["seq"].as_i64(), Some(revoked_seq));
    assert!(events(format!("&after_seq={revoked_seq}&action=session.revoked")).await.is_empty());
    assert!(events(format!("&action=session.revoked&cause_seq={}", cause + 10_000)).await.is_empty());

    let again = app.trigger(&format!("/v1/sessions/{}/revoke", u1.id), &scene.p1.credential, json!({})).await;
    assert_eq!(again["revoked"], json!([]), "{again}");
    assert_eq!(again["cause"]["seq"].as_i64(), Some(revoked_seq), "points back to its revocation: {again}");
}

/// `since` is inclusive and `until` exclusive, on the events' own `at`, alone or with other
/// filters; while the clock is set back, events keep the time of the last one.
#[tokio::test]
async fn an_audit_time_window_selects_the_events_written_in_it() {
    let app = TestApp::new().await;
    let mut written = Vec::new();
    for (i, step) in [0, 10, 10, -3600, 10, 7200].into_iter().enumerate() {
        app.clock.advance_seconds(step);
        app.user(&format!("window-{i}"), &["mail:read"]).await;
        let event = app.get("/v1/audit?action=user.created", &app.admin).await;
        let items = event.ok()["items"].as_array().expect("items").clone();
        let last = items.last().expect("an event").clone();
        written.push((last["seq"].as_i64().expect("seq"), last["at"].as_str().expect("at").to_owned()));
    }
    let ats: Vec<&str> = written.iter().map(|(_, at)| at.as_str()).collect();
    assert_eq!((ats[3], ats[4]), (ats[2], ats[2]), "held at the last event's time: {ats:?}");
    assert!(ats[0] < ats[1] && ats[1] < ats[2] && ats[4] < ats[5], "{ats:?}");

    let seqs = |query: String| {
        let app = &app;
        async move {
            let page = app.get(&format!("/v1/audit?action=user.created&{query}"), &app.admin).await;
            page.ok()["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|e| e["seq"].as_i64().expect("seq"))
                .collect::<Vec<_>>()
        }
    };
    let seq = |i: usize| written[i].0;
    let at = |i: usize| written[i].1.replace('+', "%2B");
    assert_eq!(seqs(format!("since={}", at(1))).await, vec![seq(1), seq(2), seq(3), seq(4), seq(5)]);
    assert_eq!(seqs(format!("until={}", at(1))).await, vec![seq(0)]);
    assert_eq!(seqs(format!("since={}&until={}", at(1), at(4))).await, vec![seq(1)]);
    assert_eq!(seqs(format!("since={}&until={}", at(3), at(5))).await, vec![seq(2), seq(3), seq(4)]);
    assert_eq!(seqs(format!("since={}&until={}", at(5), at(5))).await, Vec::<i64>::new());
    let all = app.get(&format!("/v1/audit?since={}", at(2)), &app.admin).await;
    let all: Vec<i64> =
        all.ok()["items"].as_array().expect("items").iter().map(|e| e["seq"].as_i64().unwrap_or(0)).collect();
    assert_eq!(all.first(), Some(&seq(2)), "without other filters, from the first event at that time: {all:?}");
}
