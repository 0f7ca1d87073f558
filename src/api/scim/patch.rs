//! PATCH (RFC 7644 §3.5.2) applied to a resource's JSON, with the shapes Okta and Entra send
//! normalised: operation names in any case, booleans as `"True"`/`"False"`, no-path operations
//! whose value object names attributes (dotted names included), Entra's `Remove` of `members`
//! with a value array. Also the normalisation of whole resources (POST, PUT): attribute names
//! to their schema spelling, booleans coerced, unknown attributes dropped.

mod apply;

pub use apply::apply;

use serde_json::{Map, Value};

use super::filter::{self, PatchPath};
use super::protocol::{ScimError, ScimResult, PATCH_SCHEMA};
use super::schema::{self, Attr, Kind, Mutability};

/// Most operations one PATCH request may carry.
pub const MAX_OPERATIONS: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Add,
    Replace,
    Remove,
}

/// One operation as parsed: its kind, its path, its value.
#[derive(Debug, Clone)]
pub struct Operation {
    pub op: OpKind,
    pub path: Option<PatchPath>,
    pub value: Option<Value>,
}

/// How a PATCH set `active`, for the audit event that records the request's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveChange {
    /// `patch_no_path` (Okta: `{"op":"replace","value":{"active":false}}`) or `patch_path_active`
    /// (`{"op":"replace","path":"active",…}`, Entra's default and with `aadOptscim062020`).
    pub shape: &'static str,
    /// `boolean`, or `string` for Entra's `"False"`.
    pub value_type: &'static str,
}

/// The schema a PATCH applies to: the resource's core schema URN and attributes.
pub struct Target {
    pub urn: &'static str,
    pub attrs: &'static [Attr],
    /// Attributes of the standard schemas that tether does not hold: a PATCH path naming one is
    /// accepted and changes nothing, as a PUT body's copy of it is dropped (Entra's default
    /// mappings write `title`, `phoneNumbers[type eq "work"].value`, the enterprise extension…).
    /// Any other unknown path is 400 `invalidPath`.
    pub not_held: &'static [&'static str],
    /// Extension schemas whose every attribute is treated as in `not_held`.
    pub not_held_urns: &'static [&'static str],
}

fn get_ci<'m>(map: &'m Map<String, Value>, key: &str) -> Option<&'m Value> {
    map.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v)
}

/// Parses a PatchOp body.
pub fn parse_operations(body: &Map<String, Value>) -> ScimResult<Vec<Operation>> {
    if let Some(schemas) = get_ci(body, "schemas") {
        let listed = schemas.as_array().is_some_and(|a| a.iter().any(|s| s.as_str() == Some(PATCH_SCHEMA)));
        if !listed {
            return Err(ScimError::invalid_syntax(format!("`schemas` must list {PATCH_SCHEMA}")));
        }
    }
    let Some(Value::Array(ops)) = get_ci(body, "Operations") else {
        return Err(ScimError::invalid_syntax("`Operations` must be an array of operations"));
    };
    if ops.is_empty() {
        return Err(ScimError::invalid_syntax("`Operations` is empty"));
    }
    if ops.len() > MAX_OPERATIONS {
        return Err(ScimError::invalid_value(format!("at most {MAX_OPERATIONS} operations per request")));
    }
    ops.iter()
        .map(|op| {
            let Value::Object(op) = op else { return Err(ScimError::invalid_syntax("an operation must be an object")) };
            let kind = match get_ci(op, "op").and_then(Value::as_str).map(str::to_ascii_lowercase).as_deref() {
                Some("add") => OpKind::Add,
                Some("replace") => OpKind::Replace,
                Some("remove") => OpKind::Remove,
                _ => return Err(ScimError::invalid_syntax("`op` must be add, replace or remove")),
            };
            let path = match get_ci(op, "path") {
                None | Some(Value::Null) => None,
                Some(Value::String(p)) if p.trim().is_empty() => None,
                Some(Value::String(p)) => {
                    Some(filter::parse_path(p).map_err(|e| ScimError::bad("invalidPath", format!("path `{p}`: {e}")))?)
                }
                Some(_) => return Err(ScimError::bad("invalidPath", "`path` must be a string")),
            };
            let value = get_ci(op, "value").cloned();
            if kind != OpKind::Remove && value.is_none() {
                return Err(ScimError::invalid_syntax("add and replace operations need a `value`"));
            }
            Ok(Operation { op: kind, path, value })
        })
        .collect()
}

/// A value for an attribute in its canonical form: sub-attribute names in schema spelling (unknown
/// ones dropped), booleans from `true`/`"True"`, strings checked. `Null` means "no value".
pub fn normalize(attr: &Attr, value: &Value) -> ScimResult<Value> {
    if value.is_null() {
        return Ok(Value::Null);
    }
    if attr.multi {
        let items: Vec<Value> = match value {
            Value::Array(items) => items.clone(),
            one => vec![one.clone()],
        };
        let single = Attr { multi: false, ..*attr };
        let items = items.iter().map(|i| normalize(&single, i)).collect::<ScimResult<Vec<_>>>()?;
        return Ok(Value::Array(items.into_iter().filter(|v| !v.is_null()).collect()));
    }
    match attr.kind {
        Kind::Boolean => match value {
            Value::Bool(b) => Ok(Value::Bool(*b)),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(Value::Bool(true)),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(Value::Bool(false)),
            _ => Err(ScimError::invalid_value(format!("`{}` must be a boolean", attr.name))),
        },
        Kind::String | Kind::Reference | Kind::DateTime => match value {
            Value::String(s) => Ok(Value::String(s.clone())),
            _ => Err(ScimError::invalid_value(format!("`{}` must be a string", attr.name))),
        },
        Kind::Complex => {
            let Value::Object(object) = value else {
                return Err(ScimError::invalid_value(format!("`{}` must be an object", attr.name)));
            };
            let mut out = Map::new();
            for (key, v) in object {
                if let Some(sub) = schema::find(attr.sub, key) {
                    let v = normalize(sub, v)?;
                    if !v.is_null() {
                        out.insert(sub.name.to_owned(), v);
                    }
                }
            }
            Ok(Value::Object(out))
        }
    }
}

fn external_id(value: &Value) -> ScimResult<Value> {
    match value {
        Value::Null | Value::String(_) => Ok(value.clone()),
        _ => Err(ScimError::invalid_value("`externalId` must be a string")),
    }
}

/// A whole resource body (POST, PUT) in canonical form: the schema's attributes and `externalId`;
/// read-only and unknown attributes are dropped, as RFC 7644 §3.3 and §3.5.1 let a service
/// provider do.
pub fn normalize_resource(target: &Target, body: &Map<String, Value>) -> ScimResult<Map<String, Value>> {
    let mut out = Map::new();
    for (key, value) in body {
        if key.eq_ignore_ascii_case("externalId") {
            let v = external_id(value)?;
            if !v.is_null() {
                out.insert("externalId".into(), v);
            }
        } else if let Some(attr) = schema::find(target.attrs, key) {
            if attr.mutability == Mutability::ReadOnly {
                continue;
            }
            let v = normalize(attr, value)?;
            if !v.is_null() {
                out.insert(attr.name.to_owned(), v);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const USER: Target = schema::USER_TARGET;
    const GROUP: Target = schema::GROUP_TARGET;

    fn ops(body: Value) -> Vec<Operation> {
        parse_operations(body.as_object().expect("object")).expect("parses")
    }

    fn user() -> Map<String, Value> {
        json!({"userName": "ada", "active": true, "emails": [{"value": "a@x.org", "type": "work", "primary": true}]})
            .as_object()
            .cloned()
            .expect("object")
    }

    #[test]
    fn every_deactivation_shape_sets_active_false_and_names_its_shape() {
        let cases = [
            (json!({"op": "replace", "value": {"active": false}}), "patch_no_path", "boolean"),
            (json!({"op": "replace", "path": "active", "value": false}), "patch_path_active", "boolean"),
            (json!({"op": "Replace", "path": "active", "value": "False"}), "patch_path_active", "string"),
        ];
        for (op, shape, value_type) in cases {
            let body = json!({"schemas": [PATCH_SCHEMA], "Operations": [op]});
            let mut u = user();
            let change = apply(&USER, &mut u, &ops(body)).expect("applies");
            assert_eq!(u["active"], json!(false));
            assert_eq!(change, Some(ActiveChange { shape, value_type }));
        }
    }

    #[test]
    fn paths_that_name_nothing_are_invalid_path_and_unmatched_replaces_are_no_target() {
        let mut u = user();
        let err =
            apply(&USER, &mut u, &ops(json!({"Operations": [{"op": "replace", "path": "shoeSize", "value": 1}]})))
                .expect_err("unknown attribute");
        assert_eq!(err.scim_type, Some("invalidPath"));
        let err = apply(
            &USER,
            &mut u,
            &ops(json!({"Operations": [{"op": "replace", "path": "emails[type eq \"home\" and primary eq true].value", "value": "h@x"}]})),
        )
        .expect_err("no match");
        assert_eq!(err.scim_type, Some("noTarget"));
        let err = apply(&USER, &mut u, &ops(json!({"Operations": [{"op": "remove", "path": "userName"}]})))
            .expect_err("required");
        assert_eq!(err.scim_type, Some("mutability"));
        let err = parse_operations(
            json!({"Operations": [{"op": "remove", "path": "members[value eq"}]}).as_object().expect("o"),
        )
        .expect_err("bad path");
        assert_eq!(err.scim_type, Some("invalidPath"));
        assert!(
            parse_operations(json!({"Operations": [{"op": "delete", "path": "x"}]}).as_object().expect("o")).is_err()
        );
    }

    #[test]
    fn okta_and_entra_member_changes_apply() {
        let mut g = json!({"displayName": "eng"}).as_object().cloned().expect("object");
        let add = json!({"Operations": [{"op": "add", "path": "members", "value": [{"value": "usr_a"}, {"value": "usr_b"}, {"value": "usr_c"}]}]});
        apply(&GROUP, &mut g, &ops(add.clone())).expect("add");
        apply(&GROUP, &mut g, &ops(add)).expect("add again is idempotent");
        assert_eq!(g["members"].as_array().map(Vec::len), Some(3));
        apply(&GROUP, &mut g, &ops(json!({"Operations": [{"op": "remove", "path": "members[value eq \"usr_a\"]"}]})))
            .expect("okta remove");
        apply(
            &GROUP,
            &mut g,
            &ops(json!({"Operations": [{"op": "Remove", "path": "members", "value": [{"value": "usr_b"}]}]})),
        )
        .expect("entra remove");
        assert_eq!(g["members"], json!([{"value": "usr_c"}]));
        apply(
            &GROUP,
            &mut g,
            &ops(json!({"Operations": [{"op": "replace", "value": {"displayName": "eng2", "members": []}}]})),
        )
        .expect("replace");
        assert_eq!(g.get("members"), None);
        assert_eq!(g["displayName"], "eng2");
    }

    #[test]
    fn no_path_values_may_name_sub_attributes_and_complex_values_merge() {
        let mut u = user();
        apply(
            &USER,
            &mut u,
            &ops(json!({"Operations": [{"op": "replace", "value": {"name.givenName": "Ada", "displayName": "A"}}]})),
        )
        .expect("dotted");
        apply(
            &USER,
            &mut u,
            &ops(json!({"Operations": [{"op": "add", "path": "name", "value": {"familyName": "L"}}]})),
        )
        .expect("merge");
        assert_eq!(u["name"], json!({"givenName": "Ada", "familyName": "L"}));
        apply(&USER, &mut u, &ops(json!({"Operations": [{"op": "replace", "path": "emails[type eq \"work\"].value", "value": "b@x.org"}]})))
            .expect("value path");
        assert_eq!(u["emails"][0]["value"], "b@x.org");
    }
}
