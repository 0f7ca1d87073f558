//! Groups that drive permissions: a user's effective permissions are their own and their groups';
//! removing a member, deleting a group or narrowing what it grants ends only the sessions holding
//! a scope the user no longer has, one receipt per trigger.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{Platform, TestApp};
use crate::scim::{provision, scim, scim_error};

const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

async fn group(app: &TestApp, prov: &str, name: &str, members: &[&str]) -> String {
    let members: Vec<Value> = members.iter().map(|m| json!({"value": m})).collect();
    let body = json!({"schemas": [GROUP_SCHEMA], "displayName": name, "members": members});
    let answer = scim(app, Method::POST, "/scim/v2/Groups", prov, Some(body)).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    answer.body["id"].as_str().expect("group id").to_owned()
}

async fn grant(app: &TestApp, group: &str, permissions: &[&str]) -> Value {
    let answer = app
        .call(
            Method::PUT,
            &format!("/v1/groups/{group}/permissions"),
            &app.admin,
            Some(json!({"permissions": permissions, "reason": "test"})),
        )
        .await;
    answer.ok().clone()
}

/// A user (own permissions `own`) with an agent and integration declaring `mail:read`,
/// `mail:send`, `files:read`; sessions are opened per scope after groups are set up.
struct Scene {
    platform: Platform,
    user: String,
    delegation: Option<String>,
    agent: String,
    integration: String,
}

const ALL: [&str; 3] = ["files:read", "mail:read", "mail:send"];

async fn scene(app: &TestApp, prov: &str, own: &[&str]) -> Scene {
    let user = provision(app, prov, &format!("u{}@example.com", uuid::Uuid::now_v7().simple())).await;
    app.set_permissions(&user, own).await;
    let platform = app.platform("p").await;
    let agent = app.agent(&platform, &ALL).await;
    let integration = app.integration(&platform, &ALL).await;
    Scene { platform, user, delegation: None, agent, integration }
}

impl Scene {
    /// Delegates every scope the user holds now, and opens one session per scope given.
    async fn sessions(&mut self, app: &TestApp, scopes: &[&str]) -> Vec<String> {
        let delegation = app.delegation(&self.platform, &self.user, &self.agent, &self.integration, scopes).await;
        self.delegation = Some(delegation.clone());
        let mut out = Vec::new();
        for s in scopes {
            out.push(app.session(&self.platform, &delegation, &[s]).await.0);
        }
        out
    }
}

#[tokio::test]
async fn a_group_grants_its_permissions_and_the_user_answer_shows_them() {
    let app = TestApp::new().await;
    let prov = app.provisioner().await;
    let s = scene(&app, &prov, &["mail:read"]).await;
    let g = group(&app, &prov, "Engineering", &[&s.user]).await;
    grant(&app, &g, &["files:read"]).await;
    let user = app.get(&format!("/v1/users/{}", s.user), &app.admin).await;
    assert_eq!(user.ok()["effective_permissions"], json!(["files:read", "mail:read"]));
    assert_eq!(user.ok()["groups"], json!([{"id": g, "display_name": "Engineering"}]));
    assert_eq!(user.ok()["permissions"], json!(["mail:read"]));
    let scim_user = scim(&app, Method::GET, &format!("/scim/v2/Users/{}", s.user), &prov, None).await;
    assert_eq!(scim_user.ok()["groups"][0]["value"], json!(g));
    // A session may hold a scope only the group grants.
    let delegation = app.delegation(&s.platform, &s.user, &s.agent, &s.integration, &["files:read"]).await;
    app.session(&s.platform, &delegation, &["files:read"]).await;
    let listed = app.get("/v1/groups", &app.auditor().await).await;
    assert_eq!(listed.ok()["items"][0]["permissions"], json!(["files:read"]));
}

#[tokio::test]
async fn okta_member_removal_revokes_only_sessions_holding_a_scope_the_user_lost() {
    let app = TestApp::new().await;
    let prov = app.provisioner().await;
    let mut s = scene(&app, &prov, &["mail:read"]).await;
    let g = group(&app, &prov, "Mail senders", &[&s.user]).await;
    grant(&app, &g, &["mail:read", "mail:send"]).await;
    let sessions = s.sessions(&app, &["mail:read", "mail:send"]).await;
    let body = json!({"schemas": [PATCH], "Operations": [{"op": "remove", "path": format!("members[value eq \"{}\"]", s.user)}]});
    let answer = scim(&app, Method::PATCH, &format!("/scim/v2/Groups/{g}"), &prov, Some(body)).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.text);
    assert_eq!(app.session_status(&sessions[0]).await, "active", "mail:read is the user's own");
    assert_eq!(app.session_status(&sessions[1]).await, "revoked", "mail:send came only from the group");
    let changed = app.all_pages(&format!("/v1/audit?action=group.members_changed&subject={g}")).await;
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0]["details"]["removed"], json!([s.user]));
    let revoked = app.all_pages(&format!("/v1/audit?action=session.revoked&cause_seq={}", changed[0]["seq"])).await;
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0]["reason"], "permission_removed:mail:send");
    let narrowed =
        app.all_pages(&format!("/v1/audit?action=delegation.narrowed&cause_seq={}", changed[0]["seq"])).await;
    assert_eq!(narrowed.len(), 1, "the delegation is narrowed to what the user still holds");
    let user = app.get(&format!("/v1/users/{}", s.user), &app.admin).await;
    assert_eq!(user.ok()["groups"], json!([]));
}

#[tokio::test]
async fn entra_remove_with_a_value_array_and_another_group_still_granting_keeps_the_session() {
    let app = TestApp::new().await;
    let prov = app.provisioner().await;
    let mut s = scene(&app, &prov, &[]).await;
    let a = group(&app, &prov, "A", &[&s.user]).await;
    let b = group(&app, &prov, "B", &[&s.user]).await;
    grant(&app, &a, &["files:read", "mail:read"]).await;
    grant(&app, &b, &["mail:read"]).await;
    let sessions = s.sessions(&app, &["files:read", "mail:read"]).await;
    let body =
        json!({"schemas": [PATCH], "Operations": [{"op": "Remove", "path": "members", "value": [{"value": s.user}]}]});
    let answer = scim(&app, Method::PATCH, &format!("/scim/v2/Groups/{a}"), &prov, Some(body)).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.text);
    assert_eq!(app.session_status(&sessions[0]).await, "revoked", "files:read came only from A");
    assert_eq!(app.session_status(&sessions[1]).await, "active", "B still grants mail:read");
}

#[tokio::test]
async fn narrowing_a_groups_permissions_is_one_trigger_with_a_receipt() {
    let app = TestApp::new().await;
    let prov = app.provisioner().await;
    let mut s = scene(&app, &prov, &[]).await;
    let g = group(&app, &prov, "G", &[&s.user]).await;
    grant(&app, &g, &["files:read", "mail:read"]).await;
    let sessions = s.sessions(&app, &["files:read", "mail:read"]).await;
    let changed = grant(&app, &g, &["mail:read"]).await;
    assert_eq!(changed["group"]["permissions"], json!(["mail:read"]));
    assert_eq!(changed["receipt"]["cause"]["action"], "group.permissions_changed");
    let revoked: Vec<&str> =
        changed["receipt"]["revoked"].as_array().unwrap().iter().map(|r| r["session_id"].as_str().unwrap()).collect();
    assert_eq!(revoked, [sessions[0].as_str()]);
    assert_eq!(app.session_status(&sessions[1]).await, "active");
    // The same permissions again: nothing to do.
    let again = grant(&app, &g, &["mail:read"]).await;
    assert_eq!(again["receipt"]["revoked"], json!([]));
}

#[tokio::test]
async fn narrowing_a_users_own_permissions_keeps_sessions_a_group_still_grants() {
    let app = TestApp::new().await;
    let prov = app.provisioner().await;
    let mut s = scene(&app, &prov, &["files:read", "mail:read"]).await;
    let g = group(&app, &prov, "G", &[&s.user]).await;
    grant(&app, &g, &["mail:read"]).await;
    let sessions = s.sessions(&app, &["files:read", "mail:read"]).await;
    let receipt = app.set_permissions(&s.user, &[]).await;
    assert_eq!(receipt["revoked"].as_array().map(Vec::len), Some(1), "{receipt}");
    assert_eq!(app.session_status(&sessions[0]).await, "revoked");
    assert_eq!(app.session_status(&sessions[1]).await, "active", "the group still grants mail:read");
}

#[tokio::test]
async fn deleting_a_group_and_replacing_its_members_are_permission_changes() {
    let app = TestApp::new().await;
    let prov = app.provisioner().await;
    let mut s = scene(&app, &prov, &[]).await;
    let mut t = scene(&app, &prov, &[]).await;
    let g = group(&app, &prov, "G", &[&s.user, &t.user]).await;
    grant(&app, &g, &["mail:read"]).await;
    let s_sessions = s.sessions(&app, &["mail:read"]).await;
    let t_sessions = t.sessions(&app, &["mail:read"]).await;
    // PUT with only t: s is removed.
    let put = json!({"schemas": [GROUP_SCHEMA], "displayName": "G2", "members": [{"value": t.user}]});
    let answer = scim(&app, Method::PUT, &format!("/scim/v2/Groups/{g}"), &prov, Some(put)).await;
    assert_eq!(answer.ok()["displayName"], "G2");
    assert_eq!(answer.ok()["members"].as_array().map(Vec::len), Some(1));
    assert_eq!(app.session_status(&s_sessions[0]).await, "revoked");
    assert_eq!(app.session_status(&t_sessions[0]).await, "active");
    let deleted = scim(&app, Method::DELETE, &format!("/scim/v2/Groups/{g}"), &prov, None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.text);
    assert_eq!(app.session_status(&t_sessions[0]).await, "revoked");
    let event = app.all_pages(&format!("/v1/audit?action=group.deleted&subject={g}")).await;
    assert_eq!(event.len(), 1);
    scim_error(&scim(&app, Method::GET, &format!("/scim/v2/Groups/{g}"), &prov, None).await, 404, None);
    assert_eq!(app.get(&format!("/v1/groups/{g}"), &app.admin).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn okta_group_flow_and_filters_by_display_name() {
    let app = TestApp::new().await;
    let prov = app.provisioner().await;
    let a = provision(&app, &prov, "a@example.com").await;
    let b = provision(&app, &prov, "b@example.com").await;
    let g = group(&app, &prov, "Sales Team", &[]).await;
    let add = json!({"schemas": [PATCH], "Operations": [{"op": "add", "path": "members", "value": [{"value": a}, {"value": b}]}]});
    assert_eq!(
        scim(&app, Method::PATCH, &format!("/scim/v2/Groups/{g}"), &prov, Some(add)).await.status,
        StatusCode::NO_CONTENT
    );
    let rename =
        json!({"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"id": g, "displayName": "Sales"}}]});
    let renamed = scim(&app, Method::PATCH, &format!("/scim/v2/Groups/{g}"), &prov, Some(rename)).await;
    assert_eq!(renamed.status, StatusCode::NO_CONTENT, "{}", renamed.text);
    let found = scim(&app, Method::GET, "/scim/v2/Groups?filter=displayName%20eq%20%22sales%22", &prov, None).await;
    assert_eq!(found.ok()["totalResults"], 1);
    assert_eq!(found.ok()["Resources"][0]["members"].as_array().map(Vec::len), Some(2));
    // A deleted user leaves its groups.
    assert_eq!(
        scim(&app, Method::DELETE, &format!("/scim/v2/Users/{b}"), &prov, None).await.status,
        StatusCode::NO_CONTENT
    );
    let after = scim(&app, Method::GET, &format!("/scim/v2/Groups/{g}"), &prov, None).await;
    assert_eq!(after.ok()["members"], json!([{"value": a, "$ref": after.body["members"][0]["$ref"], "type": "User"}]));
    let bad = scim(&app, Method::GET, "/scim/v2/Groups?filter=members%20eq%20%22x%22", &prov, None).await;
    scim_error(&bad, 400, Some("invalidFilter"));
    let unknown = json!({"schemas": [PATCH], "Operations": [{"op": "add", "path": "members", "value": [{"value": "usr_nobody"}]}]});
    scim_error(
        &scim(&app, Method::PATCH, &format!("/scim/v2/Groups/{g}"), &prov, Some(unknown)).await,
        400,
        Some("invalidValue"),
    );
}

#[tokio::test]
async fn a_member_list_over_the_bound_is_a_clear_400_and_changes_nothing() {
    let app = TestApp::new().await;
    let prov = app.provisioner().await;
    let members: Vec<Value> =
        (0..1001).map(|_| json!({"value": format!("usr_{}", uuid::Uuid::now_v7().simple())})).collect();
    let body = json!({"schemas": [GROUP_SCHEMA], "displayName": "huge", "members": members});
    let detail =
        scim_error(&scim(&app, Method::POST, "/scim/v2/Groups", &prov, Some(body)).await, 400, Some("invalidValue"));
    assert!(detail.contains("1000"), "{detail}");
    let listed = scim(&app, Method::GET, "/scim/v2/Groups", &prov, None).await;
    assert_eq!(listed.ok()["totalResults"], 0);
}

/// Random sequences of own-permission, group-permission and membership changes, with sessions
/// opened along the way: after every step, every active session's scopes are within its user's
/// effective permissions (the invariant), and no session that still fits was revoked (the
/// cascade is targeted).
#[tokio::test]
async fn random_group_and_permission_changes_keep_sessions_within_effective_permissions() {
    use proptest::strategy::{Strategy, ValueTree};
    use std::collections::BTreeSet;

    let app = TestApp::new().await;
    let prov = app.provisioner().await;
    let mut users = vec![scene(&app, &prov, &[]).await, scene(&app, &prov, &[]).await];
    let groups = [group(&app, &prov, "G1", &[]).await, group(&app, &prov, "G2", &[]).await];
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let step = (0usize..5, 0usize..2, 0usize..2, proptest::sample::subsequence(ALL.to_vec(), 0..=3), 0usize..3);
    let steps = proptest::collection::vec(step, 80).new_tree(&mut runner).expect("steps").current();
    let mut was_active: BTreeSet<String> = BTreeSet::new();
    let (mut opened, mut revoked) = (0, 0);
    for (kind, u, g, scopes, s) in steps {
        let user = users[u].user.clone();
        match kind {
            0 => {
                app.set_permissions(&user, &scopes).await;
            }
            1 => {
                grant(&app, &groups[g], &scopes).await;
            }
            2 | 3 => {
                let op = if kind == 2 {
                    json!({"op": "add", "path": "members", "value": [{"value": user}]})
                } else {
                    json!({"op": "remove", "path": format!("members[value eq \"{user}\"]")})
                };
                let body = json!({"schemas": [PATCH], "Operations": [op]});
                let answer =
                    scim(&app, Method::PATCH, &format!("/scim/v2/Groups/{}", groups[g]), &prov, Some(body)).await;
                assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.text);
            }
            _ => {
                // Open a session for one scope if the user holds it now.
                let scope = ALL[s];
                let effective =
                    app.get(&format!("/v1/users/{user}"), &app.admin).await.ok()["effective_permissions"].clone();
                if effective.as_array().unwrap().iter().any(|e| e == scope) {
                    users[u].sessions(&app, &[scope]).await;
                    opened += 1;
                }
            }
        }
        for scene in &users {
            let effective: BTreeSet<String> = app.get(&format!("/v1/users/{}", scene.user), &app.admin).await.ok()
                ["effective_permissions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect();
            for session in app.all_pages(&format!("/v1/sessions?user_id={}", scene.user)).await {
                let id = session["id"].as_str().unwrap().to_owned();
                let fits =
                    session["scopes"].as_array().unwrap().iter().all(|s| effective.contains(s.as_str().unwrap()));
                if session["status"] == "active" {
                    assert!(fits, "active session {id} holds more than {effective:?}: {session}");
                    was_active.insert(id);
                } else if was_active.remove(&id) {
                    assert!(!fits, "session {id} was revoked though its scopes fit {effective:?}: {session}");
                    revoked += 1;
                }
            }
        }
    }
    // The sequence is deterministic; it must have exercised both sides.
    assert!(opened >= 3 && revoked >= 1, "opened {opened}, revoked {revoked}");
}
