//! `TestApp`: a tether on a temp data dir, driven in-process through the real router.

#![allow(dead_code)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use tether::clock::Clock;
use tether::{App, Config};

pub struct TestApp {
    pub dir: tempfile::TempDir,
    pub app: App,
    pub router: axum::Router,
    pub clock: Arc<Clock>,
    pub admin: String,
}

/// An answer: status, content type and parsed body (`Value::Null` when not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub content_type: String,
    pub body: Value,
    pub text: String,
}

impl Answer {
    /// Asserts a problem+json answer with this status and code; returns its detail.
    #[track_caller]
    pub fn problem(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body: {}", self.text);
        assert_eq!(self.content_type, "application/problem+json", "body: {}", self.text);
        assert_eq!(self.body["code"], code, "body: {}", self.text);
        self.body["detail"].as_str().unwrap_or_default().to_owned()
    }

    #[track_caller]
    pub fn ok(&self) -> &Value {
        assert!(self.status.is_success(), "expected success, got {}: {}", self.status, self.text);
        &self.body
    }
}

impl TestApp {
    pub async fn new() -> TestApp {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::open(dir, Config::new).await
    }

    pub async fn open(dir: tempfile::TempDir, config: impl Fn(std::path::PathBuf) -> Config) -> TestApp {
        let clock = Arc::new(Clock::default());
        let app = App::open_with_clock(&config(dir.path().to_owned()), clock.clone()).await.expect("open app");
        let admin = match &app.first_admin_credential {
            Some(c) => c.clone(),
            None => std::fs::read_to_string(dir.path().join("admin.credential"))
                .expect("admin.credential")
                .trim()
                .to_owned(),
        };
        let router = app.router();
        TestApp { dir, app, router, clock, admin }
    }

    /// Stops this instance and opens a new one on the same data directory.
    pub async fn restart(self) -> TestApp {
        let TestApp { dir, app, router, .. } = self;
        drop(router);
        drop(app);
        // Give the writer thread a moment to drain and close (it ends when its queue closes).
        tokio::task::yield_now().await;
        Self::open(dir, Config::new).await
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        credential: Option<&str>,
        content_type: Option<&str>,
        body: Body,
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(c) = credential {
            request = request.header("authorization", format!("Bearer {c}"));
        }
        if let Some(t) = content_type {
            request = request.header("content-type", t);
        }
        let response = self.router.clone().oneshot(request.body(body).expect("request")).await.expect("response");
        let status = response.status();
        let content_type =
            response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let bytes = response.into_body().collect().await.expect("body").to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer { status, content_type, body, text }
    }

    pub async fn call(&self, method: Method, path: &str, credential: &str, body: Option<Value>) -> Answer {
        match body {
            Some(v) => {
                self.request(method, path, Some(credential), Some("application/json"), Body::from(v.to_string())).await
            }
            None => self.request(method, path, Some(credential), None, Body::empty()).await,
        }
    }

    pub async fn post(&self, path: &str, credential: &str, body: Value) -> Answer {
        self.call(Method::POST, path, credential, Some(body)).await
    }

    pub async fn get(&self, path: &str, credential: &str) -> Answer {
        self.call(Method::GET, path, credential, None).await
    }

    /// Mints a credential of `role` (with `platform_id`/`user_id` as the role needs).
    pub async fn credential(&self, body: Value) -> String {
        let answer = self.post("/v1/credentials", &self.admin, body).await;
        answer.ok()["credential"].as_str().expect("credential").to_owned()
    }

    pub async fn verifier(&self) -> String {
        self.credential(json!({"role": "verifier"})).await
    }

    pub async fn auditor(&self) -> String {
        self.credential(json!({"role": "auditor"})).await
    }

    /// A platform with its credential.
    pub async fn platform(&self, name: &str) -> Platform {
        let p = self.post("/v1/platforms", &self.admin, json!({"name": name})).await.ok().clone();
        let id = p["id"].as_str().expect("platform id").to_owned();
        let credential = self.credential(json!({"role": "platform", "platform_id": id})).await;
        Platform { id, credential }
    }

    pub async fn user(&self, external_id: &str, permissions: &[&str]) -> String {
        let u =
            self.post("/v1/users", &self.admin, json!({"external_id": external_id, "permissions": permissions})).await;
        u.ok()["id"].as_str().expect("user id").to_owned()
    }

    pub async fn user_credential(&self, user_id: &str) -> String {
        self.credential(json!({"role": "user", "user_id": user_id})).await
    }

    pub async fn agent(&self, platform: &Platform, scopes: &[&str]) -> String {
        let a = self.post("/v1/agents", &platform.credential, json!({"name": "agent", "scopes": scopes})).await;
        a.ok()["id"].as_str().expect("agent id").to_owned()
    }

    pub async fn integration(&self, platform: &Platform, scopes: &[&str]) -> String {
        let i =
            self.post("/v1/integrations", &platform.credential, json!({"name": "integration", "scopes": scopes})).await;
        i.ok()["id"].as_str().expect("integration id").to_owned()
    }

    pub async fn delegation(
        &self,
        platform: &Platform,
        user: &str,
        agent: &str,
        integration: &str,
        scopes: &[&str],
    ) -> String {
        let d = self
            .post(
                "/v1/delegations",
                &platform.credential,
                json!({"user_id": user, "agent_id": agent, "integration_id": integration, "scopes": scopes}),
            )
            .await;
        d.ok()["id"].as_str().expect("delegation id").to_owned()
    }

    /// Opens a session; returns (session id, token).
    pub async fn session(&self, platform: &Platform, delegation: &str, scopes: &[&str]) -> (String, String) {
        let s = self
            .post("/v1/sessions", &platform.credential, json!({"delegation_id": delegation, "scopes": scopes}))
            .await;
        let body = s.ok();
        (
            body["session"]["id"].as_str().expect("session id").to_owned(),
            body["token"].as_str().expect("token").to_owned(),
        )
    }

    /// A complete chain: platform, user with `permissions`, agent and integration with `scopes`,
    /// a delegation for `scopes`.
    pub async fn world(&self, permissions: &[&str], scopes: &[&str]) -> World {
        let platform = self.platform("platform").await;
        let user = self.user(&format!("idp|{}", uuid::Uuid::now_v7().simple()), permissions).await;
        let agent = self.agent(&platform, scopes).await;
        let integration = self.integration(&platform, scopes).await;
        let delegation = self.delegation(&platform, &user, &agent, &integration, scopes).await;
        World { platform, user, agent, integration, delegation }
    }

    /// `(decision, reason)` of an authorize call by a verifier.
    pub async fn authorize(&self, verifier: &str, token: &str, scope: &str) -> (String, String) {
        let a = self.post("/v1/authorize", verifier, json!({"token": token, "scope": scope})).await;
        let body = a.ok();
        (
            body["decision"].as_str().unwrap_or_default().to_owned(),
            body["reason"].as_str().unwrap_or_default().to_owned(),
        )
    }
}

#[derive(Debug, Clone)]
pub struct Platform {
    pub id: String,
    pub credential: String,
}

#[derive(Debug, Clone)]
pub struct World {
    pub platform: Platform,
    pub user: String,
    pub agent: String,
    pub integration: String,
    pub delegation: String,
}
