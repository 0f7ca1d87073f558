//! Background work on several nodes (docs/architecture.md, "Running several nodes"): an event
//! reaches a webhook receiver once however many nodes serve the database, even when the
//! receiver is slow enough for every node's delivery poll to find the pending delivery (one node
//! sends, the holder of the background-work lock, and each attempt is claimed by a conditional
//! write besides).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cluster::{fresh_database, listening_nodes, one_cluster_at_a_time};
use crate::instance::{admin_credential, http, ok};

/// Counts the deliveries of each `webhook-id` a receiver on loopback gets, answering 204 after
/// a pause.
fn receiver() -> (String, Arc<Mutex<HashMap<String, usize>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("address"));
    let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let counts = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let counts = counts.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let (mut id, mut length) = (String::new(), 0usize);
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("webhook-id:") {
                        id = v.trim().to_owned();
                    }
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    line.clear();
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                *counts.lock().expect("counts").entry(id).or_default() += 1;
                // A slow receiver: the delivery stays pending for a while, long enough for
                // every node's delivery poll (200 ms) to find it if every node sent.
                std::thread::sleep(Duration::from_millis(700));
                let _ = (&stream).write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
            });
        }
    });
    (url, seen)
}

#[test]
fn three_nodes_deliver_each_webhook_event_once() {
    let _turn = one_cluster_at_a_time();
    let Some(database) = fresh_database() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = listening_nodes(dir.path(), &database, 3, &["--webhooks-allow-private"]);
    let admin = admin_credential(dir.path());
    let (url, seen) = receiver();
    ok(nodes[0].address(), "POST", "/v1/webhooks", &admin, json!({"url": url, "events": ["platform.created"]}));
    let events = 30;
    for i in 0..events {
        ok(nodes[i % 3].address(), "POST", "/v1/platforms", &admin, json!({"name": format!("p{i}")}));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().expect("counts").len() < events && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // Time for a second node's copy, if one were coming: several of its delivery polls.
    std::thread::sleep(Duration::from_secs(2));
    let seen = seen.lock().expect("counts").clone();
    assert_eq!(seen.len(), events, "every event was delivered: {seen:?}");
    assert!(seen.values().all(|n| *n == 1), "each event was delivered once, not once per node: {seen:?}");
}

/// A form POST with an `Authorization` header: the JSON answer.
fn form_post(address: &str, path: &str, authorization: &str, form: &str) -> serde_json::Value {
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: tether\r\nConnection: close\r\nAuthorization: {authorization}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    );
    stream.write_all(request.as_bytes()).expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    let (_, body) = answer.split_once("\r\n\r\n").expect("a response");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// `POST /oauth2/token` (client_credentials, client_secret_basic) on `address`: the access token.
fn access_token(address: &str, client_id: &str, secret: &str) -> String {
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{client_id}:{secret}"));
    let body = form_post(address, "/oauth2/token", &format!("Basic {basic}"), "grant_type=client_credentials");
    body["access_token"].as_str().unwrap_or_else(|| panic!("no token: {body}")).to_owned()
}

#[test]
fn introspection_on_any_node_sees_a_session_made_on_another_and_its_revocation_by_a_third() {
    let _turn = one_cluster_at_a_time();
    let Some(database) = fresh_database() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = listening_nodes(dir.path(), &database, 3, &[]);
    let at: Vec<&str> = nodes.iter().map(|n| n.address()).collect();
    let admin = admin_credential(dir.path());
    let platform_id = ok(at[0], "POST", "/v1/platforms", &admin, json!({"name": "p"}))["id"].clone();
    let platform =
        ok(at[0], "POST", "/v1/credentials", &admin, json!({"role": "platform", "platform_id": platform_id}))
            ["credential"]
            .as_str()
            .expect("credential")
            .to_owned();
    let verifier = ok(at[0], "POST", "/v1/credentials", &admin, json!({"role": "verifier"}))["credential"]
        .as_str()
        .expect("v")
        .to_owned();
    let scopes = json!(["mail:read"]);
    let user = ok(at[0], "POST", "/v1/users", &admin, json!({"external_id": "idp|1", "permissions": scopes}));
    let agent = ok(at[0], "POST", "/v1/agents", &platform, json!({"name": "a", "scopes": scopes}));
    let integration = ok(at[0], "POST", "/v1/integrations", &platform, json!({"name": "i", "scopes": scopes}));
    let delegation = ok(
        at[0],
        "POST",
        "/v1/delegations",
        &platform,
        json!({"user_id": user["id"], "agent_id": agent["id"], "integration_id": integration["id"], "scopes": scopes}),
    );
    let session =
        ok(at[0], "POST", "/v1/sessions", &platform, json!({"delegation_id": delegation["id"], "scopes": scopes}));
    let (id, token) = (session["session"]["id"].as_str().expect("id"), session["token"].as_str().expect("token"));
    let introspect = |address: &str| {
        form_post(address, "/oauth2/introspect", &format!("Bearer {verifier}"), &format!("token={token}"))
    };
    assert_eq!(introspect(at[1])["active"], json!(true), "a node that did not make the session reads it");
    ok(at[2], "POST", &format!("/v1/sessions/{id}/revoke"), &platform, json!({"reason": "test"}));
    for address in &at {
        assert_eq!(introspect(address)["active"], json!(false), "{address} after the revoke returned");
    }
}

#[test]
fn a_shared_signals_access_token_from_one_node_works_on_every_node_until_its_credential_is_revoked() {
    let _turn = one_cluster_at_a_time();
    let Some(database) = fresh_database() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = listening_nodes(dir.path(), &database, 3, &[]);
    let admin = admin_credential(dir.path());
    // Each node reports its standing; exactly one sends the outgoing work.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let health = loop {
        let health: Vec<serde_json::Value> =
            nodes.iter().map(|n| http(n.address(), "GET", "/healthz", "", None).expect("healthz").1).collect();
        let senders = health.iter().filter(|h| h["cluster"]["sends_outgoing"] == json!(true)).count();
        if senders == 1 || std::time::Instant::now() > deadline {
            break health;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(health.iter().all(|h| h["cluster"]["standing"] == "current"), "{health:?}");
    assert_eq!(health.iter().filter(|h| h["cluster"]["sends_outgoing"] == json!(true)).count(), 1, "{health:?}");
    let receiver = ok(nodes[1].address(), "POST", "/v1/credentials", &admin, json!({"role": "receiver"}));
    let (id, secret) = (receiver["id"].as_str().expect("id"), receiver["credential"].as_str().expect("secret"));
    let token = access_token(nodes[0].address(), id, secret);
    for node in &nodes {
        let (status, streams) = http(node.address(), "GET", "/ssf/streams", &token, None).expect("streams");
        assert_eq!(status, 200, "a token issued on one node works on {}: {streams}", node.address());
    }
    ok(nodes[2].address(), "POST", &format!("/v1/credentials/{id}/revoke"), &admin, json!({}));
    for node in &nodes {
        let (status, _) = http(node.address(), "GET", "/ssf/streams", &token, None).expect("streams");
        assert_eq!(status, 401, "the revoked credential's token is refused on {}", node.address());
    }
}
