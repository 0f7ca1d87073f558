//! The OpenAPI document, generated from the handlers' and types' annotations.

use serde_json::{json, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::*;

#[derive(OpenApi)]
#[openapi(
    info(title = "tether", description = "Delegated-session governor for AI agents"),
    paths(
        credentials::create, credentials::list, credentials::revoke,
        platforms::create_platform, platforms::list_platforms, platforms::get_platform, platforms::disable_platform,
        platforms::create_agent, platforms::list_agents, platforms::get_agent, platforms::suspend_agent,
        platforms::resume_agent, platforms::deregister_agent,
        platforms::create_integration, platforms::list_integrations, platforms::get_integration, platforms::disable_integration,
        users::create, users::list, users::get_one, users::set_permissions, users::disable, users::enable,
        users::lifecycle_event, users::sign_out_all, users::disconnect_agent, users::disconnect_integration,
        groups::list, groups::get_one, groups::set_permissions,
        delegations::create, delegations::list, delegations::get_one, delegations::revoke,
        sessions::create, sessions::list, sessions::get_one, sessions::revoke, sessions::refresh,
        keys::list_keys, keys::rotate, keys::retire, keys::revocations,
        events::events, oauth::introspect, oauth::revoke, webhooks::create, webhooks::list, webhooks::remove, webhooks::deliveries,
        authorize::authorize,
        audit::list, audit::verify, audit::export, audit::coverage_report, audit::checkpoint, audit::verify_checkpoint,
        operations::healthz, operations::metrics, operations::openapi,
        metadata::authorization_server, metadata::protected_resource,
        oauth_token::token, ssf::configuration, ssf::jwks, ssf::create_stream, ssf::read_streams, ssf::patch_stream,
        ssf::put_stream, ssf::delete_stream, ssf::get_status, ssf::set_status, ssf::add_subject, ssf::remove_subject,
        ssf::verify, ssf::poll,
        signals::create, signals::list, signals::get_one, signals::disable, signals::push,
        global_revocation::revoke,
        console::create_link,
    ),
    components(schemas(problem::Problem)),
    modifiers(&BearerAuth, &ProblemAnswers),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Every `/v1` route answers its client errors (bad input, no or wrong credential, not found,
/// conflict, unsupported media type, too large) as problem+json: one `4XX` entry each, rather
/// than the same six responses written on every route.
struct ProblemAnswers;

impl Modify for ProblemAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let answer = ResponseBuilder::new()
            .description("The request was refused: a problem+json body (RFC 9457) names why")
            .content(
                "application/problem+json",
                ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build(),
            )
            .build();
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/v1/") {
                continue;
            }
            let operations = [&mut item.get, &mut item.post, &mut item.put, &mut item.delete, &mut item.patch];
            for operation in operations.into_iter().flatten() {
                operation.responses.responses.entry("4XX".to_owned()).or_insert_with(|| answer.clone().into());
            }
        }
    }
}

/// The document: what utoipa generates from the annotations, made exact where a Rust type says
/// less than the server enforces (see [`exact`]).
pub fn document() -> utoipa::openapi::OpenApi {
    let generated = ApiDoc::openapi();
    let Ok(mut value) = serde_json::to_value(&generated) else { return generated };
    exact(&mut value);
    serde_json::from_value(value).unwrap_or(generated)
}

/// Rules the Rust types cannot carry into the document, written out so that every request the
/// document admits is one the server accepts, and every one it refuses the server refuses too:
///
/// - an optional body (`{reason?}`, `{purpose?}`) is a body that may be left out, not `null`;
/// - a credential's `platform_id` and `user_id` go with its role (one schema per role);
/// - agents, integrations, delegations and sessions need at least one scope;
/// - an admin must name the `platform_id` of a new agent or integration. A platform may leave it
///   out (its own platform is meant), which a schema cannot say per role: the field is required
///   here, which is exact for admins and only stricter than the server for platforms.
fn exact(document: &mut Value) {
    for item in document["paths"].as_object_mut().into_iter().flat_map(|paths| paths.values_mut()) {
        for operation in item.as_object_mut().into_iter().flat_map(|item| item.values_mut()) {
            let body = &mut operation["requestBody"];
            let Some(content) = body.get_mut("content").and_then(Value::as_object_mut) else { continue };
            let mut optional = false;
            for media in content.values_mut() {
                let schema = &mut media["schema"];
                let inner = schema["oneOf"].as_array().and_then(|alternatives| match alternatives.as_slice() {
                    [null, inner] if null == &json!({"type": "null"}) => Some(inner.clone()),
                    _ => None,
                });
                if let Some(inner) = inner {
                    *schema = inner;
                    optional = true;
                }
            }
            if optional {
                body["required"] = json!(false);
                body["description"] = json!("May be left out: an empty body reads as `{}`.");
            }
        }
    }
    let schemas = &mut document["components"]["schemas"];
    let id = |name: &str| json!({"$ref": format!("#/components/schemas/{name}")});
    let common = |extra: Value| {
        let mut properties = json!({
            "label": {"oneOf": [{"type": "null"}, id("Label")]},
            "ttl_seconds": {"oneOf": [{"type": "null"}, id("CredentialTtl")]},
        });
        if let (Some(properties), Some(extra)) = (properties.as_object_mut(), extra.as_object()) {
            properties.extend(extra.clone());
        }
        properties
    };
    schemas["NewCredential"] = json!({
        "description": "A new API credential. `platform_id` is required with the platform role, optional with the receiver role, and refused with the others; `user_id` is required with the user role and only there.",
        "oneOf": [
            {
                "type": "object",
                "required": ["role"],
                "properties": common(json!({
                    "role": {"type": "string", "enum": ["admin", "auditor", "verifier", "provisioner"]},
                    "platform_id": {"type": "null"},
                    "user_id": {"type": "null"},
                })),
                "additionalProperties": false,
            },
            {
                "type": "object",
                "required": ["role", "platform_id"],
                "properties": common(json!({
                    "role": {"type": "string", "enum": ["platform"]},
                    "platform_id": id("PlatformId"),
                    "user_id": {"type": "null"},
                })),
                "additionalProperties": false,
            },
            {
                "type": "object",
                "required": ["role"],
                "properties": common(json!({
                    "role": {"type": "string", "enum": ["receiver"]},
                    "platform_id": {"oneOf": [id("PlatformId"), {"type": "null"}]},
                    "user_id": {"type": "null"},
                })),
                "additionalProperties": false,
            },
            {
                "type": "object",
                "required": ["role", "user_id"],
                "properties": common(json!({
                    "role": {"type": "string", "enum": ["user"]},
                    "platform_id": {"type": "null"},
                    "user_id": id("UserId"),
                })),
                "additionalProperties": false,
            },
        ],
    });
    // A console link is for a person (`user_id`, role `user` or absent) or for a staff role.
    schemas["NewConsoleLink"] = json!({
        "description": "`{user_id}` signs a person in (role `user`, the default); `{role: auditor|admin}` an auditor or admin (admins only), with no `user_id`.",
        "oneOf": [
            {
                "type": "object",
                "required": ["user_id"],
                "properties": {"user_id": id("UserId"), "role": {"type": "string", "enum": ["user"]}},
                "additionalProperties": false,
            },
            {
                "type": "object",
                "required": ["role"],
                "properties": {"role": {"type": "string", "enum": ["auditor", "admin"]}, "user_id": {"type": "null"}},
                "additionalProperties": false,
            },
        ],
    });
    // An array of 1 to 256 scopes (the server refuses an empty one on these fields), inline:
    // `minItems` beside a `$ref` is not read by every tool.
    let mut non_empty = schemas["ScopeSet"].clone();
    non_empty["minItems"] = json!(1);
    let non_empty_scopes = || non_empty.clone();
    for name in ["NewAgent", "NewIntegration"] {
        let schema = &mut schemas[name];
        schema["required"] = json!(["name", "scopes", "platform_id"]);
        schema["properties"]["platform_id"] = json!({
            "allOf": [id("PlatformId")],
            "description": "The owning platform. Required when an admin creates it; a platform credential may leave it out (its own platform is meant) or must name its own.",
        });
        schema["properties"]["scopes"] = non_empty_scopes();
    }
    for name in ["NewDelegation", "NewSession"] {
        schemas[name]["properties"]["scopes"] = non_empty_scopes();
    }
}
