//! RFC 6749 client authentication at the OAuth endpoints (client_secret_basic and
//! client_secret_post besides Bearer), the discovery documents (RFC 8414, RFC 9728), and the
//! challenge every 401 carries.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use base64::Engine;
use serde_json::json;

use crate::helpers::TestApp;

/// A credential of `role` as an OAuth client: its id and its secret (the credential).
async fn client(app: &TestApp, body: serde_json::Value) -> (String, String) {
    let created = app.post("/v1/credentials", &app.admin, body).await.ok().clone();
    (created["id"].as_str().expect("id").to_owned(), created["credential"].as_str().expect("credential").to_owned())
}

fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}")))
}

fn form(pairs: &[(&str, &str)]) -> Body {
    let encoded: String = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)))
        .collect::<Vec<_>>()
        .join("&");
    Body::from(encoded)
}

const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

#[tokio::test]
async fn introspection_takes_client_secret_basic_and_client_secret_post() {
    let app = TestApp::new().await;
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    let (_, token) = app.session(&world.platform, &world.delegation, &["mail:read"]).await;
    let (id, secret) = client(&app, json!({"role": "verifier"})).await;

    let auth = basic(&id, &secret);
    let (answer, _) = app
        .request_with_headers(
            Method::POST,
            "/oauth2/introspect",
            &[FORM, ("authorization", &auth)],
            form(&[("token", &token)]),
        )
        .await;
    assert_eq!(answer.ok()["active"], true, "client_secret_basic");

    let body = form(&[("token", &token), ("client_id", &id), ("client_secret", &secret)]);
    let (answer, _) = app.request_with_headers(Method::POST, "/oauth2/introspect", &[FORM], body).await;
    assert_eq!(answer.ok()["active"], true, "client_secret_post");
    assert_eq!(answer.body["sub"], world.user.as_str());
}

#[tokio::test]
async fn a_wrong_client_is_invalid_client_and_two_methods_at_once_an_invalid_request() {
    let app = TestApp::new().await;
    let (id, secret) = client(&app, json!({"role": "verifier"})).await;
    let (other_id, _) = client(&app, json!({"role": "verifier"})).await;
    let token = [("token", "whatever")];

    let auth = basic(&other_id, &secret);
    let (answer, headers) = app
        .request_with_headers(Method::POST, "/oauth2/introspect", &[FORM, ("authorization", &auth)], form(&token))
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.body["error"], "invalid_client", "{}", answer.text);
    assert_eq!(headers["www-authenticate"], "Basic realm=\"tether\"", "the challenge matches the scheme tried");

    let auth = basic(&id, "not-a-credential");
    let (answer, _) =
        app.request_with_headers(Method::POST, "/oauth2/revoke", &[FORM, ("authorization", &auth)], form(&token)).await;
    assert_eq!((answer.status, answer.body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_client")));

    let body = form(&[("token", "whatever"), ("client_id", &id), ("client_secret", &secret)]);
    let auth = basic(&id, &secret);
    let (answer, _) =
        app.request_with_headers(Method::POST, "/oauth2/introspect", &[FORM, ("authorization", &auth)], body).await;
    assert_eq!((answer.status, answer.body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_request")));

    let body = form(&[("token", "whatever"), ("client_id", &id), ("client_id", &id), ("client_secret", &secret)]);
    let (answer, _) = app.request_with_headers(Method::POST, "/oauth2/introspect", &[FORM], body).await;
    assert_eq!((answer.status, answer.body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_request")));
    assert!(answer.text.contains("client_id"), "{}", answer.text);
}

#[tokio::test]
async fn a_client_whose_role_may_not_introspect_is_refused_and_revocation_by_basic_revokes() {
    let app = TestApp::new().await;
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    let (session, token) = app.session(&world.platform, &world.delegation, &["mail:read"]).await;
    let (id, secret) = client(&app, json!({"role": "platform", "platform_id": world.platform.id})).await;
    let auth = basic(&id, &secret);
    let (answer, _) = app
        .request_with_headers(
            Method::POST,
            "/oauth2/introspect",
            &[FORM, ("authorization", &auth)],
            form(&[("token", &token)]),
        )
        .await;
    assert_eq!((answer.status, answer.body["error"].as_str()), (StatusCode::FORBIDDEN, Some("insufficient_scope")));

    let body = form(&[("token", &token), ("token_type_hint", "access_token")]);
    let (answer, _) =
        app.request_with_headers(Method::POST, "/oauth2/revoke", &[FORM, ("authorization", &auth)], body).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(app.session_status(&session).await, "revoked");
}

#[tokio::test]
async fn every_401_challenges_with_bearer_and_names_the_resource_metadata() {
    let app = TestApp::new().await;
    for (method, path) in [(Method::GET, "/v1/users"), (Method::POST, "/oauth2/introspect")] {
        let (answer, headers) = app.request_with_headers(method, path, &[FORM], Body::empty()).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{path}");
        let challenge = headers["www-authenticate"].to_str().expect("ascii");
        assert!(challenge.starts_with("Bearer "), "{challenge}");
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
        assert!(
            challenge.contains("resource_metadata=\"http://127.0.0.1:8700/.well-known/oauth-protected-resource\""),
            "{challenge}"
        );
    }
}

#[tokio::test]
async fn the_metadata_documents_name_the_endpoints_under_the_public_url() {
    let app = TestApp::new().await;
    let (server, _) =
        app.request_with_headers(Method::GET, "/.well-known/oauth-authorization-server", &[], Body::empty()).await;
    let server = server.ok();
    assert_eq!(server["issuer"], "http://127.0.0.1:8700");
    assert_eq!(server["introspection_endpoint"], "http://127.0.0.1:8700/oauth2/introspect");
    assert_eq!(server["revocation_endpoint"], "http://127.0.0.1:8700/oauth2/revoke");
    assert_eq!(
        server["revocation_endpoint_auth_methods_supported"],
        json!(["client_secret_basic", "client_secret_post"])
    );
    let (resource, _) =
        app.request_with_headers(Method::GET, "/.well-known/oauth-protected-resource", &[], Body::empty()).await;
    let resource = resource.ok();
    assert_eq!(resource["resource"], "http://127.0.0.1:8700");
    assert_eq!(resource["authorization_servers"], json!(["http://127.0.0.1:8700"]));
    assert_eq!(resource["bearer_methods_supported"], json!(["header"]));
}
