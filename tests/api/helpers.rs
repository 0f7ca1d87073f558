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

/// A new, empty PostgreSQL database when the suite runs on PostgreSQL ([`on_postgres`]): its
/// URL, for `Config::database_url`. `None` otherwise: the test runs on SQLite in its data
/// directory.
pub async fn fresh_database_url() -> Option<String> {
    if !on_postgres() {
        return None;
    }
    let admin_url = std::env::var("TETHER_TEST_DATABASE_URL").ok().filter(|u| !u.is_empty())?;
    let name = format!("tether_t_{}", uuid::Uuid::now_v7().simple());
    // The synchronous client runs a runtime of its own, which cannot start on an async worker.
    let url = tokio::task::spawn_blocking(move || {
        let mut client = postgres::Client::connect(&admin_url, postgres::NoTls)
            .unwrap_or_else(|e| panic!("TETHER_TEST_DATABASE_URL: cannot connect: {e}"));
        client.batch_execute(&format!("CREATE DATABASE {name}")).expect("create the test database");
        database_url(&admin_url, &name)
    })
    .await
    .expect("create the test database");
    Some(url)
}

/// `admin_url` with its database (the path) replaced by `name`, its query kept.
fn database_url(admin_url: &str, name: &str) -> String {
    let (base, query) = admin_url.split_once('?').map_or((admin_url, None), |(b, q)| (b, Some(q)));
    let authority_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_end..].find('/') {
        Some(slash) => &base[..authority_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// Whether the suite runs on PostgreSQL: `TETHER_TEST_BACKEND=postgres`, with the server at
/// `TETHER_TEST_DATABASE_URL` (an admin URL, see tests/pg/README.md). The server alone is not
/// enough: `.ci/run` starts one for the cluster tests while the README's `cargo test` stays on
/// SQLite.
pub fn on_postgres() -> bool {
    let chosen = std::env::var("TETHER_TEST_BACKEND").is_ok_and(|b| b == "postgres");
    let server = std::env::var("TETHER_TEST_DATABASE_URL").is_ok_and(|u| !u.is_empty());
    assert!(
        !chosen || server,
        "TETHER_TEST_BACKEND=postgres needs TETHER_TEST_DATABASE_URL (source tests/pg/start.sh)"
    );
    chosen
}

/// The database of each data directory a test opened (`TestApp::open`): reopening the same
/// directory, as a restart does, finds the same database.
fn databases() -> &'static std::sync::Mutex<std::collections::HashMap<std::path::PathBuf, Option<String>>> {
    static DATABASES: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<std::path::PathBuf, Option<String>>>,
    > = std::sync::OnceLock::new();
    DATABASES.get_or_init(Default::default)
}

/// The database for the data directory `dir`: the one it was first opened with, else a fresh one
/// ([`fresh_database_url`]).
pub async fn database_url_for(dir: &std::path::Path) -> Option<String> {
    if let Some(url) = databases().lock().expect("databases").get(dir) {
        return url.clone();
    }
    let url = fresh_database_url().await;
    databases().lock().expect("databases").insert(dir.to_owned(), url.clone());
    url
}

/// The test's database opened directly, as someone with write access to it could: the data
/// directory's SQLite file, or the test's PostgreSQL database. Statements are SQLite's (`?N`
/// parameters), rewritten for PostgreSQL; on PostgreSQL each runs on a thread of its own (the
/// synchronous client cannot block on an async worker).
pub enum RawDb {
    Sqlite(rusqlite::Connection),
    Postgres(tether::store::Conn),
}

impl RawDb {
    pub fn is_postgres(&self) -> bool {
        matches!(self, RawDb::Postgres(_))
    }

    /// Runs `f` on the PostgreSQL connection on a scoped thread.
    fn on_thread<T: Send>(conn: &mut tether::store::Conn, f: impl FnOnce(&mut tether::store::Conn) -> T + Send) -> T {
        std::thread::scope(|s| s.spawn(move || f(conn)).join().expect("database thread"))
    }

    /// Statements without parameters.
    pub fn execute_batch(&mut self, sql: &str) -> Result<(), String> {
        match self {
            RawDb::Sqlite(c) => c.execute_batch(sql).map_err(|e| e.to_string()),
            RawDb::Postgres(c) => Self::on_thread(c, |c| c.execute_batch(sql)).map_err(|e| e.to_string()),
        }
    }

    /// One statement; the rows it changed.
    pub fn execute(&mut self, sql: &str, params: &[&dyn rusqlite::ToSql]) -> Result<usize, String> {
        match self {
            RawDb::Sqlite(c) => c.execute(sql, params).map_err(|e| e.to_string()),
            RawDb::Postgres(c) => {
                let values = owned(params);
                Self::on_thread(c, |c| c.execute(sql, &values)).map_err(|e| e.to_string())
            }
        }
    }

    /// The first column of the first row.
    pub fn query_one<T: rusqlite::types::FromSql + Send>(
        &mut self,
        sql: &str,
        params: &[&dyn rusqlite::ToSql],
    ) -> Result<T, String> {
        match self {
            RawDb::Sqlite(c) => c.query_row(sql, params, |r| r.get(0)).map_err(|e| e.to_string()),
            RawDb::Postgres(c) => {
                let values = owned(params);
                Self::on_thread(c, |c| c.query_row(sql, &values, |r| r.get(0))).map_err(|e| e.to_string())
            }
        }
    }
}

fn owned(params: &[&dyn rusqlite::ToSql]) -> Vec<rusqlite::types::Value> {
    params
        .iter()
        .map(|p| match p.to_sql().expect("a parameter") {
            rusqlite::types::ToSqlOutput::Borrowed(v) => v.into(),
            rusqlite::types::ToSqlOutput::Owned(v) => v,
            _ => panic!("an unsupported parameter"),
        })
        .collect()
}

/// The default configuration, with webhooks allowed to deliver to the tests' receivers on
/// 127.0.0.1 (a default configuration refuses private addresses).
pub fn local_config(dir: std::path::PathBuf) -> Config {
    let mut config = Config::new(dir);
    config.webhooks.allow_private_addresses = true;
    config
}

impl TestApp {
    pub async fn new() -> TestApp {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::open(dir, local_config).await
    }

    pub async fn open(dir: tempfile::TempDir, config: impl Fn(std::path::PathBuf) -> Config) -> TestApp {
        let clock = Arc::new(Clock::default());
        let mut config = config(dir.path().to_owned());
        if config.database_url.is_none() {
            config.database_url = database_url_for(dir.path()).await;
        }
        let app = App::open_with_clock(&config, clock.clone()).await.expect("open app");
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

    /// The PostgreSQL database this instance runs on (`None` on SQLite).
    pub fn database_url(&self) -> Option<String> {
        databases().lock().expect("databases").get(self.dir.path()).cloned().flatten()
    }

    /// The database opened directly ([`RawDb`]).
    pub fn raw_db(&self) -> RawDb {
        match self.database_url() {
            None => {
                RawDb::Sqlite(rusqlite::Connection::open(self.dir.path().join("tether.db")).expect("open tether.db"))
            }
            Some(url) => {
                let connect = move || {
                    let target = tether::store::postgres::PgTarget::new(&url, None).expect("a PostgreSQL URL");
                    tether::store::Database::Postgres(target).writer().expect("connect to the test database")
                };
                RawDb::Postgres(std::thread::spawn(connect).join().expect("connect"))
            }
        }
    }

    /// A `tether` command on this instance: `args`, then `--data-dir` and, on PostgreSQL, the
    /// database in `TETHER_DATABASE_URL` (which `tether audit` reads).
    pub fn tether_command(&self, args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tether"));
        command.args(args).arg("--data-dir").arg(self.dir.path());
        match self.database_url() {
            Some(url) => command.env("TETHER_DATABASE_URL", url),
            None => command.env_remove("TETHER_DATABASE_URL"),
        };
        command
    }

    /// Stops this instance and opens a new one on the same data directory.
    pub async fn restart(self) -> TestApp {
        let TestApp { dir, app, router, .. } = self;
        drop(router);
        drop(app);
        // Give the writer thread a moment to drain and close (it ends when its queue closes).
        tokio::task::yield_now().await;
        Self::open(dir, local_config).await
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

    /// An identity provider's connection.
    pub async fn provisioner(&self) -> String {
        self.credential(json!({"role": "provisioner"})).await
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
        assert_eq!(a.content_type, "application/json", "{}", a.text);
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

/// Requests with headers of the test's choosing (an odd `Authorization`, say), answered with the
/// response headers too.
impl TestApp {
    pub async fn request_with_headers(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Body,
    ) -> (Answer, axum::http::HeaderMap) {
        let mut request = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = self.router.clone().oneshot(request.body(body).expect("request")).await.expect("response");
        let status = response.status();
        let headers = response.headers().clone();
        let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let bytes = response.into_body().collect().await.expect("body").to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (Answer { status, content_type, body, text }, headers)
    }
}

// ---------------------------------------------------------------------------------------------
// Cascades, coverage, races and the invariant: sessions with their tokens, receipts, pages,
// and a shared scene of users, agents, integrations, delegations and (sub-agent) sessions.
// ---------------------------------------------------------------------------------------------

/// A session opened by a test: its id, its token and one scope it holds.
#[derive(Debug, Clone)]
pub struct Opened {
    pub id: String,
    pub token: String,
    pub scope: String,
}

impl TestApp {
    /// POST /v1/sessions with a free-form body (`delegation_id`, `scopes`, `parent_session_id`,
    /// `ttl_seconds`, …), as `credential`.
    pub async fn open_session(&self, credential: &str, body: Value) -> Answer {
        self.post("/v1/sessions", credential, body).await
    }

    /// Opens a session, or a sub-agent session under `parent`; panics unless it succeeds.
    pub async fn opened(&self, platform: &Platform, delegation: &str, scopes: &[&str], parent: Option<&str>) -> Opened {
        let mut body = json!({"delegation_id": delegation, "scopes": scopes});
        if let Some(p) = parent {
            body["parent_session_id"] = json!(p);
        }
        let answer = self.open_session(&platform.credential, body).await;
        let created = answer.ok();
        Opened {
            id: created["session"]["id"].as_str().expect("session id").to_owned(),
            token: created["token"].as_str().expect("token").to_owned(),
            scope: scopes[0].to_owned(),
        }
    }

    /// GET /v1/sessions/{id} as admin.
    pub async fn session_json(&self, id: &str) -> Value {
        self.get(&format!("/v1/sessions/{id}"), &self.admin).await.ok().clone()
    }

    pub async fn session_status(&self, id: &str) -> String {
        self.session_json(id).await["status"].as_str().expect("status").to_owned()
    }

    /// The audit chain's head seq, asserting that the chain verifies.
    pub async fn head_seq(&self) -> i64 {
        let verify = self.get("/v1/audit/verify", &self.admin).await;
        assert_eq!(verify.ok()["ok"], true, "audit chain broken: {}", verify.text);
        verify.body["head_seq"].as_i64().expect("head_seq")
    }

    /// Every item of a paginated list (`path` may carry a query), following `next_cursor`.
    pub async fn all_pages(&self, path: &str) -> Vec<Value> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let url = match &cursor {
                None => format!("{path}{sep}limit=1000"),
                Some(c) => format!("{path}{sep}limit=1000&cursor={c}"),
            };
            let page = self.get(&url, &self.admin).await;
            let body = page.ok();
            items.extend(
                body["items"].as_array().unwrap_or_else(|| panic!("not a page: {}", page.text)).iter().cloned(),
            );
            match body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return items,
            }
        }
    }

    /// POSTs a trigger and returns its receipt (the `receipt` member for a permissions change).
    pub async fn trigger(&self, path: &str, credential: &str, body: Value) -> Value {
        let answer = self.call(Method::POST, path, credential, Some(body)).await;
        answer.ok().clone()
    }

    /// PUT /v1/users/{id}/permissions as admin; returns the receipt.
    pub async fn set_permissions(&self, user: &str, permissions: &[&str]) -> Value {
        let answer = self
            .call(
                Method::PUT,
                &format!("/v1/users/{user}/permissions"),
                &self.admin,
                Some(json!({"permissions": permissions})),
            )
            .await;
        answer.ok()["receipt"].clone()
    }
}

/// A receipt's revoked sessions as `session_id → reason`, asserting no session is listed twice.
pub fn receipt_reasons(receipt: &Value) -> std::collections::BTreeMap<String, String> {
    let revoked = receipt["revoked"].as_array().unwrap_or_else(|| panic!("not a receipt: {receipt}"));
    let mut reasons = std::collections::BTreeMap::new();
    for entry in revoked {
        let id = entry["session_id"].as_str().expect("session_id").to_owned();
        let reason = entry["reason"].as_str().expect("reason").to_owned();
        assert!(reasons.insert(id.clone(), reason).is_none(), "{id} listed twice in the receipt: {receipt}");
    }
    reasons
}

/// The scopes every object of a [`Scene`] declares and every scene user holds.
pub const SCENE_SCOPES: [&str; 3] = ["mail:read", "mail:send", "cal:read"];

/// Two platforms, two users and their delegations and sessions, including sub-agent sessions:
///
/// ```text
/// P1: agents a1 a2, integrations i1 i2        P2: agent b1, integration j1
/// delegations  u_a1_i1 u_a2_i1 u_a1_i2 u_b1_j1 (user u)   v_a1_i1 v_a2_i2 (user v)
/// sessions     u1  u_a1_i1 [mail:read]          u1c  u_a2_i1 [mail:read] parent u1
///              u2  u_a1_i1 [mail:send cal:read] u1cc u_a2_i1 [mail:read] parent u1c
///              u3  u_a2_i1 [mail:read mail:send] u3c u_a2_i1 [mail:read] parent u3
///              u4  u_a1_i2 [cal:read]           u5   u_b1_j1 [mail:read]
///              v1  v_a1_i1 [mail:read mail:send] v2  v_a2_i2 [cal:read]
/// ```
pub struct Scene {
    pub p1: Platform,
    pub p2: Platform,
    pub a1: String,
    pub a2: String,
    pub i1: String,
    pub i2: String,
    pub b1: String,
    pub j1: String,
    pub u: String,
    pub v: String,
    pub delegations: std::collections::BTreeMap<&'static str, String>,
    pub sessions: std::collections::BTreeMap<&'static str, Opened>,
}

impl Scene {
    pub async fn new(app: &TestApp) -> Scene {
        let p1 = app.platform("p1").await;
        let p2 = app.platform("p2").await;
        let a1 = app.agent(&p1, &SCENE_SCOPES).await;
        let a2 = app.agent(&p1, &SCENE_SCOPES).await;
        let i1 = app.integration(&p1, &SCENE_SCOPES).await;
        let i2 = app.integration(&p1, &SCENE_SCOPES).await;
        let b1 = app.agent(&p2, &SCENE_SCOPES).await;
        let j1 = app.integration(&p2, &SCENE_SCOPES).await;
        let u = app.user(&format!("idp|u-{}", uuid::Uuid::now_v7().simple()), &SCENE_SCOPES).await;
        let v = app.user(&format!("idp|v-{}", uuid::Uuid::now_v7().simple()), &SCENE_SCOPES).await;
        let mut delegations = std::collections::BTreeMap::new();
        for (name, platform, user, agent, integration) in [
            ("u_a1_i1", &p1, &u, &a1, &i1),
            ("u_a2_i1", &p1, &u, &a2, &i1),
            ("u_a1_i2", &p1, &u, &a1, &i2),
            ("u_b1_j1", &p2, &u, &b1, &j1),
            ("v_a1_i1", &p1, &v, &a1, &i1),
            ("v_a2_i2", &p1, &v, &a2, &i2),
        ] {
            delegations.insert(name, app.delegation(platform, user, agent, integration, &SCENE_SCOPES).await);
        }
        let mut scene = Scene { p1, p2, a1, a2, i1, i2, b1, j1, u, v, delegations, sessions: Default::default() };
        for (name, delegation, scopes, parent) in [
            ("u1", "u_a1_i1", &["mail:read"][..], None),
            ("u2", "u_a1_i1", &["mail:send", "cal:read"][..], None),
            ("u3", "u_a2_i1", &["mail:read", "mail:send"][..], None),
            ("u4", "u_a1_i2", &["cal:read"][..], None),
            ("u5", "u_b1_j1", &["mail:read"][..], None),
            ("v1", "v_a1_i1", &["mail:read", "mail:send"][..], None),
            ("v2", "v_a2_i2", &["cal:read"][..], None),
            ("u1c", "u_a2_i1", &["mail:read"][..], Some("u1")),
            ("u1cc", "u_a2_i1", &["mail:read"][..], Some("u1c")),
            ("u3c", "u_a2_i1", &["mail:read"][..], Some("u3")),
        ] {
            let platform = if delegation == "u_b1_j1" { &scene.p2 } else { &scene.p1 };
            let parent = parent.map(|p| scene.sessions[p].id.clone());
            let opened = app.opened(platform, &scene.delegations[delegation], scopes, parent.as_deref()).await;
            scene.sessions.insert(name, opened);
        }
        scene
    }

    /// The session named `name`.
    pub fn s(&self, name: &str) -> &Opened {
        self.sessions.get(name).unwrap_or_else(|| panic!("no session {name} in the scene"))
    }

    /// The delegation named `name`.
    pub fn d(&self, name: &str) -> &str {
        self.delegations.get(name).unwrap_or_else(|| panic!("no delegation {name} in the scene"))
    }

    /// Names of every session of the scene.
    pub fn names(&self) -> Vec<&'static str> {
        self.sessions.keys().copied().collect()
    }
}

/// Appends one block written in datalog to a token, offline, as any holder may.
pub fn attenuate(token: &str, code: &str) -> String {
    let block = biscuit_auth::builder::BlockBuilder::new().code(code).unwrap_or_else(|e| panic!("block {code:?}: {e}"));
    biscuit_auth::UnverifiedBiscuit::from_base64(token)
        .expect("a biscuit")
        .append(block)
        .expect("append")
        .to_base64()
        .expect("encode")
}
