//! The README's story end to end, asserting each answer.

use serde_json::json;

use crate::helpers::TestApp;

#[tokio::test]
async fn the_walkthrough_allows_then_denies_after_revocation_and_the_log_verifies() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let world = app
        .world(&["mail:read", "mail:send"], &["mail:read", "mail:send"])
        .await;

    let (session, token) = app
        .session(&world.platform, &world.delegation, &["mail:read"])
        .await;
    assert_eq!(
        app.authorize(&verifier, &token, "mail:read").await,
        ("allow".into(), "allowed".into())
    );
    assert_eq!(
        app.authorize(&verifier, &token, "mail:send").await,
        ("deny".into(), "scope_not_granted".into())
    );

    let receipt = app
        .post(
            &format!("/v1/sessions/{session}/revoke"),
            &world.platform.credential,
            json!({"reason": "done"}),
        )
        .await;
    let receipt = receipt.ok();
    assert_eq!(receipt["revoked"].as_array().map(Vec::len), Some(1));
    assert_eq!(receipt["revoked"][0]["session_id"], session.as_str());
    assert_eq!(receipt["cause"]["action"], "session.revoked");

    assert_eq!(
        app.authorize(&verifier, &token, "mail:read").await,
        ("deny".into(), "session_revoked".into())
    );

    // The denied use of a revoked token is itself on record (first per session per minute).
    let used = app.get(&format!("/v1/audit?action=authorize.revoked_token_used&subject={session}"), &app.admin).await;
    assert_eq!(used.ok()["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(app.authorize(&verifier, &token, "mail:read").await.1, "session_revoked");
    let used = app.get(&format!("/v1/audit?action=authorize.revoked_token_used&subject={session}"), &app.admin).await;
    assert_eq!(used.ok()["items"].as_array().map(Vec::len), Some(1), "a second denial in the same minute is only counted");

    let verify = app.get("/v1/audit/verify", &app.admin).await;
    assert_eq!(verify.ok()["ok"], true);
    assert_eq!(verify.body["head_seq"].as_i64(), receipt["audit"]["to_seq"].as_i64().map(|s| s + 1));
}
