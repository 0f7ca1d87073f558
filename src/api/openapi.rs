//! The OpenAPI document, generated from the handlers' and types' annotations.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::*;

#[derive(OpenApi)]
#[openapi(
    info(title = "tether", description = "Delegated-session governor for AI agents"),
    paths(
        credentials::create, credentials::list, credentials::revoke,
        objects::create_platform, objects::list_platforms, objects::get_platform, objects::disable_platform,
        objects::create_agent, objects::list_agents, objects::get_agent, objects::suspend_agent,
        objects::resume_agent, objects::deregister_agent,
        objects::create_integration, objects::list_integrations, objects::get_integration, objects::disable_integration,
        users::create, users::list, users::get_one, users::set_permissions, users::disable, users::enable,
        users::lifecycle_event, users::sign_out_all, users::disconnect_agent, users::disconnect_integration,
        delegations::create, delegations::list, delegations::get_one, delegations::revoke,
        sessions::create, sessions::list, sessions::get_one, sessions::revoke, sessions::refresh,
        keys::list_keys, keys::rotate, keys::retire, keys::revocations,
        events::events, oauth::introspect, oauth::revoke, webhooks::create, webhooks::list, webhooks::remove, webhooks::deliveries,
        authorize::authorize,
        audit::list, audit::verify, audit::export, audit::coverage_report, audit::checkpoint, audit::verify_checkpoint,
        operations::healthz, operations::metrics, operations::openapi,
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

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
