//! POST /v1/authorize: the verdicts on revoked, expired, foreign, tampered, malformed, oversized
//! and attenuated tokens, and what an allow tells the relying service.

use std::collections::HashMap;

use biscuit_auth::builder::{BlockBuilder, Term};
use biscuit_auth::UnverifiedBiscuit;
use serde_json::{json, Value};
use tether::domain::Timestamp;

use crate::helpers::{attenuate, TestApp, World};

fn allow() -> (String, String) {
    ("allow".into(), "allowed".into())
}

fn deny(reason: &str) -> (String, String) {
    ("deny".into(), reason.into())
}

/// Appends `count` blocks (each with one harmless check) to a token.
fn with_blocks(token: &str, count: usize) -> String {
    let mut biscuit = UnverifiedBiscuit::from_base64(token).expect("a biscuit");
    for i in 0..count {
        let block = BlockBuilder::new().code(format!("check if true or {i} == {i};")).expect("block");
        biscuit = biscuit.append(block).expect("append");
    }
    biscuit.to_base64().expect("encode")
}

/// The token with the base64 character at `position` replaced by another one of the alphabet.
fn flip_char(token: &str, position: usize) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    chars[position] = if chars[position] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

/// A world whose user, agent, integration and delegation all carry mail:read and mail:send.
async fn mail_world(app: &TestApp) -> World {
    app.world(&["mail:read", "mail:send"], &["mail:read", "mail:send"]).await
}

#[tokio::test]
async fn a_revoked_session_is_denied_session_revoked_at_the_next_authorize() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let world = mail_world(&app).await;
    let (session, token) = app.session(&world.platform, &world.delegation, &["mail:read"]).await;
    assert_eq!(app.authorize(&verifier, &token, "mail:read").await, allow());

    app.post(&format!("/v1/sessions/{session}/revoke"), &world.platform.credential, json!({"reason": "test"}))
        .await
        .ok();

    assert_eq!(app.authorize(&verifier, &token, "mail:read").await, deny("session_revoked"));
}

#[tokio::test]
async fn a_session_past_its_ttl_is_denied_session_expired() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let world = mail_world(&app).await;
    let created = app
        .post(
            "/v1/sessions",
            &world.platform.credential,
            json!({"delegation_id": world.delegation, "scopes": ["mail:read"], "ttl_seconds": 60}),
        )
        .await;
    let token = created.ok()["token"].as_str().expect("token").to_owned();
    assert_eq!(app.authorize(&verifier, &token, "mail:read").await, allow());

    app.clock.advance_seconds(61);

    assert_eq!(app.authorize(&verifier, &token, "mail:read").await, deny("session_expired"));
}

#[tokio::test]
async fn a_token_signed_by_another_tethers_key_is_denied_as_invalid_or_of_an_unknown_key() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let other = TestApp::new().await;
    let world = mail_world(&other).await;
    let (_, foreign) = other.session(&world.platform, &world.delegation, &["mail:read"]).await;

    let (decision, reason) = app.authorize(&verifier, &foreign, "mail:read").await;

    assert_eq!(decision, "deny");
    assert!(reason == "invalid_token" || reason == "unknown_key", "reason: {reason}");
}

#[tokio::test]
async fn a_token_with_one_character_changed_is_denied_invalid_token() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let world = mail_world(&app).await;
    let (_, token) = app.session(&world.platform, &world.delegation, &["mail:read"]).await;
    assert_eq!(app.authorize(&verifier, &token, "mail:read").await, allow());

    for position in [token.len() / 3, token.len() / 2, 2 * token.len() / 3] {
        let tampered = flip_char(&token, position);
        assert_ne!(tampered, token);
        assert_eq!(
            app.authorize(&verifier, &tampered, "mail:read").await,
            deny("invalid_token"),
            "character {position} of {} changed",
            token.len()
        );
    }
}

#[tokio::test]
async fn garbage_tokens_are_denied_invalid_token() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;

    for garbage in ["", "not a token", "AAAA", "eyJhbGciOiJub25lIn0.e30.", "\u{1F600}\u{0}", "=========="] {
        assert_eq!(app.authorize(&verifier, garbage, "mail:read").await, deny("invalid_token"), "token {garbage:?}");
    }
}

#[tokio::test]
async fn a_token_over_8_kib_is_denied_invalid_token() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let world = mail_world(&app).await;
    let (_, token) = app.session(&world.platform, &world.delegation, &["mail:read"]).await;

    let filler = "A".repeat(8 * 1024 + 1);
    assert_eq!(app.authorize(&verifier, &filler, "mail:read").await, deny("invalid_token"));
    // A real token with a block of padding facts appended until it crosses the bound.
    let padding = format!("padding(\"{}\");", "x".repeat(8 * 1024));
    let oversized = attenuate(&token, &padding);
    assert!(oversized.len() > 8 * 1024, "{}", oversized.len());
    assert_eq!(app.authorize(&verifier, &oversized, "mail:read").await, deny("invalid_token"));
}

#[tokio::test]
async fn an_attenuated_token_is_allowed_only_within_its_narrower_block_and_dies_with_its_session() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let world = mail_world(&app).await;
    let (session, token) = app.session(&world.platform, &world.delegation, &["mail:read", "mail:send"]).await;
    let narrowed = attenuate(&token, r#"check if requested_scope($s), ["mail:read"].contains($s);"#);
    assert_ne!(narrowed, token);
    assert_eq!(app.authorize(&verifier, &token, "mail:send").await, allow(), "the original keeps its grant");

    assert_eq!(app.authorize(&verifier, &narrowed, "mail:read").await, allow());
    let (decision, reason) = app.authorize(&verifier, &narrowed, "mail:send").await;
    assert_eq!(decision, "deny", "the narrowed token may not send (reason {reason})");

    app.post(&format!("/v1/sessions/{session}/revoke"), &world.platform.credential, json!({})).await.ok();
    assert_eq!(app.authorize(&verifier, &narrowed, "mail:read").await, deny("session_revoked"));
}

#[tokio::test]
async fn an_attenuation_restricting_the_resource_allows_only_matching_resources() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let world = mail_world(&app).await;
    let (_, token) = app.session(&world.platform, &world.delegation, &["mail:read"]).await;
    let narrowed = attenuate(&token, r#"check if resource($r), $r.starts_with("inbox/");"#);

    let ask = |resource: Option<&str>| {
        let mut body = json!({"token": narrowed, "scope": "mail:read"});
        if let Some(r) = resource {
            body["resource"] = json!(r);
        }
        body
    };
    let inbox = app.post("/v1/authorize", &verifier, ask(Some("inbox/42"))).await;
    assert_eq!(inbox.ok()["decision"], "allow", "{}", inbox.text);
    let sent = app.post("/v1/authorize", &verifier, ask(Some("sent/42"))).await;
    assert_eq!(sent.ok()["decision"], "deny", "{}", sent.text);
    let none = app.post("/v1/authorize", &verifier, ask(None)).await;
    assert_eq!(none.ok()["decision"], "deny", "no resource cannot satisfy the check: {}", none.text);
}

#[tokio::test]
async fn an_attenuation_shortening_the_lifetime_denies_after_its_own_deadline() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let world = mail_world(&app).await;
    let (_, token) = app.session(&world.platform, &world.delegation, &["mail:read"]).await;
    let deadline = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_secs() + 60;
    let block = BlockBuilder::new()
        .code_with_params(
            "check if time($t), $t < {deadline};",
            HashMap::from([("deadline".to_owned(), Term::Date(deadline))]),
            HashMap::new(),
        )
        .expect("block");
    let short = UnverifiedBiscuit::from_base64(&token)
        .expect("biscuit")
        .append(block)
        .expect("append")
        .to_base64()
        .expect("b64");
    assert_eq!(app.authorize(&verifier, &short, "mail:read").await, allow());

    app.clock.advance_seconds(120);

    assert_eq!(app.authorize(&verifier, &token, "mail:read").await, allow(), "the original still lives");
    assert_eq!(app.authorize(&verifier, &short, "mail:read").await.0, "deny");
}

#[tokio::test]
async fn an_attenuation_block_adding_a_scope_fact_does_not_widen_the_grant() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let world = mail_world(&app).await;
    let (_, token) = app.session(&world.platform, &world.delegation, &["mail:read"]).await;
    assert_eq!(app.authorize(&verifier, &token, "mail:send").await, deny("scope_not_granted"));

    let widened = attenuate(&token, r#"scope("mail:send"); requested_scope("mail:send");"#);
    assert_eq!(app.authorize(&verifier, &widened, "mail:send").await, deny("scope_not_granted"));
    let widened = attenuate(&token, r#"scope($s) <- requested_scope($s);"#);
    assert_eq!(app.authorize(&verifier, &widened, "mail:send").await, deny("scope_not_granted"));

    // The block did not break the token for what it does grant.
    assert_eq!(app.authorize(&verifier, &widened, "mail:read").await, allow());
}

#[tokio::test]
async fn an_attenuation_block_cannot_answer_with_another_sessions_identity() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let world = mail_world(&app).await;
    let (session, token) = app.session(&world.platform, &world.delegation, &["mail:read"]).await;
    let (other_session, _) = app.session(&world.platform, &world.delegation, &["mail:read"]).await;
    let forged = attenuate(&token, &format!(r#"session("{other_session}");"#));

    let answer = app.post("/v1/authorize", &verifier, json!({"token": forged, "scope": "mail:read"})).await;

    assert_eq!(answer.ok()["decision"], "allow", "{}", answer.text);
    assert_eq!(answer.body["session_id"], session.as_str(), "the authority block names the session");
}

#[tokio::test]
async fn a_token_with_hundreds_of_appended_blocks_is_denied_invalid_token() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let world = mail_world(&app).await;
    let (_, token) = app.session(&world.platform, &world.delegation, &["mail:read"]).await;

    let heavy = with_blocks(&token, 300);

    assert_eq!(app.authorize(&verifier, &heavy, "mail:read").await, deny("invalid_token"));
}

#[tokio::test]
async fn a_small_token_with_more_than_eight_blocks_is_denied_and_eight_are_allowed() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let world = mail_world(&app).await;
    let (_, token) = app.session(&world.platform, &world.delegation, &["mail:read"]).await;

    let eight = with_blocks(&token, 7);
    let nine = with_blocks(&token, 8);
    assert!(nine.len() < 8 * 1024, "under the size bound, so the block count is what is tested: {}", nine.len());

    assert_eq!(app.authorize(&verifier, &eight, "mail:read").await, allow());
    assert_eq!(app.authorize(&verifier, &nine, "mail:read").await, deny("invalid_token"));
}

#[tokio::test]
async fn an_allow_names_the_session_user_agent_and_integration_with_the_granted_scopes() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let world = mail_world(&app).await;
    let created = app
        .post(
            "/v1/sessions",
            &world.platform.credential,
            json!({"delegation_id": world.delegation, "scopes": ["mail:read"]}),
        )
        .await
        .ok()
        .clone();
    let token = created["token"].as_str().expect("token");

    let answer = app.post("/v1/authorize", &verifier, json!({"token": token, "scope": "mail:read"})).await;

    let body = answer.ok();
    assert_eq!(body["decision"], "allow");
    assert_eq!(body["reason"], "allowed");
    assert_eq!(body["session_id"], created["session"]["id"]);
    assert_eq!(body["user_id"], world.user.as_str());
    assert_eq!(body["agent_id"], world.agent.as_str());
    assert_eq!(body["integration_id"], world.integration.as_str());
    assert_eq!(body["scopes"], json!(["mail:read"]));
    // The token's own expiry is signed in whole seconds: the answer may be up to a second earlier
    // than the millisecond `token_expires_at` of the creation, never later.
    let said = time(&body["expires_at"]).millis();
    let minted = time(&created["token_expires_at"]).millis();
    assert!(said <= minted && minted - said < 1000, "authorize says {said}, creation said {minted}");
}

fn time(value: &Value) -> Timestamp {
    Timestamp::parse_rfc3339(value.as_str().unwrap_or_default())
        .unwrap_or_else(|| panic!("expected an RFC 3339 time, got {value}"))
}

#[tokio::test]
async fn a_deny_for_an_unverifiable_token_names_no_session_and_no_scopes() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let world = mail_world(&app).await;
    let (_, token) = app.session(&world.platform, &world.delegation, &["mail:read"]).await;

    let garbage = app.post("/v1/authorize", &verifier, json!({"token": "garbage", "scope": "mail:read"})).await;
    let ungranted = app.post("/v1/authorize", &verifier, json!({"token": token, "scope": "mail:send"})).await;

    let body = garbage.ok();
    assert_eq!(body["decision"], "deny");
    for field in ["session_id", "user_id", "agent_id", "integration_id", "scopes"] {
        assert_eq!(body[field], Value::Null, "{field} in {body}");
    }
    assert_eq!(ungranted.ok()["decision"], "deny");
    assert_eq!(ungranted.body["scopes"], Value::Null, "a deny never lists the token's scopes: {}", ungranted.text);
}

#[tokio::test]
async fn an_attenuation_block_built_to_exhaust_the_run_limits_is_a_deny_not_an_error() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let world = mail_world(&app).await;
    let (_, token) = app.session(&world.platform, &world.delegation, &["mail:read"]).await;
    let facts: String = (0..60).map(|i| format!("f({i});")).collect();
    // 60 × 60 derived facts: past the fact limit; a 150-step walk: past the iteration limit.
    let explode = attenuate(&token, &format!("{facts} g($a, $b) <- f($a), f($b); check if g(0, 0);"));
    let chain: String = (0..150).map(|i| format!("e({i}, {});", i + 1)).collect();
    let recurse = attenuate(&token, &format!("{chain} r(0); r($b) <- r($a), e($a, $b); check if r(150);"));

    for hostile in [&explode, &recurse] {
        let answer = app.post("/v1/authorize", &verifier, json!({"token": hostile, "scope": "mail:read"})).await;
        assert_eq!(answer.ok()["decision"], "deny", "{}", answer.text);
    }
    assert_eq!(app.authorize(&verifier, &token, "mail:read").await, allow(), "the original is unaffected");
}

#[tokio::test]
async fn each_token_keeps_its_own_allow_answer_and_a_revoked_token_never_gets_it_again() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let world = mail_world(&app).await;
    let (first, first_token) = app.session(&world.platform, &world.delegation, &["mail:read"]).await;
    let (second, second_token) = app.session(&world.platform, &world.delegation, &["mail:read", "mail:send"]).await;
    let ask = |token: String, scope: &'static str| {
        let app = &app;
        let verifier = verifier.clone();
        async move { app.post("/v1/authorize", &verifier, json!({"token": token, "scope": scope})).await.ok().clone() }
    };

    // Allowed twice each, interleaved: the second allow of a token is the first one's bytes.
    let a1 = ask(first_token.clone(), "mail:read").await;
    let b1 = ask(second_token.clone(), "mail:send").await;
    let a2 = ask(first_token.clone(), "mail:read").await;
    let b2 = ask(second_token.clone(), "mail:read").await;
    assert_eq!(a1, a2);
    assert_eq!(b1, b2, "an allow answer does not depend on the scope asked for");
    assert_eq!(a1["session_id"], first.as_str());
    assert_eq!(a1["scopes"], json!(["mail:read"]));
    assert_eq!(b1["session_id"], second.as_str());
    assert_eq!(b1["scopes"], json!(["mail:read", "mail:send"]));

    app.post(&format!("/v1/sessions/{first}/revoke"), &world.platform.credential, json!({"reason": "test"})).await.ok();
    let denied = ask(first_token, "mail:read").await;
    assert_eq!((denied["decision"].as_str(), denied["reason"].as_str()), (Some("deny"), Some("session_revoked")));
    assert!(denied.get("scopes").is_none(), "a deny never lists scopes: {denied}");
    assert_eq!(ask(second_token, "mail:read").await, b1, "the other token is still allowed, as before");
}
