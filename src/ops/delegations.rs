//! Delegations: a user's consent, checked on the chain it stands on, and its revocation cascade.

use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use super::cascade::{noop_receipt, Cascade};
use super::WithReason;
use crate::audit::NewEvent;
use crate::domain::access::{Capability, Owner, PlatformScope, Unscoped};
use crate::domain::*;
use crate::store::sessions::{self, SessionsOf};
use crate::store::Tx;
use crate::store::{audit, delegations, platforms};

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDelegation {
    pub user_id: UserId,
    pub agent_id: AgentId,
    pub integration_id: IntegrationId,
    pub scopes: ScopeSet,
}

/// The chain a delegation or session stands on, each link checked active.
pub(super) struct Chain {
    pub(super) user: User,
    pub(super) agent: Agent,
    pub(super) integration: Integration,
}

pub(super) fn active_chain(tx: &Tx<'_>, user: UserId, agent: AgentId, integration: IntegrationId) -> Result<Chain> {
    let ChainLinks { user, agent, integration, platform } =
        tx.chain_rows(Unscoped::for_system().visibility(), user, agent, integration)?;
    if user.status != UserStatus::Active {
        return Err(Error::conflict(format!("user {} is disabled", user.id)));
    }
    match agent.status {
        AgentStatus::Active => {}
        AgentStatus::Suspended => return Err(Error::conflict(format!("agent {} is suspended", agent.id))),
        AgentStatus::Deregistered => return Err(Error::conflict(format!("agent {} is deregistered", agent.id))),
    }
    if integration.status != IntegrationStatus::Active {
        return Err(Error::conflict(format!("integration {} is disabled", integration.id)));
    }
    if platform.status != PlatformStatus::Active {
        return Err(Error::conflict(format!("platform {} is disabled", platform.id)));
    }
    Ok(Chain { user, agent, integration })
}

pub(super) fn refuse_ungrantable(asked: &ScopeSet, grantable: &ScopeSet) -> Result<()> {
    let missing = asked.difference(grantable);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::ScopeNotGrantable(missing.iter().map(|s| s.to_string()).collect()))
    }
}

pub fn create_delegation(tx: &mut Tx<'_>, caller: &PlatformScope, req: NewDelegation) -> Result<Delegation> {
    if req.scopes.is_empty() {
        return Err(Error::invalid("`scopes` must list at least one scope"));
    }
    let vis = caller.visibility();
    let agent = platforms::get_agent(tx.conn(), vis, req.agent_id)?;
    let integration = platforms::get_integration(tx.conn(), vis, req.integration_id)?;
    if agent.platform_id != integration.platform_id {
        return Err(Error::conflict("the agent and the integration belong to different platforms"));
    }
    let chain = active_chain(tx, req.user_id, agent.id, integration.id)?;
    let grantable =
        chain.user.effective_permissions.intersection(&chain.agent.scopes).intersection(&chain.integration.scopes);
    refuse_ungrantable(&req.scopes, &grantable)?;
    let delegation = Delegation {
        id: DelegationId::generate(),
        user_id: req.user_id,
        agent_id: agent.id,
        integration_id: integration.id,
        platform_id: agent.platform_id,
        scopes: req.scopes,
        status: DelegationStatus::Active,
        created_at: tx.now(),
        revoked_at: None,
        revoked_reason: None,
    };
    delegations::insert_delegation(tx, &delegation)?;
    tx.audit(NewEvent::new(caller.actor(), "delegation.created", Subject::new("delegation", delegation.id)).details(
        json!({
            "user_id": delegation.user_id, "agent_id": delegation.agent_id, "platform_id": delegation.platform_id,
            "integration_id": delegation.integration_id, "scopes": delegation.scopes,
        }),
    ))?;
    Ok(delegation)
}

pub fn revoke_delegation(tx: &mut Tx<'_>, caller: &Owner, id: DelegationId, req: WithReason) -> Result<Receipt> {
    let reason = req.reason.map(Reason::into_string);
    let delegation = delegations::get_delegation(tx.conn(), caller.visibility(), id)?;
    let subject = Subject::new("delegation", id);
    if delegation.status == DelegationStatus::Revoked {
        let earlier = audit::last_event_for(tx.conn(), &id.to_string(), &["delegation.revoked"])?;
        return Ok(noop_receipt(tx, earlier, subject));
    }
    delegations::mark_delegation_revoked(tx, id, reason.as_deref().unwrap_or("revoked"))?;
    let trigger = NewEvent::new(caller.actor(), "delegation.revoked", subject).reason(reason).details(json!({
        "user_id": delegation.user_id, "agent_id": delegation.agent_id, "integration_id": delegation.integration_id,
        "platform_id": delegation.platform_id,
    }));
    let mut cascade = Cascade::start(tx, trigger)?;
    let sessions = sessions::active_sessions(tx.conn(), tx.now(), SessionsOf::Delegation(id))?;
    cascade.revoke_sessions(tx, sessions, "delegation_revoked")?;
    cascade.receipt(tx)
}
