//! Stale allows (issue 6, item 6): while authorize runs in a loop on a set of sessions, revoke them
//! one by one; no authorize call that started after the revoke call returned may allow.
//!
//! Each session has a flag the revoker sets right after its revoke call returned. An authorize
//! task reads the flag before it sends its request: when it reads `true`, its request started
//! after the return, so an allow would be stale. `TETHER_STALE_SESSIONS` and
//! `TETHER_STALE_TASKS` scale it up (e.g. in release: 200 sessions, 16 tasks).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::TestApp;

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[derive(Default)]
struct Counts {
    allowed_before: AtomicU64,
    denied_after: AtomicU64,
    stale_allows: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_authorize_started_after_a_revoke_returned_is_allowed() {
    let sessions = knob("TETHER_STALE_SESSIONS", 12);
    let tasks = knob("TETHER_STALE_TASKS", 6);
    let app = Arc::new(TestApp::new().await);
    let verifier = app.verifier().await;
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    let mut open = Vec::new();
    for _ in 0..sessions {
        open.push(app.session(&world.platform, &world.delegation, &["mail:read"]).await);
    }
    let tokens: Arc<Vec<String>> = Arc::new(open.iter().map(|(_, t)| t.clone()).collect());
    let revoked: Arc<Vec<AtomicBool>> = Arc::new((0..sessions).map(|_| AtomicBool::new(false)).collect());
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));

    let mut load = Vec::new();
    for t in 0..tasks {
        let (app, verifier, tokens, revoked, counts, stop) =
            (app.clone(), verifier.clone(), tokens.clone(), revoked.clone(), counts.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let mut i = t;
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                // An in-process authorize may complete without ever returning Pending: yield, or
                // these loops would hold both workers (and the timer) forever.
                tokio::task::yield_now().await;
                i = (i + 1) % tokens.len();
                // Read before the request is sent: `true` means the revoke call already returned.
                let after_revoke = revoked[i].load(Ordering::SeqCst);
                let (decision, reason) = app.authorize(&verifier, &tokens[i], "mail:read").await;
                match (after_revoke, decision.as_str()) {
                    (true, "allow") => {
                        counts.stale_allows.fetch_add(1, Ordering::SeqCst);
                    }
                    (true, _) => {
                        assert_eq!(reason, "session_revoked");
                        counts.denied_after.fetch_add(1, Ordering::SeqCst);
                    }
                    (false, "allow") => {
                        counts.allowed_before.fetch_add(1, Ordering::SeqCst);
                    }
                    // Started before the return: may see either state.
                    (false, _) => {}
                }
            }
        }));
    }

    for (i, (session, _)) in open.iter().enumerate() {
        // Let the loop run on this session before it is revoked.
        tokio::time::sleep(Duration::from_millis(15)).await;
        let receipt = app
            .post(
                &format!("/v1/sessions/{session}/revoke"),
                &world.platform.credential,
                json!({"reason": "stale test"}),
            )
            .await;
        assert_eq!(receipt.ok()["revoked"].as_array().map(Vec::len), Some(1), "{}", receipt.text);
        revoked[i].store(true, Ordering::SeqCst);
    }
    // Keep checking the revoked sessions for a little while.
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.expect("authorize task");
    }

    let stale = counts.stale_allows.load(Ordering::SeqCst);
    let before = counts.allowed_before.load(Ordering::SeqCst);
    let after = counts.denied_after.load(Ordering::SeqCst);
    eprintln!("stale allows: {stale}; allows before revocation: {before}; denials after: {after}");
    assert!(before > 0, "the loop never saw an allow: it did not exercise live sessions");
    assert!(after >= sessions as u64, "too few checks after revocations: {after}");
    assert_eq!(stale, 0, "authorize allowed a session after its revoke call had returned");
}
