//! The HTTP contract at the edge: roles are checked before input is judged, form bodies of the
//! OAuth endpoints are bounded and unambiguous, numbers are read as JSON Schema reads them, and
//! the OpenAPI document is exact enough for independent tools (tests/contract/run.py).

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{Answer, TestApp};

async fn post_form(app: &TestApp, path: &str, credential: &str, body: impl Into<String>) -> Answer {
    let body = Body::from(body.into());
    app.request(Method::POST, path, Some(credential), Some("application/x-www-form-urlencoded"), body).await
}

#[tokio::test]
async fn a_role_that_may_not_call_a_route_gets_403_before_its_input_is_judged() {
    let app = TestApp::new().await;
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    let platform = world.platform.credential.clone();
    let verifier = app.verifier().await;
    let auditor = app.auditor().await;
    let user = app.user_credential(&world.user).await;

    // (who, method, path, body): each body or path is malformed, and the role may not call it.
    let cases: Vec<(&str, &str, Method, &str, Option<Value>)> = vec![
        ("platform", &platform, Method::POST, "/v1/keys/rotate", Some(Value::Null)),
        ("platform", &platform, Method::POST, "/v1/keys/rotate", Some(json!({"purpose": "nonsense"}))),
        ("platform", &platform, Method::POST, "/v1/keys/not-a-kid/retire", Some(json!([]))),
        ("platform", &platform, Method::POST, "/v1/users", Some(json!({"external_id": 7}))),
        ("platform", &platform, Method::POST, "/v1/platforms", Some(json!({"nmae": "typo"}))),
        ("platform", &platform, Method::POST, "/v1/credentials/cred_1/revoke", None),
        ("platform", &platform, Method::POST, "/v1/platforms/plt_1/disable", Some(json!({"reason": 5}))),
        ("user", &user, Method::POST, "/v1/agents", Some(json!({"name": ""}))),
        ("user", &user, Method::PUT, "/v1/users/usr_1/permissions", Some(json!({"permissions": "x"}))),
        ("verifier", &verifier, Method::GET, "/v1/sessions?user_id=nope", None),
        ("verifier", &verifier, Method::GET, "/v1/agents/agt_1", None),
        ("verifier", &verifier, Method::POST, "/v1/sessions", Some(json!({"ttl_seconds": 1.5}))),
        ("auditor", &auditor, Method::POST, "/v1/delegations", Some(json!({"user_id": "agt_1"}))),
        ("auditor", &auditor, Method::POST, "/v1/sessions/ses_1/revoke", Some(json!({"reason": "\u{0}"}))),
        ("auditor", &auditor, Method::POST, "/v1/authorize", Some(json!({"scope": "NOT A SCOPE"}))),
        ("platform", &platform, Method::GET, "/v1/audit?limit=0", None),
        ("platform", &platform, Method::POST, "/v1/audit/checkpoint/verify", Some(json!({"kid": -1}))),
        ("user", &user, Method::GET, "/v1/revocations?after=-1", None),
        ("user", &user, Method::POST, "/v1/webhooks", Some(json!({"url": 1}))),
    ];
    for (who, credential, method, path, body) in cases {
        let answer = app.call(method.clone(), path, credential, body.clone()).await;
        let detail = answer.problem(403, "forbidden");
        assert!(!detail.is_empty(), "{who} {method} {path} {body:?}");
    }
}

#[tokio::test]
async fn an_oversized_form_is_413_payload_too_large_on_introspection_and_revocation() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let big = format!("token={}", "A".repeat(65 * 1024));
    for path in ["/oauth2/introspect", "/oauth2/revoke"] {
        let answer = post_form(&app, path, &verifier, big.clone()).await;
        let detail = answer.problem(413, "payload_too_large");
        assert!(detail.contains("size limit"), "{path}: {detail}");
    }
}

#[tokio::test]
async fn a_form_parameter_given_twice_is_a_400_naming_it() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    for path in ["/oauth2/introspect", "/oauth2/revoke"] {
        for (body, name) in [
            ("token=a&token=b", "token"),
            ("token=a&token=a", "token"),
            ("token=a&token_type_hint=access_token&token_type_hint=refresh_token", "token_type_hint"),
        ] {
            let answer = post_form(&app, path, &verifier, body).await;
            assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{path} {body}: {}", answer.text);
            assert_eq!(answer.body["error"], "invalid_request", "{path} {body}");
            let description = answer.body["error_description"].as_str().unwrap_or_default();
            assert!(
                description.contains(&format!("`{name}`")) && description.contains("more than once"),
                "{path} {body}: {description}"
            );
        }
    }
}

#[tokio::test]
async fn whole_numbers_may_be_written_with_a_zero_fraction_as_json_schema_allows() {
    let app = TestApp::new().await;
    let world = app.world(&["mail:read"], &["mail:read"]).await;

    let credential = app.post("/v1/credentials", &app.admin, json!({"role": "auditor", "ttl_seconds": 3600.0})).await;
    assert!(credential.ok()["expires_at"].is_string(), "{}", credential.text);
    let session = app
        .open_session(
            &world.platform.credential,
            json!({"delegation_id": world.delegation, "scopes": ["mail:read"], "ttl_seconds": 90.0}),
        )
        .await;
    session.ok();
    let fraction = app
        .open_session(
            &world.platform.credential,
            json!({"delegation_id": world.delegation, "scopes": ["mail:read"], "ttl_seconds": 90.5}),
        )
        .await;
    assert!(fraction.problem(400, "invalid_request").contains("ttl_seconds"));
}

/// The served OpenAPI document.
async fn document(app: &TestApp) -> Value {
    let answer = app.request(Method::GET, "/openapi.json", None, None, Body::empty()).await;
    answer.ok().clone()
}

/// Every operation of the document: (method, path) → the operation object.
fn operations(document: &Value) -> BTreeMap<(String, String), Value> {
    let mut all = BTreeMap::new();
    for (path, item) in document["paths"].as_object().into_iter().flatten() {
        for (method, operation) in item.as_object().into_iter().flatten() {
            all.insert((method.clone(), path.clone()), operation.clone());
        }
    }
    all
}

#[tokio::test]
async fn every_operation_of_the_openapi_document_has_its_own_operation_id() {
    let app = TestApp::new().await;
    let document = document(&app).await;
    let mut seen: BTreeMap<String, (String, String)> = BTreeMap::new();
    for (key, operation) in operations(&document) {
        let id = operation["operationId"].as_str().unwrap_or_else(|| panic!("{key:?} has no operationId")).to_owned();
        if let Some(other) = seen.insert(id.clone(), key.clone()) {
            panic!("operationId {id:?} names both {other:?} and {key:?}");
        }
    }
    assert!(seen.len() > 50, "{} operations", seen.len());
}

#[tokio::test]
async fn the_openapi_document_types_path_ids_with_the_pattern_parse_accepts() {
    let app = TestApp::new().await;
    let document = document(&app).await;
    let get_session = &document["paths"]["/v1/sessions/{id}"]["get"];
    let id = get_session["parameters"].as_array().and_then(|p| p.iter().find(|p| p["name"] == "id")).cloned();
    let id = id.expect("an id parameter");
    assert_eq!(id["schema"]["pattern"], tether::domain::SessionId::PATTERN, "{id}");
    let retire = &document["paths"]["/v1/keys/{kid}/retire"]["post"]["parameters"][0]["schema"];
    assert_eq!((retire["minimum"].as_u64(), retire["maximum"].as_u64()), (Some(0), Some(u64::from(u32::MAX))));
}
