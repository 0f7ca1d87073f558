//! The console (issue 19): who may mint sign-in links for whom, single use and expiry, the
//! cookie, CSRF refusals, escaping, visibility, and what the person's actions do.

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{local_config, Answer, Platform, TestApp, World};

/// The origin of the test app's public URL (the default, `http://127.0.0.1:8700`).
const ORIGIN: &str = "http://127.0.0.1:8700";

/// A browser's console session: the cookie and the page's CSRF token.
struct Browser {
    cookie: String,
}

async fn mint(app: &TestApp, credential: &str, body: Value) -> Answer {
    app.post("/v1/console-links", credential, body).await
}

/// The path and query of a minted link's URL.
fn link_path(answer: &Answer) -> String {
    let url = answer.ok()["url"].as_str().expect("url").to_owned();
    let at = url.find("/console/open").expect("console path");
    url[at..].to_owned()
}

async fn open(app: &TestApp, path: &str) -> (Answer, HeaderMap) {
    app.request_with_headers(Method::GET, path, &[], Body::empty()).await
}

async fn sign_in(app: &TestApp, credential: &str, body: Value) -> Browser {
    let minted = mint(app, credential, body).await;
    let (answer, headers) = open(app, &link_path(&minted)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let set = headers.get("set-cookie").expect("cookie").to_str().expect("ascii");
    let cookie = set.split(';').next().expect("pair").to_owned();
    Browser { cookie }
}

impl Browser {
    async fn get(&self, app: &TestApp, path: &str) -> Answer {
        app.request_with_headers(Method::GET, path, &[("cookie", &self.cookie)], Body::empty()).await.0
    }

    /// The CSRF token of the page at `path`.
    async fn csrf(&self, app: &TestApp, path: &str) -> String {
        let page = self.get(app, path).await;
        let at = page.text.find("name=\"csrf\" value=\"").expect("a form with a token") + 19;
        page.text[at..at + 64].to_owned()
    }

    async fn post_with(&self, app: &TestApp, path: &str, form: &str, headers: &[(&str, &str)]) -> Answer {
        let mut all = vec![("cookie", self.cookie.as_str()), ("content-type", "application/x-www-form-urlencoded")];
        all.extend_from_slice(headers);
        app.request_with_headers(Method::POST, path, &all, Body::from(form.to_owned())).await.0
    }

    /// A form post as the console's own page sends it.
    async fn act(&self, app: &TestApp, action: &str, target: &str) -> Answer {
        let csrf = self.csrf(app, "/console/agents").await;
        let form = format!("csrf={csrf}&action={action}&target={target}");
        self.post_with(app, "/console/agents", &form, &[("origin", ORIGIN), ("sec-fetch-site", "same-origin")]).await
    }
}

async fn world_with_session(app: &TestApp) -> (World, crate::helpers::Opened) {
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    let opened = app.opened(&world.platform, &world.delegation, &["mail:read"], None).await;
    (world, opened)
}

#[tokio::test]
async fn platforms_mint_links_only_for_their_users_and_only_admins_for_auditors_and_admins() {
    let app = TestApp::new().await;
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    let other = app.platform("other").await;
    let stranger = app.user("idp|stranger", &["mail:read"]).await;

    let by_platform = mint(&app, &world.platform.credential, json!({"user_id": world.user})).await;
    assert!(by_platform.ok()["url"].as_str().unwrap().starts_with("http://127.0.0.1:8700/console/open?link="));
    assert!(by_platform.ok()["expires_at"].is_string());
    mint(&app, &other.credential, json!({"user_id": world.user})).await.problem(404, "not_found");
    mint(&app, &world.platform.credential, json!({"user_id": stranger})).await.problem(404, "not_found");
    mint(&app, &world.platform.credential, json!({"role": "auditor"})).await.problem(403, "forbidden");
    mint(&app, &world.platform.credential, json!({"role": "admin"})).await.problem(403, "forbidden");

    mint(&app, &app.admin, json!({"user_id": stranger})).await.ok();
    mint(&app, &app.admin, json!({"role": "auditor"})).await.ok();
    mint(&app, &app.admin, json!({"role": "admin"})).await.ok();
    mint(&app, &app.admin, json!({"role": "verifier"})).await.problem(400, "invalid_request");
    mint(&app, &app.admin, json!({"role": "auditor", "user_id": stranger})).await.problem(400, "invalid_request");
    mint(&app, &app.admin, json!({})).await.problem(400, "invalid_request");
    let user = app.user_credential(&world.user).await;
    mint(&app, &user, json!({"user_id": world.user})).await.problem(403, "forbidden");
    let auditor = app.auditor().await;
    mint(&app, &auditor, json!({"role": "auditor"})).await.problem(403, "forbidden");

    // Minting is audited with the minter as actor.
    let events = app.get("/v1/audit?action=console.link_created", &app.admin).await;
    let first = &events.ok()["items"][0];
    assert_eq!(first["actor"]["kind"], "platform");
    assert_eq!(first["actor"]["id"], world.platform.id.as_str());
    assert_eq!(first["details"]["user_id"], world.user.as_str());
}

#[tokio::test]
async fn a_link_opens_once_and_sets_a_strict_http_only_cookie() {
    let app = TestApp::new().await;
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    let minted = mint(&app, &world.platform.credential, json!({"user_id": world.user})).await;
    let path = link_path(&minted);

    let (first, headers) = open(&app, &path).await;
    assert_eq!(first.status, StatusCode::OK);
    let cookie = headers.get("set-cookie").unwrap().to_str().unwrap();
    assert!(cookie.starts_with("tether_console="), "{cookie}");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/console", "Max-Age=14400"] {
        assert!(cookie.contains(attribute), "{attribute} missing: {cookie}");
    }
    assert!(!cookie.contains("Secure"), "no Secure over plain http: {cookie}");
    assert!(first.text.contains("url=/console/agents"), "{}", first.text);

    let (again, headers) = open(&app, &path).await;
    assert_eq!(again.status, StatusCode::GONE);
    assert!(again.text.contains("already been used"), "{}", again.text);
    assert!(headers.get("set-cookie").is_none());

    let (unknown, _) = open(&app, "/console/open?link=nothing-like-a-link").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let (none, _) = open(&app, "/console/open").await;
    assert_eq!(none.status, StatusCode::BAD_REQUEST);
    assert!(none.content_type.starts_with("text/html"));

    let started = app.get("/v1/audit?action=console.session_started", &app.admin).await;
    let event = &started.ok()["items"][0];
    assert_eq!(event["actor"]["kind"], "user");
    assert_eq!(event["actor"]["id"], world.user.as_str());
    assert!(event["cause_seq"].is_i64(), "caused by the link's event: {event}");
}

#[tokio::test]
async fn a_link_expires_after_five_minutes() {
    let app = TestApp::new().await;
    let minted = mint(&app, &app.admin, json!({"role": "auditor"})).await;
    app.clock.advance_seconds(301);
    let (answer, headers) = open(&app, &link_path(&minted)).await;
    assert_eq!(answer.status, StatusCode::GONE);
    assert!(answer.text.contains("expired"), "{}", answer.text);
    assert!(headers.get("set-cookie").is_none());
}

#[tokio::test]
async fn the_cookie_is_secure_when_the_public_url_is_https() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::open(dir, |path| {
        let mut config = local_config(path);
        config.public_url = tether::domain::PublicUrl::parse("https://tether.example.com").unwrap();
        config
    })
    .await;
    let minted = mint(&app, &app.admin, json!({"role": "admin"})).await;
    assert!(minted.ok()["url"].as_str().unwrap().starts_with("https://tether.example.com/console/open?link="));
    let (_, headers) = open(&app, &link_path(&minted)).await;
    let cookie = headers.get("set-cookie").unwrap().to_str().unwrap();
    assert!(cookie.contains("; Secure"), "{cookie}");
}

#[tokio::test]
async fn pages_carry_the_security_headers_and_refuse_without_a_session() {
    let app = TestApp::new().await;
    let (world, _) = world_with_session(&app).await;
    let browser = sign_in(&app, &app.admin, json!({"user_id": world.user})).await;
    let (page, headers) =
        app.request_with_headers(Method::GET, "/console/agents", &[("cookie", &browser.cookie)], Body::empty()).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        headers["content-security-policy"],
        "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
    );
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["cache-control"], "no-store");
    assert!(!page.text.contains("<script"), "no script at all");
    assert!(!page.text.contains("style="), "no inline style");

    let (anonymous, headers) = app.request_with_headers(Method::GET, "/console/agents", &[], Body::empty()).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert!(anonymous.text.contains("not signed in"));
    assert_eq!(headers["content-security-policy"].to_str().unwrap().split(';').next(), Some("default-src 'self'"));
    let forged = app
        .request_with_headers(Method::GET, "/console/agents", &[("cookie", "tether_console=forged")], Body::empty())
        .await
        .0;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    let missing = browser.get(&app, "/console/no-such-page").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.content_type.starts_with("text/html"), "{}", missing.content_type);
}

#[tokio::test]
async fn a_post_without_the_token_or_from_another_site_is_refused_and_changes_nothing() {
    let app = TestApp::new().await;
    let (world, opened) = world_with_session(&app).await;
    let verifier = app.verifier().await;
    let browser = sign_in(&app, &world.platform.credential, json!({"user_id": world.user})).await;
    let csrf = browser.csrf(&app, "/console/agents").await;
    let same_site = [("origin", ORIGIN), ("sec-fetch-site", "same-origin")];
    let revoke = |token: &str| format!("csrf={token}&action=revoke_session&target={}", opened.id);

    let missing = browser
        .post_with(&app, "/console/agents", &format!("action=revoke_session&target={}", opened.id), &same_site)
        .await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST, "{}", missing.text);
    let wrong = browser.post_with(&app, "/console/agents", &revoke(&"0".repeat(64)), &same_site).await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    assert!(wrong.text.contains("security token"), "{}", wrong.text);
    let cross = [("origin", "https://evil.example"), ("sec-fetch-site", "cross-site")];
    let cross_site = browser.post_with(&app, "/console/agents", &revoke(&csrf), &cross).await;
    assert_eq!(cross_site.status, StatusCode::FORBIDDEN);
    assert!(cross_site.text.contains("another site"), "{}", cross_site.text);
    let silent = browser.post_with(&app, "/console/agents", &revoke(&csrf), &[]).await;
    assert_eq!(silent.status, StatusCode::FORBIDDEN);
    let null_cross = [("origin", "null"), ("sec-fetch-site", "cross-site")];
    let opaque = browser.post_with(&app, "/console/agents", &revoke(&csrf), &null_cross).await;
    assert_eq!(opaque.status, StatusCode::FORBIDDEN);
    let null_only = browser.post_with(&app, "/console/agents", &revoke(&csrf), &[("origin", "null")]).await;
    assert_eq!(null_only.status, StatusCode::FORBIDDEN);
    let sign_out = browser.post_with(&app, "/console/sign-out", &format!("csrf={csrf}"), &cross).await;
    assert_eq!(sign_out.status, StatusCode::FORBIDDEN);

    assert_eq!(app.authorize(&verifier, &opened.token, &opened.scope).await.0, "allow");
    assert_eq!(browser.get(&app, "/console/agents").await.status, StatusCode::OK, "still signed in");
}

#[tokio::test]
async fn names_a_tenant_controls_are_escaped() {
    let app = TestApp::new().await;
    let platform = app.platform("<b>Platform</b>").await;
    let user = app.user("idp|escaped", &["mail:read"]).await;
    let agent = app
        .post("/v1/agents", &platform.credential, json!({"name": "<script>alert(1)</script>", "scopes": ["mail:read"]}))
        .await;
    let agent = agent.ok()["id"].as_str().unwrap().to_owned();
    let integration = app.integration(&platform, &["mail:read"]).await;
    let delegation = app.delegation(&platform, &user, &agent, &integration, &["mail:read"]).await;
    app.opened(&platform, &delegation, &["mail:read"], None).await;
    let browser = sign_in(&app, &platform.credential, json!({"user_id": user})).await;
    let page = browser.get(&app, "/console/agents").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains("&#60;script&#62;alert(1)&#60;/script&#62;"), "{}", page.text);
    assert!(!page.text.contains("<script>"), "{}", page.text);
    assert!(page.text.contains("&#60;b&#62;Platform&#60;/b&#62;"));
}

#[tokio::test]
async fn a_person_sees_and_acts_on_their_own_agents_only() {
    let app = TestApp::new().await;
    let (alice, alice_session) = world_with_session(&app).await;
    let (bob, _) = world_with_session(&app).await;
    let verifier = app.verifier().await;
    let as_bob = sign_in(&app, &app.admin, json!({"user_id": bob.user})).await;

    let page = as_bob.get(&app, "/console/agents").await;
    assert!(page.text.contains(&bob.agent));
    assert!(!page.text.contains(&alice.agent), "another person's agent is not shown");
    assert!(!page.text.contains(&alice_session.id));

    let refused = as_bob.act(&app, "revoke_session", &alice_session.id).await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND, "{}", refused.text);
    let refused = as_bob.act(&app, "disconnect_agent", &alice.agent).await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND, "{}", refused.text);
    let refused = as_bob.act(&app, "revoke_delegation", &alice.delegation).await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND, "{}", refused.text);
    assert_eq!(app.authorize(&verifier, &alice_session.token, &alice_session.scope).await.0, "allow");
}

#[tokio::test]
async fn a_platforms_link_shows_and_acts_on_that_platforms_agents_only() {
    let app = TestApp::new().await;
    let (world, _) = world_with_session(&app).await;
    let other: Platform = app.platform("other").await;
    let agent = app.agent(&other, &["mail:read"]).await;
    let integration = app.integration(&other, &["mail:read"]).await;
    let delegation = app.delegation(&other, &world.user, &agent, &integration, &["mail:read"]).await;
    let elsewhere = app.opened(&other, &delegation, &["mail:read"], None).await;
    let verifier = app.verifier().await;

    let browser = sign_in(&app, &world.platform.credential, json!({"user_id": world.user})).await;
    let page = browser.get(&app, "/console/agents").await;
    assert!(page.text.contains(&world.agent));
    assert!(!page.text.contains(&agent), "the other platform's agent is not shown");
    assert!(!page.text.contains("Sign all agents out"));
    assert_eq!(browser.act(&app, "revoke_session", &elsewhere.id).await.status, StatusCode::NOT_FOUND);
    assert_eq!(browser.act(&app, "disconnect_agent", &agent).await.status, StatusCode::NOT_FOUND);
    assert_eq!(browser.act(&app, "sign_out_all", "").await.status, StatusCode::FORBIDDEN);
    assert_eq!(app.authorize(&verifier, &elsewhere.token, &elsewhere.scope).await.0, "allow");
}

#[tokio::test]
async fn revoking_a_session_from_the_console_denies_its_token_and_shows_the_receipt() {
    let app = TestApp::new().await;
    let (world, opened) = world_with_session(&app).await;
    let child = app.opened(&world.platform, &world.delegation, &["mail:read"], Some(&opened.id)).await;
    let verifier = app.verifier().await;
    let browser = sign_in(&app, &world.platform.credential, json!({"user_id": world.user})).await;
    let page = browser.get(&app, "/console/agents").await;
    assert!(page.text.contains(&child.id), "the sub-agent session is listed");
    assert!(page.text.contains("depth-1"));

    let answer = browser.act(&app, "revoke_session", &opened.id).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert!(answer.text.contains("2 sessions ended at "), "{}", answer.text);
    assert!(answer.text.contains("the next request with their tokens is refused"));
    assert!(answer.text.contains("revocation feed"), "the honest note about offline verifiers");
    assert_eq!(app.authorize(&verifier, &opened.token, &opened.scope).await.0, "deny");
    assert_eq!(app.authorize(&verifier, &child.token, &child.scope).await.0, "deny");

    let events = app.get(&format!("/v1/audit?subject={}&action=session.revoked", opened.id), &app.admin).await;
    let revoked = &events.ok()["items"][0];
    assert_eq!(revoked["actor"]["kind"], "user");
    assert_eq!(revoked["actor"]["id"], world.user.as_str());
}

#[tokio::test]
async fn disconnecting_revoking_consent_and_signing_out_all_end_sessions() {
    let app = TestApp::new().await;
    let (world, first) = world_with_session(&app).await;
    let second = app.opened(&world.platform, &world.delegation, &["mail:read"], None).await;
    let verifier = app.verifier().await;
    let browser = sign_in(&app, &app.admin, json!({"user_id": world.user})).await;

    let answer = browser.act(&app, "sign_out_all", "").await;
    assert!(answer.text.contains("2 sessions ended"), "{}", answer.text);
    for s in [&first, &second] {
        assert_eq!(app.authorize(&verifier, &s.token, &s.scope).await.0, "deny");
    }
    let third = app.opened(&world.platform, &world.delegation, &["mail:read"], None).await;
    let answer = browser.act(&app, "disconnect_agent", &world.agent).await;
    assert!(answer.text.contains("1 session ended"), "{}", answer.text);
    assert_eq!(app.authorize(&verifier, &third.token, &third.scope).await.0, "deny");
    let delegation = app.get(&format!("/v1/delegations/{}", world.delegation), &app.admin).await;
    assert_eq!(delegation.ok()["status"], "revoked");
    let again = browser.act(&app, "disconnect_agent", &world.agent).await;
    assert!(again.text.contains("Nothing was active"), "{}", again.text);
    let bad = browser.act(&app, "revoke_session", "not-an-id").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.content_type.starts_with("text/html"));
    let unknown = browser.act(&app, "launch_rockets", "").await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn an_auditor_reviews_but_cannot_act_and_sees_a_revocations_tree() {
    let app = TestApp::new().await;
    let (world, opened) = world_with_session(&app).await;
    app.opened(&world.platform, &world.delegation, &["mail:read"], Some(&opened.id)).await;
    // A relying service's webhook: the revocation's page lists its deliveries.
    app.post("/v1/webhooks", &app.admin, json!({"url": "http://127.0.0.1:9/relying-service"})).await.ok();
    let person = sign_in(&app, &app.admin, json!({"user_id": world.user})).await;
    person.act(&app, "disconnect_agent", &world.agent).await;

    let auditor = sign_in(&app, &app.admin, json!({"role": "auditor"})).await;
    assert_eq!(auditor.get(&app, "/console/agents").await.status, StatusCode::FORBIDDEN);
    let csrf = auditor.csrf(&app, "/console/audit").await;
    let form = format!("csrf={csrf}&action=revoke_session&target={}", opened.id);
    let acted = auditor.post_with(&app, "/console/agents", &form, &[("origin", ORIGIN)]).await;
    assert_eq!(acted.status, StatusCode::FORBIDDEN);
    assert_eq!(auditor.get(&app, "/console/admin").await.status, StatusCode::FORBIDDEN);

    let timeline = auditor.get(&app, "/console/audit?action=user.agent_disconnected").await;
    assert_eq!(timeline.status, StatusCode::OK, "{}", timeline.text);
    let at = timeline.text.find("/console/revocations/").expect("a link to the revocation") + 21;
    let seq: String = timeline.text[at..].chars().take_while(|c| c.is_ascii_digit()).collect();
    let page = auditor.get(&app, &format!("/console/revocations/{seq}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(page.text.contains("<svg"));
    assert!(page.text.contains("0 survivors"), "{}", page.text);
    assert!(page.text.contains(">sub-agent ses_"), "{}", page.text);
    assert_eq!(page.text.matches("class=\"node revoked\"").count(), 2);
    assert!(page.text.contains("http://127.0.0.1:9/relying-service"), "deliveries listed: {}", page.text);

    let bad = auditor.get(&app, "/console/audit?since=yesterday").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let not_trigger = auditor.get(&app, "/console/revocations/1").await;
    assert_eq!(not_trigger.status, StatusCode::BAD_REQUEST);
    let verify = auditor.get(&app, "/console/audit/verify").await;
    assert!(verify.text.contains("The chain verifies"), "{}", verify.text);
    let export = app
        .request_with_headers(Method::GET, "/console/audit/export", &[("cookie", &auditor.cookie)], Body::empty())
        .await;
    assert_eq!(export.0.status, StatusCode::OK);
    assert!(export.1["content-disposition"].to_str().unwrap().starts_with("attachment"));
    assert!(export.0.text.lines().count() > 5);
}

#[tokio::test]
async fn signing_out_and_idling_end_the_console_session() {
    let app = TestApp::new().await;
    let (world, _) = world_with_session(&app).await;
    let browser = sign_in(&app, &app.admin, json!({"user_id": world.user})).await;
    let csrf = browser.csrf(&app, "/console/agents").await;
    let out = browser.post_with(&app, "/console/sign-out", &format!("csrf={csrf}"), &[("origin", ORIGIN)]).await;
    assert_eq!(out.status, StatusCode::OK, "{}", out.text);
    assert_eq!(browser.get(&app, "/console/agents").await.status, StatusCode::UNAUTHORIZED);
    let ended = app.get("/v1/audit?action=console.session_ended", &app.admin).await;
    assert_eq!(ended.ok()["items"][0]["reason"], "signed_out");

    let idle = sign_in(&app, &app.admin, json!({"role": "admin"})).await;
    assert_eq!(idle.get(&app, "/console/admin").await.status, StatusCode::OK);
    app.clock.advance_seconds(15 * 60 + 1);
    let page = idle.get(&app, "/console/admin").await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(page.text.contains("ended"), "{}", page.text);
}
