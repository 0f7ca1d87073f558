//! `/scim/v2/Groups`: groups and their members as the identity provider manages them. What a
//! group grants is set by an admin through `PUT /v1/groups/{id}/permissions`, never by SCIM.

use std::collections::BTreeSet;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Map, Value};

use super::filter::{AttrPath, CompValue, Filter};
use super::patch::{self, OpKind, Target};
use super::protocol::{base_url, created, list_response, scim_json, ScimAllowed, ScimBody, ScimError, ScimResult};
use super::schema::GROUP_SCHEMA;
use super::users::{answer_projection, list_request, ListQuery, ListRequest};
use crate::api::AppState;
use crate::domain::access::{Capability, Provisioner};
use crate::domain::text::required_text;
use crate::domain::*;
use crate::ops::groups::{self as ops, GroupSpec, MAX_MEMBERS_PER_REQUEST};
use crate::store::groups::{self, GroupColumn};
use crate::store::matching::{Cmp, Match};
use crate::store::Tx;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/Groups", get(list).post(create))
        .route("/Groups/{id}", get(get_one).put(replace).patch(modify).delete(remove))
}

const TARGET: Target = super::schema::GROUP_TARGET;

fn group_id(text: &str) -> ScimResult<GroupId> {
    GroupId::parse(text).map_err(|_| ScimError::not_found("group"))
}

pub fn render(group: &Group, base: &str) -> Value {
    let mut out = Map::new();
    out.insert("schemas".into(), json!([GROUP_SCHEMA]));
    out.insert("id".into(), json!(group.id));
    for (key, value) in working_copy(group, base) {
        out.insert(key, value);
    }
    out.insert(
        "meta".into(),
        json!({
            "resourceType": "Group",
            "created": group.created_at.rfc3339(),
            "lastModified": group.modified_at.rfc3339(),
            "location": format!("{base}/Groups/{}", group.id),
        }),
    );
    Value::Object(out)
}

fn working_copy(group: &Group, base: &str) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("displayName".into(), json!(group.display_name));
    if let Some(e) = &group.external_id {
        out.insert("externalId".into(), json!(e));
    }
    if !group.members.is_empty() {
        let members: Vec<Value> = group
            .members
            .iter()
            .map(|m| json!({"value": m, "$ref": format!("{base}/Users/{m}"), "type": "User"}))
            .collect();
        out.insert("members".into(), Value::Array(members));
    }
    out
}

/// The members a request names, counted as sent (duplicates included), bounded.
fn count_members(values: &[&Value]) -> ScimResult<()> {
    let named: usize = values.iter().map(|v| v.as_array().map_or(1, Vec::len)).sum();
    if named > MAX_MEMBERS_PER_REQUEST {
        return Err(ScimError::invalid_value(format!(
            "at most {MAX_MEMBERS_PER_REQUEST} members per request; send larger changes as several PATCH requests"
        )));
    }
    Ok(())
}

fn desired(map: &Map<String, Value>) -> ScimResult<GroupSpec> {
    let invalid = |e: Error| ScimError::invalid_value(e.to_string());
    let display_name = map
        .get("displayName")
        .and_then(Value::as_str)
        .ok_or_else(|| ScimError::invalid_value("`displayName` is required"))?;
    let display_name = required_text("displayName", display_name, 256).map_err(invalid)?;
    let external_id = map
        .get("externalId")
        .and_then(Value::as_str)
        .map(|e| required_text("externalId", e, 256))
        .transpose()
        .map_err(invalid)?;
    let mut members = BTreeSet::new();
    for m in map.get("members").and_then(Value::as_array).into_iter().flatten() {
        let value = m
            .get("value")
            .and_then(Value::as_str)
            .ok_or_else(|| ScimError::invalid_value("each member needs a `value`: the user's id"))?;
        let id = UserId::parse(value)
            .map_err(|_| ScimError::invalid_value(format!("member {value:?} is not a user id (`usr_…`)")))?;
        members.insert(id);
    }
    Ok(GroupSpec { display_name, external_id, members })
}

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
    let normalized = patch::normalize_resource(&TARGET, &body)?;
    count_members(&normalized.get("members").into_iter().collect::<Vec<_>>())?;
    let spec = desired(&normalized)?;
    let mut body = scim_write(&state, caller, move |tx| {
        let group = ops::create_group(tx, &caller, spec)?;
        Ok(Ok(render(&group, &base)))
    })
    .await?;
    projection.apply(&mut body);
    Ok(created(&body))
}

pub async fn get_one(
    State(state): State<AppState>,
    ScimAllowed(_caller): ScimAllowed<Provisioner>,
    Path(id): Path<String>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ScimResult {
    let projection = answer_projection(query)?;
    let id = group_id(&id)?;
    let base = base_url(&state);
    let mut body = state.readers.read(move |conn| Ok(render(&groups::get_group(conn, id)?, &base))).await?;
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
            let (total, found) = groups::find_groups(conn, &condition, window.offset(), window.count)?;
            Ok((total, found.iter().map(|g| render(g, &base)).collect::<Vec<_>>()))
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
    let id = group_id(&id)?;
    let base = base_url(&state);
    let normalized = patch::normalize_resource(&TARGET, &body)?;
    count_members(&normalized.get("members").into_iter().collect::<Vec<_>>())?;
    let spec = desired(&normalized)?;
    let mut body = scim_write(&state, caller, move |tx| {
        let (group, _receipt) = ops::replace_group(tx, &caller, id, spec)?;
        Ok(Ok(render(&group, &base)))
    })
    .await?;
    projection.apply(&mut body);
    Ok(scim_json(StatusCode::OK, &body))
}

/// PATCH answers 204 (RFC 7644 §3.5.2 allows it; Entra expects it): a group's whole member list
/// is not sent back for every change of it.
pub async fn modify(
    State(state): State<AppState>,
    ScimAllowed(caller): ScimAllowed<Provisioner>,
    Path(id): Path<String>,
    ScimBody(body): ScimBody,
) -> ScimResult {
    let id = group_id(&id)?;
    let base = base_url(&state);
    let operations = patch::parse_operations(&body)?;
    let values: Vec<&Value> = operations
        .iter()
        .filter(|o| o.op != OpKind::Remove || o.path.is_some())
        .filter_map(|o| o.value.as_ref())
        .collect();
    count_members(&values)?;
    scim_write(&state, caller, move |tx| {
        let group = groups::get_group(tx.conn(), id)?;
        let mut next = working_copy(&group, &base);
        if let Err(e) = patch::apply(&TARGET, &mut next, &operations) {
            return Ok(Err(e));
        }
        let spec = match desired(&next) {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        ops::replace_group(tx, &caller, id, spec)?;
        Ok(Ok(Value::Null))
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn remove(
    State(state): State<AppState>,
    ScimAllowed(caller): ScimAllowed<Provisioner>,
    Path(id): Path<String>,
) -> ScimResult {
    let id = group_id(&id)?;
    state.writer.execute_as(caller.caller(), move |tx| ops::delete_group(tx, &caller, id).map(drop)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn to_match(filter: &Filter) -> ScimResult<Match<GroupColumn>> {
    Ok(match filter {
        Filter::And(a, b) => Match::All(vec![to_match(a)?, to_match(b)?]),
        Filter::Or(a, b) => Match::Any(vec![to_match(a)?, to_match(b)?]),
        Filter::Not(a) => Match::Not(Box::new(to_match(a)?)),
        Filter::Present(path) => Match::Present(column(path)?),
        Filter::Compare { path, op, value } => {
            let column = column(path)?;
            let cmp = *op;
            match value {
                CompValue::Str(s) => Match::Cmp(column, cmp, s.clone()),
                CompValue::Null if cmp == Cmp::Eq => Match::Not(Box::new(Match::Present(column))),
                CompValue::Null if cmp == Cmp::Ne => Match::Present(column),
                _ => return Err(ScimError::invalid_filter(format!("`{path}` compares with a string"))),
            }
        }
        Filter::ValuePath { attr, .. } => {
            return Err(ScimError::invalid_filter(format!(
                "`{attr}[…]`: groups are filterable by displayName, externalId and id"
            )))
        }
    })
}

fn column(path: &AttrPath) -> ScimResult<GroupColumn> {
    let unsupported = || ScimError::invalid_filter(format!("`{path}` is not a filterable attribute"));
    if path.urn.as_deref().is_some_and(|u| !u.eq_ignore_ascii_case(GROUP_SCHEMA)) || path.sub.is_some() {
        return Err(unsupported());
    }
    Ok(match path.attr.to_ascii_lowercase().as_str() {
        "id" => GroupColumn::Id,
        "displayname" => GroupColumn::DisplayName,
        "externalid" => GroupColumn::ExternalId,
        _ => return Err(unsupported()),
    })
}
