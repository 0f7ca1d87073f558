//! DESIGN.md's invariant under random operations: after every step, every session the API reports
//! `active` has an active user, agent, integration, delegation, platform and parent, scopes within
//! the user's permissions and an expiry in the future; and authorize agrees with the reported
//! status for every session ever opened.

use std::collections::{BTreeSet, HashMap};

use axum::http::Method;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};

use crate::helpers::{Answer, Platform, TestApp};
use tether::domain::Timestamp;

const SCOPES: [&str; 4] = ["mail:read", "mail:send", "cal:read", "doc:write"];
/// Session lifetimes and clock steps are multiples of 100 s, so that no expiry ever falls within
/// the few milliseconds between reading a status and checking a token.
const TTLS: [i64; 3] = [200, 600, 900];
const ADVANCES: [i64; 3] = [100, 300, 500];
const LIFECYCLE: [&str; 3] = ["password_reset", "credential_compromised", "mfa_reset"];

#[derive(Debug, Clone)]
enum Op {
    CreateUser { mask: u8 },
    DisableUser { u: u8 },
    EnableUser { u: u8 },
    SetPermissions { u: u8, mask: u8 },
    Lifecycle { u: u8, kind: u8 },
    SignOutAll { u: u8 },
    AddPlatform,
    DisablePlatform { p: u8 },
    RegisterAgent { p: u8, mask: u8 },
    SuspendAgent { a: u8 },
    ResumeAgent { a: u8 },
    DeregisterAgent { a: u8 },
    RegisterIntegration { p: u8, mask: u8 },
    DisableIntegration { i: u8 },
    Delegate { u: u8, a: u8, i: u8, mask: u8 },
    RevokeDelegation { d: u8 },
    DisconnectAgent { u: u8, a: u8 },
    DisconnectIntegration { u: u8, i: u8 },
    OpenSession { d: u8, mask: u8, ttl: u8 },
    OpenSubSession { parent: u8, d: u8, mask: u8, ttl: u8 },
    RevokeSession { s: u8 },
    Advance { k: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    let b = any::<u8>;
    prop_oneof![
        1 => b().prop_map(|mask| Op::CreateUser { mask }),
        2 => b().prop_map(|u| Op::DisableUser { u }),
        3 => b().prop_map(|u| Op::EnableUser { u }),
        3 => (b(), b()).prop_map(|(u, mask)| Op::SetPermissions { u, mask }),
        1 => (b(), b()).prop_map(|(u, kind)| Op::Lifecycle { u, kind }),
        1 => b().prop_map(|u| Op::SignOutAll { u }),
        1 => Just(Op::AddPlatform),
        1 => b().prop_map(|p| Op::DisablePlatform { p }),
        2 => (b(), b()).prop_map(|(p, mask)| Op::RegisterAgent { p, mask }),
        2 => b().prop_map(|a| Op::SuspendAgent { a }),
        3 => b().prop_map(|a| Op::ResumeAgent { a }),
        1 => b().prop_map(|a| Op::DeregisterAgent { a }),
        2 => (b(), b()).prop_map(|(p, mask)| Op::RegisterIntegration { p, mask }),
        1 => b().prop_map(|i| Op::DisableIntegration { i }),
        8 => (b(), b(), b(), b()).prop_map(|(u, a, i, mask)| Op::Delegate { u, a, i, mask }),
        2 => b().prop_map(|d| Op::RevokeDelegation { d }),
        1 => (b(), b()).prop_map(|(u, a)| Op::DisconnectAgent { u, a }),
        1 => (b(), b()).prop_map(|(u, i)| Op::DisconnectIntegration { u, i }),
        12 => (b(), b(), b()).prop_map(|(d, mask, ttl)| Op::OpenSession { d, mask, ttl }),
        8 => (b(), b(), b(), b()).prop_map(|(parent, d, mask, ttl)| Op::OpenSubSession { parent, d, mask, ttl }),
        3 => b().prop_map(|s| Op::RevokeSession { s }),
        3 => b().prop_map(|k| Op::Advance { k }),
    ]
}

fn subset(mask: u8) -> BTreeSet<String> {
    SCOPES.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, s)| (*s).to_owned()).collect()
}

fn pick<T>(pool: &[T], x: u8) -> Option<&T> {
    (!pool.is_empty()).then(|| &pool[usize::from(x) % pool.len()])
}

fn strings(value: &Value) -> BTreeSet<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {value}"))
        .iter()
        .map(|s| s.as_str().expect("string").to_owned())
        .collect()
}

/// `wanted ∩ grantable`, or `wanted` itself when that is empty (then the request is refused),
/// or one scope when both are empty.
fn ask(wanted: BTreeSet<String>, grantable: &BTreeSet<String>) -> Vec<String> {
    let granted: Vec<String> = wanted.intersection(grantable).cloned().collect();
    match (granted.is_empty(), wanted.is_empty()) {
        (false, _) => granted,
        (true, false) => wanted.into_iter().collect(),
        (true, true) => vec![SCOPES[0].to_owned()],
    }
}

struct Object {
    id: String,
    platform: usize,
    scopes: BTreeSet<String>,
}

struct Delegation {
    id: String,
    user: usize,
    agent: String,
    integration: String,
    platform: usize,
}

struct Session {
    id: String,
    token: String,
    scopes: Vec<String>,
}

struct Case {
    app: TestApp,
    verifier: String,
    platforms: Vec<Platform>,
    /// Indexes of the disabled platforms: their credentials were revoked with them.
    disabled_platforms: BTreeSet<usize>,
    users: Vec<String>,
    agents: Vec<Object>,
    integrations: Vec<Object>,
    delegations: Vec<Delegation>,
    sessions: Vec<Session>,
}

/// Asserts an operation's answer: success, or one of the refusals `allowed` with its code; never
/// a 500, a 400 or a 404.
#[track_caller]
fn accept(answer: &Answer, allowed: &[u16], op: &Op) {
    let status = answer.status.as_u16();
    match status {
        200 => {}
        403 if allowed.contains(&403) => {
            assert_eq!(answer.body["code"], "scope_not_grantable", "{op:?}: {}", answer.text)
        }
        409 if allowed.contains(&409) => assert_eq!(answer.body["code"], "conflict", "{op:?}: {}", answer.text),
        _ => panic!("{op:?} answered {status}: {}", answer.text),
    }
}

impl Case {
    async fn new() -> Case {
        let app = TestApp::new().await;
        let verifier = app.verifier().await;
        let mut case = Case {
            app,
            verifier,
            platforms: Vec::new(),
            disabled_platforms: BTreeSet::new(),
            users: Vec::new(),
            agents: Vec::new(),
            integrations: Vec::new(),
            delegations: Vec::new(),
            sessions: Vec::new(),
        };
        case.add_platform().await;
        case.add_platform().await;
        case.add_user(0b1111).await;
        case.add_user(0b0111).await;
        case.add_object(true, 0, 0b0011).await;
        case.add_object(false, 0, 0b1101).await;
        for (u, a, i, mask) in [(0, 0, 0, 0b1111), (1, 1, 0, 0b0011), (0, 2, 2, 0b0101)] {
            case.apply(&Op::Delegate { u, a, i, mask }).await;
        }
        for d in 0..3 {
            case.apply(&Op::OpenSession { d, mask: 0b1111, ttl: 2 }).await;
        }
        case.apply(&Op::OpenSubSession { parent: 0, d: 2, mask: 0b0001, ttl: 1 }).await;
        assert_eq!(case.sessions.len(), 4, "the starting world");
        case
    }

    async fn add_platform(&mut self) {
        let p = self.app.platform("platform").await;
        let all: BTreeSet<String> = SCOPES.map(String::from).into();
        let agent = self.app.agent(&p, &SCOPES).await;
        let integration = self.app.integration(&p, &SCOPES).await;
        self.platforms.push(p);
        let platform = self.platforms.len() - 1;
        self.agents.push(Object { id: agent, platform, scopes: all.clone() });
        self.integrations.push(Object { id: integration, platform, scopes: all });
    }

    async fn add_user(&mut self, mask: u8) {
        let permissions: Vec<String> = subset(mask).into_iter().collect();
        let external = format!("idp|{}", uuid::Uuid::now_v7().simple());
        let user =
            self.app.post("/v1/users", &self.app.admin, json!({"external_id": external, "permissions": permissions}));
        let user = user.await.ok()["id"].as_str().expect("user id").to_owned();
        self.users.push(user);
    }

    /// [`accept`] for a call made with platform `platform`'s credential, which was revoked when
    /// the platform was disabled: from then on every such call is a 401.
    #[track_caller]
    fn accept_from(&self, platform: usize, answer: &Answer, allowed: &[u16], op: &Op) {
        if self.disabled_platforms.contains(&platform) {
            assert!(answer.problem(401, "unauthenticated").contains("revoked"), "{op:?}: {}", answer.text);
        } else {
            accept(answer, allowed, op);
        }
    }

    /// Registers an agent (or integration) on platform `p`; refused when the platform is disabled.
    async fn add_object(&mut self, agent: bool, p: u8, mask: u8) -> Answer {
        let platform = usize::from(p) % self.platforms.len();
        let scopes = ask(subset(mask), &SCOPES.map(String::from).into());
        let path = if agent { "/v1/agents" } else { "/v1/integrations" };
        let answer =
            self.app.post(path, &self.platforms[platform].credential, json!({"name": "x", "scopes": scopes})).await;
        if answer.status.is_success() {
            let object = Object {
                id: answer.body["id"].as_str().expect("id").to_owned(),
                platform,
                scopes: scopes.into_iter().collect(),
            };
            if agent {
                self.agents.push(object);
            } else {
                self.integrations.push(object);
            }
        }
        answer
    }

    async fn permissions(&self, user: &str) -> BTreeSet<String> {
        strings(&self.app.get(&format!("/v1/users/{user}"), &self.app.admin).await.ok()["permissions"])
    }

    async fn post_admin(&self, path: String, body: Value) -> Answer {
        self.app.post(&path, &self.app.admin, body).await
    }

    async fn apply(&mut self, op: &Op) {
        let admin = self.app.admin.clone();
        match *op {
            Op::CreateUser { mask } => {
                if self.users.len() < 3 {
                    self.add_user(mask).await;
                }
            }
            Op::DisableUser { u } => {
                let user = pick(&self.users, u).expect("users");
                accept(&self.post_admin(format!("/v1/users/{user}/disable"), json!({})).await, &[], op);
            }
            Op::EnableUser { u } => {
                let user = pick(&self.users, u).expect("users");
                accept(&self.post_admin(format!("/v1/users/{user}/enable"), json!({})).await, &[], op);
            }
            Op::SetPermissions { u, mask } => {
                let user = pick(&self.users, u).expect("users");
                let body = json!({"permissions": subset(mask)});
                let path = format!("/v1/users/{user}/permissions");
                accept(&self.app.call(Method::PUT, &path, &admin, Some(body)).await, &[], op);
            }
            Op::Lifecycle { u, kind } => {
                let user = pick(&self.users, u).expect("users");
                let body = json!({"type": LIFECYCLE[usize::from(kind) % 3]});
                accept(&self.post_admin(format!("/v1/users/{user}/lifecycle-events"), body).await, &[], op);
            }
            Op::SignOutAll { u } => {
                let user = pick(&self.users, u).expect("users");
                accept(&self.post_admin(format!("/v1/users/{user}/sign-out-all"), json!({})).await, &[], op);
            }
            Op::AddPlatform => {
                if self.platforms.len() < 3 {
                    self.add_platform().await;
                }
            }
            Op::DisablePlatform { p } => {
                let platform = pick(&self.platforms, p).expect("platforms").id.clone();
                accept(&self.post_admin(format!("/v1/platforms/{platform}/disable"), json!({})).await, &[], op);
                self.disabled_platforms.insert(usize::from(p) % self.platforms.len());
            }
            Op::RegisterAgent { p, mask } => {
                if self.agents.len() < 5 {
                    let answer = self.add_object(true, p, mask).await;
                    self.accept_from(usize::from(p) % self.platforms.len(), &answer, &[409], op);
                }
            }
            Op::RegisterIntegration { p, mask } => {
                if self.integrations.len() < 5 {
                    let answer = self.add_object(false, p, mask).await;
                    self.accept_from(usize::from(p) % self.platforms.len(), &answer, &[409], op);
                }
            }
            Op::SuspendAgent { a } | Op::ResumeAgent { a } | Op::DeregisterAgent { a } => {
                let agent = pick(&self.agents, a).expect("agents").id.clone();
                let action = match op {
                    Op::SuspendAgent { .. } => "suspend",
                    Op::ResumeAgent { .. } => "resume",
                    _ => "deregister",
                };
                // Suspending or resuming a deregistered agent is refused.
                accept(&self.post_admin(format!("/v1/agents/{agent}/{action}"), json!({})).await, &[409], op);
            }
            Op::DisableIntegration { i } => {
                let integration = pick(&self.integrations, i).expect("integrations").id.clone();
                accept(&self.post_admin(format!("/v1/integrations/{integration}/disable"), json!({})).await, &[], op);
            }
            Op::Delegate { u, a, i, mask } => {
                let user = usize::from(u) % self.users.len();
                let agent = pick(&self.agents, a).expect("agents");
                // An integration of the agent's platform.
                let same: Vec<&Object> = self.integrations.iter().filter(|o| o.platform == agent.platform).collect();
                let Some(integration) = pick(&same, i) else { return };
                let permissions = self.permissions(&self.users[user]).await;
                let grantable: BTreeSet<String> = permissions
                    .intersection(&agent.scopes)
                    .cloned()
                    .collect::<BTreeSet<_>>()
                    .intersection(&integration.scopes)
                    .cloned()
                    .collect();
                let body = json!({"user_id": self.users[user], "agent_id": agent.id, "integration_id": integration.id,
                    "scopes": ask(subset(mask), &grantable)});
                let (platform, agent, integration) = (agent.platform, agent.id.clone(), integration.id.clone());
                let answer = self.app.post("/v1/delegations", &self.platforms[platform].credential, body).await;
                self.accept_from(platform, &answer, &[403, 409], op);
                if answer.status.is_success() {
                    let id = answer.body["id"].as_str().expect("id").to_owned();
                    self.delegations.push(Delegation { id, user, agent, integration, platform });
                }
            }
            Op::RevokeDelegation { d } => {
                let Some(delegation) = pick(&self.delegations, d) else { return };
                let path = format!("/v1/delegations/{}/revoke", delegation.id);
                accept(&self.post_admin(path, json!({})).await, &[], op);
            }
            Op::DisconnectAgent { u, a } => {
                let user = usize::from(u) % self.users.len();
                let agent = &pick(&self.agents, a).expect("agents").id;
                let path = format!("/v1/users/{}/agents/{agent}/disconnect", self.users[user]);
                let ever = self.delegations.iter().any(|d| d.user == user && &d.agent == agent);
                self.disconnected(self.post_admin(path, json!({})).await, ever, op);
            }
            Op::DisconnectIntegration { u, i } => {
                let user = usize::from(u) % self.users.len();
                let integration = &pick(&self.integrations, i).expect("integrations").id;
                let path = format!("/v1/users/{}/integrations/{integration}/disconnect", self.users[user]);
                let ever = self.delegations.iter().any(|d| d.user == user && &d.integration == integration);
                self.disconnected(self.post_admin(path, json!({})).await, ever, op);
            }
            Op::OpenSession { d, mask, ttl } => {
                // Mostly on a delegation that is still active; sometimes on any (then refused).
                let live = self.live("/v1/delegations?status=active").await;
                let candidates: Vec<&Delegation> = self.delegations.iter().filter(|x| live.contains(&x.id)).collect();
                let delegation = if mask & 0x80 == 0 && !candidates.is_empty() {
                    candidates[usize::from(d) % candidates.len()]
                } else {
                    let Some(any) = pick(&self.delegations, d) else { return };
                    any
                };
                let (id, platform, user) = (delegation.id.clone(), delegation.platform, delegation.user);
                let grantable = self.grantable(&id, user).await;
                let body = json!({"delegation_id": id, "scopes": ask(subset(mask), &grantable),
                    "ttl_seconds": TTLS[usize::from(ttl) % 3]});
                let answer = self.app.open_session(&self.platforms[platform].credential, body).await;
                if self.disabled_platforms.contains(&platform) {
                    self.accept_from(platform, &answer, &[], op);
                } else {
                    self.opened(answer, op);
                }
            }
            Op::OpenSubSession { parent, d, mask, ttl } => {
                // Mostly under an active parent, on an active delegation; sometimes under any.
                let live = self.live("/v1/sessions?status=active").await;
                let candidates: Vec<&Session> = self.sessions.iter().filter(|x| live.contains(&x.id)).collect();
                let parent = if mask & 0x80 == 0 && !candidates.is_empty() {
                    candidates[usize::from(parent) % candidates.len()]
                } else {
                    let Some(any) = pick(&self.sessions, parent) else { return };
                    any
                };
                let parent_json = self.app.session_json(&parent.id).await;
                let parent_user = parent_json["user_id"].as_str().expect("user_id");
                let user = self.users.iter().position(|u| u == parent_user).expect("parent's user");
                // Any delegation of the same user, on any platform: an admin opens it.
                let live = self.live("/v1/delegations?status=active").await;
                let same: Vec<&Delegation> = self
                    .delegations
                    .iter()
                    .filter(|x| x.user == user && (mask & 0x40 != 0 || live.contains(&x.id)))
                    .collect();
                let Some(delegation) = pick(&same, d) else { return };
                let id = delegation.id.clone();
                let grantable: BTreeSet<String> =
                    self.grantable(&id, user).await.intersection(&strings(&parent_json["scopes"])).cloned().collect();
                let body = json!({"delegation_id": id, "scopes": ask(subset(mask), &grantable),
                    "ttl_seconds": TTLS[usize::from(ttl) % 3], "parent_session_id": parent.id});
                let answer = self.app.open_session(&admin, body).await;
                self.opened(answer, op);
            }
            Op::RevokeSession { s } => {
                let Some(session) = pick(&self.sessions, s) else { return };
                let path = format!("/v1/sessions/{}/revoke", session.id);
                accept(&self.post_admin(path, json!({})).await, &[], op);
            }
            Op::Advance { k } => self.app.clock.advance_seconds(ADVANCES[usize::from(k) % 3]),
        }
    }

    /// Ids of a list route's items (e.g. the active delegations).
    async fn live(&self, path: &str) -> BTreeSet<String> {
        self.app.all_pages(path).await.iter().map(|x| x["id"].as_str().expect("id").to_owned()).collect()
    }

    /// What a session on `delegation` could be granted now (before the parent's share).
    async fn grantable(&self, delegation: &str, user: usize) -> BTreeSet<String> {
        let d = self.app.get(&format!("/v1/delegations/{delegation}"), &self.app.admin).await;
        let scopes = strings(&d.ok()["scopes"]);
        scopes.intersection(&self.permissions(&self.users[user]).await).cloned().collect()
    }

    /// A disconnect succeeds when the user ever delegated to the agent or integration; any other
    /// is not theirs to name (404).
    #[track_caller]
    fn disconnected(&self, answer: Answer, ever_delegated: bool, op: &Op) {
        if ever_delegated {
            accept(&answer, &[], op);
        } else {
            answer.problem(404, "not_found");
        }
    }

    fn opened(&mut self, answer: Answer, op: &Op) {
        accept(&answer, &[403, 409], op);
        if answer.status.is_success() {
            let body = &answer.body;
            self.sessions.push(Session {
                id: body["session"]["id"].as_str().expect("id").to_owned(),
                token: body["token"].as_str().expect("token").to_owned(),
                scopes: strings(&body["session"]["scopes"]).into_iter().collect(),
            });
        }
    }

    /// The invariant, read through the API, and authorize's agreement with it.
    async fn check(&self, step: usize, op: &Op) {
        let app = &self.app;
        let at = || format!("after step {step} ({op:?})");
        let listed = app.all_pages("/v1/sessions").await;
        let by_id: HashMap<String, &Value> =
            listed.iter().map(|s| (s["id"].as_str().expect("id").to_owned(), s)).collect();
        assert_eq!(by_id.len(), self.sessions.len(), "{}: sessions listed vs opened", at());

        let mut objects: HashMap<String, Value> = HashMap::new();
        let now = app.clock.now();
        for s in listed.iter().filter(|s| s["status"] == "active") {
            let id = s["id"].as_str().expect("id");
            for (key, route) in [
                ("user_id", "users"),
                ("agent_id", "agents"),
                ("integration_id", "integrations"),
                ("delegation_id", "delegations"),
                ("platform_id", "platforms"),
            ] {
                let object_id = s[key].as_str().unwrap_or_else(|| panic!("{}: {id} without {key}", at()));
                if !objects.contains_key(object_id) {
                    let object = app.get(&format!("/v1/{route}/{object_id}"), &app.admin).await.ok().clone();
                    objects.insert(object_id.to_owned(), object);
                }
                let object = &objects[object_id];
                assert_eq!(object["status"], "active", "{}: active session {id} has {key} {object}", at());
            }
            // A user's cascade reaches sessions through the user's delegations: every session must
            // hang from its delegation's user, agent, integration and platform.
            let delegation_of = &objects[s["delegation_id"].as_str().expect("delegation_id")];
            for key in ["user_id", "agent_id", "integration_id", "platform_id"] {
                assert_eq!(s[key], delegation_of[key], "{}: active {id}'s {key} is not its delegation's", at());
            }
            let permissions = strings(&objects[s["user_id"].as_str().expect("user_id")]["permissions"]);
            let scopes = strings(&s["scopes"]);
            assert!(scopes.is_subset(&permissions), "{}: active {id} holds {scopes:?} beyond {permissions:?}", at());
            let delegation = strings(&objects[s["delegation_id"].as_str().expect("delegation_id")]["scopes"]);
            assert!(
                scopes.is_subset(&delegation),
                "{}: active {id} holds {scopes:?} beyond consent {delegation:?}",
                at()
            );
            for declared in ["agent_id", "integration_id"] {
                let offered = strings(&objects[s[declared].as_str().expect(declared)]["scopes"]);
                assert!(scopes.is_subset(&offered), "{}: active {id} holds {scopes:?} beyond its {declared}", at());
            }
            let expires = Timestamp::parse_rfc3339(s["expires_at"].as_str().expect("expires_at")).expect("rfc3339");
            assert!(expires > now, "{}: active {id} expired at {expires:?} (now {now:?})", at());
            if let Some(parent) = s["parent_session_id"].as_str() {
                let parent = by_id.get(parent).unwrap_or_else(|| panic!("{}: {id}'s parent unknown", at()));
                assert_eq!(parent["status"], "active", "{}: active {id} under a parent that is not", at());
                assert!(scopes.is_subset(&strings(&parent["scopes"])), "{}: {id} holds more than its parent", at());
                let parent_expires =
                    Timestamp::parse_rfc3339(parent["expires_at"].as_str().expect("expires_at")).expect("rfc3339");
                assert!(expires <= parent_expires, "{}: {id} outlives its parent", at());
            }
        }

        // Consent never exceeds the user's permissions either.
        for d in &self.delegations {
            let delegation = app.get(&format!("/v1/delegations/{}", d.id), &app.admin).await.ok().clone();
            if delegation["status"] == "active" {
                let permissions = self.permissions(&self.users[d.user]).await;
                assert!(
                    strings(&delegation["scopes"]).is_subset(&permissions),
                    "{}: {delegation} vs {permissions:?}",
                    at()
                );
            }
        }

        for session in &self.sessions {
            let status = by_id[&session.id]["status"].as_str().expect("status");
            // The token carries exactly its session's scopes, and a scope outside them is denied.
            let held = token_scopes(&session.token);
            assert_eq!(held, session.scopes.iter().cloned().collect(), "{}: {}'s token scopes", at(), session.id);
            if status == "active" {
                let outside = app.authorize(&self.verifier, &session.token, "zz:not_granted").await;
                assert_eq!(outside, ("deny".into(), "scope_not_granted".into()), "{}: {}", at(), session.id);
            }
            let scope = &session.scopes[0];
            let (decision, reason) = app.authorize(&self.verifier, &session.token, scope).await;
            let want = match status {
                "active" => ("allow", "allowed"),
                "revoked" => ("deny", "session_revoked"),
                "expired" => ("deny", "session_expired"),
                other => panic!("{}: {} has status {other}", at(), session.id),
            };
            assert_eq!((decision.as_str(), reason.as_str()), want, "{}: {} is {status}", at(), session.id);
        }
    }
}

async fn run_case(ops: Vec<Op>) {
    let mut case = Case::new().await;
    case.check(0, &Op::Advance { k: 0 }).await;
    for (step, op) in ops.iter().enumerate() {
        case.apply(op).await;
        case.check(step + 1, op).await;
    }
    // The audit chain of the whole run verifies.
    case.app.head_seq().await;
}

#[test]
fn the_invariant_holds_after_every_step_of_random_operations() {
    let config = Config { cases: 24, failure_persistence: None, max_shrink_iters: 256, ..Config::default() };
    let mut runner = TestRunner::new(config);
    let outcome = runner.run(&proptest::collection::vec(op(), 1..=40), |ops| {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        runtime.block_on(run_case(ops));
        Ok(())
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
}

/// The check above is not vacuous: a session left active under a user disabled behind tether's
/// back (a direct write to the database, no cascade) is caught.
#[tokio::test]
async fn the_invariant_check_catches_an_active_session_of_a_disabled_user() {
    use futures_util::FutureExt;

    let case = Case::new().await;
    let mut db = case.app.raw_db();
    let changed = db.execute("UPDATE users SET status = 'disabled' WHERE id = ?1", &[&case.users[0]]).expect("tamper");
    assert_eq!(changed, 1);
    let outcome = std::panic::AssertUnwindSafe(case.check(1, &Op::DisableUser { u: 0 })).catch_unwind().await;
    let message = match outcome {
        Ok(()) => panic!("the check missed an active session of a disabled user"),
        Err(panic) => panic.downcast_ref::<String>().cloned().unwrap_or_default(),
    };
    assert!(message.contains("has user_id"), "{message}");
}

/// The `scope` facts of a token's authority block, read from its source text.
fn token_scopes(token: &str) -> BTreeSet<String> {
    let token = biscuit_auth::UnverifiedBiscuit::from_base64(token).expect("a token");
    let source = token.print_block_source(0).expect("authority block");
    source
        .lines()
        .filter_map(|line| line.trim().strip_prefix("scope(\"")?.strip_suffix("\");"))
        .map(str::to_owned)
        .collect()
}
