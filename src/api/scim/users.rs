//! `/scim/v2/Users`: tether's users as SCIM User resources, and deactivation in every shape the
//! identity providers send it.
//!
//! Mapping: `id` is the `usr_…` id; `userName`, `externalId`, `displayName` and the primary email
//! are the user's columns; `active` is the status; `name` and the whole `emails` list are kept
//! only to be given back; `groups` are read-only. A change of `active` is recorded as a
//! `scim.user_deactivated` / `scim.user_activated` event naming the request's shape, which
//! causes the `user.disabled` / `user.enabled` event and its cascade.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::filter::{self, AttrPath, CompValue, CompareOp, Filter};
use super::patch::{self, Target};
use super::protocol::{
    base_url, created, list_response, scim_json, Projection, ScimAllowed, ScimBody, ScimError, ScimResult, Window,
};
use super::schema::USER_SCHEMA;
use crate::api::AppState;
use crate::audit::NewEvent;
use crate::domain::access::{Capability, Provisioner};
use crate::domain::text::{clean_text, required_text};
use crate::domain::*;
use crate::ops::users as ops;
use crate::store::matching::{Cmp, Match};
use crate::store::users::{self, UserColumn, UserKey, UserProfile};
use crate::store::Tx;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/Users", get(list).post(create))
        .route("/Users/{id}", get(get_one).put(replace).patch(modify).delete(remove))
}

const TARGET: Target = super::schema::USER_TARGET;

/// `?filter=&startIndex=&count=` (and the attribute selectors, which tether does not apply: it
/// answers every attribute, as RFC 7644 §3.9 allows for `returned: default` ones).
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    pub filter: Option<String>,
    #[serde(rename = "startIndex")]
    pub start_index: Option<String>,
    pub count: Option<String>,
    pub attributes: Option<String>,
    #[serde(rename = "excludedAttributes")]
    pub excluded_attributes: Option<String>,
}

/// A list request parsed: its window, its projection and its filter as a condition on `C`'s
/// columns (`to_match` says which attributes a resource type filters on).
pub(super) struct ListRequest<C> {
    pub window: Window,
    pub projection: Projection,
    pub condition: Match<C>,
}

pub(super) fn list_request<C>(
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
    to_match: fn(&Filter) -> ScimResult<Match<C>>,
) -> ScimResult<ListRequest<C>> {
    let Query(q) = query.map_err(|_| ScimError::invalid_value("the query string is malformed"))?;
    let window = Window::parse(q.start_index.as_deref(), q.count.as_deref())?;
    let projection = Projection::parse(q.attributes.as_deref(), q.excluded_attributes.as_deref())?;
    let condition = match q.filter.as_deref().map(str::trim) {
        None | Some("") => Match::Everything,
        Some(text) => {
            let parsed = filter::parse_filter(text).map_err(|e| ScimError::invalid_filter(e.to_string()))?;
            to_match(&parsed)?
        }
    };
    Ok(ListRequest { window, projection, condition })
}

/// `attributes`/`excludedAttributes` of a write: they narrow its answer too (RFC 7644 §3.9).
pub(super) fn answer_projection(
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ScimResult<Projection> {
    let Query(q) = query.map_err(|_| ScimError::invalid_value("the query string is malformed"))?;
    Projection::parse(q.attributes.as_deref(), q.excluded_attributes.as_deref())
}

/// The id in a path: anything that is not a user id names no user (404, as for an absent one).
fn user_id(text: &str) -> ScimResult<UserId> {
    UserId::parse(text).map_err(|_| ScimError::not_found("user"))
}

/// A user as SCIM shows it.
pub fn render(user: &User, kept: Option<&(String, Timestamp)>, base: &str) -> Value {
    let kept_json: Map<String, Value> = kept.and_then(|(text, _)| serde_json::from_str(text).ok()).unwrap_or_default();
    let mut out = Map::new();
    out.insert("schemas".into(), json!([USER_SCHEMA]));
    out.insert("id".into(), json!(user.id));
    for (key, value) in working_copy(user, &kept_json) {
        out.insert(key, value);
    }
    let groups: Vec<Value> = user
        .groups
        .iter()
        .map(|g| json!({"value": g.id, "display": g.display_name, "$ref": format!("{base}/Groups/{}", g.id), "type": "direct"}))
        .collect();
    if !groups.is_empty() {
        out.insert("groups".into(), Value::Array(groups));
    }
    let modified = kept.map_or(user.created_at, |(_, at)| (*at).max(user.created_at));
    out.insert(
        "meta".into(),
        json!({
            "resourceType": "User",
            "created": user.created_at.rfc3339(),
            "lastModified": modified.rfc3339(),
            "location": format!("{base}/Users/{}", user.id),
        }),
    );
    Value::Object(out)
}

/// The writable attributes of a user, in canonical SCIM form: what PATCH applies to and PUT
/// replaces.
fn working_copy(user: &User, kept: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("userName".into(), json!(shown_user_name(user)));
    if let Some(e) = &user.external_id {
        out.insert("externalId".into(), json!(e));
    }
    if let Some(name) = kept.get("name") {
        out.insert("name".into(), name.clone());
    }
    if let Some(d) = &user.display_name {
        out.insert("displayName".into(), json!(d));
    }
    out.insert("active".into(), json!(user.status == UserStatus::Active));
    match (kept.get("emails"), &user.email) {
        (Some(emails), _) => {
            out.insert("emails".into(), emails.clone());
        }
        (None, Some(email)) => {
            out.insert("emails".into(), json!([{"value": email, "primary": true}]));
        }
        (None, None) => {}
    }
    out
}

/// A user made through tether's own API may have no userName, which SCIM requires: its
/// externalId (else its id) stands in, so an identity provider can still match it.
fn shown_user_name(user: &User) -> String {
    user.user_name.clone().or_else(|| user.external_id.clone()).unwrap_or_else(|| user.id.to_string())
}

/// What a SCIM body (canonical form) asks a user to be.
#[derive(Debug)]
struct Desired {
    profile: UserProfile,
    /// `name` and `emails`, kept to be given back.
    kept: Map<String, Value>,
    active: Option<bool>,
}

fn text_of(map: &Map<String, Value>, key: &str) -> Option<String> {
    map.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn desired(map: &Map<String, Value>) -> ScimResult<Desired> {
    let invalid = |e: Error| ScimError::invalid_value(e.to_string());
    let user_name = text_of(map, "userName").ok_or_else(|| ScimError::invalid_value("`userName` is required"))?;
    let user_name = required_text("userName", &user_name, UserName::MAX_CHARS).map_err(invalid)?;
    let external_id = text_of(map, "externalId")
        .map(|e| required_text("externalId", &e, ExternalId::MAX_CHARS))
        .transpose()
        .map_err(invalid)?;
    let display_name = text_of(map, "displayName")
        .map(|d| clean_text("displayName", &d, DisplayName::MAX_CHARS))
        .transpose()
        .map_err(invalid)?;
    let emails: Vec<Value> = map.get("emails").and_then(Value::as_array).cloned().unwrap_or_default();
    if emails.len() > 20 {
        return Err(ScimError::invalid_value("at most 20 `emails`"));
    }
    let primaries = emails.iter().filter(|e| e.get("primary") == Some(&Value::Bool(true))).count();
    if primaries > 1 {
        return Err(ScimError::invalid_value("at most one of `emails` may be primary"));
    }
    // The primary address is the one tether knows the user by; without one marked, the first.
    let email = emails
        .iter()
        .find(|e| e.get("primary") == Some(&Value::Bool(true)))
        .or_else(|| emails.first())
        .and_then(|e| e.get("value"))
        .and_then(Value::as_str)
        .map(|e| required_text("emails.value", e, Email::MAX_CHARS))
        .transpose()
        .map_err(invalid)?;
    let mut kept = Map::new();
    if let Some(name) = map.get("name").filter(|n| n.as_object().is_some_and(|o| !o.is_empty())) {
        for part in name.as_object().into_iter().flat_map(|o| o.values()) {
            if part.as_str().is_some_and(|t| t.chars().count() > 512) {
                return Err(ScimError::invalid_value("a part of `name` is longer than 512 characters"));
            }
        }
        kept.insert("name".into(), name.clone());
    }
    if !emails.is_empty() {
        kept.insert("emails".into(), Value::Array(emails));
    }
    Ok(Desired {
        profile: UserProfile { external_id, user_name: Some(user_name), email, display_name },
        kept,
        active: map.get("active").and_then(Value::as_bool),
    })
}

/// How a request asked for a change of `active`, for the `scim.*` event.
struct Shape {
    shape: &'static str,
    detail: Value,
}

/// Applies what SCIM asked, in one transaction: the profile, the kept attributes, then `active`
/// (an active → inactive change is a `scim.user_deactivated` event causing `user.disabled` and
/// its cascade; never refused for tether-side state).
fn apply(tx: &mut Tx<'_>, caller: &Provisioner, user: &User, mut want: Desired, shape: Shape) -> Result<()> {
    // The stand-in userName sent back unchanged is no userName: a deactivation of such a user
    // must not write one (which could even collide with another user's and refuse it).
    if user.user_name.is_none() && want.profile.user_name.as_deref() == Some(shown_user_name(user).as_str()) {
        want.profile.user_name = None;
    }
    if want.profile.user_name != user.user_name {
        if let Some(name) = &want.profile.user_name {
            if users::find_user(tx.conn(), UserKey::UserName(name))?.is_some_and(|u| u.id != user.id) {
                return Err(Error::conflict(format!("userName {name:?} is taken")));
            }
        }
    }
    if want.profile.external_id != user.external_id {
        if let Some(ext) = &want.profile.external_id {
            if users::find_user(tx.conn(), UserKey::ExternalId(ext))?.is_some_and(|u| u.id != user.id) {
                return Err(Error::conflict(format!("externalId {ext:?} is taken")));
            }
        }
    }
    ops::update_user_profile(tx, caller, user.id, want.profile)?;
    let kept_text = Value::Object(want.kept).to_string();
    let before = users::scim_attributes(tx.conn(), user.id)?;
    if before.as_ref().map(|(t, _)| t.as_str()) != Some(kept_text.as_str()) {
        users::set_scim_attributes(tx, user.id, &kept_text)?;
    }
    set_active(tx, caller, user, want.active, shape)
}

fn set_active(tx: &mut Tx<'_>, caller: &Provisioner, user: &User, active: Option<bool>, shape: Shape) -> Result<()> {
    let subject = || Subject::new("user", user.id);
    let mut details = json!({"shape": shape.shape});
    if let (Value::Object(d), Value::Object(extra)) = (&mut details, shape.detail) {
        d.extend(extra);
    }
    match (active, user.status) {
        (Some(false), UserStatus::Active) => {
            let asked = tx.audit(NewEvent::new(caller.actor(), "scim.user_deactivated", subject()).details(details))?;
            ops::disable_user_caused_by(tx, caller, user.id, None, Some(asked.seq)).map(drop)
        }
        (Some(true), UserStatus::Disabled) => {
            let asked = tx.audit(NewEvent::new(caller.actor(), "scim.user_activated", subject()).details(details))?;
            ops::enable_user_caused_by(tx, caller, user.id, None, Some(asked.seq)).map(drop)
        }
        _ => Ok(()),
    }
}

/// A user SCIM may see: not ended.
fn live_user(conn: &crate::store::Conn, caller: &Provisioner, id: UserId) -> Result<User> {
    let user = users::get_user(conn, crate::domain::access::ManagesUsers::visibility(caller), id)?;
    if user.ended_at.is_some() {
        return Err(Error::NotFound("user"));
    }
    Ok(user)
}

fn read_rendered(conn: &crate::store::Conn, caller: &Provisioner, id: UserId, base: &str) -> Result<Value> {
    let user = live_user(conn, caller, id)?;
    let kept = users::scim_attributes(conn, id)?;
    Ok(render(&user, kept.as_ref(), base))
}

/// Runs a SCIM write: a [`ScimError`] found before anything is written comes back as such; a
/// domain error rolls the command back.
async fn scim_write<F>(state: &AppState, caller: Provisioner, command: F) -> ScimResult<Value>
where
    F: FnOnce(&mut Tx<'_>) -> Result<ScimResult<Value>> + Send + 'static,
{
    state.writer.execute_as(caller.caller(), command).await.map_err(ScimError::from)?
}

pub async fn create(
    State(state): State<AppState>,
    ScimAllowed(caller): ScimAllowed<Provisioner>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
    ScimBody(body): ScimBody,
) -> ScimResult {
    let projection = answer_projection(query)?;
    let base = base_url(&state);
    let want = desired(&patch::normalize_resource(&TARGET, &body)?)?;
    let mut body = scim_write(&state, caller, move |tx| {
        for (key, taken) in [
            ("userName", want.profile.user_name.as_deref().map(UserKey::UserName)),
            ("externalId", want.profile.external_id.as_deref().map(UserKey::ExternalId)),
        ] {
            if let Some(k) = taken {
                if users::find_user(tx.conn(), k)?.is_some() {
                    return Ok(Err(ScimError::new(
                        StatusCode::CONFLICT,
                        Some("uniqueness"),
                        format!("a user with this {key} exists"),
                    )));
                }
            }
        }
        let user = ops::create_user_with(tx, &caller, want.profile.clone(), ScopeSet::new())?;
        if !want.kept.is_empty() {
            users::set_scim_attributes(tx, user.id, &Value::Object(want.kept.clone()).to_string())?;
        }
        let shape = Shape { shape: "post", detail: json!({}) };
        set_active(tx, &caller, &user, want.active, shape)?;
        Ok(Ok(read_rendered(tx.conn(), &caller, user.id, &base)?))
    })
    .await?;
    projection.apply(&mut body);
    Ok(created(&body))
}

pub async fn get_one(
    State(state): State<AppState>,
    ScimAllowed(caller): ScimAllowed<Provisioner>,
    Path(id): Path<String>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ScimResult {
    let projection = answer_projection(query)?;
    let id = user_id(&id)?;
    let base = base_url(&state);
    let mut body = state.readers.read(move |conn| read_rendered(conn, &caller, id, &base)).await?;
    projection.apply(&mut body);
    Ok(scim_json(StatusCode::OK, &body))
}

pub async fn list(
    State(state): State<AppState>,
    ScimAllowed(_caller): ScimAllowed<Provisioner>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ScimResult {
    let ListRequest { window, projection, condition } = list_request(query, to_match)?;
    let base = base_url(&state);
    let (total, found) = state
        .readers
        .read(move |conn| {
            let (total, found) = users::find_users(conn, &condition, window.offset(), window.count)?;
            let rendered = found
                .iter()
                .map(|u| Ok(render(u, users::scim_attributes(conn, u.id)?.as_ref(), &base)))
                .collect::<Result<Vec<_>>>()?;
            Ok((total, rendered))
        })
        .await?;
    let mut found = found;
    found.iter_mut().for_each(|r| projection.apply(r));
    Ok(list_response(total, window, found))
}

pub async fn replace(
    State(state): State<AppState>,
    ScimAllowed(caller): ScimAllowed<Provisioner>,
    Path(id): Path<String>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
    ScimBody(body): ScimBody,
) -> ScimResult {
    let projection = answer_projection(query)?;
    let id = user_id(&id)?;
    let base = base_url(&state);
    let incoming = patch::normalize_resource(&TARGET, &body)?;
    let mut body = scim_write(&state, caller, move |tx| {
        let user = live_user(tx.conn(), &caller, id)?;
        let mut next = incoming;
        // PUT replaces the user, but a body without `active` leaves the status as it is: a
        // profile update must not enable or disable anyone by omission.
        next.entry("active").or_insert(json!(user.status == UserStatus::Active));
        let want = match desired(&next) {
            Ok(w) => w,
            Err(e) => return Ok(Err(e)),
        };
        apply(tx, &caller, &user, want, Shape { shape: "put", detail: json!({}) })?;
        Ok(Ok(read_rendered(tx.conn(), &caller, id, &base)?))
    })
    .await?;
    projection.apply(&mut body);
    Ok(scim_json(StatusCode::OK, &body))
}

pub async fn modify(
    State(state): State<AppState>,
    ScimAllowed(caller): ScimAllowed<Provisioner>,
    Path(id): Path<String>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
    ScimBody(body): ScimBody,
) -> ScimResult {
    let projection = answer_projection(query)?;
    let id = user_id(&id)?;
    let base = base_url(&state);
    let operations = patch::parse_operations(&body)?;
    let mut body = scim_write(&state, caller, move |tx| {
        let user = live_user(tx.conn(), &caller, id)?;
        let kept: Map<String, Value> =
            users::scim_attributes(tx.conn(), id)?.and_then(|(t, _)| serde_json::from_str(&t).ok()).unwrap_or_default();
        let mut next = working_copy(&user, &kept);
        let change = match patch::apply(&TARGET, &mut next, &operations) {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        let want = match desired(&next) {
            Ok(w) => w,
            Err(e) => return Ok(Err(e)),
        };
        let shape = match change {
            Some(c) => Shape { shape: c.shape, detail: json!({"value_type": c.value_type}) },
            None => Shape { shape: "patch", detail: json!({}) },
        };
        apply(tx, &caller, &user, want, shape)?;
        Ok(Ok(read_rendered(tx.conn(), &caller, id, &base)?))
    })
    .await?;
    projection.apply(&mut body);
    Ok(scim_json(StatusCode::OK, &body))
}

pub async fn remove(
    State(state): State<AppState>,
    ScimAllowed(caller): ScimAllowed<Provisioner>,
    Path(id): Path<String>,
) -> ScimResult {
    let id = user_id(&id)?;
    state
        .writer
        .execute_as(caller.caller(), move |tx| {
            let user = live_user(tx.conn(), &caller, id)?;
            // A deleted user leaves its groups: SCIM shows it in no group's members again. The
            // user is disabled in the same command, so leaving revokes nothing more.
            let left: Vec<GroupId> = user.groups.iter().map(|g| g.id).collect();
            let asked = tx.audit(
                NewEvent::new(caller.actor(), "scim.user_deleted", Subject::new("user", id))
                    .details(json!({"shape": "delete", "left_groups": left})),
            )?;
            ops::end_user(tx, &caller, id, None, Some(asked.seq))?;
            crate::ops::groups::leave_groups(tx, id, &left)
        })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A parsed filter as a condition on users' columns. Attributes tether holds no column for
/// (`name.*`, `meta.*`, an email's `type`) cannot be filtered on: 400 `invalidFilter`.
fn to_match(filter: &Filter) -> ScimResult<Match<UserColumn>> {
    Ok(match filter {
        Filter::And(a, b) => Match::All(vec![to_match(a)?, to_match(b)?]),
        Filter::Or(a, b) => Match::Any(vec![to_match(a)?, to_match(b)?]),
        Filter::Not(a) => Match::Not(Box::new(to_match(a)?)),
        Filter::Present(path) => match column(path)? {
            UserColumn::Status => Match::Everything,
            c => Match::Present(c),
        },
        Filter::Compare { path, op, value } => compare(column(path)?, *op, value)?,
        Filter::ValuePath { attr, filter } => {
            if !attr.attr.eq_ignore_ascii_case("emails") || !urn_ok(attr) {
                return Err(ScimError::invalid_filter(format!("`{attr}[…]`: only `emails[value …]` is filterable")));
            }
            email_match(filter)?
        }
    })
}

/// Inside `emails[…]`: conditions on `value` only.
fn email_match(filter: &Filter) -> ScimResult<Match<UserColumn>> {
    Ok(match filter {
        Filter::And(a, b) => Match::All(vec![email_match(a)?, email_match(b)?]),
        Filter::Or(a, b) => Match::Any(vec![email_match(a)?, email_match(b)?]),
        Filter::Not(a) => Match::Not(Box::new(email_match(a)?)),
        Filter::Present(p) if is_value(p) => Match::Present(UserColumn::Email),
        Filter::Compare { path, op, value } if is_value(path) => compare(UserColumn::Email, *op, value)?,
        _ => return Err(ScimError::invalid_filter("inside `emails[…]` only `value` is filterable")),
    })
}

fn is_value(p: &AttrPath) -> bool {
    p.urn.is_none() && p.sub.is_none() && p.attr.eq_ignore_ascii_case("value")
}

fn urn_ok(p: &AttrPath) -> bool {
    p.urn.as_deref().is_none_or(|u| u.eq_ignore_ascii_case(USER_SCHEMA))
}

fn column(path: &AttrPath) -> ScimResult<UserColumn> {
    let unsupported = || ScimError::invalid_filter(format!("`{path}` is not a filterable attribute"));
    if !urn_ok(path) {
        return Err(unsupported());
    }
    let attr = path.attr.to_ascii_lowercase();
    let sub = path.sub.as_deref().map(str::to_ascii_lowercase);
    Ok(match (attr.as_str(), sub.as_deref()) {
        ("id", None) => UserColumn::Id,
        ("username", None) => UserColumn::UserName,
        ("externalid", None) => UserColumn::ExternalId,
        ("displayname", None) => UserColumn::DisplayName,
        ("emails", None | Some("value")) => UserColumn::Email,
        ("active", None) => UserColumn::Status,
        _ => return Err(unsupported()),
    })
}

fn compare(column: UserColumn, op: CompareOp, value: &CompValue) -> ScimResult<Match<UserColumn>> {
    let cmp = op;
    if column == UserColumn::Status {
        let CompValue::Bool(b) = value else {
            return Err(ScimError::invalid_filter("`active` compares with true or false"));
        };
        let status = if *b { "active" } else { "disabled" };
        return match cmp {
            Cmp::Eq => Ok(Match::Cmp(column, Cmp::Eq, status.into())),
            Cmp::Ne => Ok(Match::Cmp(column, Cmp::Ne, status.into())),
            _ => Err(ScimError::invalid_filter("`active` takes eq and ne only")),
        };
    }
    match value {
        CompValue::Str(s) => Ok(Match::Cmp(column, cmp, s.clone())),
        CompValue::Null if cmp == Cmp::Eq => Ok(Match::Not(Box::new(Match::Present(column)))),
        CompValue::Null if cmp == Cmp::Ne => Ok(Match::Present(column)),
        _ => Err(ScimError::invalid_filter(format!("`{}` compares with a string", column_name(column)))),
    }
}

fn column_name(c: UserColumn) -> &'static str {
    match c {
        UserColumn::Id => "id",
        UserColumn::UserName => "userName",
        UserColumn::ExternalId => "externalId",
        UserColumn::DisplayName => "displayName",
        UserColumn::Email => "emails.value",
        UserColumn::Status => "active",
    }
}
