//! The README's story end to end, asserting each answer.

use serde_json::json;

use crate::helpers::TestApp;

#[tokio::test]
async fn the_walkthrough_allows_then_denies_after_revocation_and_the_log_verifies() {
    let app = TestApp::new().await;
    let verifier = app.verifier().await;
    let world = app.world(&["mail:read", "mail:send"], &["mail:read", "mail:send"]).await;

    let (session, token) = app.session(&world.platform, &world.delegation, &["mail:read"]).await;
    assert_eq!(app.authorize(&verifier, &token, "mail:read").await, ("allow".into(), "allowed".into()));
    assert_eq!(app.authorize(&verifier, &token, "mail:send").await, ("deny".into(), "scope_not_granted".into()));

    let receipt = app
        .post(&format!("/v1/sessions/{session}/revoke"), &world.platform.credential, json!({"reason": "done"}))
        .await;
    let receipt = receipt.ok();
    assert_eq!(receipt["revoked"].as_array().map(Vec::len), Some(1));
    assert_eq!(receipt["revoked"][0]["session_id"], session.as_str());
    assert_eq!(receipt["cause"]["action"], "session.revoked");

    assert_eq!(app.authorize(&verifier, &token, "mail:read").await, ("deny".into(), "session_revoked".into()));

    // The denied use of a revoked token is itself on record (first per session per minute).
    let used = app.get(&format!("/v1/audit?action=authorize.revoked_token_used&subject={session}"), &app.admin).await;
    assert_eq!(used.ok()["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(app.authorize(&verifier, &token, "mail:read").await.1, "session_revoked");
    let used = app.get(&format!("/v1/audit?action=authorize.revoked_token_used&subject={session}"), &app.admin).await;
    assert_eq!(
        used.ok()["items"].as_array().map(Vec::len),
        Some(1),
        "a second denial in the same minute is only counted"
    );

    let verify = app.get("/v1/audit/verify", &app.admin).await;
    assert_eq!(verify.ok()["ok"], true);
    assert_eq!(verify.body["head_seq"].as_i64(), receipt["audit"]["to_seq"].as_i64().map(|s| s + 1));
}

#[tokio::test]
async fn a_signed_checkpoint_verifies_until_the_log_is_rewritten() {
    let app = TestApp::new().await;
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    app.session(&world.platform, &world.delegation, &["mail:read"]).await;
    let auditor = app.auditor().await;

    let checkpoint = app.get("/v1/audit/checkpoint", &auditor).await.ok().clone();
    let check = app.post("/v1/audit/checkpoint/verify", &auditor, checkpoint.clone()).await;
    assert_eq!(check.ok()["signature_valid"], true);
    assert_eq!(check.body["log_matches"], true);

    let mut forged = checkpoint.clone();
    forged["hash"] = json!("00".repeat(32));
    let check = app.post("/v1/audit/checkpoint/verify", &auditor, forged).await;
    assert_eq!(check.ok()["signature_valid"], false);

    // Someone with write access rewrites an early event (and recomputes nothing).
    let mut db = app.raw_db();
    let drop = if db.is_postgres() { " ON audit_events" } else { "" };
    db.execute_batch(&format!(
        "DROP TRIGGER audit_events_no_update{drop}; UPDATE audit_events SET reason = 'rewritten' WHERE seq = 2;"
    ))
    .expect("tamper");
    let check = app.post("/v1/audit/checkpoint/verify", &auditor, checkpoint).await;
    assert_eq!(check.ok()["signature_valid"], true);
    assert_eq!(check.body["log_matches"], false);
}

#[tokio::test]
async fn the_openapi_document_describes_list_answers_as_pages() {
    let app = TestApp::new().await;
    let doc = app.request(axum::http::Method::GET, "/openapi.json", None, None, axum::body::Body::empty()).await;
    let doc = doc.ok().clone();
    let resolve = |schema: &serde_json::Value| -> serde_json::Value {
        match schema["$ref"].as_str() {
            Some(reference) => {
                let name = reference.rsplit('/').next().expect("ref name");
                doc["components"]["schemas"][name].clone()
            }
            None => schema.clone(),
        }
    };
    for route in [
        "/v1/credentials",
        "/v1/platforms",
        "/v1/agents",
        "/v1/integrations",
        "/v1/users",
        "/v1/delegations",
        "/v1/sessions",
        "/v1/revocations",
        "/v1/webhooks",
        "/v1/webhooks/{id}/deliveries",
        "/v1/audit",
    ] {
        let schema = resolve(&doc["paths"][route]["get"]["responses"]["200"]["content"]["application/json"]["schema"]);
        assert_eq!(schema["properties"]["items"]["type"], "array", "{route}: {schema}");
        assert!(schema["properties"]["next_cursor"].is_object(), "{route}: {schema}");
    }
}

#[tokio::test]
async fn the_openapi_document_declares_path_parameters_optional_bodies_and_problem_types() {
    let app = TestApp::new().await;
    let doc = app.request(axum::http::Method::GET, "/openapi.json", None, None, axum::body::Body::empty()).await;
    let doc = doc.ok().clone();
    let paths = doc["paths"].as_object().expect("paths");
    let mut templated = 0;
    for (path, operations) in paths {
        let names: Vec<&str> = path.split('{').skip(1).filter_map(|rest| rest.split('}').next()).collect();
        for (method, operation) in operations.as_object().expect("operations") {
            for name in &names {
                templated += 1;
                let declared = operation["parameters"].as_array().is_some_and(|ps| {
                    ps.iter().any(|p| p["name"] == *name && p["in"] == "path" && p["required"] == true)
                });
                assert!(declared, "{method} {path} does not declare its path parameter {name}");
            }
            for (status, response) in operation["responses"].as_object().expect("responses") {
                if status.starts_with('4') && path.starts_with("/v1/") {
                    let content = response["content"].as_object().expect("content");
                    assert!(content.contains_key("application/problem+json"), "{method} {path} {status}: {content:?}");
                }
            }
        }
    }
    assert!(templated > 20, "the routes with ids were found: {templated}");
    // Query parameters the routes check are documented.
    let query_params = |path: &str| -> Vec<String> {
        doc["paths"][path]["get"]["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter().filter(|p| p["in"] == "query").filter_map(|p| p["name"].as_str().map(str::to_owned)).collect()
            })
            .unwrap_or_default()
    };
    for path in ["/v1/platforms", "/v1/users", "/v1/credentials", "/v1/webhooks", "/v1/sessions", "/v1/audit"] {
        let names = query_params(path);
        assert!(names.contains(&"limit".into()) && names.contains(&"cursor".into()), "{path}: {names:?}");
    }
    for name in ["user_id", "agent_id", "integration_id", "delegation_id", "status"] {
        assert!(query_params("/v1/sessions").contains(&name.to_owned()), "/v1/sessions lacks ?{name}");
    }
    for name in ["subject", "actor", "action", "cause_seq", "after_seq", "since", "until"] {
        assert!(query_params("/v1/audit").contains(&name.to_owned()), "/v1/audit lacks ?{name}");
    }
    assert!(query_params("/v1/revocations").contains(&"after".to_owned()));
    // The OAuth endpoints: a form with `token`, RFC-shaped answers.
    let resolve = |schema: &serde_json::Value| -> serde_json::Value {
        let name = schema["$ref"].as_str().and_then(|r| r.rsplit('/').next()).unwrap_or_default().to_owned();
        doc["components"]["schemas"][name].clone()
    };
    for path in ["/oauth2/introspect", "/oauth2/revoke"] {
        let form = &doc["paths"][path]["post"]["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"];
        assert!(resolve(form)["properties"]["token"].is_object(), "{path}: {form}");
        let refused = &doc["paths"][path]["post"]["responses"]["4XX"]["content"]["application/json"]["schema"];
        assert!(resolve(refused)["properties"]["error"].is_object(), "{path}: {refused}");
    }
    let introspection =
        &doc["paths"]["/oauth2/introspect"]["post"]["responses"]["200"]["content"]["application/json"]["schema"];
    assert!(resolve(introspection)["properties"]["active"].is_object(), "{introspection}");
    // Each create route names its own body.
    for (path, body) in [("/v1/agents", "NewAgent"), ("/v1/integrations", "NewIntegration")] {
        let schema = &doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"];
        assert_eq!(schema["$ref"], format!("#/components/schemas/{body}"), "{path}: {schema}");
        assert!(resolve(schema)["properties"]["scopes"].is_object(), "{path}: {schema}");
    }
    // The public operations routes are documented and need no credential.
    for path in ["/healthz", "/metrics", "/openapi.json"] {
        let operation = &doc["paths"][path]["get"];
        assert!(operation.is_object(), "{path} missing");
        assert_eq!(operation["security"], serde_json::json!([{}]), "{path} needs no credential: {operation}");
    }
    // Every /v1 route documents its refusals as problem+json.
    for (path, operations) in paths.iter().filter(|(p, _)| p.starts_with("/v1/")) {
        for (method, operation) in operations.as_object().expect("operations") {
            let refused = &operation["responses"]["4XX"]["content"]["application/problem+json"]["schema"]["$ref"];
            assert_eq!(refused, "#/components/schemas/Problem", "{method} {path}");
        }
    }
    // A `{reason?}` body may be left out: the document must not require it.
    for path in ["/v1/users/{id}/disable", "/v1/sessions/{id}/revoke", "/v1/keys/rotate"] {
        let body = &doc["paths"][path]["post"]["requestBody"];
        assert!(body.is_object(), "{path} documents its body");
        assert_ne!(body["required"], true, "{path}: {body}");
    }
}

#[tokio::test]
async fn the_openapi_document_lists_the_contract_routes() {
    let app = TestApp::new().await;
    let doc = app.request(axum::http::Method::GET, "/openapi.json", None, None, axum::body::Body::empty()).await;
    let paths = doc.ok()["paths"].as_object().expect("paths").clone();
    for route in [
        "/v1/credentials",
        "/v1/platforms/{id}/disable",
        "/v1/agents/{id}/suspend",
        "/v1/integrations/{id}/disable",
        "/v1/users/{id}/permissions",
        "/v1/users/{id}/lifecycle-events",
        "/v1/users/{id}/agents/{agent_id}/disconnect",
        "/v1/delegations/{id}/revoke",
        "/v1/sessions",
        "/v1/sessions/{id}/refresh",
        "/v1/authorize",
        "/oauth2/introspect",
        "/oauth2/revoke",
        "/v1/keys",
        "/v1/revocations",
        "/v1/events",
        "/v1/webhooks/{id}/deliveries",
        "/v1/audit/coverage",
    ] {
        assert!(paths.contains_key(route), "{route} missing from /openapi.json");
    }
}

#[tokio::test]
async fn a_credential_minted_by_the_cli_beside_a_running_instance_works_and_keeps_the_chain_whole() {
    let app = TestApp::new().await;
    if app.database_url().is_some() {
        eprintln!("skipped on PostgreSQL: `tether credential mint` writes to the data directory's SQLite database");
        return;
    }
    app.world(&["mail:read"], &["mail:read"]).await;

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["credential", "mint", "--role", "auditor", "--data-dir"])
        .arg(app.dir.path())
        .output()
        .expect("run tether credential mint");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let minted = String::from_utf8(output.stdout).expect("utf-8").trim().to_owned();

    // The running instance keeps writing after another process appended to the chain.
    let after = app.post("/v1/platforms", &app.admin, json!({"name": "after the cli"})).await;
    after.ok();
    let verify = app.get("/v1/audit/verify", &minted).await;
    assert_eq!(verify.ok()["ok"], true, "{}", verify.text);
    let created = app.get("/v1/audit?action=credential.created&actor=cli", &app.admin).await;
    assert_eq!(created.ok()["items"].as_array().map(Vec::len), Some(1));
}

/// A value of `/metrics` by its exact name (the line `name value`).
async fn metric(app: &TestApp) -> impl Fn(&str) -> f64 {
    let answer = app.request(axum::http::Method::GET, "/metrics", None, None, axum::body::Body::empty()).await;
    assert_eq!(answer.status, 200);
    let text = answer.text;
    move |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("{name} is not in /metrics"))
    }
}

#[tokio::test]
async fn metrics_count_the_writers_commands_and_where_its_time_went() {
    let app = TestApp::new().await;
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    let before = metric(&app).await;
    let (commands, batches) = (before("tether_writer_commands_total"), before("tether_writer_batches_total"));
    assert!(commands >= 5.0, "the world took at least five writes, counted {commands}");
    assert!((1.0..=commands).contains(&batches), "{batches} batches for {commands} commands");
    assert!(before("tether_writer_commit_seconds_total") > 0.0);
    assert!(before("tether_writer_running_seconds_total") > 0.0);
    // The lock is held from BEGIN's return to the end of COMMIT: at least COMMIT's time.
    assert!(before("tether_writer_locked_seconds_total") >= before("tether_writer_commit_seconds_total"));
    assert_eq!(before("tether_writer_failed_batches_total"), 0.0);

    app.session(&world.platform, &world.delegation, &["mail:read"]).await;
    let after = metric(&app).await;
    assert!(after("tether_writer_commands_total") > commands, "opening a session is a write");
    assert!(after("tether_writer_commit_seconds_total") >= before("tether_writer_commit_seconds_total"));
    assert!(after("tether_writer_locked_seconds_total") > before("tether_writer_locked_seconds_total"));
}

#[tokio::test]
async fn shutting_down_does_not_wait_for_an_event_stream_client_that_never_hangs_up() {
    let app = TestApp::new().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = app.app.serve(listener, async move {
        let _ = stopped.await;
    });
    let client = async {
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<http_body_util::Empty<axum::body::Bytes>>();
        let request = axum::http::Request::get(format!("http://{addr}/v1/events"))
            .header("authorization", format!("Bearer {}", app.admin))
            .body(http_body_util::Empty::new())
            .expect("request");
        let stream = client.request(request).await.expect("the stream opened");
        assert_eq!(stream.status(), 200);
        stop.send(()).expect("shut down");
        // The client keeps the stream open and never reads it.
        std::future::pending::<()>().await;
        drop(stream);
    };
    tokio::select! {
        served = tokio::time::timeout(std::time::Duration::from_secs(10), serving) => {
            served.expect("shutdown waited on the open event stream").expect("serve");
        }
        () = client => unreachable!("the client never finishes"),
    }
}

#[tokio::test]
async fn a_client_that_sends_its_headers_too_slowly_loses_its_connection_and_others_are_served() {
    use std::io::{Read, Write};
    use std::time::Duration;
    let app = TestApp::open(tempfile::tempdir().expect("tempdir"), |dir| {
        let mut config = crate::helpers::local_config(dir);
        config.http.header_read = Duration::from_millis(300);
        config
    })
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(async move {
        app.app
            .serve(listener, async move {
                let _ = stopped.await;
            })
            .await
    });

    // Sends `request` and reads until the server closes the connection: what it said first.
    let exchange = |request: Vec<u8>| {
        tokio::task::spawn_blocking(move || {
            let mut stream = std::net::TcpStream::connect(addr).expect("connect");
            stream.set_read_timeout(Some(Duration::from_secs(5))).expect("read timeout");
            stream.write_all(&request).expect("write");
            let mut answer = Vec::new();
            let read = stream.read_to_end(&mut answer);
            assert!(read.is_ok(), "the server kept a slow client's connection open: {read:?}");
            String::from_utf8_lossy(&answer).into_owned()
        })
    };

    // Headers that never end: the connection is closed.
    exchange(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n".to_vec()).await.expect("slow headers");
    // A whole request is served as before.
    let answer =
        exchange(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec()).await.expect("whole");
    assert!(answer.starts_with("HTTP/1.1 200"), "{}", answer.lines().next().unwrap_or_default());

    stop.send(()).expect("shut down");
    serving.await.expect("server task").expect("served");
}
