//! Applying parsed PATCH operations to a resource's JSON: resolving each path against the
//! target's schema, value filters included, and the shapes Okta and Entra send.

use serde_json::{Map, Value};

use super::{external_id, normalize, ActiveChange, OpKind, Operation, Target};
use crate::api::scim::filter::{self, AttrPath, CompValue, CompareOp, Filter, PatchPath};
use crate::api::scim::protocol::{ScimError, ScimResult};
use crate::api::scim::schema::{self, Attr, Kind, Mutability};

/// An attribute a path or a body names: one of the schema's, or the common `externalId`.
enum Named {
    Attr(&'static Attr),
    ExternalId,
    /// A standard attribute tether does not hold.
    NotHeld,
}

/// Resolves an attribute path against the target's schema. `None`: an attribute tether does not
/// hold (a known read-only common attribute is a `mutability` error).
fn resolve(target: &Target, path: &AttrPath) -> ScimResult<Option<Named>> {
    if let Some(urn) = &path.urn {
        if target.not_held_urns.iter().any(|u| u.eq_ignore_ascii_case(urn)) {
            return Ok(Some(Named::NotHeld));
        }
        if !urn.eq_ignore_ascii_case(target.urn) {
            return Ok(None);
        }
    }
    if target.not_held.iter().any(|a| a.eq_ignore_ascii_case(&path.attr)) {
        return Ok(Some(Named::NotHeld));
    }
    if path.attr.eq_ignore_ascii_case("externalId") && path.sub.is_none() {
        return Ok(Some(Named::ExternalId));
    }
    if schema::COMMON.iter().any(|c| c.eq_ignore_ascii_case(&path.attr)) {
        return Err(ScimError::bad("mutability", format!("`{}` is read-only", path.attr)));
    }
    let Some(attr) = schema::find(target.attrs, &path.attr) else { return Ok(None) };
    if let Some(sub) = &path.sub {
        if schema::find(attr.sub, sub).is_none() {
            return Ok(None);
        }
    }
    Ok(Some(Named::Attr(attr)))
}

fn case_exact_in(attr: &'static Attr) -> impl Fn(&AttrPath) -> bool {
    move |p: &AttrPath| {
        let name = p.sub.as_deref().unwrap_or(&p.attr);
        schema::find(attr.sub, name).is_some_and(|a| a.case_exact)
    }
}

/// Applies the operations in order to `resource` (canonical JSON). Any error leaves the caller's
/// stored resource untouched: this works on a copy the caller writes only when all succeed.
pub fn apply(
    target: &Target,
    resource: &mut Map<String, Value>,
    ops: &[Operation],
) -> ScimResult<Option<ActiveChange>> {
    let mut active = None;
    for op in ops {
        match &op.path {
            Some(path) => {
                if let Some(change) = apply_path(target, resource, op.op, path, op.value.as_ref(), true)? {
                    active = Some(change);
                }
            }
            None => {
                if op.op == OpKind::Remove {
                    return Err(ScimError::bad("noTarget", "a remove operation needs a `path`"));
                }
                let Some(Value::Object(values)) = &op.value else {
                    return Err(ScimError::invalid_value("an operation without `path` needs an object `value`"));
                };
                for (key, value) in values {
                    // A key is an attribute path (`name.givenName`, a URN-qualified name); keys
                    // that name nothing tether holds are dropped, as in a PUT body.
                    let Ok(path) = filter::parse_path(key) else { continue };
                    if path.filter.is_some() {
                        continue;
                    }
                    match apply_path(target, resource, op.op, &path, Some(value), false) {
                        Ok(Some(change)) => active = Some(change),
                        Ok(None) => {}
                        // Read-only attributes are dropped as in a PUT body: Okta's group
                        // rename sends the group's own `id` beside the new `displayName`.
                        Err(e) if matches!(e.scim_type, Some("invalidPath" | "mutability")) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }
    Ok(active)
}

fn apply_path(
    target: &Target,
    resource: &mut Map<String, Value>,
    op: OpKind,
    path: &PatchPath,
    value: Option<&Value>,
    explicit: bool,
) -> ScimResult<Option<ActiveChange>> {
    let unknown = || ScimError::bad("invalidPath", format!("`{}` is not an attribute of this resource", path.attr));
    let named = resolve(target, &path.attr)?.ok_or_else(unknown)?;
    let attr = match named {
        Named::ExternalId => {
            if path.filter.is_some() {
                return Err(ScimError::bad("invalidPath", "`externalId` is single-valued"));
            }
            match op {
                OpKind::Remove => {
                    resource.remove("externalId");
                }
                _ => {
                    let v = external_id(value.unwrap_or(&Value::Null))?;
                    if v.is_null() {
                        resource.remove("externalId");
                    } else {
                        resource.insert("externalId".into(), v);
                    }
                }
            }
            return Ok(None);
        }
        Named::NotHeld => return Ok(None),
        Named::Attr(attr) => attr,
    };
    if attr.mutability == Mutability::ReadOnly {
        return Err(ScimError::bad("mutability", format!("`{}` is read-only", attr.name)));
    }
    let mut change = None;
    if attr.name == "active" && op != OpKind::Remove {
        let value_type = if value.is_some_and(Value::is_string) { "string" } else { "boolean" };
        change = Some(ActiveChange { shape: if explicit { "patch_path_active" } else { "patch_no_path" }, value_type });
    }
    let key = attr.name;
    if let Some(filter) = &path.filter {
        if !attr.multi || attr.kind != Kind::Complex {
            return Err(ScimError::bad("invalidPath", format!("`{key}` takes no value filter")));
        }
        let exact = case_exact_in(attr);
        if op != OpKind::Remove && !resource.get(key).is_some_and(Value::is_array) {
            resource.insert(key.to_owned(), Value::Array(Vec::new()));
        }
        let items = match resource.get_mut(key) {
            Some(Value::Array(items)) => items,
            _ => return Ok(change),
        };
        let mut hits: Vec<usize> = (0..items.len()).filter(|&i| filter::matches(filter, &items[i], &exact)).collect();
        // Entra writes `emails[type eq "work"].value` whether or not a work address exists yet: a
        // filter that is one `eq` on a sub-attribute names the value to create when none matches.
        if hits.is_empty() && op != OpKind::Remove {
            if let Filter::Compare { path: on, op: CompareOp::Eq, value: CompValue::Str(wanted) } = filter {
                if let Some(sub) = schema::find(attr.sub, on.sub.as_deref().unwrap_or(&on.attr)) {
                    let mut created = Map::new();
                    created.insert(sub.name.to_owned(), Value::String(wanted.clone()));
                    items.push(Value::Object(created));
                    hits.push(items.len() - 1);
                }
            }
        }
        match op {
            OpKind::Remove => {
                match &path.sub {
                    None => {
                        let mut i = 0;
                        items.retain(|_| {
                            i += 1;
                            !hits.contains(&(i - 1))
                        });
                    }
                    Some(sub) => {
                        let sub = schema::find(attr.sub, sub).ok_or_else(unknown)?;
                        for &i in &hits {
                            if let Some(o) = items[i].as_object_mut() {
                                o.remove(sub.name);
                            }
                        }
                    }
                }
                if items.is_empty() {
                    resource.remove(key);
                }
            }
            OpKind::Add | OpKind::Replace => {
                if hits.is_empty() {
                    return Err(ScimError::bad("noTarget", format!("no value of `{key}` matches the filter")));
                }
                let value = value.unwrap_or(&Value::Null);
                for &i in &hits {
                    let Some(item) = items[i].as_object_mut() else { continue };
                    match &path.sub {
                        Some(sub) => {
                            let sub = schema::find(attr.sub, sub).ok_or_else(unknown)?;
                            let v = normalize(sub, value)?;
                            if v.is_null() {
                                item.remove(sub.name);
                            } else {
                                item.insert(sub.name.to_owned(), v);
                            }
                        }
                        None => {
                            let single = Attr { multi: false, ..*attr };
                            if let Value::Object(fields) = normalize(&single, value)? {
                                item.extend(fields);
                            }
                        }
                    }
                }
            }
        }
        return Ok(change);
    }
    if let Some(sub) = &path.attr.sub {
        // `name.givenName`, `emails.value`: a sub-attribute of a complex attribute.
        let sub = schema::find(attr.sub, sub).ok_or_else(unknown)?;
        if attr.multi {
            // Every value's sub-attribute (RFC 7644 §3.5.2: applies to all values).
            let Some(Value::Array(items)) = resource.get_mut(key) else {
                return if op == OpKind::Remove {
                    Ok(change)
                } else {
                    Err(ScimError::bad("noTarget", format!("`{key}` has no values")))
                };
            };
            for item in items.iter_mut().filter_map(Value::as_object_mut) {
                set_or_remove(item, sub, op, value)?;
            }
            return Ok(change);
        }
        let entry = resource.entry(key.to_owned()).or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(fields) = entry {
            set_or_remove(fields, sub, op, value)?;
            if fields.is_empty() {
                resource.remove(key);
            }
        }
        return Ok(change);
    }
    match op {
        OpKind::Remove => {
            if attr.required {
                return Err(ScimError::bad("mutability", format!("`{key}` is required and cannot be removed")));
            }
            match (attr.multi, value) {
                // Entra: `Remove` of `members` with the values to remove.
                (true, Some(listed)) if !listed.is_null() => {
                    let listed = normalize(attr, listed)?;
                    let gone: Vec<&Value> =
                        listed.as_array().into_iter().flatten().filter_map(|v| v.get("value")).collect();
                    if let Some(Value::Array(items)) = resource.get_mut(key) {
                        items.retain(|i| !i.get("value").is_some_and(|v| gone.contains(&v)));
                        if items.is_empty() {
                            resource.remove(key);
                        }
                    }
                }
                _ => {
                    resource.remove(key);
                }
            }
        }
        OpKind::Add | OpKind::Replace => {
            let v = normalize(attr, value.unwrap_or(&Value::Null))?;
            let empty = v.as_array().is_some_and(Vec::is_empty);
            if v.is_null() || (empty && op == OpKind::Replace) {
                resource.remove(key);
            } else if attr.multi && op == OpKind::Add {
                let items = resource.entry(key.to_owned()).or_insert_with(|| Value::Array(Vec::new()));
                if !items.is_array() {
                    *items = Value::Array(Vec::new());
                }
                if let (Value::Array(items), Value::Array(new)) = (items, v) {
                    for n in new {
                        // Members are the same member when their `value` is; other values when equal.
                        let same = |i: &Value| match (i.get("value"), n.get("value")) {
                            (Some(a), Some(b)) if key == "members" => a == b,
                            _ => *i == n,
                        };
                        if !items.iter().any(same) {
                            items.push(n);
                        }
                    }
                }
            } else if attr.kind == Kind::Complex && !attr.multi {
                // A complex attribute's given sub-attributes replace theirs; the rest stay.
                let entry = resource.entry(key.to_owned()).or_insert_with(|| Value::Object(Map::new()));
                if let (Value::Object(fields), Value::Object(new)) = (entry, v) {
                    fields.extend(new);
                }
            } else {
                resource.insert(key.to_owned(), v);
            }
        }
    }
    Ok(change)
}

fn set_or_remove(fields: &mut Map<String, Value>, sub: &Attr, op: OpKind, value: Option<&Value>) -> ScimResult<()> {
    let v = match op {
        OpKind::Remove => Value::Null,
        _ => normalize(sub, value.unwrap_or(&Value::Null))?,
    };
    if v.is_null() {
        fields.remove(sub.name);
    } else {
        fields.insert(sub.name.to_owned(), v);
    }
    Ok(())
}
