//! Platforms, agents, integrations: creation, and the state changes that cascade to delegations.

use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use super::cascade::{noop_receipt, Cascade};
use super::WithReason;
use crate::audit::NewEvent;
use crate::domain::access::{Admin, Capability, PlatformScope};
use crate::domain::*;
use crate::store::delegations::DelegationsOf;
use crate::store::platforms::{self, StatusTable};
use crate::store::{audit, credentials};
use crate::store::{Effect, Tx};

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPlatform {
    pub name: Name,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAgent {
    pub name: Name,
    pub scopes: ScopeSet,
    pub platform_id: Option<PlatformId>,
}

// The same fields as `NewAgent`, but a type of its own: as an alias, the OpenAPI document named
// the integration body `NewAgent`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewIntegration {
    pub name: Name,
    pub scopes: ScopeSet,
    pub platform_id: Option<PlatformId>,
}

pub fn create_platform(tx: &mut Tx<'_>, caller: &Admin, req: NewPlatform) -> Result<Platform> {
    let platform = Platform {
        id: PlatformId::generate(),
        name: req.name.into_string(),
        status: PlatformStatus::Active,
        created_at: tx.now(),
    };
    platforms::insert_platform(tx, &platform)?;
    tx.audit(
        NewEvent::new(caller.actor(), "platform.created", Subject::new("platform", platform.id))
            .details(json!({"name": platform.name})),
    )?;
    Ok(platform)
}

pub fn disable_platform(tx: &mut Tx<'_>, caller: &Admin, id: PlatformId, req: WithReason) -> Result<Receipt> {
    let reason = req.reason.map(Reason::into_string);
    let platform = platforms::get_platform(tx.conn(), caller.visibility(), id)?;
    let subject = Subject::new("platform", id);
    if platform.status == PlatformStatus::Disabled {
        let earlier = audit::last_event_for(tx.conn(), &id.to_string(), &["platform.disabled"])?;
        return Ok(noop_receipt(tx, earlier, subject));
    }
    platforms::set_status(tx, StatusTable::Platforms, &id.to_string(), PlatformStatus::Disabled.as_str())?;
    let mut cascade = Cascade::start(
        tx,
        NewEvent::new(caller.actor(), "platform.disabled", subject).reason(reason).details(json!({"platform_id": id})),
    )?;
    cascade.revoke_delegations(tx, DelegationsOf::Platform(id), "platform_disabled")?;
    // Its API credentials end with it: a disabled platform reads nothing either, and there is no
    // route to enable it again.
    for (credential, expires_at) in credentials::live_credentials_of_platform(tx.conn(), id)? {
        credentials::revoke_credential(tx, credential)?;
        // `platform_id` lets the platform's own webhooks and streams see the event.
        cascade.note(
            tx,
            "credential.revoked",
            Subject::new("credential", credential),
            "platform_disabled",
            json!({"platform_id": id}),
        )?;
        tx.effect(Effect::Credential { id: credential, revoked: true, expires_at });
    }
    cascade.receipt(tx)
}

/// The platform a platform-owned object is created under: the caller's own, or for an admin the
/// one named in the body.
fn owning_platform(tx: &Tx<'_>, caller: &PlatformScope, named: Option<PlatformId>) -> Result<PlatformId> {
    let platform = match (caller.platform(), named) {
        (Some(own), None) => own,
        (Some(own), Some(p)) if p == own => own,
        (Some(_), Some(_)) => return Err(Error::NotFound("platform")),
        (None, Some(p)) => p,
        (None, None) => return Err(Error::invalid("`platform_id` is required when an admin creates it")),
    };
    let found = platforms::get_platform(tx.conn(), caller.visibility(), platform)?;
    if found.status != PlatformStatus::Active {
        return Err(Error::conflict(format!("platform {platform} is disabled")));
    }
    Ok(platform)
}

fn non_empty(field: &str, scopes: &ScopeSet) -> Result<()> {
    if scopes.is_empty() {
        return Err(Error::invalid(format!("`{field}` must list at least one scope")));
    }
    if scopes.len() > ScopeSet::MAX_LEN {
        return Err(Error::invalid(format!("`{field}` lists more than {} scopes", ScopeSet::MAX_LEN)));
    }
    Ok(())
}

pub fn create_agent(tx: &mut Tx<'_>, caller: &PlatformScope, req: NewAgent) -> Result<Agent> {
    non_empty("scopes", &req.scopes)?;
    let agent = Agent {
        id: AgentId::generate(),
        platform_id: owning_platform(tx, caller, req.platform_id)?,
        name: req.name.into_string(),
        scopes: req.scopes,
        status: AgentStatus::Active,
        created_at: tx.now(),
    };
    platforms::insert_agent(tx, &agent)?;
    tx.audit(NewEvent::new(caller.actor(), "agent.created", Subject::new("agent", agent.id)).details(json!({
        "platform_id": agent.platform_id, "name": agent.name, "scopes": agent.scopes,
    })))?;
    Ok(agent)
}

/// Suspends or deregisters an agent: its delegations are revoked, and their sessions with them.
pub fn end_agent(
    tx: &mut Tx<'_>,
    caller: &PlatformScope,
    id: AgentId,
    to: AgentStatus,
    req: WithReason,
) -> Result<Receipt> {
    let reason = req.reason.map(Reason::into_string);
    let agent = platforms::get_agent(tx.conn(), caller.visibility(), id)?;
    let (action, cascade_reason) = match to {
        AgentStatus::Suspended => ("agent.suspended", "agent_suspended"),
        AgentStatus::Deregistered => ("agent.deregistered", "agent_deregistered"),
        AgentStatus::Active => return Err(Error::internal("end_agent called to activate")),
    };
    let subject = Subject::new("agent", id);
    if agent.status == to {
        let earlier = audit::last_event_for(tx.conn(), &id.to_string(), &[action])?;
        return Ok(noop_receipt(tx, earlier, subject));
    }
    if agent.status == AgentStatus::Deregistered {
        return Err(Error::conflict(format!("agent {id} is deregistered")));
    }
    platforms::set_status(tx, StatusTable::Agents, &id.to_string(), to.as_str())?;
    let mut cascade = Cascade::start(
        tx,
        NewEvent::new(caller.actor(), action, subject)
            .reason(reason)
            .details(json!({"platform_id": agent.platform_id})),
    )?;
    cascade.revoke_delegations(tx, DelegationsOf::Agent(id), cascade_reason)?;
    cascade.receipt(tx)
}

pub fn resume_agent(tx: &mut Tx<'_>, caller: &PlatformScope, id: AgentId, req: WithReason) -> Result<Agent> {
    let reason = req.reason.map(Reason::into_string);
    let agent = platforms::get_agent(tx.conn(), caller.visibility(), id)?;
    match agent.status {
        AgentStatus::Active => return Ok(agent),
        AgentStatus::Deregistered => {
            return Err(Error::conflict(format!("agent {id} is deregistered and cannot resume")))
        }
        AgentStatus::Suspended => {}
    }
    platforms::set_status(tx, StatusTable::Agents, &id.to_string(), AgentStatus::Active.as_str())?;
    tx.audit(
        NewEvent::new(caller.actor(), "agent.resumed", Subject::new("agent", id))
            .reason(reason)
            .details(json!({"platform_id": agent.platform_id})),
    )?;
    platforms::get_agent(tx.conn(), caller.visibility(), id)
}

pub fn create_integration(tx: &mut Tx<'_>, caller: &PlatformScope, req: NewIntegration) -> Result<Integration> {
    non_empty("scopes", &req.scopes)?;
    let integration = Integration {
        id: IntegrationId::generate(),
        platform_id: owning_platform(tx, caller, req.platform_id)?,
        name: req.name.into_string(),
        scopes: req.scopes,
        status: IntegrationStatus::Active,
        created_at: tx.now(),
    };
    platforms::insert_integration(tx, &integration)?;
    tx.audit(
        NewEvent::new(caller.actor(), "integration.created", Subject::new("integration", integration.id)).details(
            json!({
                "platform_id": integration.platform_id, "name": integration.name, "scopes": integration.scopes,
            }),
        ),
    )?;
    Ok(integration)
}

pub fn disable_integration(
    tx: &mut Tx<'_>,
    caller: &PlatformScope,
    id: IntegrationId,
    req: WithReason,
) -> Result<Receipt> {
    let reason = req.reason.map(Reason::into_string);
    let integration = platforms::get_integration(tx.conn(), caller.visibility(), id)?;
    let subject = Subject::new("integration", id);
    if integration.status == IntegrationStatus::Disabled {
        let earlier = audit::last_event_for(tx.conn(), &id.to_string(), &["integration.disabled"])?;
        return Ok(noop_receipt(tx, earlier, subject));
    }
    platforms::set_status(tx, StatusTable::Integrations, &id.to_string(), IntegrationStatus::Disabled.as_str())?;
    let mut cascade = Cascade::start(
        tx,
        NewEvent::new(caller.actor(), "integration.disabled", subject)
            .reason(reason)
            .details(json!({"platform_id": integration.platform_id})),
    )?;
    cascade.revoke_delegations(tx, DelegationsOf::Integration(id), "integration_disabled")?;
    cascade.receipt(tx)
}
