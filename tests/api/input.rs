//! Bad input gets a problem+json 4xx naming the problem, never a 500 and never a wider grant:
//! malformed and oversized bodies, unknown fields, wrong types, ill-shaped ids and scopes,
//! control characters, unknown routes and methods, bad paging, scope over-asks, and datalog
//! smuggled into names, scopes and resources. Also: pagination walks every item once.

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::Method;
use serde_json::{json, Value};

use crate::helpers::{Answer, TestApp};

/// A well-formed id of `prefix` that names nothing.
fn absent_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// POST with a raw body text and content type.
async fn post_raw(app: &TestApp, path: &str, content_type: Option<&str>, body: impl Into<String>) -> Answer {
    app.request(Method::POST, path, Some(&app.admin), content_type, Body::from(body.into())).await
}

/// Asserts a 400 `invalid_request` problem whose detail mentions `needle`; returns the detail.
#[track_caller]
fn invalid_naming(answer: &Answer, needle: &str, what: &str) -> String {
    assert_eq!(answer.status.as_u16(), 400, "{what}: {}", answer.text);
    let detail = answer.problem(400, "invalid_request");
    assert!(detail.contains(needle), "{what}: detail {detail:?} does not name {needle:?}");
    detail
}

#[tokio::test]
async fn malformed_json_is_a_400_that_says_the_json_is_malformed() {
    let app = TestApp::new().await;

    for body in ["{\"name\":", "not json", "[", "{\"name\": \"a\",}", "{'name': 'a'}", "", "\u{0}"] {
        let answer = post_raw(&app, "/v1/platforms", Some("application/json"), body).await;
        assert_eq!(answer.status.as_u16(), 400, "body {body:?}: {}", answer.text);
        let detail = answer.problem(400, "invalid_request");
        assert!(detail.to_lowercase().contains("json"), "body {body:?}: {detail}");
    }
    let platforms = app.get("/v1/platforms", &app.admin).await;
    assert_eq!(platforms.ok()["items"], json!([]), "nothing was created");
}

#[tokio::test]
async fn an_unknown_field_is_a_400_naming_the_field() {
    let app = TestApp::new().await;
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    let verifier = app.verifier().await;

    let platform = app.post("/v1/platforms", &app.admin, json!({"name": "p", "nmae": "typo"})).await;
    invalid_naming(&platform, "nmae", "platform");
    let session = app
        .post(
            "/v1/sessions",
            &world.platform.credential,
            json!({"delegation_id": world.delegation, "scopes": ["mail:read"], "ttl": 60}),
        )
        .await;
    invalid_naming(&session, "ttl", "session");
    let metadata = app
        .post(
            "/v1/sessions",
            &world.platform.credential,
            json!({"delegation_id": world.delegation, "scopes": ["mail:read"], "metadata": {"ipaddr": "1.2.3.4"}}),
        )
        .await;
    invalid_naming(&metadata, "ipaddr", "session metadata");
    let authorize =
        app.post("/v1/authorize", &verifier, json!({"token": "t", "scope": "mail:read", "admin": true})).await;
    invalid_naming(&authorize, "admin", "authorize");
    let user = app.post("/v1/users", &app.admin, json!({"external_id": "x", "permissions": [], "role": "admin"})).await;
    invalid_naming(&user, "role", "user");
    let sessions = app.get("/v1/sessions?usr_id=x", &app.admin).await;
    invalid_naming(&sessions, "usr_id", "session list query");
}

#[tokio::test]
async fn a_missing_required_field_is_a_400_naming_the_field() {
    let app = TestApp::new().await;
    let platform = app.platform("p").await;

    let agent = app.post("/v1/agents", &platform.credential, json!({"scopes": ["mail:read"]})).await;
    invalid_naming(&agent, "name", "agent without name");
    let user = app.post("/v1/users", &app.admin, json!({"external_id": "x"})).await;
    invalid_naming(&user, "permissions", "user without permissions");
}

#[tokio::test]
async fn a_value_of_the_wrong_type_is_a_400_naming_the_field() {
    let app = TestApp::new().await;
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    let p = &world.platform.credential;
    let d = &world.delegation;

    // (route, credential, body, what the detail must name; "" where there is no field to name)
    let cases: Vec<(&str, &str, Value, &str)> = vec![
        ("/v1/platforms", &app.admin, json!({"name": 5}), "name"),
        ("/v1/platforms", &app.admin, json!({"name": null}), "name"),
        ("/v1/platforms", &app.admin, json!({"name": ["a"]}), "name"),
        ("/v1/platforms", &app.admin, json!("just a string"), ""),
        ("/v1/platforms", &app.admin, json!([{"name": "a"}]), ""),
        ("/v1/agents", p, json!({"name": "a", "scopes": "mail:read"}), "scopes"),
        ("/v1/agents", p, json!({"name": "a", "scopes": [1, 2]}), "scopes"),
        ("/v1/agents", p, json!({"name": "a", "scopes": {"mail:read": true}}), "scopes"),
        ("/v1/users", &app.admin, json!({"external_id": 7, "permissions": []}), "external_id"),
        ("/v1/sessions", p, json!({"delegation_id": d, "scopes": ["mail:read"], "ttl_seconds": "60"}), "ttl_seconds"),
        ("/v1/sessions", p, json!({"delegation_id": d, "scopes": ["mail:read"], "ttl_seconds": 1.5}), "ttl_seconds"),
        ("/v1/sessions", p, json!({"delegation_id": d, "scopes": ["mail:read"], "ttl_seconds": 1e30}), "ttl_seconds"),
        ("/v1/sessions", p, json!({"delegation_id": d, "scopes": ["mail:read"], "ttl_seconds": 0}), "ttl_seconds"),
        ("/v1/sessions", p, json!({"delegation_id": d, "scopes": ["mail:read"], "ttl_seconds": -1}), "ttl_seconds"),
        ("/v1/sessions", p, json!({"delegation_id": 12, "scopes": ["mail:read"]}), "delegation_id"),
        ("/v1/sessions", p, json!({"delegation_id": d, "scopes": []}), "scopes"),
        ("/v1/credentials", &app.admin, json!({"role": "root"}), "role"),
        ("/v1/credentials", &app.admin, json!({"role": "auditor", "ttl_seconds": -5}), "ttl_seconds"),
    ];

    for (path, credential, body, field) in cases {
        let answer = app.post(path, credential, body.clone()).await;
        invalid_naming(&answer, field, &format!("{path} {body}"));
    }
}

#[tokio::test]
async fn a_path_id_of_the_wrong_kind_or_shape_is_a_400_naming_the_expected_kind() {
    let app = TestApp::new().await;
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    let upper = absent_id("ses").to_uppercase().replacen("SES_", "ses_", 1);
    let not_v7 = "ses_00000000000000000000000000000000".to_owned();

    for bad in [world.user.clone(), "ses_123".into(), "..%2Fetc".into(), upper, not_v7, "ses_%00".into(), "%20".into()]
    {
        let read = app.get(&format!("/v1/sessions/{bad}"), &app.admin).await;
        invalid_naming(&read, "session", &format!("GET /v1/sessions/{bad}"));
        let revoke = app.post(&format!("/v1/sessions/{bad}/revoke"), &app.admin, json!({})).await;
        invalid_naming(&revoke, "session", &format!("revoke {bad}"));
    }
    let session_as_user = app.get(&format!("/v1/users/{}", absent_id("ses")), &app.admin).await;
    invalid_naming(&session_as_user, "user", "a session id where a user id belongs");
    let agent_as_user = app
        .post(&format!("/v1/users/{}/agents/{}/disconnect", world.user, world.integration), &app.admin, json!({}))
        .await;
    invalid_naming(&agent_as_user, "agent", "an integration id where an agent id belongs");
    let credential = app.post("/v1/credentials/cred_1/revoke", &app.admin, json!({})).await;
    invalid_naming(&credential, "credential", "a short credential id");

    // `..` segments do not walk to another route: they name no route at all.
    let traversal = app.get("/v1/sessions/../platforms", &app.admin).await;
    traversal.problem(404, "not_found");
}

#[tokio::test]
async fn a_body_id_of_the_wrong_kind_or_shape_is_a_400_naming_the_expected_kind() {
    let app = TestApp::new().await;
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    let p = &world.platform.credential;

    let session = app.post("/v1/sessions", p, json!({"delegation_id": world.user, "scopes": ["mail:read"]})).await;
    invalid_naming(&session, "delegation", "a user id as delegation_id");
    let parent = app
        .post(
            "/v1/sessions",
            p,
            json!({"delegation_id": world.delegation, "scopes": ["mail:read"], "parent_session_id": "ses_123"}),
        )
        .await;
    invalid_naming(&parent, "session", "a short parent session id");
    let delegation = app
        .post(
            "/v1/delegations",
            p,
            json!({"user_id": world.agent, "agent_id": world.agent, "integration_id": world.integration,
                "scopes": ["mail:read"]}),
        )
        .await;
    invalid_naming(&delegation, "user", "an agent id as user_id");
    let credential =
        app.post("/v1/credentials", &app.admin, json!({"role": "platform", "platform_id": "../etc/passwd"})).await;
    invalid_naming(&credential, "platform", "a path as platform_id");
    let filter = app.get(&format!("/v1/sessions?user_id={}", world.agent), &app.admin).await;
    invalid_naming(&filter, "user", "an agent id as the user_id filter");
}

#[tokio::test]
async fn an_ill_formed_scope_is_a_400_naming_the_scope_wherever_it_appears() {
    let app = TestApp::new().await;
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    let (_, token) = app.session(&world.platform, &world.delegation, &["mail:read"]).await;
    let verifier = app.verifier().await;
    let p = &world.platform.credential;
    let long = "a".repeat(129);

    for bad in [
        "Mail:read",
        "MAIL:READ",
        "mail read",
        " mail:read",
        "mail\"read",
        "mail'read",
        "mail(read)",
        "",
        "é",
        "mail\u{0}read",
        long.as_str(),
    ] {
        let agent = app.post("/v1/agents", p, json!({"name": "a", "scopes": [bad]})).await;
        invalid_naming(&agent, "scope", &format!("agent scope {bad:?}"));
        let user = app.post("/v1/users", &app.admin, json!({"external_id": "x", "permissions": [bad]})).await;
        invalid_naming(&user, "scope", &format!("permission {bad:?}"));
        let session = app.post("/v1/sessions", p, json!({"delegation_id": world.delegation, "scopes": [bad]})).await;
        invalid_naming(&session, "scope", &format!("session scope {bad:?}"));
        let authorize = app.post("/v1/authorize", &verifier, json!({"token": token, "scope": bad})).await;
        invalid_naming(&authorize, "scope", &format!("authorize scope {bad:?}"));
    }
    // 128 characters is still a scope.
    let longest = "a".repeat(128);
    app.post("/v1/agents", p, json!({"name": "a", "scopes": [longest]})).await.ok();
}

#[tokio::test]
async fn control_characters_in_names_and_reasons_are_a_400_naming_the_field() {
    let app = TestApp::new().await;
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    let (session, _) = app.session(&world.platform, &world.delegation, &["mail:read"]).await;
    let p = &world.platform.credential;

    let platform = app.post("/v1/platforms", &app.admin, json!({"name": "a\u{0}b"})).await;
    invalid_naming(&platform, "name", "platform name with NUL");
    let agent = app.post("/v1/agents", p, json!({"name": "agent\u{0}", "scopes": ["mail:read"]})).await;
    invalid_naming(&agent, "name", "agent name with NUL");
    let user = app.post("/v1/users", &app.admin, json!({"external_id": "idp|\u{0}", "permissions": []})).await;
    invalid_naming(&user, "external_id", "external_id with NUL");
    let display = app
        .post("/v1/users", &app.admin, json!({"external_id": "idp|d", "display_name": "a\nb", "permissions": []}))
        .await;
    invalid_naming(&display, "display_name", "display name with a newline");
    let revoke = app.post(&format!("/v1/sessions/{session}/revoke"), p, json!({"reason": "bye\u{0}"})).await;
    invalid_naming(&revoke, "reason", "reason with NUL");
    let blank = app.post("/v1/platforms", &app.admin, json!({"name": "   "})).await;
    invalid_naming(&blank, "name", "blank platform name");

    let s = app.get(&format!("/v1/sessions/{session}"), &app.admin).await;
    assert_eq!(s.ok()["status"], "active", "the refused revoke did nothing");
}

#[tokio::test]
async fn a_body_over_64_kib_is_413_payload_too_large() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;

    let big_name = json!({"name": "a".repeat(70 * 1024)}).to_string();
    let answer = post_raw(&app, "/v1/platforms", Some("application/json"), big_name).await;
    answer.problem(413, "payload_too_large");
    let big_token = json!({"token": "A".repeat(65 * 1024), "scope": "mail:read"}).to_string();
    let answer = app
        .request(Method::POST, "/v1/authorize", Some(&verifier), Some("application/json"), Body::from(big_token))
        .await;
    answer.problem(413, "payload_too_large");
    let platforms = app.get("/v1/platforms", &app.admin).await;
    assert_eq!(platforms.ok()["items"], json!([]));
}

#[tokio::test]
async fn a_body_without_a_json_content_type_is_415() {
    let app = TestApp::new().await;
    let body = json!({"name": "p"}).to_string();

    for content_type in [None, Some("text/plain"), Some("application/x-www-form-urlencoded")] {
        let answer = post_raw(&app, "/v1/platforms", content_type, body.clone()).await;
        assert_eq!(answer.status.as_u16(), 415, "content type {content_type:?}: {}", answer.text);
        assert_eq!(answer.content_type, "application/problem+json", "{}", answer.text);
        assert_eq!(answer.body["status"], 415);
        assert!(!answer.body["code"].as_str().unwrap_or_default().is_empty(), "{}", answer.text);
        assert!(answer.body["detail"].as_str().unwrap_or_default().contains("application/json"), "{}", answer.text);
    }
    let platforms = app.get("/v1/platforms", &app.admin).await;
    assert_eq!(platforms.ok()["items"], json!([]));
}

#[tokio::test]
async fn a_reason_body_without_a_json_content_type_is_415_and_revokes_nothing() {
    let app = TestApp::new().await;
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    let (session, _) = app.session(&world.platform, &world.delegation, &["mail:read"]).await;
    let auth = format!("Bearer {}", app.admin);
    let body = r#"{"reason":"because"}"#;
    let length = body.len().to_string();

    let (answer, _) = app
        .request_with_headers(
            Method::POST,
            &format!("/v1/sessions/{session}/revoke"),
            &[("authorization", &auth), ("content-length", &length), ("content-type", "text/plain")],
            Body::from(body),
        )
        .await;

    assert_eq!(answer.status.as_u16(), 415, "{}", answer.text);
    assert_eq!(answer.content_type, "application/problem+json");
    let s = app.get(&format!("/v1/sessions/{session}"), &app.admin).await;
    assert_eq!(s.ok()["status"], "active");
}

#[tokio::test]
async fn an_empty_body_on_a_route_whose_body_is_optional_needs_no_content_type() {
    let app = TestApp::new().await;
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    let (session, _) = app.session(&world.platform, &world.delegation, &["mail:read"]).await;
    let auth = format!("Bearer {}", app.admin);

    let (answer, _) = app
        .request_with_headers(
            Method::POST,
            &format!("/v1/sessions/{session}/revoke"),
            &[("authorization", &auth), ("content-length", "0")],
            Body::empty(),
        )
        .await;

    assert_eq!(answer.ok()["revoked"][0]["session_id"], session.as_str());
}

#[tokio::test]
async fn a_body_of_unknown_length_and_no_content_type_is_415_and_revokes_nothing() {
    let app = TestApp::new().await;
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    let (session, _) = app.session(&world.platform, &world.delegation, &["mail:read"]).await;
    let auth = format!("Bearer {}", app.admin);
    // A chunked body: no Content-Length says there is one, and no Content-Type what it is.
    let chunks = futures_util::stream::iter([Ok::<_, std::io::Error>(axum::body::Bytes::from_static(b"hello"))]);

    let (answer, _) = app
        .request_with_headers(
            Method::POST,
            &format!("/v1/sessions/{session}/revoke"),
            &[("authorization", &auth)],
            Body::from_stream(chunks),
        )
        .await;

    assert_eq!(answer.status.as_u16(), 415, "{}", answer.text);
    assert_eq!(answer.content_type, "application/problem+json");
    assert_eq!(app.session_status(&session).await, "active");
    // The same with no body at all still works.
    let (answer, _) = app
        .request_with_headers(
            Method::POST,
            &format!("/v1/sessions/{session}/revoke"),
            &[("authorization", &auth)],
            Body::empty(),
        )
        .await;
    assert_eq!(answer.ok()["revoked"][0]["session_id"], session.as_str());
}

#[tokio::test]
async fn a_last_event_id_that_is_not_ascii_is_a_400_not_a_stream_from_the_head() {
    let app = TestApp::new().await;
    let auth = format!("Bearer {}", app.admin);
    let (answer, _) = app
        .request_with_headers(
            Method::GET,
            "/v1/events",
            &[("authorization", &auth), ("last-event-id", "é1")],
            Body::empty(),
        )
        .await;
    assert!(answer.problem(400, "invalid_request").contains("Last-Event-ID"), "{}", answer.text);
}

#[tokio::test]
async fn a_webhook_url_with_a_port_outside_1_to_65535_is_a_400() {
    let app = TestApp::new().await;
    for url in ["http://127.0.0.1:65536/hook", "http://127.0.0.1:99999999999/hook", "http://127.0.0.1:0/hook"] {
        let answer = app.post("/v1/webhooks", &app.admin, json!({"url": url})).await;
        assert!(answer.problem(400, "invalid_request").contains("port"), "{url}: {}", answer.text);
    }
}

#[tokio::test]
async fn an_unknown_route_is_a_404_problem() {
    let app = TestApp::new().await;

    for path in ["/v1/nothing", "/v2/sessions", "/", "/v1/sessions/x/y/z", "/v1//sessions"] {
        let answer = app.get(path, &app.admin).await;
        assert_eq!(answer.status.as_u16(), 404, "{path}: {}", answer.text);
        answer.problem(404, "not_found");
    }
    // Without a credential too: the answer is the same problem, not a plain-text 404.
    let anonymous = app.request(Method::GET, "/v1/nothing", None, None, Body::empty()).await;
    anonymous.problem(404, "not_found");
}

#[tokio::test]
async fn a_wrong_method_is_a_405_problem() {
    let app = TestApp::new().await;

    for (method, path) in [
        (Method::DELETE, "/v1/platforms"),
        (Method::PUT, "/v1/sessions"),
        (Method::GET, "/v1/authorize"),
        (Method::POST, "/v1/users/usr_x/permissions"),
        (Method::PATCH, "/v1/credentials"),
    ] {
        let answer = app.call(method.clone(), path, &app.admin, None).await;
        assert_eq!(answer.status.as_u16(), 405, "{method} {path}: {}", answer.text);
        answer.problem(405, "method_not_allowed");
    }
}

#[tokio::test]
async fn a_bad_limit_or_cursor_is_a_400_naming_it() {
    let app = TestApp::new().await;
    app.platform("p").await;

    for query in ["limit=0", "limit=1001", "limit=abc", "limit=-1", "limit=1.5", "limit=", "limit=99999999999999999999"]
    {
        for path in ["/v1/platforms", "/v1/sessions", "/v1/audit", "/v1/credentials"] {
            let answer = app.get(&format!("{path}?{query}"), &app.admin).await;
            invalid_naming(&answer, "limit", &format!("{path}?{query}"));
        }
    }
    for path in ["/v1/platforms?cursor=garbage", "/v1/sessions?cursor=usr_1", "/v1/users?cursor=%27%20OR%201=1"] {
        let answer = app.get(path, &app.admin).await;
        invalid_naming(&answer, "cursor", path);
    }
    for (path, field) in [
        ("/v1/audit?cursor=abc", "cursor"),
        ("/v1/audit?after_seq=-1", "after_seq"),
        ("/v1/audit?cause_seq=x", "cause_seq"),
        ("/v1/audit?since=yesterday", "since"),
    ] {
        let answer = app.get(path, &app.admin).await;
        invalid_naming(&answer, field, path);
    }
    // The bounds themselves are accepted.
    app.get("/v1/platforms?limit=1", &app.admin).await.ok();
    app.get("/v1/platforms?limit=1000", &app.admin).await.ok();
}

#[tokio::test]
async fn a_bad_filter_or_feed_cursor_is_a_400_naming_it() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let webhook = app.post("/v1/webhooks", &verifier, json!({"url": "http://127.0.0.1:9/hook"})).await;
    let webhook = webhook.ok()["id"].as_str().expect("webhook id").to_owned();

    for (path, credential, field) in [
        ("/v1/sessions?status=bogus".to_owned(), &app.admin, "status"),
        ("/v1/delegations?status=ACTIVE".to_owned(), &app.admin, "status"),
        ("/v1/audit/coverage?event=abc".to_owned(), &app.admin, "event"),
        ("/v1/audit/coverage".to_owned(), &app.admin, "event"),
        ("/v1/revocations?after=abc".to_owned(), &verifier, "after"),
        ("/v1/revocations?after=-1".to_owned(), &verifier, "after"),
        (format!("/v1/webhooks/{webhook}/deliveries?cursor=-1"), &verifier, "cursor"),
        ("/v1/audit?subject=a%00b".to_owned(), &app.admin, "subject"),
    ] {
        let answer = app.get(&path, credential).await;
        invalid_naming(&answer, field, &path);
    }
}

#[tokio::test]
async fn a_scope_over_ask_is_403_scope_not_grantable_listing_exactly_the_ungrantable_scopes() {
    let app = TestApp::new().await;
    let platform = app.platform("p").await;
    let all = ["mail:read", "mail:send", "files:write", "calendar:write"];
    let user = app.user("idp|over", &["mail:read", "mail:send", "files:write"]).await;
    let agent = app.agent(&platform, &["mail:read", "mail:send", "files:write"]).await;
    let integration = app.integration(&platform, &["mail:read", "mail:send"]).await;
    let delegation = app.delegation(&platform, &user, &agent, &integration, &["mail:read"]).await;

    // mail:send: not delegated; files:write: the integration lacks it; calendar:write: nobody has it.
    let answer = app
        .post(
            "/v1/sessions",
            &platform.credential,
            json!({"delegation_id": delegation, "scopes": ["mail:read", "mail:send", "files:write", "calendar:write"]}),
        )
        .await;

    let detail = answer.problem(403, "scope_not_grantable");
    let ungrantable: BTreeSet<&str> = ["mail:send", "files:write", "calendar:write"].into();
    for scope in all {
        assert_eq!(detail.contains(scope), ungrantable.contains(scope), "{scope} in {detail:?}");
    }
    let sessions = app.get("/v1/sessions", &app.admin).await;
    assert_eq!(sessions.ok()["items"], json!([]), "nothing was silently dropped and granted");

    // The same over-ask on a delegation is refused the same way.
    let over_delegation = app
        .post(
            "/v1/delegations",
            &platform.credential,
            json!({"user_id": user, "agent_id": agent, "integration_id": integration,
                "scopes": ["mail:read", "files:write"]}),
        )
        .await;
    let detail = over_delegation.problem(403, "scope_not_grantable");
    assert!(detail.contains("files:write") && !detail.contains("mail:read"), "{detail}");
}

#[tokio::test]
async fn a_datalog_shaped_scope_is_refused_with_a_400() {
    let app = TestApp::new().await;
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    let (_, token) = app.session(&world.platform, &world.delegation, &["mail:read"]).await;
    let verifier = app.verifier().await;

    for scope in [r#"x"); allow if true; //"#, r#"mail:read") or true"#, "mail:read\nallow if true", "*"] {
        let answer = app.post("/v1/authorize", &verifier, json!({"token": token, "scope": scope})).await;
        if scope == "*" {
            // `*` is a well-formed scope string; it grants nothing it was not granted.
            assert_eq!(answer.ok()["decision"], "deny", "{}", answer.text);
            continue;
        }
        invalid_naming(&answer, "scope", &format!("scope {scope:?}"));
    }
}

#[tokio::test]
async fn a_datalog_shaped_resource_never_widens_a_grant() {
    let app = TestApp::new().await;
    let world = app.world(&["mail:read", "mail:send"], &["mail:read", "mail:send"]).await;
    let (_, token) = app.session(&world.platform, &world.delegation, &["mail:read"]).await;
    let verifier = app.verifier().await;

    for resource in [
        r#"") or true"#,
        r#"x"); allow if true; //"#,
        r#"x"); scope("mail:send"); resource("x"#,
        r#"x") or true; allow if true; check if true or resource(""#,
        "\\\"",
    ] {
        let ask = |scope: &str| json!({"token": token, "scope": scope, "resource": resource});
        let ungranted = app.post("/v1/authorize", &verifier, ask("mail:send")).await;
        assert_eq!(ungranted.ok()["decision"], "deny", "resource {resource:?}: {}", ungranted.text);
        assert_eq!(ungranted.body["reason"], "scope_not_granted", "resource {resource:?}");
        let granted = app.post("/v1/authorize", &verifier, ask("mail:read")).await;
        assert_eq!(granted.ok()["decision"], "allow", "resource {resource:?}: {}", granted.text);
    }
    // A resource with a line break in it is refused outright.
    let multiline = json!({"token": token, "scope": "mail:send", "resource": "x\") or true;\nallow if true;"});
    invalid_naming(&app.post("/v1/authorize", &verifier, multiline).await, "resource", "multi-line resource");
}

#[tokio::test]
async fn datalog_in_a_user_external_id_or_agent_name_is_stored_verbatim_and_grants_nothing() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let platform = app.platform(r#"p"); allow if true; //"#).await;
    let crafted = r#"x"); scope("mail:send"); allow if true; user("x"#;
    let user = app.user(crafted, &["mail:read"]).await;
    let agent = app
        .post("/v1/agents", &platform.credential, json!({"name": crafted, "scopes": ["mail:read", "mail:send"]}))
        .await
        .ok()["id"]
        .as_str()
        .expect("agent id")
        .to_owned();
    let integration = app.integration(&platform, &["mail:read", "mail:send"]).await;
    let delegation = app.delegation(&platform, &user, &agent, &integration, &["mail:read"]).await;
    let (_, token) = app.session(&platform, &delegation, &["mail:read"]).await;

    assert_eq!(app.get(&format!("/v1/users/{user}"), &app.admin).await.ok()["external_id"], crafted);
    assert_eq!(app.get(&format!("/v1/agents/{agent}"), &app.admin).await.ok()["name"], crafted);
    assert_eq!(app.authorize(&verifier, &token, "mail:read").await, ("allow".into(), "allowed".into()));
    assert_eq!(app.authorize(&verifier, &token, "mail:send").await, ("deny".into(), "scope_not_granted".into()));
    assert_eq!(app.authorize(&verifier, &token, "files:read").await, ("deny".into(), "scope_not_granted".into()));
}

#[tokio::test]
async fn pagination_walks_every_item_once_and_ends_with_a_null_cursor() {
    let app = TestApp::new().await;
    let mut created = BTreeSet::new();
    for name in ["one", "two", "three"] {
        let p = app.post("/v1/platforms", &app.admin, json!({"name": name})).await;
        created.insert(p.ok()["id"].as_str().expect("id").to_owned());
    }

    let mut seen = Vec::new();
    let mut path = "/v1/platforms?limit=2".to_owned();
    let mut pages = 0;
    loop {
        pages += 1;
        assert!(pages <= 3, "pagination does not end");
        let page = app.get(&path, &app.admin).await;
        let body = page.ok();
        let items = body["items"].as_array().expect("items");
        assert!(items.len() <= 2, "a page holds at most `limit` items: {}", page.text);
        seen.extend(items.iter().map(|i| i["id"].as_str().expect("id").to_owned()));
        match &body["next_cursor"] {
            Value::Null => break,
            Value::String(cursor) => path = format!("/v1/platforms?limit=2&cursor={cursor}"),
            other => panic!("next_cursor is neither a string nor null: {other}"),
        }
    }

    assert_eq!(pages, 2);
    assert_eq!(seen.len(), 3, "no duplicates: {seen:?}");
    assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), created);
}

#[tokio::test]
async fn a_page_that_ends_exactly_at_the_last_item_has_a_null_cursor() {
    let app = TestApp::new().await;
    for name in ["one", "two"] {
        app.platform(name).await;
    }

    let page = app.get("/v1/platforms?limit=2", &app.admin).await;

    assert_eq!(page.ok()["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(page.body["next_cursor"], Value::Null, "{}", page.text);
}

#[tokio::test]
async fn audit_pagination_walks_every_event_once_in_seq_order() {
    let app = TestApp::new().await;
    app.world(&["mail:read"], &["mail:read"]).await;
    let head = app.get("/v1/audit/verify", &app.admin).await.ok()["head_seq"].as_i64().expect("head_seq");

    let mut seqs = Vec::new();
    let mut path = "/v1/audit?limit=3".to_owned();
    for _ in 0..=head {
        let page = app.get(&path, &app.admin).await;
        let body = page.ok();
        seqs.extend(body["items"].as_array().expect("items").iter().map(|e| e["seq"].as_i64().expect("seq")));
        match &body["next_cursor"] {
            Value::Null => break,
            Value::String(cursor) => path = format!("/v1/audit?limit=3&cursor={cursor}"),
            other => panic!("next_cursor: {other}"),
        }
    }

    assert_eq!(seqs, (1..=head).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_path_segment_that_is_not_utf8_is_a_problem_json_400() {
    let app = TestApp::new().await;
    for (method, path) in [
        (Method::GET, "/v1/sessions/%FF"),
        (Method::POST, "/v1/users/%FF/agents/%FE/disconnect"),
        (Method::POST, "/v1/keys/%FF/retire"),
        (Method::GET, "/v1/platforms/%C3%28"),
    ] {
        let answer = app.call(method.clone(), path, &app.admin, None).await;
        let detail = answer.problem(400, "invalid_request");
        assert!(detail.contains("path parameter"), "{method} {path}: {detail}");
    }
}

#[tokio::test]
async fn a_session_whose_token_would_be_too_large_to_use_is_refused_and_nothing_is_opened() {
    let app = TestApp::new().await;
    let long: Vec<String> = (0..60).map(|i| format!("svc{i:02}:{}", "resource_read/".repeat(8))).collect();
    let long: Vec<&str> = long.iter().map(String::as_str).collect();
    let world = app.world(&long, &long).await;
    let before = app.head_seq().await;

    let refused =
        app.open_session(&world.platform.credential, json!({"delegation_id": world.delegation, "scopes": long})).await;
    let detail = refused.problem(400, "invalid_request");
    assert!(detail.contains("scopes") && detail.contains("characters"), "{detail}");
    assert_eq!(app.head_seq().await, before, "nothing was written");

    // A handful of the same scopes fit, and the token works.
    let (_, token) = app.session(&world.platform, &world.delegation, &long[..8]).await;
    let verifier = app.verifier().await;
    assert_eq!(app.authorize(&verifier, &token, long[7]).await.0, "allow");
}
