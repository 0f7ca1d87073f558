//! SCIM 2.0 at /scim/v2: discovery, errors, filters, and deactivation in every shape Okta and
//! Entra send, each ending the user's sessions with the same cascade as `POST /v1/users/{id}/disable`,
//! caused by a `scim.*` event that records the shape.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{Answer, TestApp};

const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

pub async fn scim(app: &TestApp, method: Method, path: &str, credential: &str, body: Option<Value>) -> Answer {
    let (content_type, body) = match body {
        Some(b) => (Some("application/scim+json"), Body::from(b.to_string())),
        None => (None, Body::empty()),
    };
    app.request(method, path, Some(credential), content_type, body).await
}

/// Asserts a SCIM error answer; returns its detail.
#[track_caller]
pub fn scim_error(answer: &Answer, status: u16, scim_type: Option<&str>) -> String {
    assert_eq!(answer.status.as_u16(), status, "body: {}", answer.text);
    assert_eq!(answer.content_type, "application/scim+json", "body: {}", answer.text);
    assert_eq!(answer.body["schemas"], json!([ERROR]), "body: {}", answer.text);
    assert_eq!(answer.body["status"], json!(status.to_string()), "status is a string: {}", answer.text);
    assert_eq!(answer.body["scimType"].as_str(), scim_type, "body: {}", answer.text);
    answer.body["detail"].as_str().unwrap_or_default().to_owned()
}

/// Creates a user through SCIM; returns its id.
pub async fn provision(app: &TestApp, provisioner: &str, user_name: &str) -> String {
    let answer = scim(
        app,
        Method::POST,
        "/scim/v2/Users",
        provisioner,
        Some(json!({
            "schemas": [USER_SCHEMA],
            "userName": user_name,
            "externalId": format!("okta|{user_name}"),
            "name": {"givenName": "Ada", "familyName": "Lovelace"},
            "emails": [{"value": user_name, "type": "work", "primary": true}],
            "displayName": "Ada Lovelace",
            "active": true,
        })),
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    answer.body["id"].as_str().expect("id").to_owned()
}

/// A SCIM-provisioned user granted `mail:read`, with two live sessions.
struct Provisioned {
    user: String,
    sessions: Vec<String>,
}

async fn provisioned_with_sessions(app: &TestApp, provisioner: &str, user_name: &str) -> Provisioned {
    let user = provision(app, provisioner, user_name).await;
    app.set_permissions(&user, &["mail:read"]).await;
    let platform = app.platform("p").await;
    let agent = app.agent(&platform, &["mail:read"]).await;
    let integration = app.integration(&platform, &["mail:read"]).await;
    let delegation = app.delegation(&platform, &user, &agent, &integration, &["mail:read"]).await;
    let mut sessions = Vec::new();
    for _ in 0..2 {
        sessions.push(app.session(&platform, &delegation, &["mail:read"]).await.0);
    }
    Provisioned { user, sessions }
}

async fn events(app: &TestApp, query: &str) -> Vec<Value> {
    app.all_pages(&format!("/v1/audit?{query}")).await
}

/// The deactivation's audit trail: one `scim.user_deactivated` with `shape`, causing
/// `user.disabled`, causing every revocation.
async fn assert_deactivated_by(app: &TestApp, p: &Provisioned, shape: &str) {
    for s in &p.sessions {
        assert_eq!(app.session_status(s).await, "revoked", "session {s}");
    }
    let asked = events(app, &format!("action=scim.user_deactivated&subject={}", p.user)).await;
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0]["details"]["shape"], shape);
    assert_eq!(asked[0]["actor"]["kind"], "idp");
    let disabled = events(app, &format!("action=user.disabled&subject={}", p.user)).await;
    assert_eq!(disabled.len(), 1);
    assert_eq!(disabled[0]["cause_seq"], asked[0]["seq"], "user.disabled is caused by the SCIM request");
    let revoked = events(app, &format!("action=session.revoked&cause_seq={}", disabled[0]["seq"])).await;
    assert_eq!(revoked.len(), p.sessions.len());
    let verify = app.get("/v1/audit/verify", &app.admin).await;
    assert_eq!(verify.ok()["ok"], true, "{}", verify.text);
}

fn patch_body(op: Value) -> Value {
    json!({"schemas": [PATCH], "Operations": [op]})
}

#[tokio::test]
async fn okta_patch_without_path_deactivates_with_the_disable_cascade() {
    let app = TestApp::new().await;
    let prov = app.provisioner().await;
    let p = provisioned_with_sessions(&app, &prov, "ada@example.com").await;
    let body = patch_body(json!({"op": "replace", "value": {"active": false}}));
    let answer = scim(&app, Method::PATCH, &format!("/scim/v2/Users/{}", p.user), &prov, Some(body.clone())).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.content_type, "application/scim+json");
    assert_eq!(answer.body["active"], false);
    assert_deactivated_by(&app, &p, "patch_no_path").await;
    // Again: success, and nothing more is written.
    let head = app.head_seq().await;
    let again = scim(&app, Method::PATCH, &format!("/scim/v2/Users/{}", p.user), &prov, Some(body)).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(app.head_seq().await, head, "an idempotent deactivation writes nothing");
}

#[tokio::test]
async fn patch_with_path_active_and_a_boolean_deactivates() {
    let app = TestApp::new().await;
    let prov = app.provisioner().await;
    let p = provisioned_with_sessions(&app, &prov, "grace@example.com").await;
    let body = patch_body(json!({"op": "replace", "path": "active", "value": false}));
    let answer = scim(&app, Method::PATCH, &format!("/scim/v2/Users/{}", p.user), &prov, Some(body)).await;
    assert_eq!(answer.body["active"], false, "{}", answer.text);
    assert_deactivated_by(&app, &p, "patch_path_active").await;
}

#[tokio::test]
async fn entra_replace_with_the_string_false_deactivates_and_the_string_true_enables() {
    let app = TestApp::new().await;
    let prov = app.provisioner().await;
    let p = provisioned_with_sessions(&app, &prov, "alan@example.com").await;
    let uri = format!("/scim/v2/Users/{}", p.user);
    let body = patch_body(json!({"op": "Replace", "path": "active", "value": "False"}));
    let answer = scim(&app, Method::PATCH, &uri, &prov, Some(body)).await;
    assert_eq!(answer.body["active"], false, "{}", answer.text);
    assert_deactivated_by(&app, &p, "patch_path_active").await;
    let asked = events(&app, &format!("action=scim.user_deactivated&subject={}", p.user)).await;
    assert_eq!(asked[0]["details"]["value_type"], "string");
    let body = patch_body(json!({"op": "Replace", "path": "active", "value": "True"}));
    let answer = scim(&app, Method::PATCH, &uri, &prov, Some(body)).await;
    assert_eq!(answer.body["active"], true, "{}", answer.text);
    let enabled = events(&app, &format!("action=user.enabled&subject={}", p.user)).await;
    let activated = events(&app, &format!("action=scim.user_activated&subject={}", p.user)).await;
    assert_eq!(enabled[0]["cause_seq"], activated[0]["seq"]);
    assert_eq!(app.get(&format!("/v1/users/{}", p.user), &app.admin).await.ok()["status"], "active");
}

#[tokio::test]
async fn okta_put_with_active_false_deactivates_and_keeps_the_profile() {
    let app = TestApp::new().await;
    let prov = app.provisioner().await;
    let p = provisioned_with_sessions(&app, &prov, "put@example.com").await;
    let uri = format!("/scim/v2/Users/{}", p.user);
    let mut user = scim(&app, Method::GET, &uri, &prov, None).await.ok().clone();
    user["active"] = json!(false);
    user["displayName"] = json!("Put Person");
    let answer = scim(&app, Method::PUT, &uri, &prov, Some(user)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(
        (answer.body["active"].clone(), answer.body["displayName"].clone()),
        (json!(false), json!("Put Person"))
    );
    assert_eq!(answer.body["name"]["givenName"], "Ada", "name round-trips");
    assert_deactivated_by(&app, &p, "put").await;
}

#[tokio::test]
async fn delete_ends_the_user_with_the_cascade_and_it_is_404_after() {
    let app = TestApp::new().await;
    let prov = app.provisioner().await;
    let p = provisioned_with_sessions(&app, &prov, "gone@example.com").await;
    let uri = format!("/scim/v2/Users/{}", p.user);
    let answer = scim(&app, Method::DELETE, &uri, &prov, None).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.text);
    for s in &p.sessions {
        assert_eq!(app.session_status(s).await, "revoked");
    }
    let asked = events(&app, &format!("action=scim.user_deleted&subject={}", p.user)).await;
    assert_eq!(asked[0]["details"]["shape"], "delete");
    let disabled = events(&app, &format!("action=user.disabled&subject={}", p.user)).await;
    assert_eq!(disabled[0]["cause_seq"], asked[0]["seq"]);
    scim_error(&scim(&app, Method::GET, &uri, &prov, None).await, 404, None);
    scim_error(&scim(&app, Method::DELETE, &uri, &prov, None).await, 404, None);
    let listed =
        scim(&app, Method::GET, "/scim/v2/Users?filter=userName%20eq%20%22gone@example.com%22", &prov, None).await;
    assert_eq!(listed.ok()["totalResults"], 0);
    // tether keeps the user for the audit trail.
    assert!(app.get(&format!("/v1/users/{}", p.user), &app.admin).await.ok()["ended_at"].is_string());
}

#[tokio::test]
async fn deactivating_a_disabled_user_or_one_without_sessions_succeeds() {
    let app = TestApp::new().await;
    let prov = app.provisioner().await;
    let user = provision(&app, &prov, "idle@example.com").await;
    let uri = format!("/scim/v2/Users/{user}");
    let body = patch_body(json!({"op": "replace", "value": {"active": false}}));
    assert_eq!(scim(&app, Method::PATCH, &uri, &prov, Some(body.clone())).await.ok()["active"], false);
    app.post(&format!("/v1/users/{user}/disable"), &app.admin, json!({})).await.ok();
    assert_eq!(scim(&app, Method::PATCH, &uri, &prov, Some(body)).await.ok()["active"], false);
}

#[tokio::test]
async fn discovery_documents_are_truthful() {
    let app = TestApp::new().await;
    let prov = app.provisioner().await;
    let config = scim(&app, Method::GET, "/scim/v2/ServiceProviderConfig", &prov, None).await;
    assert_eq!(config.content_type, "application/scim+json");
    let c = config.ok();
    assert_eq!((c["patch"]["supported"].clone(), c["filter"]["supported"].clone()), (json!(true), json!(true)));
    for off in ["bulk", "sort", "etag", "changePassword"] {
        assert_eq!(c[off]["supported"], false, "{off}");
    }
    assert_eq!(c["authenticationSchemes"][0]["type"], "oauthbearertoken");
    let types = scim(&app, Method::GET, "/scim/v2/ResourceTypes", &prov, None).await;
    assert_eq!(types.ok()["totalResults"], 2);
    let user_type = scim(&app, Method::GET, "/scim/v2/ResourceTypes/User", &prov, None).await;
    assert_eq!(user_type.ok()["endpoint"], "/Users");
    let schema = scim(&app, Method::GET, &format!("/scim/v2/Schemas/{USER_SCHEMA}"), &prov, None).await;
    let names: Vec<&str> =
        schema.ok()["attributes"].as_array().expect("attributes").iter().filter_map(|a| a["name"].as_str()).collect();
    assert!(names.contains(&"userName") && names.contains(&"active") && names.contains(&"emails"), "{names:?}");
    scim_error(&scim(&app, Method::GET, "/scim/v2/Schemas/urn:nope", &prov, None).await, 404, None);
    scim_error(&scim(&app, Method::GET, "/scim/v2/NoSuchThing", &prov, None).await, 404, None);
}

#[tokio::test]
async fn scim_answers_credential_failures_as_scim_errors() {
    let app = TestApp::new().await;
    let none = app.request(Method::GET, "/scim/v2/Users", None, None, Body::empty()).await;
    scim_error(&none, 401, None);
    let platform = app.platform("p").await;
    scim_error(&scim(&app, Method::GET, "/scim/v2/Users", &platform.credential, None).await, 403, None);
    scim_error(&scim(&app, Method::GET, "/scim/v2/Users", "not-a-credential", None).await, 401, None);
    // An admin may act as the provisioner.
    assert_eq!(scim(&app, Method::GET, "/scim/v2/Users", &app.admin, None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn duplicates_are_409_uniqueness_and_both_json_media_types_are_accepted() {
    let app = TestApp::new().await;
    let prov = app.provisioner().await;
    provision(&app, &prov, "ada@example.com").await;
    let same_name = json!({"userName": "ADA@example.com"});
    scim_error(&scim(&app, Method::POST, "/scim/v2/Users", &prov, Some(same_name)).await, 409, Some("uniqueness"));
    let same_ext = json!({"userName": "other", "externalId": "okta|ada@example.com"});
    scim_error(&scim(&app, Method::POST, "/scim/v2/Users", &prov, Some(same_ext)).await, 409, Some("uniqueness"));
    let plain = app
        .request(
            Method::POST,
            "/scim/v2/Users",
            Some(&prov),
            Some("application/json"),
            Body::from(json!({"userName": "plain"}).to_string()),
        )
        .await;
    assert_eq!(plain.status, StatusCode::CREATED, "{}", plain.text);
    assert!(plain.body["meta"]["location"].as_str().is_some_and(|l| l.ends_with(plain.body["id"].as_str().unwrap())));
    let text = app.request(Method::POST, "/scim/v2/Users", Some(&prov), Some("text/plain"), Body::from("x")).await;
    scim_error(&text, 415, None);
    let missing = scim(&app, Method::POST, "/scim/v2/Users", &prov, Some(json!({"displayName": "x"}))).await;
    scim_error(&missing, 400, Some("invalidValue"));
    let broken =
        app.request(Method::POST, "/scim/v2/Users", Some(&prov), Some("application/scim+json"), Body::from("{")).await;
    scim_error(&broken, 400, Some("invalidSyntax"));
}

fn encode(text: &str) -> String {
    text.bytes().map(|b| format!("%{b:02X}")).collect()
}

async fn filtered(app: &TestApp, prov: &str, filter: &str) -> Answer {
    scim(app, Method::GET, &format!("/scim/v2/Users?filter={}", encode(filter)), prov, None).await
}

#[tokio::test]
async fn filters_find_users_by_their_identifiers_as_the_schema_compares_them() {
    let app = TestApp::new().await;
    let prov = app.provisioner().await;
    let ada = provision(&app, &prov, "ada@example.com").await;
    provision(&app, &prov, "grace@example.com").await;
    let ids = |a: &Answer| -> Vec<String> {
        a.ok()["Resources"]
            .as_array()
            .expect("Resources")
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&filtered(&app, &prov, r#"userName eq "ADA@EXAMPLE.COM""#).await), [ada.as_str()]);
    assert_eq!(ids(&filtered(&app, &prov, r#"USERNAME Eq "ada@example.com""#).await), [ada.as_str()]);
    assert_eq!(ids(&filtered(&app, &prov, r#"externalId eq "okta|ada@example.com""#).await), [ada.as_str()]);
    assert!(ids(&filtered(&app, &prov, r#"externalId eq "OKTA|ada@example.com""#).await).is_empty(), "caseExact");
    let both = format!(r#"externalId eq "okta|ada@example.com" and id eq "{ada}""#);
    assert_eq!(ids(&filtered(&app, &prov, &both).await), [ada.as_str()]);
    assert_eq!(ids(&filtered(&app, &prov, r#"emails[value eq "ada@example.com"]"#).await), [ada.as_str()]);
    assert_eq!(ids(&filtered(&app, &prov, r#"emails.value sw "ADA""#).await), [ada.as_str()]);
    assert_eq!(filtered(&app, &prov, r#"userName sw "a" or userName sw "g""#).await.ok()["totalResults"], 2);
    assert_eq!(filtered(&app, &prov, r#"active eq true"#).await.ok()["totalResults"], 2);
    // Paging: 1-based, count 0 answers the total only.
    let counted = scim(&app, Method::GET, "/scim/v2/Users?startIndex=1&count=0", &prov, None).await;
    assert_eq!((counted.ok()["totalResults"].clone(), counted.ok()["Resources"].clone()), (json!(2), json!([])));
    let second = scim(&app, Method::GET, "/scim/v2/Users?startIndex=2&count=1", &prov, None).await;
    assert_eq!(second.ok()["startIndex"], 2);
    assert_eq!(second.ok()["itemsPerPage"], 1);
}

#[tokio::test]
async fn malformed_or_unsupported_filters_are_400_invalid_filter() {
    let app = TestApp::new().await;
    let prov = app.provisioner().await;
    for bad in [
        "userName eq",
        r#"userName eq "x"#,
        r#"userName xx "x""#,
        r#"(userName eq "x""#,
        r#"userName eq "x" and"#,
        r#"userName eq 12"#,
        r#"name.givenName eq "Ada""#,
        r#"meta.created gt "2020-01-01T00:00:00Z""#,
        r#"urn:other:User:userName eq "x""#,
        r#"userName eq "x"); DROP TABLE users; --"#,
    ] {
        scim_error(&filtered(&app, &prov, bad).await, 400, Some("invalidFilter"));
    }
}

#[tokio::test]
async fn arbitrary_filter_strings_never_answer_5xx() {
    use proptest::strategy::{Strategy, ValueTree};
    let app = TestApp::new().await;
    let prov = app.provisioner().await;
    provision(&app, &prov, "ada@example.com").await;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let soup = proptest::collection::vec(
        proptest::sample::select(vec![
            "userName",
            "eq",
            "and",
            "or",
            "not",
            "(",
            ")",
            "[",
            "]",
            "\"ada@example.com\"",
            "pr",
            "true",
            "emails",
            "value",
            "sw",
            "\"",
            "'",
            ";",
            "%",
            "\\",
            "externalId",
            "id",
            "12",
            "null",
            "active",
        ]),
        0..16,
    )
    .prop_map(|parts| parts.join(" "));
    let strategy = proptest::prop_oneof![soup, ".{0,80}"];
    for _ in 0..300 {
        let text = strategy.new_tree(&mut runner).expect("value").current();
        let answer = filtered(&app, &prov, &text).await;
        assert!(
            answer.status == StatusCode::OK || answer.status == StatusCode::BAD_REQUEST,
            "{text:?}: {} {}",
            answer.status,
            answer.text
        );
    }
}

#[tokio::test]
async fn patch_paths_that_name_nothing_are_400_and_change_nothing() {
    let app = TestApp::new().await;
    let prov = app.provisioner().await;
    let user = provision(&app, &prov, "ada@example.com").await;
    let uri = format!("/scim/v2/Users/{user}");
    let cases = [
        (json!({"op": "replace", "path": "shoeSize", "value": "44"}), "invalidPath"),
        (json!({"op": "replace", "path": "name.nickname", "value": "x"}), "invalidPath"),
        (
            json!({"op": "replace", "path": "emails[type eq \"home\" and primary eq true].value", "value": "h@x.org"}),
            "noTarget",
        ),
        (json!({"op": "replace", "path": "emails[type eq", "value": "x"}), "invalidPath"),
        (json!({"op": "remove"}), "noTarget"),
        (json!({"op": "remove", "path": "userName"}), "mutability"),
        (json!({"op": "replace", "path": "id", "value": "usr_x"}), "mutability"),
        (json!({"op": "add", "path": "groups", "value": [{"value": "grp_x"}]}), "mutability"),
        (json!({"op": "replace", "path": "active", "value": "maybe"}), "invalidValue"),
    ];
    for (op, scim_type) in cases {
        // A valid change first: the whole request fails, so it must not be applied either.
        let body = json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "displayName", "value": "Changed"}, op]});
        scim_error(&scim(&app, Method::PATCH, &uri, &prov, Some(body)).await, 400, Some(scim_type));
    }
    let now = scim(&app, Method::GET, &uri, &prov, None).await;
    assert_eq!((now.ok()["displayName"].clone(), now.ok()["active"].clone()), (json!("Ada Lovelace"), json!(true)));
    let bad_op = json!({"schemas": [PATCH], "Operations": [{"op": "delete", "path": "displayName"}]});
    scim_error(&scim(&app, Method::PATCH, &uri, &prov, Some(bad_op)).await, 400, Some("invalidSyntax"));
}

#[tokio::test]
async fn patch_changes_the_profile_in_okta_and_entra_spellings() {
    let app = TestApp::new().await;
    let prov = app.provisioner().await;
    let user = provision(&app, &prov, "ada@example.com").await;
    let uri = format!("/scim/v2/Users/{user}");
    let body = json!({"schemas": [PATCH], "Operations": [
        {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "ada@new.example"},
        {"op": "Add", "value": {"name.familyName": "Byron", "displayName": "Ada Byron"}},
        {"op": "replace", "path": "userName", "value": "ada.byron@example.com"},
    ]});
    let answer = scim(&app, Method::PATCH, &uri, &prov, Some(body)).await;
    let u = answer.ok();
    assert_eq!(u["emails"][0]["value"], "ada@new.example");
    assert_eq!(u["name"]["familyName"], "Byron");
    assert_eq!(u["userName"], "ada.byron@example.com");
    // Entra's default mappings also write attributes tether does not hold: accepted, dropped.
    let unheld = json!({"schemas": [PATCH], "Operations": [
        {"op": "Replace", "path": "title", "value": "Countess"},
        {"op": "Add", "path": "phoneNumbers[type eq \"work\"].value", "value": "+44 1"},
        {"op": "Replace", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber", "value": "7"},
    ]});
    let answer = scim(&app, Method::PATCH, &uri, &prov, Some(unheld)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert!(answer.body.get("title").is_none() && answer.body.get("phoneNumbers").is_none());
    // Entra writes a typed address that does not exist yet: it is created.
    let home = json!({"schemas": [PATCH], "Operations": [{"op": "Replace", "path": "emails[type eq \"home\"].value", "value": "ada@home.example"}]});
    let answer = scim(&app, Method::PATCH, &uri, &prov, Some(home)).await;
    assert_eq!(answer.ok()["emails"][1], json!({"type": "home", "value": "ada@home.example"}));
    let tether = app.get(&format!("/v1/users/{user}"), &app.admin).await;
    assert_eq!(tether.ok()["email"], "ada@new.example", "the primary email is tether's email");
    assert_eq!(tether.ok()["user_name"], "ada.byron@example.com");
}

/// kill -9 during a SCIM deactivation: after restart, all or nothing (the user disabled with every
/// session revoked and the scim event written, or none of it), and the chain verifies.
mod killed {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpStream;
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    use serde_json::{json, Value};

    struct Serve(Child, String);

    impl Drop for Serve {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// `tether serve` on `dir`, once it listens.
    fn serve(dir: &Path) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tether"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tether serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let address = loop {
            let line = lines.next().expect("tether exited before listening").expect("line");
            if let Some(a) = line.strip_prefix("tether listening on ") {
                break a.trim().trim_start_matches("http://").to_owned();
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Serve(child, address)
    }

    fn send(address: &str, method: &str, path: &str, credential: &str, body: Option<&Value>) -> TcpStream {
        let mut stream = TcpStream::connect(address).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        let body = body.map(Value::to_string).unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: tether\r\nConnection: close\r\nAuthorization: Bearer {credential}\r\n\
             Content-Type: application/scim+json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).expect("write");
        stream
    }

    fn call(address: &str, method: &str, path: &str, credential: &str, body: Option<Value>) -> (u16, Value) {
        let mut answer = String::new();
        send(address, method, path, credential, body.as_ref()).read_to_string(&mut answer).expect("read");
        let (head, text) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status");
        (status, serde_json::from_str(text).unwrap_or(Value::Null))
    }

    fn ok(answer: (u16, Value)) -> Value {
        assert!((200..300).contains(&answer.0), "{answer:?}");
        answer.1
    }

    #[test]
    fn a_deactivation_killed_midway_is_all_or_nothing_after_restart() {
        for delay_ms in [0u64, 4, 30] {
            let dir = tempfile::tempdir().expect("tempdir");
            let server = serve(dir.path());
            let a = server.1.clone();
            let admin = std::fs::read_to_string(dir.path().join("admin.credential")).expect("admin").trim().to_owned();
            let prov = ok(call(&a, "POST", "/v1/credentials", &admin, Some(json!({"role": "provisioner"}))))
                ["credential"]
                .as_str()
                .expect("credential")
                .to_owned();
            let user = ok(call(&a, "POST", "/scim/v2/Users", &prov, Some(json!({"userName": "k@example.com"}))))["id"]
                .as_str()
                .expect("id")
                .to_owned();
            ok(call(
                &a,
                "PUT",
                &format!("/v1/users/{user}/permissions"),
                &admin,
                Some(json!({"permissions": ["mail:read"]})),
            ));
            let platform = ok(call(&a, "POST", "/v1/platforms", &admin, Some(json!({"name": "p"}))))["id"].clone();
            let scopes = json!(["mail:read"]);
            let agent = ok(call(
                &a,
                "POST",
                "/v1/agents",
                &admin,
                Some(json!({"name": "a", "scopes": scopes, "platform_id": platform})),
            ))["id"]
                .clone();
            let integration = ok(call(
                &a,
                "POST",
                "/v1/integrations",
                &admin,
                Some(json!({"name": "i", "scopes": scopes, "platform_id": platform})),
            ))["id"]
                .clone();
            let delegation = ok(call(
                &a,
                "POST",
                "/v1/delegations",
                &admin,
                Some(json!({"user_id": user, "agent_id": agent, "integration_id": integration, "scopes": scopes})),
            ))["id"]
                .clone();
            for _ in 0..150 {
                ok(call(
                    &a,
                    "POST",
                    "/v1/sessions",
                    &admin,
                    Some(json!({"delegation_id": delegation, "scopes": scopes})),
                ));
            }
            let deactivate = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "value": {"active": false}}]});
            let _in_flight = send(&a, "PATCH", &format!("/scim/v2/Users/{user}"), &prov, Some(&deactivate));
            std::thread::sleep(Duration::from_millis(delay_ms));
            drop(server); // SIGKILL

            let server = serve(dir.path());
            let a = server.1.clone();
            let status = ok(call(&a, "GET", &format!("/v1/users/{user}"), &admin, None))["status"].clone();
            let active =
                ok(call(&a, "GET", &format!("/v1/sessions?user_id={user}&status=active&limit=1000"), &admin, None))
                    ["items"]
                    .as_array()
                    .map(Vec::len);
            let asked =
                ok(call(&a, "GET", &format!("/v1/audit?action=scim.user_deactivated&subject={user}"), &admin, None))
                    ["items"]
                    .as_array()
                    .map(Vec::len);
            let disabled = ok(call(&a, "GET", &format!("/v1/audit?action=user.disabled&subject={user}"), &admin, None))
                ["items"]
                .as_array()
                .map(Vec::len);
            eprintln!("killed {delay_ms} ms after sending the deactivation: user {status} after restart");
            match status.as_str() {
                Some("disabled") => {
                    assert_eq!((active, asked, disabled), (Some(0), Some(1), Some(1)), "delay {delay_ms} ms")
                }
                Some("active") => {
                    assert_eq!((active, asked, disabled), (Some(150), Some(0), Some(0)), "delay {delay_ms} ms")
                }
                other => panic!("status {other:?}"),
            }
            let verify = ok(call(&a, "GET", "/v1/audit/verify", &admin, None));
            assert_eq!(verify["ok"], true, "{verify}");
        }
    }
}

#[tokio::test]
async fn attributes_and_excluded_attributes_narrow_reads_lists_and_write_answers() {
    let app = TestApp::new().await;
    let prov = app.provisioner().await;
    let user = provision(&app, &prov, "ada@example.com").await;
    let uri = format!("/scim/v2/Users/{user}");
    let only = scim(&app, Method::GET, &format!("{uri}?attributes=userName,name.givenName"), &prov, None).await;
    let mut keys: Vec<&str> = only.ok().as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["id", "name", "schemas", "userName"]);
    assert_eq!(only.body["name"], json!({"givenName": "Ada"}));
    let without = scim(&app, Method::GET, "/scim/v2/Users?excludedAttributes=emails,meta,id", &prov, None).await;
    let first = &without.ok()["Resources"][0];
    assert!(first.get("emails").is_none() && first.get("meta").is_none() && first["id"] == json!(user), "{first}");
    let body = patch_body(json!({"op": "replace", "path": "displayName", "value": "A"}));
    let patched = scim(&app, Method::PATCH, &format!("{uri}?excludedAttributes=name"), &prov, Some(body)).await;
    assert!(patched.ok().get("name").is_none() && patched.body["displayName"] == "A", "{}", patched.text);
    let bad = scim(&app, Method::GET, &format!("{uri}?attributes=emails[type%20eq%20%22work%22]"), &prov, None).await;
    scim_error(&bad, 400, Some("invalidValue"));
}

#[tokio::test]
async fn a_user_made_through_tethers_api_is_deactivated_without_gaining_a_user_name() {
    let app = TestApp::new().await;
    let prov = app.provisioner().await;
    let user = app.user("idp|plain", &["mail:read"]).await;
    // Another user already holds the stand-in as its userName: writing it would collide.
    provision(&app, &prov, "idp|plain").await;
    let shown = scim(&app, Method::GET, &format!("/scim/v2/Users/{user}"), &prov, None).await;
    assert_eq!(shown.ok()["userName"], "idp|plain");
    let body = patch_body(json!({"op": "replace", "value": {"active": false}}));
    let answer = scim(&app, Method::PATCH, &format!("/scim/v2/Users/{user}"), &prov, Some(body)).await;
    assert_eq!(answer.ok()["active"], false, "{}", answer.text);
    let tether = app.get(&format!("/v1/users/{user}"), &app.admin).await;
    assert_eq!((tether.ok()["status"].clone(), tether.ok()["user_name"].clone()), (json!("disabled"), Value::Null));
}
