//! Shared Signals in (issue 17 §2, §3): registering signal sources, pushed SETs (RFC 8935) and
//! every way one is refused, replays, each effect with its cause in the audit log, unknown
//! subjects, Global Token Revocation.
//!
//! SETs here are signed by `jsonwebtoken` with fixed test keys (fixtures/signal_keys.json, made
//! for these tests only); the interop test (tests/interop/test_ssf_receiver.py) signs them with an
//! independent JOSE implementation from keys served over HTTP.

use axum::body::Body;
use axum::http::Method;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::helpers::{Answer, TestApp};

const ISSUER: &str = "https://idp.example.com";
const AUDIENCE: &str = "https://tether.example.com";
const RISC: &str = "https://schemas.openid.net/secevent/risc/event-type/";
const CAEP: &str = "https://schemas.openid.net/secevent/caep/event-type/";

fn fixtures() -> Value {
    serde_json::from_str(include_str!("fixtures/signal_keys.json")).expect("fixture keys")
}

fn der(name: &str, member: &str) -> Vec<u8> {
    let text = fixtures()[name][member].as_str().expect("der").to_owned();
    base64::engine::general_purpose::STANDARD.decode(text).expect("base64")
}

/// The public JWKS of the fixture keys (RSA, P-256, Ed25519).
fn jwks() -> Value {
    let f = fixtures();
    json!({"keys": [f["rsa"]["jwk"], f["p256"]["jwk"], f["ed25519"]["jwk"]]})
}

/// A signing key of the fixtures: `rsa`, `rsa_other` (not in the JWKS), `p256`, `ed25519`.
fn key(name: &str) -> (Algorithm, EncodingKey, &'static str) {
    match name {
        "rsa" => (Algorithm::RS256, EncodingKey::from_rsa_der(&der("rsa", "private_pkcs1_der")), "rsa-1"),
        "rsa_other" => (Algorithm::RS256, EncodingKey::from_rsa_der(&der("rsa_other", "private_pkcs1_der")), "rsa-1"),
        "p256" => (Algorithm::ES256, EncodingKey::from_ec_der(&der("p256", "private_pkcs8_der")), "ec-1"),
        "ed25519" => (Algorithm::EdDSA, EncodingKey::from_ed_der(&der("ed25519", "private_pkcs8_der")), "ed-1"),
        other => panic!("no key {other}"),
    }
}

fn sign_with(name: &str, typ: &str, claims: &Value) -> String {
    let (alg, key, kid) = key(name);
    let mut header = Header::new(alg);
    header.typ = Some(typ.to_owned());
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &key).expect("sign")
}

fn sign(name: &str, claims: &Value) -> String {
    sign_with(name, "secevent+jwt", claims)
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

/// The claims of a SET of `event_type` about `sub_id`, issued now.
fn set_claims(app: &TestApp, event_type: &str, event: Value, sub_id: Value) -> Value {
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": app.clock.now().seconds(),
        "jti": uuid::Uuid::now_v7().to_string(),
        "sub_id": sub_id,
        "events": { event_type: event },
    })
}

fn email(address: &str) -> Value {
    json!({"format": "email", "email": address})
}

struct Source {
    id: String,
    push_path: String,
    authorization: String,
}

async fn register(app: &TestApp, body: Value) -> Answer {
    app.post("/v1/signal-sources", &app.admin, body).await
}

async fn source(app: &TestApp) -> Source {
    source_with(app, json!({"issuer": ISSUER, "jwks": jwks(), "audience": AUDIENCE, "label": "okta"})).await
}

async fn source_with(app: &TestApp, body: Value) -> Source {
    let answer = register(app, body).await;
    assert_eq!(answer.status.as_u16(), 201, "{}", answer.text);
    let url = answer.body["push_url"].as_str().expect("push_url");
    let id = answer.body["id"].as_str().expect("id").to_owned();
    assert!(url.ends_with(&format!("/ssf/push/{id}")), "{url}");
    Source {
        push_path: format!("/ssf/push/{id}"),
        id,
        authorization: answer.body["push_authorization"].as_str().expect("push_authorization").to_owned(),
    }
}

async fn push_raw(app: &TestApp, path: &str, authorization: Option<&str>, content_type: &str, body: Body) -> Answer {
    let mut headers = vec![("content-type", content_type)];
    if let Some(a) = authorization {
        headers.push(("authorization", a));
    }
    app.request_with_headers(Method::POST, path, &headers, body).await.0
}

async fn push(app: &TestApp, source: &Source, set: &str) -> Answer {
    push_raw(
        app,
        &source.push_path,
        Some(&source.authorization),
        "application/secevent+jwt",
        Body::from(set.to_owned()),
    )
    .await
}

#[track_caller]
fn refused(answer: &Answer, err: &str) -> String {
    assert_eq!(answer.status.as_u16(), 400, "{}", answer.text);
    assert_eq!(answer.content_type, "application/json", "{}", answer.text);
    assert_eq!(answer.body["err"], err, "{}", answer.text);
    answer.body["description"].as_str().expect("description").to_owned()
}

#[track_caller]
fn accepted(answer: &Answer) {
    assert_eq!(answer.status.as_u16(), 202, "{}", answer.text);
    assert!(answer.text.is_empty(), "202 has an empty body: {}", answer.text);
}

/// A user with an email and user name, and two live sessions; returns (user id, session ids).
async fn user_with_sessions(app: &TestApp, address: &str) -> (String, Vec<String>) {
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    let profile = json!({"external_id": format!("ext-{address}"), "user_name": address, "email": address, "permissions": ["mail:read"]});
    let user = app.post("/v1/users", &app.admin, profile).await.ok()["id"].as_str().expect("user").to_owned();
    let delegation = app.delegation(&world.platform, &user, &world.agent, &world.integration, &["mail:read"]).await;
    let mut sessions = Vec::new();
    for _ in 0..2 {
        sessions.push(app.session(&world.platform, &delegation, &["mail:read"]).await.0);
    }
    (user, sessions)
}

async fn audit(app: &TestApp, query: &str) -> Vec<Value> {
    let page = app.get(&format!("/v1/audit?{query}&limit=1000"), &app.admin).await;
    page.ok()["items"].as_array().cloned().unwrap_or_default()
}

async fn user_status(app: &TestApp, user: &str) -> String {
    app.get(&format!("/v1/users/{user}"), &app.admin).await.ok()["status"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn an_admin_registers_a_source_whose_push_authorization_is_shown_once_and_audited() {
    let app = TestApp::new().await;
    let created =
        register(&app, json!({"issuer": ISSUER, "jwks": jwks(), "effects": {"session-revoked-by-user": "sign_out"}}))
            .await;
    assert_eq!(created.status.as_u16(), 201, "{}", created.text);
    let body = &created.body;
    assert!(body["id"].as_str().expect("id").starts_with("src_"));
    assert!(body["push_authorization"].as_str().expect("auth").starts_with("Bearer ssfp_"));
    assert_eq!(body["status"], "active");
    assert_eq!(body["effects"]["session-revoked-by-user"], "sign_out");
    assert_eq!(body["effects"]["account-disabled"], "disable");
    let id = body["id"].as_str().expect("id");

    let auditor = app.auditor().await;
    let read = app.get(&format!("/v1/signal-sources/{id}"), &auditor).await;
    assert_eq!(read.ok()["issuer"], ISSUER);
    assert!(read.body.get("push_authorization").is_none(), "never shown again: {}", read.text);
    let listed = app.get("/v1/signal-sources", &auditor).await;
    assert_eq!(listed.ok()["items"].as_array().map(Vec::len), Some(1));
    let events = audit(&app, "action=signal_source.created").await;
    assert_eq!(events.len(), 1);
    assert!(!events[0].to_string().contains("ssfp_"), "the authorization is not in the log");

    let platform = app.platform("p").await;
    register(&app, json!({"issuer": ISSUER, "jwks": jwks()})).await; // admin may, platform may not:
    let forbidden =
        app.post("/v1/signal-sources", &platform.credential, json!({"issuer": ISSUER, "jwks": jwks()})).await;
    forbidden.problem(403, "forbidden");
}

#[tokio::test]
async fn a_registration_with_unusable_keys_or_settings_is_a_400_naming_what_is_wrong() {
    let app = TestApp::new().await;
    let oct = json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]});
    for (body, says) in [
        (json!({"issuer": ISSUER}), "exactly one of"),
        (json!({"issuer": ISSUER, "jwks": jwks(), "jwks_uri": "http://idp.example.com/jwks"}), "exactly one of"),
        (json!({"issuer": ISSUER, "jwks": oct}), "symmetric"),
        (json!({"issuer": ISSUER, "jwks": {"keys": []}}), "no usable"),
        (json!({"issuer": ISSUER, "jwks_uri": "ftp://idp.example.com/jwks"}), "https:// or http://"),
        (json!({"issuer": "", "jwks": jwks()}), "issuer"),
        (json!({"issuer": ISSUER, "jwks": jwks(), "effects": {"account-disabled": "explode"}}), "effects"),
        (json!({"issuer": ISSUER, "jwks": jwks(), "effects": {"no-such-signal": "record"}}), "no-such-signal"),
    ] {
        let detail = register(&app, body.clone()).await.problem(400, "invalid_request");
        assert!(detail.contains(says), "{body}: {detail}");
    }
}

#[tokio::test]
async fn an_account_disabled_set_disables_the_user_and_its_revocations_trace_back_to_the_signal() {
    let app = TestApp::new().await;
    let source = source(&app).await;
    let (user, sessions) = user_with_sessions(&app, "ada@example.com").await;
    let claims = set_claims(&app, &format!("{RISC}account-disabled"), json!({}), email("ada@example.com"));
    accepted(&push(&app, &source, &sign("rsa", &claims)).await);

    assert_eq!(user_status(&app, &user).await, "disabled");
    for s in &sessions {
        assert_eq!(app.session_status(s).await, "revoked");
    }
    let received = audit(&app, "action=signal.received").await;
    assert_eq!(received.len(), 1);
    let signal = &received[0];
    assert_eq!(signal["actor"], json!({"kind": "idp", "id": source.id}));
    assert_eq!(signal["subject"], json!({"kind": "user", "id": user}));
    assert_eq!(signal["details"]["jti"], claims["jti"]);
    assert_eq!(signal["details"]["effect"], "disable");
    assert_eq!(signal["details"]["event_type"], format!("{RISC}account-disabled"));
    let seq = signal["seq"].as_i64().expect("seq");
    let disabled = audit(&app, &format!("cause_seq={seq}")).await;
    assert_eq!(disabled.len(), 1, "{disabled:?}");
    assert_eq!(disabled[0]["action"], "user.disabled");
    let revoked = audit(&app, &format!("cause_seq={}", disabled[0]["seq"])).await;
    assert_eq!(revoked.len(), 2);
    assert!(revoked.iter().all(|e| e["action"] == "session.revoked" && e["reason"] == "user_disabled"));
    let coverage = app.get(&format!("/v1/audit/coverage?event={}", disabled[0]["seq"]), &app.admin).await;
    assert_eq!(coverage.ok()["survivors"].as_array().map(Vec::len), Some(0), "{}", coverage.text);

    let verify = app.get("/v1/audit/verify", &app.admin).await;
    assert_eq!(verify.ok()["ok"], true, "{}", verify.text);
}

#[tokio::test]
async fn a_replayed_jti_is_accepted_with_no_second_effect() {
    let app = TestApp::new().await;
    let source = source(&app).await;
    let (user, _) = user_with_sessions(&app, "bo@example.com").await;
    let claims = set_claims(&app, &format!("{RISC}credential-compromise"), json!({}), email("bo@example.com"));
    let set = sign("ed25519", &claims);
    accepted(&push(&app, &source, &set).await);
    let head = app.head_seq().await;
    accepted(&push(&app, &source, &set).await);
    assert_eq!(app.head_seq().await, head, "the replay wrote nothing");
    let lifecycle = audit(&app, "action=user.credential_compromised").await;
    assert_eq!(lifecycle.len(), 1);
    assert_eq!(lifecycle[0]["subject"]["id"], user.as_str());
}

#[tokio::test]
async fn each_signal_has_its_documented_effect() {
    let app = TestApp::new().await;
    let source = source(&app).await;
    let cases = [
        ("risc", "account-credential-change-required", json!({}), "user.password_reset", "password_reset"),
        (
            "caep",
            "credential-change",
            json!({"credential_type": "password", "change_type": "update"}),
            "user.password_reset",
            "password_reset",
        ),
        (
            "risc",
            "credential-compromise",
            json!({"credential_type": "password"}),
            "user.credential_compromised",
            "credential_compromised",
        ),
        ("caep", "session-revoked", json!({"initiating_entity": "admin"}), "user.signed_out_all", "sign_out_all"),
        ("caep", "session-revoked", json!({"initiating_entity": "policy"}), "user.signed_out_all", "sign_out_all"),
    ];
    for (i, (family, name, event, action, reason)) in cases.into_iter().enumerate() {
        let address = format!("u{i}@example.com");
        let (user, sessions) = user_with_sessions(&app, &address).await;
        let uri = format!("{}{name}", if family == "risc" { RISC } else { CAEP });
        accepted(&push(&app, &source, &sign("p256", &set_claims(&app, &uri, event, email(&address)))).await);
        let triggers: Vec<Value> = audit(&app, &format!("action={action}"))
            .await
            .into_iter()
            .filter(|e| e["subject"]["id"] == user.as_str())
            .collect();
        assert_eq!(triggers.len(), 1, "{name}");
        assert_eq!(user_status(&app, &user).await, "active", "{name}: the user stays active");
        for s in &sessions {
            assert_eq!(app.session_status(s).await, "revoked", "{name}");
        }
        let revoked = audit(&app, &format!("cause_seq={}", triggers[0]["seq"])).await;
        assert!(revoked.iter().all(|e| e["reason"] == reason), "{name}: {revoked:?}");
        let signal = audit(&app, &format!("subject={user}&action=signal.received")).await;
        assert_eq!(triggers[0]["cause_seq"], signal[0]["seq"], "{name}: the trigger is caused by the signal");
    }
}

#[tokio::test]
async fn a_session_revoked_by_the_user_is_recorded_only_unless_the_source_says_otherwise() {
    let app = TestApp::new().await;
    let default = source(&app).await;
    let (user, sessions) = user_with_sessions(&app, "cy@example.com").await;
    let logout = |app: &TestApp| {
        set_claims(
            app,
            &format!("{CAEP}session-revoked"),
            json!({"initiating_entity": "user"}),
            email("cy@example.com"),
        )
    };
    accepted(&push(&app, &default, &sign("rsa", &logout(&app))).await);
    assert_eq!(app.session_status(&sessions[0]).await, "active");
    let signal = audit(&app, "action=signal.received").await;
    assert_eq!(signal[0]["details"]["effect"], "record");

    let strict = source_with(
        &app,
        json!({"issuer": ISSUER, "jwks": jwks(), "audience": AUDIENCE, "effects": {"session-revoked-by-user": "sign_out"}}),
    )
    .await;
    accepted(&push(&app, &strict, &sign("rsa", &logout(&app))).await);
    for s in &sessions {
        assert_eq!(app.session_status(s).await, "revoked");
    }
    assert_eq!(user_status(&app, &user).await, "active");
}

#[tokio::test]
async fn enabled_purged_and_verification_events_do_what_the_table_says() {
    let app = TestApp::new().await;
    let source = source(&app).await;
    let (user, _) = user_with_sessions(&app, "di@example.com").await;
    let event =
        |app: &TestApp, name: &str| set_claims(app, &format!("{RISC}{name}"), json!({}), email("di@example.com"));
    accepted(&push(&app, &source, &sign("rsa", &event(&app, "account-disabled"))).await);
    assert_eq!(user_status(&app, &user).await, "disabled");
    accepted(&push(&app, &source, &sign("rsa", &event(&app, "account-enabled"))).await);
    assert_eq!(user_status(&app, &user).await, "active");
    accepted(&push(&app, &source, &sign("rsa", &event(&app, "account-purged"))).await);
    assert_eq!(user_status(&app, &user).await, "disabled");
    assert_eq!(audit(&app, "action=user.ended").await.len(), 1);
    accepted(&push(&app, &source, &sign("rsa", &event(&app, "account-enabled"))).await);
    assert_eq!(user_status(&app, &user).await, "disabled", "an ended user stays ended");

    let verification = json!({
        "iss": ISSUER, "aud": AUDIENCE, "iat": app.clock.now().seconds(), "jti": "verify-1",
        "sub_id": {"format": "opaque", "id": "stream-1"},
        "events": {"https://schemas.openid.net/secevent/ssf/event-type/verification": {"state": "abc"}},
    });
    accepted(&push(&app, &source, &sign("rsa", &verification)).await);
    let last = audit(&app, "action=signal.received").await.pop().expect("recorded");
    assert_eq!(last["details"]["signal"], "verification");
    assert_eq!(last["details"]["effect"], "record");
}

#[tokio::test]
async fn a_received_signal_changes_a_user_as_the_api_does_so_shared_signals_receivers_hear_of_it_too() {
    let app = TestApp::new().await;
    let source = source(&app).await;
    let (_, _) = user_with_sessions(&app, "fay@example.com").await;
    let receiver = app.credential(json!({"role": "receiver"})).await;
    let created = app.post("/ssf/streams", &receiver, json!({"description": "downstream"})).await;
    let stream = created.ok()["stream_id"].as_str().expect("stream_id").to_owned();
    let event =
        |app: &TestApp, name: &str| set_claims(app, &format!("{RISC}{name}"), json!({}), email("fay@example.com"));
    accepted(&push(&app, &source, &sign("rsa", &event(&app, "account-disabled"))).await);
    accepted(&push(&app, &source, &sign("rsa", &event(&app, "account-enabled"))).await);
    let polled = app.post(&format!("/ssf/poll/{stream}"), &receiver, json!({"returnImmediately": true})).await;
    let mut types: Vec<String> = polled.ok()["sets"]
        .as_object()
        .expect("sets")
        .values()
        .map(|jws| {
            let payload = jws.as_str().expect("jws").split('.').nth(1).expect("payload");
            let claims: Value = serde_json::from_slice(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("base64url"),
            )
            .expect("claims");
            claims["events"].as_object().expect("events").keys().next().expect("one event").clone()
        })
        .collect();
    types.sort();
    assert_eq!(
        types,
        [format!("{CAEP}session-revoked"), format!("{RISC}account-disabled"), format!("{RISC}account-enabled"),],
        "the disable's two SETs and the enable's one, as when an admin does it"
    );
}

#[tokio::test]
async fn subjects_resolve_by_iss_sub_opaque_aliases_and_complex_and_an_unknown_one_is_recorded_unmatched() {
    let app = TestApp::new().await;
    let source = source(&app).await;
    let (user, sessions) = user_with_sessions(&app, "ed@example.com").await;
    let head_before = app.head_seq().await;
    let unknown = set_claims(&app, &format!("{RISC}account-disabled"), json!({}), email("nobody@example.com"));
    accepted(&push(&app, &source, &sign("rsa", &unknown)).await);
    let signal = audit(&app, &format!("after_seq={head_before}&action=signal.received")).await;
    assert_eq!(signal[0]["subject"]["kind"], "signal_source");
    assert_eq!(signal[0]["details"]["effect"], "record");
    assert!(signal[0]["details"]["unmatched"].is_string());
    assert_eq!(app.session_status(&sessions[0]).await, "active");

    let other_issuer = json!({"format": "iss_sub", "iss": "https://else.example.com", "sub": "ext-ed@example.com"});
    let subjects = [
        (other_issuer, false),
        (json!({"format": "opaque", "id": "ext-ed@example.com"}), true),
        (json!({"format": "iss_sub", "iss": ISSUER, "sub": "ext-ed@example.com"}), true),
        (json!({"format": "aliases", "identifiers": [email("nobody@x"), email("ed@example.com")]}), true),
        (
            json!({"format": "complex", "user": email("ed@example.com"), "session": {"format": "opaque", "id": "s"}}),
            true,
        ),
    ];
    for (subject, matches) in subjects {
        let claims = set_claims(&app, &format!("{RISC}credential-compromise"), json!({}), subject.clone());
        accepted(&push(&app, &source, &sign("rsa", &claims)).await);
        let last = audit(&app, "action=signal.received").await.pop().expect("recorded");
        assert_eq!(last["subject"]["id"] == user.as_str(), matches, "{subject}: {last}");
    }
}

#[tokio::test]
async fn forged_misaddressed_and_malformed_sets_are_refused_with_rfc_8935_codes_and_change_nothing() {
    let app = TestApp::new().await;
    let source = source(&app).await;
    let (user, sessions) = user_with_sessions(&app, "fay@example.com").await;
    let uri = format!("{RISC}account-disabled");
    let good = set_claims(&app, &uri, json!({}), email("fay@example.com"));
    let with = |patch: Value| {
        let mut c = good.clone();
        for (k, v) in patch.as_object().cloned().unwrap_or_default() {
            c[k] = v;
        }
        c
    };
    let now = app.clock.now().seconds();
    let rsa_public_as_secret = {
        // The RSA public key's text (its JWK) as an HMAC secret: the classic algorithm confusion.
        let secret = jwks()["keys"][0].to_string();
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some("secevent+jwt".into());
        header.kid = Some("rsa-1".into());
        jsonwebtoken::encode(&header, &good, &EncodingKey::from_secret(secret.as_bytes())).expect("hs256")
    };
    let unsigned = format!("{}.{}.", b64(&json!({"typ": "secevent+jwt", "alg": "none"})), b64(&good));
    let tampered = {
        let set = sign("rsa", &good);
        let parts: Vec<&str> = set.split('.').collect();
        format!("{}.{}.{}", parts[0], b64(&with(json!({"sub_id": email("someone@else")}))), parts[2])
    };
    let cases: Vec<(String, &str)> = vec![
        (sign("rsa_other", &good), "invalid_key"),
        (tampered, "invalid_key"),
        (rsa_public_as_secret, "invalid_request"),
        (unsigned, "invalid_request"),
        (sign_with("rsa", "JWT", &good), "invalid_request"),
        (sign("rsa", &with(json!({"iss": "https://evil.example.com"}))), "invalid_issuer"),
        (sign("rsa", &with(json!({"aud": "https://someone.else"}))), "invalid_audience"),
        // Well past the 300 s window either way: the cases are signed (slowly, in a debug build)
        // before any is pushed, and the service's clock goes on meanwhile.
        (sign("rsa", &with(json!({"iat": now - 400}))), "invalid_request"),
        (sign("rsa", &with(json!({"iat": now + 400}))), "invalid_request"),
        (sign("rsa", &with(json!({"exp": now - 1}))), "invalid_request"),
        (sign("rsa", &with(json!({"jti": ""}))), "invalid_request"),
        (sign("rsa", &with(json!({"sub": "x"}))), "invalid_request"),
        (sign("rsa", &with(json!({"events": {}}))), "invalid_request"),
        ("garbage".to_owned(), "invalid_request"),
        ("a.b.c".to_owned(), "invalid_request"),
        (String::new(), "invalid_request"),
    ];
    for (set, err) in cases {
        let answer = push(&app, &source, &set).await;
        refused(&answer, err);
    }
    let huge = "a".repeat(64 * 1024 + 1);
    let answer = push(&app, &source, &huge).await;
    assert_eq!(answer.status.as_u16(), 413, "{}", answer.text);
    assert_eq!(answer.body["err"], "invalid_request");
    let wrong_type = push_raw(
        &app,
        &source.push_path,
        Some(&source.authorization),
        "application/json",
        Body::from(sign("rsa", &good)),
    )
    .await;
    refused(&wrong_type, "invalid_request");

    assert_eq!(user_status(&app, &user).await, "active");
    assert_eq!(app.session_status(&sessions[0]).await, "active");
    assert!(audit(&app, "action=signal.received").await.is_empty(), "nothing refused was recorded");
}

#[tokio::test]
async fn a_push_without_the_sources_authorization_or_to_a_disabled_source_is_refused() {
    let app = TestApp::new().await;
    let source = source(&app).await;
    let other = source_with(&app, json!({"issuer": ISSUER, "jwks": jwks()})).await;
    let (_, sessions) = user_with_sessions(&app, "gil@example.com").await;
    let set = sign("rsa", &set_claims(&app, &format!("{RISC}account-disabled"), json!({}), email("gil@example.com")));
    let body = || Body::from(set.clone());
    let jwt = "application/secevent+jwt";
    refused(&push_raw(&app, &source.push_path, None, jwt, body()).await, "authentication_failed");
    refused(&push_raw(&app, &source.push_path, Some("Bearer ssfp_wrong"), jwt, body()).await, "authentication_failed");
    refused(&push_raw(&app, &source.push_path, Some(&other.authorization), jwt, body()).await, "authentication_failed");
    refused(&push_raw(&app, &source.push_path, Some(&app.admin), jwt, body()).await, "authentication_failed");
    let absent = format!("/ssf/push/src_{}", uuid::Uuid::now_v7().simple());
    refused(&push_raw(&app, &absent, Some(&source.authorization), jwt, body()).await, "authentication_failed");
    refused(
        &push_raw(&app, "/ssf/push/not-an-id", Some(&source.authorization), jwt, body()).await,
        "authentication_failed",
    );

    let disabled =
        app.post(&format!("/v1/signal-sources/{}/disable", source.id), &app.admin, json!({"reason": "rotated"})).await;
    assert_eq!(disabled.ok()["status"], "disabled");
    refused(&push(&app, &source, &set).await, "access_denied");
    assert_eq!(app.session_status(&sessions[0]).await, "active");
    assert_eq!(audit(&app, "action=signal_source.disabled").await.len(), 1);
}

async fn gtr(app: &TestApp, bearer: &str, body: Value) -> Answer {
    let auth = format!("Bearer {bearer}");
    let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
    app.request_with_headers(Method::POST, "/oauth2/global-token-revocation", &headers, Body::from(body.to_string()))
        .await
        .0
}

#[tokio::test]
async fn global_token_revocation_signs_the_user_out_for_a_provisioner_and_answers_as_the_draft_says() {
    let app = TestApp::new().await;
    let (user, sessions) = user_with_sessions(&app, "hal@example.com").await;
    let provisioner = app.provisioner().await;
    let done = gtr(&app, &provisioner, json!({"sub_id": email("hal@example.com")})).await;
    assert_eq!(done.status.as_u16(), 204, "{}", done.text);
    for s in &sessions {
        assert_eq!(app.session_status(s).await, "revoked");
    }
    assert_eq!(user_status(&app, &user).await, "active");
    let request = audit(&app, "action=global_token_revocation").await;
    assert_eq!(request.len(), 1);
    let metadata = app.request(Method::GET, "/.well-known/oauth-authorization-server", None, None, Body::empty()).await;
    assert_eq!(
        metadata.ok()["global_token_revocation_endpoint"],
        "http://127.0.0.1:8700/oauth2/global-token-revocation"
    );
    let signed_out = audit(&app, &format!("cause_seq={}", request[0]["seq"])).await;
    assert_eq!(signed_out[0]["action"], "user.signed_out_all");

    gtr(&app, &provisioner, json!({"sub_id": email("nobody@example.com")})).await.problem(404, "not_found");
    gtr(&app, &provisioner, json!({"sub_id": {"format": "phone_number", "phone_number": "+1"}}))
        .await
        .problem(400, "invalid_request");
    gtr(&app, &provisioner, json!({"token": "x"})).await.problem(400, "invalid_request");
    let verifier = app.verifier().await;
    gtr(&app, &verifier, json!({"sub_id": email("hal@example.com")})).await.problem(403, "forbidden");
    gtr(&app, "nonsense", json!({"sub_id": email("hal@example.com")})).await.problem(401, "unauthenticated");
    let old =
        gtr(&app, &app.admin, json!({"subject": {"format": "iss_sub", "iss": ISSUER, "sub": "ext-hal@example.com"}}))
            .await;
    assert_eq!(old.status.as_u16(), 204, "the early drafts' `subject` and iss_sub: {}", old.text);
}

#[tokio::test]
async fn global_token_revocation_accepts_a_jwt_signed_by_a_registered_source_and_no_other() {
    let app = TestApp::new().await;
    source(&app).await;
    let (_, sessions) = user_with_sessions(&app, "ivy@example.com").await;
    let now = app.clock.now().seconds();
    let claims = json!({"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 60, "jti": "gtr-1"});
    let body = json!({"sub_id": email("ivy@example.com")});
    gtr(&app, &sign_with("rsa_other", "JWT", &claims), body.clone()).await.problem(401, "unauthenticated");
    let mut stale = claims.clone();
    stale["iat"] = json!(now - 3600);
    stale["exp"] = json!(now - 10);
    gtr(&app, &sign_with("rsa", "JWT", &stale), body.clone()).await.problem(401, "unauthenticated");
    let mut elsewhere = claims.clone();
    elsewhere["aud"] = json!("https://other.example.com");
    gtr(&app, &sign_with("rsa", "JWT", &elsewhere), body.clone()).await.problem(401, "unauthenticated");
    let set = sign("rsa", &set_claims(&app, &format!("{CAEP}session-revoked"), json!({}), email("ivy@example.com")));
    gtr(&app, &set, body.clone()).await.problem(401, "unauthenticated");
    assert_eq!(app.session_status(&sessions[0]).await, "active");

    let done = gtr(&app, &sign_with("ed25519", "JWT", &claims), body).await;
    assert_eq!(done.status.as_u16(), 204, "{}", done.text);
    for s in &sessions {
        assert_eq!(app.session_status(s).await, "revoked");
    }
    let request = audit(&app, "action=global_token_revocation").await;
    assert_eq!(request[0]["actor"]["kind"], "idp");
}

/// A `tether serve` child on `dir`, and the address it listens on.
fn serve(dir: &std::path::Path) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start tether serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = std::io::BufReader::new(stdout).lines();
    let address = loop {
        let line = lines.next().expect("tether printed its address").expect("line");
        if let Some(a) = line.strip_prefix("tether listening on http://") {
            break a.to_owned();
        }
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, address)
}

#[tokio::test]
async fn a_tether_killed_during_a_received_account_disabled_applied_all_of_it_or_none() {
    use std::io::Write;
    if crate::helpers::on_postgres() {
        eprintln!("skipped on PostgreSQL: kills a `tether serve` child, which runs on the data directory's SQLite");
        return;
    }
    let mut outcomes = Vec::new();
    for delay_ms in [0u64, 10, 40, 120, 400] {
        // Arrange, in-process: a source, a user with 300 live sessions, the SET.
        let app = TestApp::new().await;
        let source = source(&app).await;
        let (user, mut sessions) = user_with_sessions(&app, "kim@example.com").await;
        let platform_delegation = audit(&app, "action=delegation.created").await;
        let delegation =
            platform_delegation.last().expect("delegation")["subject"]["id"].as_str().expect("id").to_owned();
        let platform = app.get(&format!("/v1/delegations/{delegation}"), &app.admin).await.ok()["platform_id"].clone();
        let platform_credential = app.credential(json!({"role": "platform", "platform_id": platform})).await;
        let owner =
            crate::helpers::Platform { id: platform.as_str().expect("id").to_owned(), credential: platform_credential };
        for _ in 0..298 {
            sessions.push(app.session(&owner, &delegation, &["mail:read"]).await.0);
        }
        let set =
            sign("rsa", &set_claims(&app, &format!("{RISC}account-disabled"), json!({}), email("kim@example.com")));
        let TestApp { dir, app: opened, router, .. } = app;
        drop(router);
        drop(opened);
        tokio::task::yield_now().await;

        // Act: the real server receives the push and is killed with SIGKILL after `delay_ms`.
        let (mut child, address) = serve(dir.path());
        let mut stream = std::net::TcpStream::connect(&address).expect("connect");
        let request = format!(
            "POST {} HTTP/1.1\r\nHost: tether\r\nConnection: close\r\nAuthorization: {}\r\n\
             Content-Type: application/secevent+jwt\r\nContent-Length: {}\r\n\r\n{set}",
            source.push_path,
            source.authorization,
            set.len()
        );
        stream.write_all(request.as_bytes()).expect("send");
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");

        // Assert: after restart, all of it or none of it, and the chain verifies.
        let app = TestApp::open(dir, crate::helpers::local_config).await;
        let verify = app.get("/v1/audit/verify", &app.admin).await;
        assert_eq!(verify.ok()["ok"], true, "{}", verify.text);
        let received = audit(&app, "action=signal.received").await;
        let disabled = audit(&app, "action=user.disabled").await;
        let revoked = audit(&app, "action=session.revoked").await;
        let mut statuses = std::collections::BTreeSet::new();
        for s in &sessions {
            statuses.insert(app.session_status(s).await);
        }
        let applied = received.len() == 1;
        if applied {
            assert_eq!(user_status(&app, &user).await, "disabled");
            assert_eq!((disabled.len(), revoked.len()), (1, 300));
            assert_eq!(statuses, ["revoked".to_owned()].into());
        } else {
            assert_eq!(user_status(&app, &user).await, "active");
            assert_eq!((received.len(), disabled.len(), revoked.len()), (0, 0, 0));
            assert_eq!(statuses, ["active".to_owned()].into());
        }
        // The transmitter retries what it was not told was accepted: the result is the same.
        accepted(&push(&app, &source, &set).await);
        assert_eq!(user_status(&app, &user).await, "disabled");
        assert_eq!(audit(&app, "action=user.disabled").await.len(), 1);
        assert_eq!(audit(&app, "action=session.revoked").await.len(), 300);
        outcomes.push(applied);
    }
    // Which delays land before or after the commit depends on the machine; each run is checked.
    eprintln!("applied before the kill, by delay: {outcomes:?}");
}
