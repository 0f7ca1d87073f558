//! tether as a Shared Signals transmitter: discovery, the token endpoint, stream management,
//! verification, SETs checked against the JWKS, the fewest-SETs rule per trigger, pause and
//! resume, isolation between receivers, forged poll acks, misbehaving push receivers.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use base64::Engine;
use serde_json::{json, Value};

use crate::helpers::{local_config, Answer, TestApp, World};

const SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
const ACCOUNT_DISABLED: &str = "https://schemas.openid.net/secevent/risc/event-type/account-disabled";
const ACCOUNT_ENABLED: &str = "https://schemas.openid.net/secevent/risc/event-type/account-enabled";
const VERIFICATION: &str = "https://schemas.openid.net/secevent/ssf/event-type/verification";
const STREAM_UPDATED: &str = "https://schemas.openid.net/secevent/ssf/event-type/stream-updated";

async fn receiver(app: &TestApp, platform: Option<&str>) -> String {
    match platform {
        Some(p) => app.credential(json!({"role": "receiver", "platform_id": p})).await,
        None => app.credential(json!({"role": "receiver"})).await,
    }
}

async fn poll_stream(app: &TestApp, receiver: &str) -> String {
    let created = app.post("/ssf/streams", receiver, json!({"description": "poll"})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    created.body["stream_id"].as_str().expect("stream_id").to_owned()
}

/// The SETs a poll answers, verified against the JWKS, as (jti, header, claims), oldest first.
async fn poll(app: &TestApp, receiver: &str, stream: &str, ack: &[String]) -> Vec<(String, Value, Value)> {
    let answer =
        app.post(&format!("/ssf/poll/{stream}"), receiver, json!({"returnImmediately": true, "ack": ack})).await;
    let sets = answer.ok()["sets"].as_object().expect("sets").clone();
    let mut out: Vec<(String, Value, Value)> =
        sets.iter().map(|(jti, jws)| verified(app, jws.as_str().expect("jws"), jti)).collect();
    // jtis are UUIDv7: their order is the queue's.
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Polls and acknowledges everything pending; answers what it saw.
async fn drain(app: &TestApp, receiver: &str, stream: &str) -> Vec<(String, Value, Value)> {
    let sets = poll(app, receiver, stream, &[]).await;
    let jtis: Vec<String> = sets.iter().map(|s| s.0.clone()).collect();
    let after = poll(app, receiver, stream, &jtis).await;
    assert!(after.is_empty(), "acked SETs are not answered again: {after:?}");
    sets
}

/// Verifies a SET's signature with the key its `kid` names in the JWKS; answers (jti, header, claims).
fn verified_with(jwks: &Value, jws: &str) -> (Value, Value) {
    let header = jsonwebtoken::decode_header(jws).expect("header");
    let kid = header.kid.clone().expect("kid");
    let key = jwks["keys"].as_array().expect("keys").iter().find(|k| k["kid"] == kid.as_str()).expect("kid in JWKS");
    let decoding =
        jsonwebtoken::DecodingKey::from_rsa_components(key["n"].as_str().unwrap(), key["e"].as_str().unwrap())
            .expect("RSA key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_aud = false;
    let claims = jsonwebtoken::decode::<Value>(jws, &decoding, &validation).expect("signature verifies").claims;
    let raw_header = jws.split('.').next().unwrap();
    let header: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(raw_header).unwrap()).unwrap();
    (header, claims)
}

fn verified(app: &TestApp, jws: &str, jti: &str) -> (String, Value, Value) {
    let jwks = JWKS.with(|j| j.borrow().clone()).unwrap_or_else(|| panic!("call jwks() first ({app:p})"));
    let (header, claims) = verified_with(&jwks, jws);
    assert_eq!(claims["jti"], jti, "the poll answer's key is the SET's jti");
    (jti.to_owned(), header, claims)
}

thread_local! {
    static JWKS: std::cell::RefCell<Option<Value>> = const { std::cell::RefCell::new(None) };
}

/// Fetches the JWKS (no credential) and keeps it for [`verified`].
async fn jwks(app: &TestApp) -> Value {
    let answer = app.request(Method::GET, "/ssf/jwks.json", None, None, Body::empty()).await;
    let jwks = answer.ok().clone();
    JWKS.with(|j| *j.borrow_mut() = Some(jwks.clone()));
    jwks
}

fn event_type(claims: &Value) -> String {
    let events = claims["events"].as_object().expect("events");
    assert_eq!(events.len(), 1, "exactly one event: {claims}");
    events.keys().next().unwrap().clone()
}

/// The profile every SET follows (SSF §4, CAEP interoperability profile).
fn assert_profile(header: &Value, claims: &Value, issuer: &str, aud: &str) {
    assert_eq!(header["typ"], "secevent+jwt");
    assert_eq!(header["alg"], "RS256");
    assert!(header["kid"].is_string());
    assert_eq!(claims["iss"], issuer);
    assert_eq!(claims["aud"], aud);
    assert!(claims["iat"].is_i64() && claims["jti"].is_string() && claims["txn"].is_string(), "{claims}");
    assert!(claims["sub_id"].is_object(), "{claims}");
    assert!(claims.get("sub").is_none() && claims.get("exp").is_none(), "never sub or exp: {claims}");
    event_type(claims);
}

async fn issuer(app: &TestApp) -> String {
    let config = app.request(Method::GET, "/.well-known/ssf-configuration", None, None, Body::empty()).await;
    config.ok()["issuer"].as_str().expect("issuer").to_owned()
}

fn credential_id(app_answer: &Answer) -> String {
    app_answer.body["aud"].as_str().expect("aud").to_owned()
}

#[tokio::test]
async fn discovery_names_every_endpoint_and_the_jwks_holds_an_rsa_2048_signing_key() {
    let app = TestApp::new().await;
    let config = app.request(Method::GET, "/.well-known/ssf-configuration", None, None, Body::empty()).await;
    let c = config.ok();
    let issuer = c["issuer"].as_str().expect("issuer");
    assert_eq!(c["spec_version"], "1_0");
    assert_eq!(c["jwks_uri"], format!("{issuer}/ssf/jwks.json"));
    assert_eq!(c["delivery_methods_supported"], json!(["urn:ietf:rfc:8935", "urn:ietf:rfc:8936"]));
    for (member, path) in [
        ("configuration_endpoint", "/ssf/streams"),
        ("status_endpoint", "/ssf/status"),
        ("add_subject_endpoint", "/ssf/subjects:add"),
        ("remove_subject_endpoint", "/ssf/subjects:remove"),
        ("verification_endpoint", "/ssf/verify"),
    ] {
        assert_eq!(c[member], format!("{issuer}{path}"), "{member}");
    }
    assert_eq!(c["authorization_schemes"], json!([{"spec_urn": "urn:ietf:rfc:6749"}]));
    assert_eq!(c["default_subjects"], "ALL");

    let keys = jwks(&app).await;
    let key = &keys["keys"][0];
    assert_eq!(
        (key["kty"].as_str(), key["alg"].as_str(), key["use"].as_str()),
        (Some("RSA"), Some("RS256"), Some("sig"))
    );
    let n = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(key["n"].as_str().unwrap()).unwrap();
    assert!(n.len() * 8 >= 2048, "modulus of {} bits", n.len() * 8);
}

async fn token_request(app: &TestApp, headers: &[(&str, &str)], form: &str) -> (Answer, axum::http::HeaderMap) {
    let mut all = vec![("content-type", "application/x-www-form-urlencoded")];
    all.extend_from_slice(headers);
    app.request_with_headers(Method::POST, "/oauth2/token", &all, Body::from(form.to_owned())).await
}

#[tokio::test]
async fn a_receiver_gets_access_tokens_by_client_credentials_and_their_scopes_hold() {
    let app = TestApp::new().await;
    let secret = receiver(&app, None).await;
    let created = app.post("/ssf/streams", &secret, json!({})).await;
    let client_id = credential_id(&created);
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{client_id}:{secret}")));

    let (answer, _) = token_request(&app, &[("authorization", &basic)], "grant_type=client_credentials").await;
    let body = answer.ok();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "ssf.manage ssf.read");
    assert!(body["expires_in"].as_i64().unwrap() > 0);
    let manage = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(app.get("/ssf/streams", &manage).await.ok().as_array().map(Vec::len), Some(1));

    // client_secret_post, read scope only: reads, never changes.
    let form = format!("grant_type=client_credentials&scope=ssf.read&client_id={client_id}&client_secret={secret}");
    let (answer, _) = token_request(&app, &[], &form).await;
    let read = answer.ok()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(answer.body["scope"], "ssf.read");
    assert!(app.get("/ssf/streams", &read).await.status.is_success());
    app.post("/ssf/streams", &read, json!({})).await.problem(403, "forbidden");

    let wrong = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{client_id}:nope")));
    let (answer, headers) = token_request(&app, &[("authorization", &wrong)], "grant_type=client_credentials").await;
    assert_eq!((answer.status.as_u16(), answer.body["error"].as_str()), (401, Some("invalid_client")));
    assert!(headers["www-authenticate"].to_str().unwrap().starts_with("Basic"));
    let (answer, _) = token_request(&app, &[("authorization", &basic)], "grant_type=password").await;
    assert_eq!((answer.status.as_u16(), answer.body["error"].as_str()), (400, Some("unsupported_grant_type")));
    let (answer, _) =
        token_request(&app, &[("authorization", &basic)], "grant_type=client_credentials&scope=admin").await;
    assert_eq!((answer.status.as_u16(), answer.body["error"].as_str()), (400, Some("invalid_scope")));
    let (answer, _) = token_request(&app, &[], "grant_type=client_credentials").await;
    assert_eq!((answer.status.as_u16(), answer.body["error"].as_str()), (401, Some("invalid_client")));
    // Another role's credential is no OAuth client for this grant.
    let verifier = app.verifier().await;
    let (answer, _) =
        token_request(&app, &[("authorization", &format!("Bearer {verifier}"))], "grant_type=client_credentials").await;
    assert_eq!((answer.status.as_u16(), answer.body["error"].as_str()), (403, Some("unauthorized_client")));

    // Revoking the credential ends its access tokens at once.
    let id = client_id.clone();
    app.post(&format!("/v1/credentials/{id}/revoke"), &app.admin, json!({})).await.ok();
    assert_eq!(app.get("/ssf/streams", &manage).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.get("/ssf/streams", "ssfat_00").await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_stream_is_created_read_listed_patched_replaced_and_deleted() {
    let app = TestApp::new().await;
    let r = receiver(&app, None).await;
    let created = app
        .post(
            "/ssf/streams",
            &r,
            json!({"events_requested": [SESSION_REVOKED, "urn:example:unknown"], "description": "first"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let s = created.body.clone();
    let id = s["stream_id"].as_str().unwrap().to_owned();
    assert_eq!(s["delivery"]["method"], "urn:ietf:rfc:8936", "no delivery: poll");
    assert_eq!(s["delivery"]["endpoint_url"], format!("{}/ssf/poll/{id}", issuer(&app).await));
    assert_eq!(s["events_delivered"], json!([SESSION_REVOKED]), "requested ∩ supported");
    assert_eq!(s["events_supported"].as_array().map(Vec::len), Some(3));

    assert_eq!(app.get(&format!("/ssf/streams?stream_id={id}"), &r).await.ok()["description"], "first");
    app.post("/ssf/streams", &r, json!({})).await;
    assert_eq!(app.get("/ssf/streams", &r).await.ok().as_array().map(Vec::len), Some(2));

    // PATCH: members left out stay as they were.
    let patched =
        app.call(Method::PATCH, "/ssf/streams", &r, Some(json!({"stream_id": id, "description": "second"}))).await;
    assert_eq!(patched.ok()["events_requested"], json!([SESSION_REVOKED, "urn:example:unknown"]));
    assert_eq!(patched.body["description"], "second");
    // PUT: members left out take their defaults; read-only members sent back are ignored.
    let mut full = patched.body.clone();
    full.as_object_mut().unwrap().remove("events_requested");
    full.as_object_mut().unwrap().remove("description");
    let put = app.call(Method::PUT, "/ssf/streams", &r, Some(full)).await;
    assert_eq!(put.ok()["events_requested"].as_array().map(Vec::len), Some(3));
    assert!(put.body.get("description").is_none());

    // Bad input: clear 400s, nothing half-applied.
    let bad = app.post("/ssf/streams", &r, json!({"delivery": {"method": "urn:ietf:rfc:8935"}})).await;
    assert!(bad.problem(400, "invalid_request").contains("endpoint_url"));
    let bad = app.post("/ssf/streams", &r, json!({"delivery": {"method": "carrier-pigeon"}})).await;
    bad.problem(400, "invalid_request");
    app.post("/ssf/streams", &r, json!({"stream_id": "sst_x"})).await.problem(400, "invalid_request");
    let header = json!({"delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": "https://rp.example/e", "authorization_header": "Bearer a\nX-Injected: 1"}});
    app.post("/ssf/streams", &r, header).await.problem(400, "invalid_request");
    app.post("/ssf/streams", &r, json!({"colour": "blue"})).await.problem(400, "invalid_request");
    assert_eq!(app.get("/ssf/streams", &r).await.ok().as_array().map(Vec::len), Some(2));

    let status = app.get(&format!("/ssf/status?stream_id={id}"), &r).await;
    assert_eq!(status.ok()["status"], "enabled");
    let set = app.post("/ssf/status", &r, json!({"stream_id": id, "status": "paused", "reason": "maintenance"})).await;
    assert_eq!((set.ok()["status"].as_str(), set.body["reason"].as_str()), (Some("paused"), Some("maintenance")));
    app.post("/ssf/status", &r, json!({"stream_id": id, "status": "asleep"})).await.problem(400, "invalid_request");

    let deleted = app.call(Method::DELETE, &format!("/ssf/streams?stream_id={id}"), &r, None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    app.get(&format!("/ssf/streams?stream_id={id}"), &r).await.problem(404, "not_found");
}

#[tokio::test]
async fn verification_sends_a_signed_set_with_the_state_and_a_second_request_too_soon_is_429() {
    let app = TestApp::new().await;
    let keys = jwks(&app).await;
    let r = receiver(&app, None).await;
    let created = app.post("/ssf/streams", &r, json!({})).await;
    let (stream, aud) = (created.body["stream_id"].as_str().unwrap().to_owned(), credential_id(&created));

    let answer = app.post("/ssf/verify", &r, json!({"stream_id": stream, "state": "abc123"})).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.text);
    let again = app.post("/ssf/verify", &r, json!({"stream_id": stream, "state": "again"})).await;
    again.problem(429, "too_many_requests");

    let sets = poll(&app, &r, &stream, &[]).await;
    assert_eq!(sets.len(), 1, "{sets:?}");
    let (jti, header, claims) = &sets[0];
    assert_profile(header, claims, &issuer(&app).await, &aud);
    assert_eq!(header["kid"], keys["keys"][0]["kid"]);
    assert_eq!(claims["events"], json!({VERIFICATION: {"state": "abc123"}}));
    assert_eq!(claims["sub_id"], json!({"format": "opaque", "id": stream}));
    let keys_of: Vec<&str> = claims.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys_of, ["aud", "events", "iat", "iss", "jti", "sub_id", "txn"], "exactly these claims");
    assert_eq!(jti.len(), 32);
}

/// A poll stream and its receiver, set up before the world so every trigger reaches it.
struct Watch {
    receiver: String,
    stream: String,
}

async fn watch(app: &TestApp) -> Watch {
    jwks(app).await;
    let receiver = receiver(app, None).await;
    let stream = poll_stream(app, &receiver).await;
    Watch { receiver, stream }
}

async fn sessions(app: &TestApp, world: &World, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(app.session(&world.platform, &world.delegation, &["mail:read"]).await.0);
    }
    out
}

#[tokio::test]
async fn each_trigger_reaches_a_stream_as_the_fewest_sets_that_cover_what_it_revoked() {
    let app = TestApp::new().await;
    let w = watch(&app).await;
    let world = app.world(&["mail:read", "mail:send"], &["mail:read", "mail:send"]).await;
    let issuer = issuer(&app).await;

    // A user disabled with 5 sessions: account-disabled and ONE session-revoked about the user.
    sessions(&app, &world, 5).await;
    let receipt = app.trigger(&format!("/v1/users/{}/disable", world.user), &app.admin, json!({})).await;
    assert_eq!(receipt["revoked"].as_array().map(Vec::len), Some(5));
    let sets = drain(&app, &w.receiver, &w.stream).await;
    let types: Vec<String> = sets.iter().map(|s| event_type(&s.2)).collect();
    assert_eq!(types, [ACCOUNT_DISABLED, SESSION_REVOKED], "{sets:?}");
    assert_eq!(sets[0].2["txn"], sets[1].2["txn"], "one txn per trigger");
    assert_eq!(
        sets[1].2["sub_id"],
        json!({"format": "complex", "user": {"format": "iss_sub", "iss": issuer, "sub": world.user}})
    );
    let revoked = &sets[1].2["events"][SESSION_REVOKED];
    assert_eq!(revoked["reason_admin"], json!({"en": "user_disabled"}));
    assert_eq!(revoked["initiating_entity"], "admin");
    assert!(revoked["event_timestamp"].is_i64());
    assert_eq!(sets[0].2["sub_id"], json!({"format": "iss_sub", "iss": issuer, "sub": world.user}));

    // Enabled again: account-enabled.
    app.trigger(&format!("/v1/users/{}/enable", world.user), &app.admin, json!({})).await;
    let sets = drain(&app, &w.receiver, &w.stream).await;
    assert_eq!(sets.iter().map(|s| event_type(&s.2)).collect::<Vec<_>>(), [ACCOUNT_ENABLED]);

    // One session revoked: one SET naming the session.
    let one = sessions(&app, &world, 2).await;
    app.trigger(&format!("/v1/sessions/{}/revoke", one[0]), &world.platform.credential, json!({})).await;
    let sets = drain(&app, &w.receiver, &w.stream).await;
    assert_eq!(sets.len(), 1);
    assert_eq!(sets[0].2["sub_id"]["session"], json!({"format": "opaque", "id": one[0]}));
    assert_eq!(sets[0].2["sub_id"]["user"]["sub"], world.user.as_str());

    // A permission narrowed: only the sessions holding it, one SET each (no scope covers them).
    let send = app.session(&world.platform, &world.delegation, &["mail:send"]).await.0;
    app.set_permissions(&world.user, &["mail:read"]).await;
    let sets = drain(&app, &w.receiver, &w.stream).await;
    assert_eq!(sets.len(), 1, "{sets:?}");
    assert_eq!(sets[0].2["sub_id"]["session"]["id"], send.as_str());

    // An integration used by 3 users, 2 sessions each, disabled: one SET per user, with the
    // application member.
    let integration = app.integration(&world.platform, &["mail:read"]).await;
    let mut users = Vec::new();
    for i in 0..3 {
        let user = app.user(&format!("idp|int-{i}"), &["mail:read"]).await;
        let d = app.delegation(&world.platform, &user, &world.agent, &integration, &["mail:read"]).await;
        for _ in 0..2 {
            app.session(&world.platform, &d, &["mail:read"]).await;
        }
        users.push(user);
    }
    let receipt =
        app.trigger(&format!("/v1/integrations/{integration}/disable"), &world.platform.credential, json!({})).await;
    assert_eq!(receipt["revoked"].as_array().map(Vec::len), Some(6));
    let sets = drain(&app, &w.receiver, &w.stream).await;
    assert_eq!(sets.len(), 3, "{sets:?}");
    let mut named: Vec<String> =
        sets.iter().map(|s| s.2["sub_id"]["user"]["sub"].as_str().unwrap().to_owned()).collect();
    named.sort();
    users.sort();
    assert_eq!(named, users);
    for (_, header, claims) in &sets {
        assert_profile(header, claims, &issuer, claims["aud"].as_str().unwrap());
        assert_eq!(claims["sub_id"]["application"], json!({"format": "opaque", "id": integration}));
        assert!(claims["sub_id"].get("session").is_none());
    }
}

#[tokio::test]
async fn a_platform_bound_receiver_hears_only_of_its_platform_and_names_only_its_users() {
    let app = TestApp::new().await;
    jwks(&app).await;
    let a = app.world(&["mail:read"], &["mail:read"]).await;
    let b = app.world(&["mail:read"], &["mail:read"]).await;
    let bound = receiver(&app, Some(&a.platform.id)).await;
    let stream = poll_stream(&app, &bound).await;
    let (sa, _) = app.session(&a.platform, &a.delegation, &["mail:read"]).await;
    let (sb, _) = app.session(&b.platform, &b.delegation, &["mail:read"]).await;
    app.trigger(&format!("/v1/sessions/{sb}/revoke"), &b.platform.credential, json!({})).await;
    app.trigger(&format!("/v1/sessions/{sa}/revoke"), &a.platform.credential, json!({})).await;
    let sets = drain(&app, &bound, &stream).await;
    assert_eq!(sets.len(), 1, "{sets:?}");
    assert_eq!(sets[0].2["sub_id"]["session"]["id"], sa.as_str());

    let issuer = issuer(&app).await;
    let other = json!({"stream_id": stream, "subject": {"format": "iss_sub", "iss": issuer, "sub": b.user}});
    let refused = app.post("/ssf/subjects:add", &bound, other).await.problem(400, "invalid_request");
    let absent =
        json!({"stream_id": stream, "subject": {"format": "opaque", "id": "usr_0193a1b2c3d47e8f9a0b1c2d3e4f5a6b"}});
    assert_eq!(app.post("/ssf/subjects:add", &bound, absent).await.problem(400, "invalid_request"), refused, "no leak");
    let own = json!({"stream_id": stream, "subject": {"format": "iss_sub", "iss": issuer, "sub": a.user}});
    assert_eq!(app.post("/ssf/subjects:add", &bound, own).await.status, StatusCode::OK);

    // Removing the user stops SETs about them; adding back restarts them.
    let remove = json!({"stream_id": stream, "subject": {"format": "iss_sub", "iss": issuer, "sub": a.user}});
    assert_eq!(app.post("/ssf/subjects:remove", &bound, remove.clone()).await.status, StatusCode::NO_CONTENT);
    let (sa2, _) = app.session(&a.platform, &a.delegation, &["mail:read"]).await;
    app.trigger(&format!("/v1/sessions/{sa2}/revoke"), &a.platform.credential, json!({})).await;
    assert!(drain(&app, &bound, &stream).await.is_empty());
    app.post("/ssf/subjects:add", &bound, remove).await.ok();
    let (sa3, _) = app.session(&a.platform, &a.delegation, &["mail:read"]).await;
    app.trigger(&format!("/v1/sessions/{sa3}/revoke"), &a.platform.credential, json!({})).await;
    assert_eq!(drain(&app, &bound, &stream).await.len(), 1);
}

#[tokio::test]
async fn another_receivers_stream_is_not_found_and_its_sets_cannot_be_acked() {
    let app = TestApp::new().await;
    let w = watch(&app).await;
    let other = receiver(&app, None).await;
    let theirs = poll_stream(&app, &other).await;
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    let (s, _) = app.session(&world.platform, &world.delegation, &["mail:read"]).await;
    let receipt = app.trigger(&format!("/v1/sessions/{s}/revoke"), &world.platform.credential, json!({})).await;
    let mine = poll(&app, &w.receiver, &w.stream, &[]).await;
    assert_eq!(mine.len(), 1);
    let jti = mine[0].0.clone();

    let id = &w.stream;
    app.get(&format!("/ssf/streams?stream_id={id}"), &other).await.problem(404, "not_found");
    app.get(&format!("/ssf/status?stream_id={id}"), &other).await.problem(404, "not_found");
    app.post("/ssf/verify", &other, json!({"stream_id": id})).await.problem(404, "not_found");
    app.call(Method::DELETE, &format!("/ssf/streams?stream_id={id}"), &other, None).await.problem(404, "not_found");
    app.post(&format!("/ssf/poll/{id}"), &other, json!({"ack": [jti]})).await.problem(404, "not_found");
    // A forged ack through the other receiver's own stream: ignored.
    // Its own stream holds its own SET of the same revocation, under another jti.
    let forged =
        app.post(&format!("/ssf/poll/{theirs}"), &other, json!({"returnImmediately": true, "ack": [jti]})).await;
    let own: Vec<&String> = forged.ok()["sets"].as_object().unwrap().keys().collect();
    assert_eq!(own.len(), 1, "{}", forged.text);
    assert_ne!(own[0], &jti);
    let still = poll(&app, &w.receiver, &w.stream, &[]).await;
    assert_eq!(still.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(), [jti.as_str()], "still pending");

    // Coverage lists the stream as not acknowledged, then acknowledged after a real ack.
    let seq = receipt["cause"]["seq"].as_i64().unwrap();
    let coverage = app.get(&format!("/v1/audit/coverage?event={seq}"), &app.admin).await;
    let stream_row = |c: &Value| c["receivers"].as_array().unwrap().iter().find(|r| r["id"] == id.as_str()).cloned();
    let row = stream_row(coverage.ok()).expect("the stream is listed");
    assert_eq!(
        (row["kind"].as_str(), row["queued"].as_i64(), row["acknowledged"].as_i64()),
        (Some("ssf_stream"), Some(1), Some(0))
    );
    assert!(row["acknowledged_at"].is_null());
    poll(&app, &w.receiver, &w.stream, &[jti]).await;
    let coverage = app.get(&format!("/v1/audit/coverage?event={seq}"), &app.admin).await;
    let row = stream_row(coverage.ok()).unwrap();
    assert_eq!(row["acknowledged"], 1);
    assert!(row["acknowledged_at"].is_string(), "{row}");
}

/// A loopback push receiver: records each request (authorization header, content type, body)
/// and answers from a script (status, delay), then 202.
/// What a push receiver got: authorization header, content type, body.
type Received = (Option<String>, String, String);

#[derive(Clone, Default)]
struct PushReceiver {
    got: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<(u16, Duration)>>>,
}

impl PushReceiver {
    async fn start(&self) -> String {
        let me = self.clone();
        let app = axum::Router::new().route(
            "/events",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let me = me.clone();
                async move {
                    let (status, delay) = me.script.lock().unwrap().pop_front().unwrap_or((202, Duration::ZERO));
                    tokio::time::sleep(delay).await;
                    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
                    // A slow answer is one the sender gave up on: not recorded as received.
                    if status == 202 && delay.is_zero() {
                        me.got.lock().unwrap().push((
                            header("authorization"),
                            header("content-type").unwrap_or_default(),
                            body,
                        ));
                        return (StatusCode::ACCEPTED, String::new());
                    }
                    let answer = if status == 400 {
                        json!({"err": "invalid_key", "description": "unknown kid"}).to_string()
                    } else {
                        String::new()
                    };
                    (StatusCode::from_u16(status).unwrap(), answer)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/events")
    }

    fn bodies(&self) -> Vec<String> {
        self.got.lock().unwrap().iter().map(|g| g.2.clone()).collect()
    }

    async fn wait_for(&self, n: usize) -> Vec<String> {
        for _ in 0..400 {
            if self.got.lock().unwrap().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        self.bodies()
    }
}

async fn fast_retry_app() -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    TestApp::open(dir, |d| {
        let mut config = local_config(d);
        config.webhooks.base_delay = Duration::from_millis(50);
        config.webhooks.max_delay = Duration::from_millis(200);
        config.webhooks.timeout = Duration::from_millis(500);
        config
    })
    .await
}

fn claims_of(jws: &str) -> Value {
    let payload = jws.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[tokio::test]
async fn push_delivers_signed_sets_holds_them_while_paused_replays_in_order_and_drops_when_disabled() {
    let app = fast_retry_app().await;
    let workers = app.app.start_workers();
    let keys = jwks(&app).await;
    let hook = PushReceiver::default();
    let url = hook.start().await;
    let r = receiver(&app, None).await;
    let created = app
        .post(
            "/ssf/streams",
            &r,
            json!({"delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": url, "authorization_header": "Bearer rp-secret"}}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert!(!created.text.contains("rp-secret"), "the authorization header is never answered back");
    let stream = created.body["stream_id"].as_str().unwrap().to_owned();
    let world = app.world(&["mail:read"], &["mail:read"]).await;

    let (s, _) = app.session(&world.platform, &world.delegation, &["mail:read"]).await;
    app.trigger(&format!("/v1/sessions/{s}/revoke"), &world.platform.credential, json!({})).await;
    hook.wait_for(1).await;
    {
        let got = hook.got.lock().unwrap();
        assert_eq!(got[0].0.as_deref(), Some("Bearer rp-secret"));
        assert_eq!(got[0].1, "application/secevent+jwt");
        let (_, claims) = verified_with(&keys, &got[0].2);
        assert_eq!(claims["sub_id"]["session"]["id"], s.as_str());
    }

    app.post("/ssf/status", &r, json!({"stream_id": stream, "status": "paused"})).await.ok();
    let mut held = Vec::new();
    for _ in 0..3 {
        let (s, _) = app.session(&world.platform, &world.delegation, &["mail:read"]).await;
        app.trigger(&format!("/v1/sessions/{s}/revoke"), &world.platform.credential, json!({})).await;
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hook.bodies().len(), 1, "nothing is pushed while paused");
    app.post("/ssf/status", &r, json!({"stream_id": stream, "status": "enabled"})).await.ok();
    let bodies = hook.wait_for(6).await;
    let seen: Vec<Value> = bodies[1..].iter().map(|b| claims_of(b)).collect();
    let kinds: Vec<String> = seen.iter().map(event_type).collect();
    assert_eq!(kinds, [STREAM_UPDATED, SESSION_REVOKED, SESSION_REVOKED, SESSION_REVOKED, STREAM_UPDATED]);
    let replayed: Vec<&str> = seen[1..4].iter().map(|c| c["sub_id"]["session"]["id"].as_str().unwrap()).collect();
    assert_eq!(replayed, held.iter().map(String::as_str).collect::<Vec<_>>(), "in order");
    assert_eq!(seen[0]["events"][STREAM_UPDATED]["status"], "paused");

    app.post("/ssf/status", &r, json!({"stream_id": stream, "status": "disabled"})).await.ok();
    let (s, _) = app.session(&world.platform, &world.delegation, &["mail:read"]).await;
    app.trigger(&format!("/v1/sessions/{s}/revoke"), &world.platform.credential, json!({})).await;
    app.post("/ssf/status", &r, json!({"stream_id": stream, "status": "enabled"})).await.ok();
    let bodies = hook.wait_for(7).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(hook.bodies().len(), 7, "the SET of a disabled stream is dropped");
    assert_eq!(event_type(&claims_of(&bodies[6])), STREAM_UPDATED);
    workers.stop().await;
}

#[tokio::test]
async fn a_push_receiver_answering_500_or_slowly_is_retried_and_a_400_err_is_recorded_not_retried() {
    let app = fast_retry_app().await;
    let workers = app.app.start_workers();
    jwks(&app).await;
    let hook = PushReceiver::default();
    hook.script.lock().unwrap().extend([
        (500, Duration::ZERO),
        (202, Duration::from_millis(900)),
        (400, Duration::ZERO),
    ]);
    let url = hook.start().await;
    let r = receiver(&app, None).await;
    let created =
        app.post("/ssf/streams", &r, json!({"delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": url}})).await;
    let stream = created.body["stream_id"].as_str().unwrap().to_owned();
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    let (s1, _) = app.session(&world.platform, &world.delegation, &["mail:read"]).await;
    let (s2, _) = app.session(&world.platform, &world.delegation, &["mail:read"]).await;
    let first = app.trigger(&format!("/v1/sessions/{s1}/revoke"), &world.platform.credential, json!({})).await;
    // 500, then too slow (past the 500 ms timeout), then 400 invalid_key: the first SET is
    // retried past both failures... and refused for good on its third try.
    let second = app.trigger(&format!("/v1/sessions/{s2}/revoke"), &world.platform.credential, json!({})).await;
    let bodies = hook.wait_for(1).await;
    assert_eq!(bodies.len(), 1);
    assert_eq!(claims_of(&bodies[0])["sub_id"]["session"]["id"], s2.as_str(), "the second SET after the first gave up");

    let row =
        |c: &Value| c["receivers"].as_array().unwrap().iter().find(|r| r["id"] == stream.as_str()).cloned().unwrap();
    // The receiver holds the body before it answers 202, and the worker records a batch's
    // outcomes once it has posted all of it (the refused SET and the accepted one went in one
    // batch): each is recorded after the body arrived, so both are waited for.
    let recorded = |event: &Value, field: &'static str| {
        let seq = event["cause"]["seq"].as_i64().unwrap();
        let (app, row) = (&app, &row);
        async move {
            let mut found = Value::Null;
            for _ in 0..400 {
                found = row(app.get(&format!("/v1/audit/coverage?event={seq}"), &app.admin).await.ok());
                if found[field] == 1 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            found
        }
    };
    let refused = recorded(&first, "failed").await;
    assert_eq!((refused["failed"].as_i64(), refused["acknowledged"].as_i64()), (Some(1), Some(0)), "{refused}");
    let accepted = recorded(&second, "acknowledged").await;
    assert_eq!(accepted["acknowledged"], 1, "{accepted}");
    assert!(accepted["acknowledged_at"].is_string());
    workers.stop().await;
}

#[tokio::test]
async fn a_push_endpoint_on_a_private_address_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = TestApp::open(dir, tether::Config::new).await;
    let r = receiver(&app, None).await;
    for url in ["http://127.0.0.1:9/events", "http://169.254.169.254/latest", "http://[::1]/x", "ftp://example.com/x"] {
        let answer = app
            .post("/ssf/streams", &r, json!({"delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": url}}))
            .await;
        answer.problem(400, "invalid_request");
    }
}

#[tokio::test]
async fn sets_queued_before_a_restart_are_delivered_after_it() {
    let app = TestApp::new().await;
    jwks(&app).await;
    let r = receiver(&app, None).await;
    let stream = poll_stream(&app, &r).await;
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    let (s, _) = app.session(&world.platform, &world.delegation, &["mail:read"]).await;
    app.trigger(&format!("/v1/sessions/{s}/revoke"), &world.platform.credential, json!({})).await;
    let app = app.restart().await;
    let sets = poll(&app, &r, &stream, &[]).await;
    assert_eq!(sets.len(), 1);
    assert_eq!(sets[0].2["sub_id"]["session"]["id"], s.as_str());
}

#[tokio::test]
async fn user_scoped_triggers_yield_one_set_per_user_and_agent_or_platform_triggers_their_exact_cover() {
    let app = TestApp::new().await;
    let w = watch(&app).await;
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    let p = &world.platform;

    // Password reset, sign out all: one SET about the user each.
    for (path, body) in [
        (format!("/v1/users/{}/lifecycle-events", world.user), json!({"type": "password_reset"})),
        (format!("/v1/users/{}/sign-out-all", world.user), json!({})),
    ] {
        sessions(&app, &world, 3).await;
        app.trigger(&path, &app.admin, body).await;
        let sets = drain(&app, &w.receiver, &w.stream).await;
        assert_eq!(sets.len(), 1, "{path}: {sets:?}");
        assert_eq!(sets[0].2["sub_id"]["user"]["sub"], world.user.as_str());
        assert!(sets[0].2["sub_id"].get("session").is_none() && sets[0].2["sub_id"].get("application").is_none());
    }

    // Disconnecting an integration: one SET with the user and the application.
    sessions(&app, &world, 2).await;
    app.trigger(
        &format!("/v1/users/{}/integrations/{}/disconnect", world.user, world.integration),
        &app.admin,
        json!({}),
    )
    .await;
    let sets = drain(&app, &w.receiver, &w.stream).await;
    assert_eq!(sets.len(), 1, "{sets:?}");
    assert_eq!(sets[0].2["sub_id"]["application"]["id"], world.integration.as_str());

    // An agent suspended: no member names an agent, so one SET per session.
    let d =
        app.delegation(p, &world.user, &world.agent, &app.integration(p, &["mail:read"]).await, &["mail:read"]).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        ids.push(app.session(p, &d, &["mail:read"]).await.0);
    }
    app.trigger(&format!("/v1/agents/{}/suspend", world.agent), &p.credential, json!({})).await;
    let sets = drain(&app, &w.receiver, &w.stream).await;
    let mut named: Vec<String> =
        sets.iter().map(|s| s.2["sub_id"]["session"]["id"].as_str().unwrap().to_owned()).collect();
    named.sort();
    ids.sort();
    assert_eq!(named, ids);

    // A platform disabled: one SET per (user, integration) it had sessions on.
    let agent = app.agent(p, &["mail:read"]).await;
    let (i1, i2) = (app.integration(p, &["mail:read"]).await, app.integration(p, &["mail:read"]).await);
    let other = app.user("idp|platform-other", &["mail:read"]).await;
    for (user, integration) in [(&world.user, &i1), (&world.user, &i2), (&other, &i1)] {
        let d = app.delegation(p, user, &agent, integration, &["mail:read"]).await;
        for _ in 0..2 {
            app.session(p, &d, &["mail:read"]).await;
        }
    }
    let receipt = app.trigger(&format!("/v1/platforms/{}/disable", p.id), &app.admin, json!({})).await;
    assert_eq!(receipt["revoked"].as_array().map(Vec::len), Some(6));
    let sets = drain(&app, &w.receiver, &w.stream).await;
    let mut pairs: Vec<(String, String)> = sets
        .iter()
        .map(|s| {
            let sub = &s.2["sub_id"];
            (sub["user"]["sub"].as_str().unwrap().to_owned(), sub["application"]["id"].as_str().unwrap().to_owned())
        })
        .collect();
    pairs.sort();
    let mut expected =
        vec![(world.user.clone(), i1.clone()), (world.user.clone(), i2.clone()), (other.clone(), i1.clone())];
    expected.sort();
    assert_eq!(pairs, expected);
}

#[tokio::test]
async fn a_push_set_committed_while_no_worker_ran_is_delivered_after_a_restart() {
    // No worker runs before the restart: the SET is committed with the revocation and nothing
    // else, as when the process dies between the commit and the delivery.
    let app = TestApp::new().await;
    let keys = jwks(&app).await;
    let hook = PushReceiver::default();
    let url = hook.start().await;
    let r = receiver(&app, None).await;
    app.post("/ssf/streams", &r, json!({"delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": url}})).await.ok();
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    let (s, _) = app.session(&world.platform, &world.delegation, &["mail:read"]).await;
    app.trigger(&format!("/v1/sessions/{s}/revoke"), &world.platform.credential, json!({})).await;
    assert!(hook.bodies().is_empty());

    let app = app.restart().await;
    let workers = app.app.start_workers();
    let bodies = hook.wait_for(1).await;
    assert_eq!(bodies.len(), 1);
    let (_, claims) = verified_with(&keys, &bodies[0]);
    assert_eq!(claims["sub_id"]["session"]["id"], s.as_str());
    workers.stop().await;
}

#[tokio::test]
async fn a_set_key_added_or_retired_is_audited_once() {
    let app = TestApp::new().await;
    let workers = app.app.start_workers();
    jwks(&app).await;
    let keys = tether::tokens::SetKeyRing::open(&app.dir.path().join("keys")).expect("keys");
    keys.rotate().expect("rotate");
    keys.retire(1).expect("retire");
    let mut seen = Vec::new();
    for _ in 0..100 {
        let page = app.get("/v1/audit?action=key.retired&subject=sets:1", &app.admin).await;
        if page.ok()["items"].as_array().is_some_and(|i| !i.is_empty()) {
            seen = app.get("/v1/audit?subject=sets:2", &app.admin).await.ok()["items"].as_array().unwrap().clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen.len(), 1, "key 2 added, once: {seen:?}");
    assert_eq!(seen[0]["action"], "key.added");
    assert_eq!(seen[0]["details"]["jwk_kid"], "set-2");
    workers.stop().await;
}
