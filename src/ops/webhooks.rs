//! Webhook subscriptions: created and deleted by their owner, each change audited.

use serde_json::json;

use crate::audit::NewEvent;
use crate::domain::access::{AnyRole, Capability, WebhookOwner, WebhookOwnerOf};
use crate::domain::*;
use crate::store::webhooks::{self, Webhook};
use crate::store::Tx;

#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    /// An absolute `https://` or `http://` URL. The pattern admits host names
    /// only: a literal private, loopback or link-local address, or `localhost`, is refused unless
    /// the operator allows private addresses; a public literal address is accepted too.
    #[schema(
        max_length = 2048,
        pattern = "^https?://([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]{2,63}(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?(/[a-zA-Z0-9._~/-]*)?$"
    )]
    pub url: String,
    /// Audit actions to deliver (e.g. `session.revoked`); empty or absent: every event you may see.
    #[schema(max_items = 64, value_type = Option<Vec<ActionName>>)]
    pub events: Option<Vec<String>>,
}

/// The schema of an audit action name in a webhook's `events` (what `check_events` accepts).
pub struct ActionName;

impl utoipa::PartialSchema for ActionName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .min_length(Some(1))
            .max_length(Some(64))
            .pattern(Some("^[a-z_.]{1,64}$"))
            .description(Some("an audit action, e.g. `session.revoked`"))
            .into()
    }
}

impl utoipa::ToSchema for ActionName {}

fn check_url(url: &str, allow_private: bool) -> Result<()> {
    let url = clean_text("url", url, 2048)?;
    let parsed: axum::http::Uri = url.parse().map_err(|_| Error::invalid("`url` is not a valid URL"))?;
    match parsed.scheme_str() {
        Some("http" | "https") if !port_is_valid(&parsed) => Err(Error::invalid("`url` has a port outside 1-65535")),
        Some("http" | "https") if parsed.host().is_some() => {
            match parsed.host().and_then(crate::events::destinations::refused_host).filter(|_| !allow_private) {
                Some(why) => Err(Error::invalid(why)),
                None => Ok(()),
            }
        }
        _ => Err(Error::invalid("`url` must be an absolute http:// or https:// URL")),
    }
}

/// An explicit port must be 1-65535 (`Uri` takes any digits and then reports no port at all).
fn port_is_valid(url: &axum::http::Uri) -> bool {
    let authority = url.authority().map_or("", |a| a.as_str());
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, rest)| rest);
    let after_host = host_port.rfind(']').map_or(host_port, |end| &host_port[end..]);
    match after_host.rsplit_once(':') {
        Some((_, "")) | None => true,
        Some((_, port)) => port.parse::<u16>().is_ok_and(|p| p > 0),
    }
}

fn check_events(events: &[String]) -> Result<()> {
    if events.len() > 64 {
        return Err(Error::invalid("`events` lists more than 64 actions"));
    }
    for e in events {
        let ok = (1..=64).contains(&e.len()) && e.bytes().all(|b| matches!(b, b'a'..=b'z' | b'_' | b'.'));
        if !ok {
            return Err(Error::invalid(format!(
                "`events`: {:?} is not an action name like session.revoked",
                e.chars().take(64).collect::<String>()
            )));
        }
    }
    Ok(())
}

/// Subscribes the caller's webhook. `allow_private` is the operator's choice
/// (`DeliveryPolicy::allow_private_addresses`): without it a literal private address is refused.
pub fn create(tx: &mut Tx<'_>, caller: &WebhookOwner, req: NewWebhook, allow_private: bool) -> Result<Webhook> {
    check_url(&req.url, allow_private)?;
    let events = req.events.unwrap_or_default();
    check_events(&events)?;
    let webhook = Webhook { id: WebhookId::generate(), url: req.url, events, created_at: tx.now() };
    let (role, owner) = caller.owner();
    webhooks::insert_webhook(tx, &webhook, role, &owner)?;
    let mut details = json!({"url": webhook.url, "events": webhook.events, "owner_role": role});
    if let Role::Platform(p) = caller.caller().role {
        details["platform_id"] = json!(p);
    }
    tx.audit(NewEvent::new(caller.actor(), "webhook.created", Subject::new("webhook", webhook.id)).details(details))?;
    Ok(webhook)
}

pub fn delete(tx: &mut Tx<'_>, caller: &AnyRole, id: WebhookId) -> Result<Webhook> {
    let (role, owner) = caller.owner();
    let webhook = webhooks::get_webhook(tx.conn(), role, &owner, id)?;
    webhooks::delete_webhook(tx, id)?;
    let mut details = json!({"url": webhook.url});
    if let Role::Platform(p) = caller.caller().role {
        details["platform_id"] = json!(p);
    }
    tx.audit(NewEvent::new(caller.actor(), "webhook.deleted", Subject::new("webhook", id)).details(details))?;
    Ok(webhook)
}
