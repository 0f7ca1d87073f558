//! Who may call what: roles against routes that are not theirs (403), tenants against each
//! other's objects (404, indistinguishable from absent), users against each other's sessions,
//! and the bearer credential itself (401 when missing, malformed, foreign, revoked or expired).

use axum::body::Body;
use axum::http::Method;
use serde_json::{json, Value};

use crate::helpers::{Answer, TestApp, World};

/// A well-formed id of `prefix` that names nothing.
fn absent_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

fn ids(page: &Answer) -> Vec<String> {
    page.ok()["items"]
        .as_array()
        .unwrap_or_else(|| panic!("not a page: {}", page.text))
        .iter()
        .map(|item| item["id"].as_str().expect("id").to_owned())
        .collect()
}

async fn status_of(app: &TestApp, session: &str) -> String {
    let s = app.get(&format!("/v1/sessions/{session}"), &app.admin).await;
    s.ok()["status"].as_str().expect("status").to_owned()
}

#[tokio::test]
async fn each_role_is_forbidden_the_routes_that_are_not_its_own() {
    let app = TestApp::new().await;
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    let (session, token) = app.session(&world.platform, &world.delegation, &["mail:read"]).await;
    let platform = world.platform.credential.clone();
    let user = app.user_credential(&world.user).await;
    let auditor = app.auditor().await;
    let verifier = app.verifier().await;
    let admin_cred = app.post("/v1/credentials", &app.admin, json!({"role": "auditor"})).await.ok()["id"]
        .as_str()
        .expect("credential id")
        .to_owned();
    let u = world.user.as_str();
    let p = world.platform.id.as_str();

    let new_user = json!({"external_id": "idp|new", "permissions": ["mail:read"]});
    let new_platform = json!({"name": "p2"});
    let new_agent = json!({"name": "a", "scopes": ["mail:read"]});
    let new_credential = json!({"role": "admin"});
    let new_delegation = json!({"user_id": u, "agent_id": world.agent, "integration_id": world.integration,
        "scopes": ["mail:read"]});
    let new_session = json!({"delegation_id": world.delegation, "scopes": ["mail:read"]});
    let permissions = json!({"permissions": []});
    let authorize = json!({"token": token, "scope": "mail:read"});
    let reason = json!({"reason": "not yours"});

    let cases: Vec<(&str, &str, Method, String, Option<Value>)> = vec![
        // the verifier reads no tenant data and changes nothing
        ("verifier", &verifier, Method::GET, "/v1/sessions".into(), None),
        ("verifier", &verifier, Method::GET, format!("/v1/sessions/{session}"), None),
        ("verifier", &verifier, Method::GET, "/v1/platforms".into(), None),
        ("verifier", &verifier, Method::GET, "/v1/agents".into(), None),
        ("verifier", &verifier, Method::GET, "/v1/delegations".into(), None),
        ("verifier", &verifier, Method::GET, "/v1/users".into(), None),
        ("verifier", &verifier, Method::GET, "/v1/audit".into(), None),
        ("verifier", &verifier, Method::GET, "/v1/credentials".into(), None),
        ("verifier", &verifier, Method::POST, "/v1/platforms".into(), Some(new_platform.clone())),
        ("verifier", &verifier, Method::POST, format!("/v1/sessions/{session}/revoke"), Some(reason.clone())),
        ("verifier", &verifier, Method::POST, format!("/v1/users/{u}/disable"), Some(reason.clone())),
        // the user acts on their own things only, and is no admin
        ("user", &user, Method::POST, "/v1/platforms".into(), Some(new_platform.clone())),
        ("user", &user, Method::POST, "/v1/users".into(), Some(new_user.clone())),
        ("user", &user, Method::GET, "/v1/users".into(), None),
        ("user", &user, Method::PUT, format!("/v1/users/{u}/permissions"), Some(permissions.clone())),
        ("user", &user, Method::POST, format!("/v1/users/{u}/disable"), Some(reason.clone())),
        ("user", &user, Method::POST, "/v1/agents".into(), Some(new_agent.clone())),
        ("user", &user, Method::POST, "/v1/delegations".into(), Some(new_delegation.clone())),
        ("user", &user, Method::POST, "/v1/sessions".into(), Some(new_session.clone())),
        ("user", &user, Method::POST, "/v1/authorize".into(), Some(authorize.clone())),
        ("user", &user, Method::GET, "/v1/audit".into(), None),
        ("user", &user, Method::POST, "/v1/credentials".into(), Some(new_credential.clone())),
        ("user", &user, Method::GET, "/v1/audit/export".into(), None),
        ("user", &user, Method::POST, "/v1/webhooks".into(), Some(json!({"url": "http://127.0.0.1:9/h"}))),
        // the auditor reads, never writes
        ("auditor", &auditor, Method::POST, "/v1/users".into(), Some(new_user.clone())),
        ("auditor", &auditor, Method::POST, "/v1/platforms".into(), Some(new_platform.clone())),
        ("auditor", &auditor, Method::PUT, format!("/v1/users/{u}/permissions"), Some(permissions.clone())),
        ("auditor", &auditor, Method::POST, format!("/v1/users/{u}/disable"), Some(reason.clone())),
        ("auditor", &auditor, Method::POST, format!("/v1/sessions/{session}/revoke"), Some(reason.clone())),
        ("auditor", &auditor, Method::POST, "/v1/sessions".into(), Some(new_session.clone())),
        ("auditor", &auditor, Method::POST, "/v1/delegations".into(), Some(new_delegation.clone())),
        ("auditor", &auditor, Method::POST, "/v1/authorize".into(), Some(authorize.clone())),
        ("auditor", &auditor, Method::POST, "/v1/credentials".into(), Some(new_credential.clone())),
        ("auditor", &auditor, Method::POST, format!("/v1/credentials/{admin_cred}/revoke"), None),
        ("auditor", &auditor, Method::GET, "/v1/credentials".into(), None),
        ("auditor", &auditor, Method::POST, "/v1/keys/rotate".into(), Some(json!({"purpose": "agent"}))),
        // the platform manages its own registrations, not users, platforms or credentials
        ("platform", &platform, Method::PUT, format!("/v1/users/{u}/permissions"), Some(permissions.clone())),
        ("platform", &platform, Method::POST, "/v1/users".into(), Some(new_user.clone())),
        ("platform", &platform, Method::GET, "/v1/users".into(), None),
        ("platform", &platform, Method::POST, format!("/v1/users/{u}/disable"), Some(reason.clone())),
        ("platform", &platform, Method::POST, format!("/v1/users/{u}/sign-out-all"), Some(reason.clone())),
        ("platform", &platform, Method::POST, "/v1/platforms".into(), Some(new_platform.clone())),
        ("platform", &platform, Method::POST, format!("/v1/platforms/{p}/disable"), Some(reason.clone())),
        ("platform", &platform, Method::POST, "/v1/authorize".into(), Some(authorize.clone())),
        ("platform", &platform, Method::GET, "/v1/audit".into(), None),
        ("platform", &platform, Method::GET, "/v1/audit/verify".into(), None),
        ("platform", &platform, Method::POST, "/v1/credentials".into(), Some(new_credential.clone())),
        ("platform", &platform, Method::GET, "/v1/credentials".into(), None),
        ("platform", &platform, Method::POST, format!("/v1/credentials/{admin_cred}/revoke"), None),
        ("platform", &platform, Method::GET, "/v1/audit/coverage?event=1".into(), None),
        ("platform", &platform, Method::POST, "/v1/keys/rotate".into(), Some(json!({"purpose": "agent"}))),
        ("verifier", &verifier, Method::POST, "/v1/keys/rotate".into(), Some(json!({"purpose": "agent"}))),
        // the role is checked before the body: a bad body does not tell a non-admin more
        ("verifier", &verifier, Method::POST, "/v1/keys/rotate".into(), Some(json!({"purpose": "nonsense"}))),
        ("platform", &platform, Method::POST, "/v1/keys/1/retire".into(), Some(json!({"purpose": "nonsense"}))),
    ];

    for (role, credential, method, path, body) in cases {
        let answer = app.call(method.clone(), &path, credential, body).await;
        assert_eq!(answer.status.as_u16(), 403, "{role} on {method} {path}: {}", answer.text);
        answer.problem(403, "forbidden");
    }

    // Nothing any of them tried took effect.
    assert_eq!(status_of(&app, &session).await, "active");
    let verifier_check = app.authorize(&verifier, &token, "mail:read").await;
    assert_eq!(verifier_check, ("allow".into(), "allowed".into()));
    let user_record = app.get(&format!("/v1/users/{u}"), &app.admin).await;
    assert_eq!(user_record.ok()["status"], "active");
    assert_eq!(user_record.body["permissions"], json!(["mail:read"]));
    let platforms = app.get("/v1/platforms", &app.admin).await;
    assert_eq!(ids(&platforms), vec![p.to_owned()], "no platform was created");
    let keys = app.get("/v1/keys", &app.admin).await;
    let agent_keys = keys.ok()["keys"].as_array().expect("keys").iter().filter(|k| k["purpose"] == "agent").count();
    assert_eq!(agent_keys, 1, "no key was rotated: {}", keys.text);
    let credentials = app.get("/v1/credentials?limit=1000", &app.admin).await;
    let revoked: Vec<&Value> =
        credentials.ok()["items"].as_array().expect("items").iter().filter(|c| !c["revoked_at"].is_null()).collect();
    assert!(revoked.is_empty(), "no credential was revoked: {revoked:?}");
}

/// Two platforms, each with a complete chain and one session.
async fn two_tenants(app: &TestApp) -> ((World, String, String), (World, String, String)) {
    let a = app.world(&["mail:read"], &["mail:read"]).await;
    let b = app.world(&["mail:read"], &["mail:read"]).await;
    let (a_session, a_token) = app.session(&a.platform, &a.delegation, &["mail:read"]).await;
    let (b_session, b_token) = app.session(&b.platform, &b.delegation, &["mail:read"]).await;
    ((a, a_session, a_token), (b, b_session, b_token))
}

#[tokio::test]
async fn a_platform_cannot_see_another_platforms_objects_which_answer_exactly_like_absent_ones() {
    let app = TestApp::new().await;
    let ((a, _, _), (b, b_session, _)) = two_tenants(&app).await;
    let a_cred = &a.platform.credential;

    for (path, prefix) in [
        (format!("/v1/platforms/{}", b.platform.id), "plt"),
        (format!("/v1/agents/{}", b.agent), "agt"),
        (format!("/v1/integrations/{}", b.integration), "int"),
        (format!("/v1/delegations/{}", b.delegation), "dlg"),
        (format!("/v1/sessions/{b_session}"), "ses"),
        (format!("/v1/users/{}", b.user), "usr"),
    ] {
        let theirs = app.get(&path, a_cred).await;
        theirs.problem(404, "not_found");
        let collection = path.rsplit_once('/').expect("path").0;
        let absent = app.get(&format!("{collection}/{}", absent_id(prefix)), a_cred).await;
        assert_eq!(theirs.body, absent.body, "{path}: another tenant's object must look absent");
        // The admin sees it: the 404 is about the caller, not the object.
        app.get(&path, &app.admin).await.ok();
    }
}

#[tokio::test]
async fn a_platforms_lists_hold_only_its_own_objects() {
    let app = TestApp::new().await;
    let ((a, a_session, _), (b, b_session, _)) = two_tenants(&app).await;
    let a_cred = &a.platform.credential;

    assert_eq!(ids(&app.get("/v1/platforms", a_cred).await), vec![a.platform.id.clone()]);
    assert_eq!(ids(&app.get("/v1/agents", a_cred).await), vec![a.agent.clone()]);
    assert_eq!(ids(&app.get("/v1/integrations", a_cred).await), vec![a.integration.clone()]);
    assert_eq!(ids(&app.get("/v1/delegations", a_cred).await), vec![a.delegation.clone()]);
    assert_eq!(ids(&app.get("/v1/sessions", a_cred).await), vec![a_session.clone()]);
    // Even when asking for the other tenant's objects by filter.
    let filtered = app.get(&format!("/v1/sessions?agent_id={}", b.agent), a_cred).await;
    assert_eq!(ids(&filtered), Vec::<String>::new());
    assert_eq!(ids(&app.get("/v1/sessions", &b.platform.credential).await), vec![b_session]);
}

#[tokio::test]
async fn a_platform_cannot_delegate_to_open_sessions_on_or_revoke_another_platforms_objects() {
    let app = TestApp::new().await;
    let a = app.world(&["mail:read"], &["mail:read"]).await;
    let b = app.world(&["mail:read"], &["mail:read"]).await;
    let b_created = app
        .post("/v1/sessions", &b.platform.credential, json!({"delegation_id": b.delegation, "scopes": ["mail:read"]}))
        .await
        .ok()
        .clone();
    let b_session = b_created["session"]["id"].as_str().expect("session id").to_owned();
    let b_token = b_created["token"].as_str().expect("token").to_owned();
    let b_refresh = b_created["refresh_token"].as_str().expect("refresh token").to_owned();
    let b_webhook = app.post("/v1/webhooks", &b.platform.credential, json!({"url": "http://127.0.0.1:9/b"})).await;
    let b_webhook = b_webhook.ok()["id"].as_str().expect("webhook id").to_owned();
    let a_cred = &a.platform.credential;
    let verifier = app.verifier().await;

    let with_their_agent = app
        .post(
            "/v1/delegations",
            a_cred,
            json!({"user_id": a.user, "agent_id": b.agent, "integration_id": a.integration, "scopes": ["mail:read"]}),
        )
        .await;
    with_their_agent.problem(404, "not_found");
    let with_their_chain = app
        .post(
            "/v1/delegations",
            a_cred,
            json!({"user_id": b.user, "agent_id": b.agent, "integration_id": b.integration, "scopes": ["mail:read"]}),
        )
        .await;
    with_their_chain.problem(404, "not_found");
    let on_their_delegation =
        app.post("/v1/sessions", a_cred, json!({"delegation_id": b.delegation, "scopes": ["mail:read"]})).await;
    on_their_delegation.problem(404, "not_found");
    let under_their_session = app
        .post(
            "/v1/sessions",
            a_cred,
            json!({"delegation_id": a.delegation, "scopes": ["mail:read"], "parent_session_id": b_session}),
        )
        .await;
    under_their_session.problem(404, "not_found");
    let revoke_theirs = app.post(&format!("/v1/sessions/{b_session}/revoke"), a_cred, json!({})).await;
    revoke_theirs.problem(404, "not_found");
    let refresh_theirs =
        app.post(&format!("/v1/sessions/{b_session}/refresh"), a_cred, json!({"refresh_token": b_refresh})).await;
    refresh_theirs.problem(404, "not_found");
    app.post(&format!("/v1/delegations/{}/revoke", b.delegation), a_cred, json!({})).await.problem(404, "not_found");
    app.post(&format!("/v1/agents/{}/suspend", b.agent), a_cred, json!({"reason": "x"}))
        .await
        .problem(404, "not_found");
    app.post(&format!("/v1/integrations/{}/disable", b.integration), a_cred, json!({"reason": "x"}))
        .await
        .problem(404, "not_found");
    app.post("/v1/agents", a_cred, json!({"name": "a", "scopes": ["mail:read"], "platform_id": b.platform.id}))
        .await
        .problem(404, "not_found");
    app.call(Method::DELETE, &format!("/v1/webhooks/{b_webhook}"), a_cred, None).await.problem(404, "not_found");
    app.get(&format!("/v1/webhooks/{b_webhook}/deliveries"), a_cred).await.problem(404, "not_found");
    assert_eq!(ids(&app.get("/v1/webhooks", a_cred).await), Vec::<String>::new());

    // B's world is untouched, and B's refresh token still works for B.
    assert_eq!(status_of(&app, &b_session).await, "active");
    assert_eq!(app.authorize(&verifier, &b_token, "mail:read").await, ("allow".into(), "allowed".into()));
    assert_eq!(ids(&app.get("/v1/delegations", &b.platform.credential).await), vec![b.delegation.clone()]);
    assert_eq!(ids(&app.get("/v1/sessions", &b.platform.credential).await), vec![b_session.clone()]);
    assert_eq!(ids(&app.get("/v1/webhooks", &b.platform.credential).await), vec![b_webhook]);
    let agent = app.get(&format!("/v1/agents/{}", b.agent), &app.admin).await;
    assert_eq!(agent.ok()["status"], "active");
    let integration = app.get(&format!("/v1/integrations/{}", b.integration), &app.admin).await;
    assert_eq!(integration.ok()["status"], "active");
    app.post(&format!("/v1/sessions/{b_session}/refresh"), &b.platform.credential, json!({"refresh_token": b_refresh}))
        .await
        .ok();
}

/// Two users on one platform, each with a session; returns (platform world of x, x's session and
/// token, y's user id, y's session and token).
async fn two_users(app: &TestApp) -> (World, String, String, String, String, String) {
    let x = app.world(&["mail:read"], &["mail:read"]).await;
    let y = app.user("idp|y", &["mail:read"]).await;
    let y_delegation = app.delegation(&x.platform, &y, &x.agent, &x.integration, &["mail:read"]).await;
    let (x_session, x_token) = app.session(&x.platform, &x.delegation, &["mail:read"]).await;
    let (y_session, y_token) = app.session(&x.platform, &y_delegation, &["mail:read"]).await;
    (x, x_session, x_token, y, y_session, y_token)
}

#[tokio::test]
async fn a_user_cannot_read_or_revoke_another_users_sessions_but_can_revoke_their_own() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let (x, x_session, x_token, y, y_session, y_token) = two_users(&app).await;
    let x_cred = app.user_credential(&x.user).await;

    app.get(&format!("/v1/sessions/{y_session}"), &x_cred).await.problem(404, "not_found");
    app.post(&format!("/v1/sessions/{y_session}/revoke"), &x_cred, json!({})).await.problem(404, "not_found");
    app.get(&format!("/v1/users/{y}"), &x_cred).await.problem(404, "not_found");
    app.post(&format!("/v1/users/{y}/sign-out-all"), &x_cred, json!({})).await.problem(404, "not_found");
    app.post(&format!("/v1/users/{y}/agents/{}/disconnect", x.agent), &x_cred, json!({}))
        .await
        .problem(404, "not_found");
    let y_delegation = app.get(&format!("/v1/sessions/{y_session}"), &app.admin).await.ok()["delegation_id"].clone();
    let y_delegation = y_delegation.as_str().expect("delegation id");
    app.get(&format!("/v1/delegations/{y_delegation}"), &x_cred).await.problem(404, "not_found");
    app.post(&format!("/v1/delegations/{y_delegation}/revoke"), &x_cred, json!({})).await.problem(404, "not_found");
    assert_eq!(status_of(&app, &y_session).await, "active");
    assert_eq!(app.authorize(&verifier, &y_token, "mail:read").await, ("allow".into(), "allowed".into()));

    let own = app.get(&format!("/v1/sessions/{x_session}"), &x_cred).await;
    assert_eq!(own.ok()["id"], x_session.as_str());
    assert_eq!(app.get(&format!("/v1/users/{}", x.user), &x_cred).await.ok()["id"], x.user.as_str());
    let receipt = app.post(&format!("/v1/sessions/{x_session}/revoke"), &x_cred, json!({"reason": "mine"})).await;
    assert_eq!(receipt.ok()["revoked"][0]["session_id"], x_session.as_str());
    assert_eq!(receipt.body["revoked"].as_array().map(Vec::len), Some(1));
    assert_eq!(app.authorize(&verifier, &x_token, "mail:read").await, ("deny".into(), "session_revoked".into()));
    assert_eq!(app.authorize(&verifier, &y_token, "mail:read").await, ("allow".into(), "allowed".into()));

    // Their own consent is theirs to withdraw too.
    app.post(&format!("/v1/delegations/{}/revoke", x.delegation), &x_cred, json!({})).await.ok();
    let own_delegation = app.get(&format!("/v1/delegations/{}", x.delegation), &x_cred).await;
    assert_eq!(own_delegation.ok()["status"], "revoked");
    assert_eq!(app.authorize(&verifier, &y_token, "mail:read").await, ("allow".into(), "allowed".into()));
}

#[tokio::test]
async fn a_user_listing_sessions_or_delegations_sees_only_their_own() {
    let app = TestApp::new().await;
    let (x, x_session, _, y, y_session, _) = two_users(&app).await;
    let (x_second, _) = app.session(&x.platform, &x.delegation, &["mail:read"]).await;
    let x_cred = app.user_credential(&x.user).await;

    let mut listed = ids(&app.get("/v1/sessions", &x_cred).await);
    listed.sort();
    let mut expected = vec![x_session, x_second];
    expected.sort();
    assert_eq!(listed, expected);
    let filtered = app.get(&format!("/v1/sessions?user_id={y}"), &x_cred).await;
    assert_eq!(ids(&filtered), Vec::<String>::new(), "filtering by another user shows nothing");
    assert_eq!(ids(&app.get("/v1/delegations", &x_cred).await), vec![x.delegation.clone()]);
    let y_cred = app.user_credential(&y).await;
    assert_eq!(ids(&app.get("/v1/sessions", &y_cred).await), vec![y_session]);
}

#[tokio::test]
async fn an_agent_token_is_not_an_api_credential() {
    let app = TestApp::new().await;
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    let (_, token) = app.session(&world.platform, &world.delegation, &["mail:read"]).await;

    for path in ["/v1/sessions", "/v1/platforms", "/v1/audit"] {
        app.get(path, &token).await.problem(401, "unauthenticated");
    }
    let authorize = app.post("/v1/authorize", &token, json!({"token": token, "scope": "mail:read"})).await;
    authorize.problem(401, "unauthenticated");
}

#[tokio::test]
async fn an_api_credential_is_not_an_agent_token() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let world = app.world(&["mail:read"], &["mail:read"]).await;

    for credential in [&app.admin, &world.platform.credential, &verifier] {
        assert_eq!(app.authorize(&verifier, credential, "mail:read").await, ("deny".into(), "invalid_token".into()));
    }
}

#[tokio::test]
async fn a_credential_of_another_tether_or_with_an_appended_block_is_refused() {
    let app = TestApp::new().await;
    let other = TestApp::new().await;
    let attenuated = biscuit_auth::UnverifiedBiscuit::from_base64(&app.admin)
        .expect("biscuit")
        .append(biscuit_auth::builder::BlockBuilder::new().code("check if true;").expect("block"))
        .expect("append")
        .to_base64()
        .expect("encode");

    app.get("/v1/platforms", &other.admin).await.problem(401, "unauthenticated");
    app.get("/v1/platforms", &attenuated).await.problem(401, "unauthenticated");
    app.get("/v1/platforms", &app.admin).await.ok();
}

#[tokio::test]
async fn a_revoked_credential_stops_working_at_once() {
    let app = TestApp::new().await;
    let platform = app.platform("p").await;
    let created =
        app.post("/v1/credentials", &app.admin, json!({"role": "platform", "platform_id": platform.id})).await;
    let id = created.ok()["id"].as_str().expect("id").to_owned();
    let credential = created.body["credential"].as_str().expect("credential").to_owned();
    app.get("/v1/agents", &credential).await.ok();

    let revoked = app.post(&format!("/v1/credentials/{id}/revoke"), &app.admin, json!({})).await;
    assert!(!revoked.ok()["revoked_at"].is_null(), "{}", revoked.text);

    app.get("/v1/agents", &credential).await.problem(401, "unauthenticated");
    app.post("/v1/agents", &credential, json!({"name": "a", "scopes": ["mail:read"]}))
        .await
        .problem(401, "unauthenticated");
    // The platform's other credential is unaffected.
    app.get("/v1/agents", &platform.credential).await.ok();
}

/// Sends a request whose body arrives only when the returned sender is used: the request passes
/// the credential check and waits for its body.
fn slow_request(
    app: &TestApp,
    path: &str,
    credential: &str,
    content_type: &str,
) -> (tokio::sync::oneshot::Sender<String>, tokio::task::JoinHandle<axum::http::Response<Body>>) {
    use tower::ServiceExt;
    let (send_body, body) = tokio::sync::oneshot::channel::<String>();
    let slow_body = Body::from_stream(futures_util::stream::once(async move {
        Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(body.await.expect("the test sends the body")))
    }));
    let request = axum::http::Request::post(path)
        .header("authorization", format!("Bearer {credential}"))
        .header("content-type", content_type)
        .body(slow_body)
        .expect("request");
    let router = app.router.clone();
    (send_body, tokio::spawn(async move { router.oneshot(request).await.expect("response") }))
}

#[tokio::test]
async fn a_write_whose_body_arrives_after_its_credential_was_revoked_is_refused() {
    let app = TestApp::new().await;
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    let (_, token) = app.session(&world.platform, &world.delegation, &["mail:read"]).await;
    let created =
        app.post("/v1/credentials", &app.admin, json!({"role": "platform", "platform_id": world.platform.id})).await;
    let id = created.ok()["id"].as_str().expect("id").to_owned();
    let credential = created.body["credential"].as_str().expect("credential").to_owned();

    let (agent_body, agent) = slow_request(&app, "/v1/agents", &credential, "application/json");
    let (revoke_body, oauth_revoke) =
        slow_request(&app, "/oauth2/revoke", &credential, "application/x-www-form-urlencoded");
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;

    app.post(&format!("/v1/credentials/{id}/revoke"), &app.admin, json!({})).await.ok();
    agent_body.send(json!({"name": "late", "scopes": ["mail:read"]}).to_string()).expect("waiting");
    revoke_body.send(format!("token={token}")).expect("waiting");
    assert_eq!(agent.await.expect("task").status(), 401, "a revoked credential's write was committed");
    assert_eq!(oauth_revoke.await.expect("task").status(), 401, "RFC 7009: invalid_client");
    let agents = app.get("/v1/agents", &world.platform.credential).await;
    assert_eq!(agents.ok()["items"].as_array().map(Vec::len), Some(1), "only the world's agent exists");
    let verifier = app.verifier().await;
    assert_eq!(app.authorize(&verifier, &token, "mail:read").await.0, "allow", "the session was not revoked");
}

#[tokio::test]
async fn a_credential_past_its_ttl_stops_working() {
    let app = TestApp::new().await;
    let created = app.post("/v1/credentials", &app.admin, json!({"role": "auditor", "ttl_seconds": 60})).await;
    let credential = created.ok()["credential"].as_str().expect("credential").to_owned();
    app.get("/v1/audit/verify", &credential).await.ok();

    app.clock.advance_seconds(61);

    app.get("/v1/audit/verify", &credential).await.problem(401, "unauthenticated");
    app.get("/v1/audit/verify", &app.admin).await.ok();
}

#[tokio::test]
async fn a_missing_or_malformed_authorization_header_is_401_with_a_bearer_challenge() {
    let app = TestApp::new().await;
    let admin = app.admin.clone();
    let basic = format!("Basic {admin}");
    let no_space = format!("Bearer{admin}");
    let doubled = format!("Bearer Bearer {admin}");
    let headers: Vec<Vec<(&str, &str)>> = vec![
        vec![],
        vec![("authorization", "")],
        vec![("authorization", "Bearer")],
        vec![("authorization", "Bearer ")],
        vec![("authorization", "Bearer not-a-credential")],
        vec![("authorization", basic.as_str())],
        vec![("authorization", no_space.as_str())],
        vec![("authorization", doubled.as_str())],
        vec![("authorization", "Token abc")],
    ];

    for header in headers {
        for (method, path) in
            [(Method::GET, "/v1/sessions"), (Method::GET, "/v1/audit"), (Method::POST, "/v1/authorize")]
        {
            let (answer, response_headers) =
                app.request_with_headers(method.clone(), path, &header, Body::empty()).await;
            assert_eq!(answer.status.as_u16(), 401, "{method} {path} with {header:?}: {}", answer.text);
            answer.problem(401, "unauthenticated");
            let challenge = response_headers.get("www-authenticate").and_then(|v| v.to_str().ok());
            assert!(
                challenge.is_some_and(|c| c.starts_with("Bearer realm=\"tether\"") && c.contains("resource_metadata=")),
                "{method} {path} with {header:?}: {challenge:?}"
            );
        }
    }

    // The same route answers with the credential in its proper form.
    let bearer = format!("Bearer {admin}");
    let (answer, _) =
        app.request_with_headers(Method::GET, "/v1/sessions", &[("authorization", &bearer)], Body::empty()).await;
    answer.ok();
}

#[tokio::test]
async fn a_credential_is_bound_only_to_a_platform_or_user_that_exists_and_never_to_a_disabled_platform() {
    let app = TestApp::new().await;
    let bind = |body: Value| app.post("/v1/credentials", &app.admin, body);
    bind(json!({"role": "platform", "platform_id": absent_id("plt")})).await.problem(404, "not_found");
    bind(json!({"role": "user", "user_id": absent_id("usr")})).await.problem(404, "not_found");

    let platform = app.platform("p").await;
    app.post(&format!("/v1/platforms/{}/disable", platform.id), &app.admin, json!({})).await.ok();
    let refused = bind(json!({"role": "platform", "platform_id": platform.id})).await;
    assert!(refused.problem(409, "conflict").contains("disabled"), "{}", refused.text);

    // `tether credential mint` goes through the same check (on SQLite: the CLI mints into the
    // data directory's database only).
    if app.database_url().is_some() {
        eprintln!("the CLI part skipped on PostgreSQL: `tether credential mint` writes to the SQLite database");
        return;
    }
    let minted = std::process::Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["credential", "mint", "--role", "platform", "--platform-id", &platform.id, "--data-dir"])
        .arg(app.dir.path())
        .output()
        .expect("run tether credential mint");
    assert!(!minted.status.success(), "minted for a disabled platform: {minted:?}");
    assert!(String::from_utf8_lossy(&minted.stderr).contains("disabled"), "{minted:?}");
    assert!(minted.stdout.is_empty(), "no credential printed: {minted:?}");
}
