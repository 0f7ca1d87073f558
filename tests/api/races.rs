//! Races and size: sessions opened and tokens checked while the user is being disabled, and one
//! disable that revokes ten thousand sessions at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{receipt_reasons, Opened, TestApp};

/// What one concurrent session creation saw.
enum Creation {
    Created { id: String, started_after_disable: bool },
    Refused { started_after_disable: bool },
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_opened_during_a_disable_never_survive_and_no_check_after_it_allows() {
    const CREATIONS: usize = 200;
    const CHECKERS: usize = 8;
    const CHECKS_AFTER: usize = 25;

    let app = Arc::new(TestApp::new().await);
    let verifier = Arc::new(app.verifier().await);
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    let bystander = app.world(&["mail:read"], &["mail:read"]).await;
    let bystander = app.opened(&bystander.platform, &bystander.delegation, &["mail:read"], None).await;
    let mut existing = Vec::new();
    for _ in 0..16 {
        existing.push(app.opened(&world.platform, &world.delegation, &["mail:read"], None).await);
    }
    let existing = Arc::new(existing);

    let disabled = Arc::new(AtomicBool::new(false));
    let created = Arc::new(AtomicUsize::new(0));
    let stale_allows = Arc::new(AtomicUsize::new(0));

    // Session creations, staggered so that the disable lands among them.
    let mut creations = Vec::new();
    for i in 0..CREATIONS {
        let (app, world, disabled, created, verifier, stale) =
            (app.clone(), world.clone(), disabled.clone(), created.clone(), verifier.clone(), stale_allows.clone());
        creations.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(5 * i as u64)).await;
            let started_after_disable = disabled.load(Ordering::SeqCst);
            let body = json!({"delegation_id": world.delegation, "scopes": ["mail:read"]});
            let answer = app.open_session(&world.platform.credential, body).await;
            if answer.status.as_u16() == 409 {
                let detail = answer.problem(409, "conflict");
                assert!(detail.contains(&world.user) && detail.contains("disabled"), "{detail}");
                return Creation::Refused { started_after_disable };
            }
            let ok = answer.ok();
            created.fetch_add(1, Ordering::SeqCst);
            let id = ok["session"]["id"].as_str().expect("id").to_owned();
            let token = ok["token"].as_str().expect("token").to_owned();
            // Its own token, checked at once: after the disable returned, it must be denied.
            let after = disabled.load(Ordering::SeqCst);
            let (decision, _) = app.authorize(&verifier, &token, "mail:read").await;
            if after && decision == "allow" {
                stale.fetch_add(1, Ordering::SeqCst);
            }
            Creation::Created { id, started_after_disable }
        }));
    }

    // Checkers: authorize existing tokens until well after the disable returned.
    let mut checkers = Vec::new();
    for c in 0..CHECKERS {
        let (app, existing, disabled, verifier, stale) =
            (app.clone(), existing.clone(), disabled.clone(), verifier.clone(), stale_allows.clone());
        checkers.push(tokio::spawn(async move {
            let (mut before, mut after) = (0usize, 0usize);
            let mut i = c;
            while after < CHECKS_AFTER {
                let s: &Opened = &existing[i % existing.len()];
                i += 1;
                let started_after_disable = disabled.load(Ordering::SeqCst);
                let (decision, reason) = app.authorize(&verifier, &s.token, "mail:read").await;
                if started_after_disable {
                    after += 1;
                    if decision != "deny" || reason != "session_revoked" {
                        stale.fetch_add(1, Ordering::SeqCst);
                    }
                } else {
                    before += 1;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            (before, after)
        }));
    }

    // The disable, once a quarter of the creations went through.
    let started = Instant::now();
    while created.load(Ordering::SeqCst) < CREATIONS / 4 {
        assert!(started.elapsed() < Duration::from_secs(120), "creations stalled");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let receipt = app.trigger(&format!("/v1/users/{}/disable", world.user), &app.admin, json!({})).await;
    disabled.store(true, Ordering::SeqCst);

    // And a few creations that certainly start after it.
    let mut late = Vec::new();
    for _ in 0..10 {
        late.push(app.open_session(
            &world.platform.credential,
            json!({"delegation_id": world.delegation, "scopes": ["mail:read"]}),
        ));
    }
    for answer in futures_util::future::join_all(late).await {
        let detail = answer.problem(409, "conflict");
        assert!(detail.contains(&world.user), "{detail}");
    }

    let mut made = BTreeSet::new();
    let (mut refused, mut refused_after) = (0, 0);
    for task in creations {
        match task.await.expect("creation task") {
            Creation::Created { id, started_after_disable } => {
                assert!(!started_after_disable, "{id} was opened by a request sent after the user was disabled");
                made.insert(id);
            }
            Creation::Refused { started_after_disable } => {
                refused += 1;
                refused_after += usize::from(started_after_disable);
            }
        }
    }
    let mut checks = (0, 0);
    for task in checkers {
        let (before, after) = task.await.expect("checker task");
        checks = (checks.0 + before, checks.1 + after);
    }
    eprintln!(
        "race: {} created, {refused} refused ({refused_after} sent after the disable returned); \
         checks {} before, {} after",
        made.len(),
        checks.0,
        checks.1
    );
    assert_eq!(stale_allows.load(Ordering::SeqCst), 0, "an authorize that started after the disable allowed");
    assert_eq!(made.len() + refused, CREATIONS);
    assert!(checks.1 >= CHECKERS * CHECKS_AFTER);

    // The disable revoked every session that was created, pre-existing or racing, and only those.
    let reasons = receipt_reasons(&receipt);
    let mut all: BTreeSet<String> = existing.iter().map(|s| s.id.clone()).collect();
    all.extend(made.iter().cloned());
    assert_eq!(reasons.keys().cloned().collect::<BTreeSet<_>>(), all, "the receipt differs from the created sessions");
    assert!(reasons.values().all(|r| r == "user_disabled"), "{receipt}");
    let active = app.get(&format!("/v1/sessions?user_id={}&status=active", world.user), &app.admin).await;
    assert_eq!(active.ok()["items"], json!([]), "sessions of the disabled user are still active");
    for id in &all {
        assert_eq!(app.session_status(id).await, "revoked", "{id}");
    }
    for s in existing.iter() {
        assert_eq!(app.authorize(&verifier, &s.token, "mail:read").await.1, "session_revoked");
    }
    assert_eq!(app.authorize(&verifier, &bystander.token, "mail:read").await.0, "allow");
    app.head_seq().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_a_user_with_ten_thousand_sessions_revokes_and_audits_every_one() {
    const SESSIONS: usize = 10_000;
    const CONCURRENCY: usize = 64;

    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    let bystander = app.world(&["mail:read"], &["mail:read"]).await;
    let bystander = app.opened(&bystander.platform, &bystander.delegation, &["mail:read"], None).await;

    let started = Instant::now();
    let mut sessions: Vec<Opened> = Vec::with_capacity(SESSIONS + 8);
    while sessions.len() < SESSIONS {
        let n = CONCURRENCY.min(SESSIONS - sessions.len());
        let batch = (0..n).map(|_| app.opened(&world.platform, &world.delegation, &["mail:read"], None));
        sessions.extend(futures_util::future::join_all(batch).await);
    }
    // Sub-agent sessions: three children of the first session, a grandchild, one under the last.
    let mut children = Vec::new();
    for parent in [0, 0, 0, SESSIONS - 1] {
        let parent = sessions[parent].id.clone();
        children.push(app.opened(&world.platform, &world.delegation, &["mail:read"], Some(&parent)).await);
    }
    let grandchild = app.opened(&world.platform, &world.delegation, &["mail:read"], Some(&children[0].id)).await;
    children.push(grandchild);
    sessions.extend(children);
    let creating = started.elapsed();

    let before = app.head_seq().await;
    let started = Instant::now();
    let receipt = app.trigger(&format!("/v1/users/{}/disable", world.user), &app.admin, json!({})).await;
    let disabling = started.elapsed();

    let reasons = receipt_reasons(&receipt);
    let expected: BTreeSet<String> = sessions.iter().map(|s| s.id.clone()).collect();
    assert_eq!(expected.len(), SESSIONS + 5);
    assert_eq!(reasons.keys().cloned().collect::<BTreeSet<_>>(), expected, "the receipt misses or adds sessions");
    let tally = reasons.values().fold(BTreeMap::<&str, usize>::new(), |mut t, r| {
        *t.entry(r.as_str()).or_default() += 1;
        t
    });
    assert!(
        tally.keys().all(|r| *r == "user_disabled" || *r == "parent_session_revoked")
            && tally.get("user_disabled").copied().unwrap_or(0) >= SESSIONS,
        "{tally:?}"
    );

    // Audited: one event per session under the trigger, the chain verifies and ends at the receipt.
    let cause = receipt["cause"]["seq"].as_i64().expect("cause seq");
    assert_eq!(cause, before + 1);
    let head = app.head_seq().await;
    assert_eq!(receipt["audit"]["to_seq"].as_i64(), Some(head));
    assert_eq!(head, cause + (SESSIONS as i64) + 5, "one event per revoked session, nothing else");
    let events = app.all_pages(&format!("/v1/audit?cause_seq={cause}&action=session.revoked")).await;
    let audited: BTreeSet<String> =
        events.iter().map(|e| e["subject"]["id"].as_str().expect("subject").to_owned()).collect();
    assert_eq!(events.len(), SESSIONS + 5);
    assert_eq!(audited, expected);

    let active = app.get(&format!("/v1/sessions?user_id={}&status=active", world.user), &app.admin).await;
    assert_eq!(active.ok()["items"], json!([]));
    let revoked = app.all_pages(&format!("/v1/sessions?user_id={}&status=revoked", world.user)).await;
    assert_eq!(revoked.len(), SESSIONS + 5);
    let coverage = app.get(&format!("/v1/audit/coverage?event={cause}"), &app.admin).await;
    assert_eq!(coverage.ok()["survivors"], json!([]));
    assert_eq!(coverage.body["sessions"].as_array().map(Vec::len), Some(SESSIONS + 5));
    for s in sessions.iter().step_by(997).chain(sessions.iter().rev().take(5)) {
        assert_eq!(app.authorize(&verifier, &s.token, "mail:read").await, ("deny".into(), "session_revoked".into()));
    }
    assert_eq!(app.authorize(&verifier, &bystander.token, "mail:read").await.0, "allow");
    eprintln!("cascade size: created {} sessions in {creating:?}; disable took {disabling:?}", SESSIONS + 5);
}
