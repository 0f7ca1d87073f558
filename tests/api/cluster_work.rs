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

use crate::cluster::{fresh_database, one_cluster_at_a_time};
use crate::instance::{admin_credential, http, ok, Server};

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
    let start = || {
        let mut server =
            Server::start(dir.path(), "127.0.0.1:0", &["--database", &database, "--webhooks-allow-private"]);
        server.wait_listening(Duration::from_secs(60));
        server
    };
    let first = start();
    let nodes = [first, start(), start()];
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

/// `POST /oauth2/token` (client_credentials, client_secret_basic) on `address`: the access token.
fn access_token(address: &str, client_id: &str, secret: &str) -> String {
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{client_id}:{secret}"));
    let form = "grant_type=client_credentials";
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    let request = format!(
        "POST /oauth2/token HTTP/1.1\r\nHost: tether\r\nConnection: close\r\nAuthorization: Basic {basic}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    );
    stream.write_all(request.as_bytes()).expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    let (_, body) = answer.split_once("\r\n\r\n").expect("a response");
    let body: serde_json::Value = serde_json::from_str(body).expect("json");
    body["access_token"].as_str().unwrap_or_else(|| panic!("no token: {body}")).to_owned()
}

#[test]
fn a_shared_signals_access_token_from_one_node_works_on_every_node_until_its_credential_is_revoked() {
    let _turn = one_cluster_at_a_time();
    let Some(database) = fresh_database() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let start = || {
        let mut server = Server::start(dir.path(), "127.0.0.1:0", &["--database", &database]);
        server.wait_listening(Duration::from_secs(60));
        server
    };
    let first = start();
    let nodes = [first, start(), start()];
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
