//! The role table in one place: `ROUTE_ROLES` (the roles of the capability each route's handler
//! takes) agrees with the role columns of docs/api.md, with the OpenAPI document's routes, and
//! with what the router answers each role (403 exactly for the roles outside the set).

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::json;
use tether::api::auth::{OWN_AUTHENTICATION, ROUTE_ROLES};
use tether::domain::RoleKind;

use crate::helpers::TestApp;

type Route = (String, String);
type Roles = BTreeSet<&'static str>;

const ALL_ROLES: [RoleKind; 7] = [
    RoleKind::Admin,
    RoleKind::Platform,
    RoleKind::User,
    RoleKind::Auditor,
    RoleKind::Verifier,
    RoleKind::Provisioner,
    RoleKind::Receiver,
];

fn code_table() -> BTreeMap<Route, Roles> {
    let mut table = BTreeMap::new();
    for (method, path, roles) in ROUTE_ROLES {
        let roles = roles.iter().map(|r| r.as_str()).collect();
        assert!(table.insert((method.to_string(), path.to_string()), roles).is_none(), "{method} {path} twice");
    }
    table
}

/// The roles a "who"/"roles" cell names: role words, `any credential` (every role), or `none`.
fn roles_in(cell: &str) -> Roles {
    if cell.contains("any credential") {
        return ALL_ROLES.iter().map(|r| r.as_str()).collect();
    }
    let words: BTreeSet<String> = cell
        .split(|c: char| !c.is_ascii_alphabetic())
        .map(|w| w.to_ascii_lowercase().trim_end_matches('s').to_owned())
        .collect();
    ALL_ROLES.iter().map(|r| r.as_str()).filter(|r| words.contains(*r)).collect()
}

/// `METHOD /path` in backticks, each route a cell names.
fn routes_in(cell: &str) -> Vec<Route> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|code| {
            let (method, path) = code.split_once(' ')?;
            let known = ["GET", "POST", "PUT", "DELETE", "PATCH"].contains(&method);
            (known && path.starts_with('/')).then(|| (method.to_owned(), path.to_owned()))
        })
        .collect()
}

/// Every row of every markdown table whose header has a `route` column and a `who` or `roles`
/// column: the route(s) and the roles it names. A route documented twice must say the same.
fn documented_table(markdown: &str) -> BTreeMap<Route, Roles> {
    let mut table: BTreeMap<Route, Roles> = BTreeMap::new();
    let mut columns: Option<(usize, usize)> = None;
    for line in markdown.lines() {
        let line = line.trim();
        if !line.starts_with('|') {
            columns = None;
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if cells.iter().all(|c| c.chars().all(|ch| ch == '-' || ch == ':')) {
            continue;
        }
        let Some((route_at, roles_at)) = columns else {
            let route = cells.iter().position(|c| *c == "route");
            let roles = cells.iter().position(|c| *c == "who" || *c == "roles");
            columns = Some((route.unwrap_or(usize::MAX), roles.unwrap_or(usize::MAX)));
            continue;
        };
        let (Some(route_cell), Some(roles_cell)) = (cells.get(route_at), cells.get(roles_at)) else { continue };
        for route in routes_in(route_cell) {
            let roles = roles_in(roles_cell);
            if let Some(earlier) = table.insert(route.clone(), roles.clone()) {
                assert_eq!(earlier, roles, "docs/api.md gives {route:?} two role sets");
            }
        }
    }
    table
}

/// Where the code and the documentation disagree, one line each.
fn disagreements(code: &BTreeMap<Route, Roles>, documented: &BTreeMap<Route, Roles>) -> Vec<String> {
    let mut out = Vec::new();
    for (route, roles) in code {
        match documented.get(route) {
            None => out.push(format!("{} {} is not in docs/api.md", route.0, route.1)),
            Some(doc) if doc != roles => {
                out.push(format!("{} {}: the code allows {roles:?}, docs/api.md says {doc:?}", route.0, route.1))
            }
            Some(_) => {}
        }
    }
    for route in documented.keys().filter(|r| !code.contains_key(*r)) {
        out.push(format!("{} {} is documented but has no handler", route.0, route.1));
    }
    out
}

fn api_md() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/api.md")).expect("docs/api.md")
}

#[test]
fn the_role_columns_of_docs_api_md_are_the_route_table_of_the_code() {
    let wrong = disagreements(&code_table(), &documented_table(&api_md()));
    assert!(wrong.is_empty(), "docs/api.md and ROUTE_ROLES disagree:\n{}", wrong.join("\n"));
}

#[test]
fn a_changed_role_cell_or_a_missing_row_is_a_disagreement() {
    let doc = api_md();
    let row = "| `POST /v1/users` | admin |";
    assert!(doc.contains(row), "the table has the row this test edits");
    let widened = doc.replace(row, "| `POST /v1/users` | admin, auditor |");
    assert_eq!(
        disagreements(&code_table(), &documented_table(&widened)),
        ["POST /v1/users: the code allows {\"admin\"}, docs/api.md says {\"admin\", \"auditor\"}"]
    );
    let dropped = doc.replace(&format!("{row}\n"), "");
    assert_eq!(disagreements(&code_table(), &documented_table(&dropped)), ["POST /v1/users is not in docs/api.md"]);
}

#[test]
fn the_route_table_has_every_route_of_the_openapi_document() {
    let document = serde_json::to_value(tether::api::openapi::document()).expect("document");
    let mut routes = BTreeSet::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                routes.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    // SCIM describes itself (/ServiceProviderConfig, /ResourceTypes, /Schemas), not in OpenAPI.
    let table: BTreeSet<Route> = code_table().into_keys().filter(|(_, path)| !path.starts_with("/scim/")).collect();
    assert_eq!(table, routes);
}

/// A path of the table with its parameters filled by ids that name nothing.
fn concrete(path: &str) -> String {
    let absent = |prefix: &str| format!("{prefix}_{}", uuid::Uuid::now_v7().simple());
    let mut out = Vec::new();
    let segments: Vec<&str> = path.split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        let filled = match *segment {
            "{agent_id}" => absent("agt"),
            "{integration_id}" => absent("int"),
            "{kid}" => "4000000000".to_owned(),
            "{stream_id}" => absent("sst"),
            "{name}" => "User".to_owned(),
            "{id}" => absent(match segments[i - 1] {
                "platforms" => "plt",
                "agents" => "agt",
                "integrations" => "int",
                "users" => "usr",
                "delegations" => "dlg",
                "sessions" => "ses",
                "credentials" => "cred",
                "webhooks" => "whk",
                "groups" | "Groups" => "grp",
                "Users" => "usr",
                "Schemas" => return "/scim/v2/Schemas/urn:ietf:params:scim:schemas:core:2.0:User".to_owned(),
                "signal-sources" | "push" => "src",
                other => panic!("no id prefix for {other}"),
            }),
            other => other.to_owned(),
        };
        out.push(filled);
    }
    out.join("/")
}

#[tokio::test]
async fn each_route_forbids_exactly_the_roles_outside_its_capability() {
    let app = TestApp::new().await;
    let world = app.world(&["mail:read"], &["mail:read"]).await;
    let credentials: BTreeMap<&str, String> = BTreeMap::from([
        ("admin", app.admin.clone()),
        ("platform", world.platform.credential.clone()),
        ("user", app.user_credential(&world.user).await),
        ("auditor", app.auditor().await),
        ("verifier", app.verifier().await),
        ("provisioner", app.provisioner().await),
        ("receiver", app.credential(json!({"role": "receiver"})).await),
    ]);
    // A body no route accepts: a permitted role gets 400 (or 404 for an absent id, or 200 for a
    // read), never 403, and nothing is changed.
    let refused_body = json!({"not_a_field": true}).to_string();
    for (method_text, path, roles) in ROUTE_ROLES {
        let method = Method::from_bytes(method_text.as_bytes()).expect("method");
        let uri = concrete(path);
        if roles.is_empty() && OWN_AUTHENTICATION.contains(&(*method_text, *path)) {
            // No credential is asked for, and the route's own authentication refuses the request.
            let answer = app.request(method, &uri, None, None, Body::empty()).await;
            assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{path}: {}", answer.text);
            assert_eq!(answer.body["err"], "authentication_failed", "{path}: {}", answer.text);
            continue;
        }
        if roles.is_empty() {
            let answer = app.request(method, &uri, None, None, Body::empty()).await;
            assert!(answer.status.is_success(), "{path} needs no credential: {}", answer.status);
            continue;
        }
        for role in ALL_ROLES {
            let allowed = roles.contains(&role);
            // The event stream never ends for a permitted caller; every role is permitted.
            if allowed && *path == "/v1/events" {
                continue;
            }
            let credential = &credentials[role.as_str()];
            let body = Body::from(refused_body.clone());
            let answer = app.request(method.clone(), &uri, Some(credential), Some("application/json"), body).await;
            let forbidden = answer.status == StatusCode::FORBIDDEN;
            assert_eq!(forbidden, !allowed, "{method} {path} as {}: {} {}", role.as_str(), answer.status, answer.text);
            assert_ne!(answer.status, StatusCode::UNAUTHORIZED, "{method} {path} as {}", role.as_str());
        }
    }
}
