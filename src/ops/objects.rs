//! Platforms, agents, integrations, users and credentials: creation and their state changes,
//! with the cascades those state changes set off.

use serde_json::json;

use super::cascade::{noop_receipt, Cascade};
use super::commands::*;
use super::{require, Env};
use crate::audit::NewEvent;
use crate::domain::*;
use crate::store::delegations::{self, DelegationsOf};
use crate::store::platforms::{self, StatusTable};
use crate::store::sessions::{self, SessionsOf};
use crate::store::{audit, credentials, users, webhooks};
use crate::store::{Effect, Tx};
use crate::tokens::{self, CredentialClaims};

/// A credential as created: the record and the secret, shown once.
pub struct CreatedCredential {
    pub record: Credential,
    pub secret: String,
}

pub fn create_credential(tx: &mut Tx<'_>, env: &Env, caller: &Caller, req: NewCredential) -> Result<CreatedCredential> {
    require(caller, &[RoleKind::Admin])?;
    let label = req.label.map(Label::into_string);
    let role = match (req.role, req.platform_id, req.user_id) {
        (RoleKind::Platform, Some(p), None) => Role::Platform(p),
        (RoleKind::User, None, Some(u)) => Role::User(u),
        (RoleKind::Platform, _, _) => {
            return Err(Error::invalid("`platform_id` is required for the platform role (and only it)"))
        }
        (RoleKind::User, _, _) => return Err(Error::invalid("`user_id` is required for the user role (and only it)")),
        (_, Some(_), _) => return Err(Error::invalid("`platform_id` is only for the platform role")),
        (_, _, Some(_)) => return Err(Error::invalid("`user_id` is only for the user role")),
        (RoleKind::Admin, None, None) => Role::Admin,
        (RoleKind::Auditor, None, None) => Role::Auditor,
        (RoleKind::Verifier, None, None) => Role::Verifier,
    };
    let expires_at = req.ttl_seconds.map(|ttl| tx.now().plus_seconds(ttl.seconds()));
    issue_credential(tx, env, caller.actor(), role, label, expires_at)
}

/// Mints and records a credential (also used for the first admin credential at bootstrap and by
/// `tether credential mint`). The platform or user it is bound to must exist, and a platform must
/// be active.
pub fn issue_credential(
    tx: &mut Tx<'_>,
    env: &Env,
    actor: Actor,
    role: Role,
    label: Option<String>,
    expires_at: Option<Timestamp>,
) -> Result<CreatedCredential> {
    if let Role::Platform(p) = role {
        let platform = platforms::get_platform(tx.conn(), Visibility::All, p)?;
        // Disabling a platform revoked its credentials; a new one would give it back the reads.
        if platform.status != PlatformStatus::Active {
            return Err(Error::conflict(format!("platform {p} is disabled")));
        }
    }
    if let Role::User(u) = role {
        users::get_user(tx.conn(), Visibility::All, u)?;
    }
    let id = CredentialId::generate();
    let (platform_id, user_id) = match role {
        Role::Platform(p) => (Some(p), None),
        Role::User(u) => (None, Some(u)),
        _ => (None, None),
    };
    let record = Credential {
        id,
        role: role.kind(),
        label,
        platform_id,
        user_id,
        created_at: tx.now(),
        expires_at,
        revoked_at: None,
    };
    let (secret, kid) = tokens::credential::mint(&env.api_keys, &CredentialClaims { id, role, expires_at })?;
    credentials::insert_credential(tx, &record, kid)?;
    tx.audit(NewEvent::new(actor, "credential.created", Subject::new("credential", id)).details(json!({
        "role": record.role, "platform_id": platform_id, "user_id": user_id, "label": record.label,
    })))?;
    tx.effect(Effect::Credential { id, revoked: false, expires_at });
    Ok(CreatedCredential { record, secret })
}

pub fn revoke_credential(tx: &mut Tx<'_>, caller: &Caller, id: CredentialId) -> Result<Credential> {
    require(caller, &[RoleKind::Admin])?;
    let credential = credentials::get_credential(tx.conn(), id)?;
    if credential.revoked_at.is_some() {
        return Ok(credential);
    }
    credentials::revoke_credential(tx, id)?;
    let revoked = tx.audit(NewEvent::new(caller.actor(), "credential.revoked", Subject::new("credential", id)))?;
    tx.effect(Effect::Credential { id, revoked: true, expires_at: credential.expires_at });
    // Webhooks of an admin, auditor or verifier belong to the credential itself: nobody else can
    // see or delete them, so they end with it rather than keep receiving events.
    if matches!(credential.role, RoleKind::Admin | RoleKind::Auditor | RoleKind::Verifier) {
        for (webhook, url) in webhooks::webhooks_owned_by(tx.conn(), credential.role.as_str(), &id.to_string())? {
            webhooks::delete_webhook(tx, webhook)?;
            tx.audit(
                NewEvent::new(caller.actor(), "webhook.deleted", Subject::new("webhook", webhook))
                    .cause(revoked.seq)
                    .reason(Some("owner_credential_revoked".to_owned()))
                    .details(json!({"url": url})),
            )?;
        }
    }
    credentials::get_credential(tx.conn(), id)
}

pub fn create_platform(tx: &mut Tx<'_>, caller: &Caller, req: NewPlatform) -> Result<Platform> {
    require(caller, &[RoleKind::Admin])?;
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

pub fn disable_platform(tx: &mut Tx<'_>, caller: &Caller, id: PlatformId, req: WithReason) -> Result<Receipt> {
    require(caller, &[RoleKind::Admin])?;
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
fn owning_platform(tx: &Tx<'_>, caller: &Caller, named: Option<PlatformId>) -> Result<PlatformId> {
    let platform = match (caller.role, named) {
        (Role::Platform(own), None) => own,
        (Role::Platform(own), Some(p)) if p == own => own,
        (Role::Platform(_), Some(_)) => return Err(Error::NotFound("platform")),
        (Role::Admin, Some(p)) => p,
        (Role::Admin, None) => return Err(Error::invalid("`platform_id` is required when an admin creates it")),
        _ => return Err(Error::Forbidden("only a platform or an admin may do this".into())),
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

pub fn create_agent(tx: &mut Tx<'_>, caller: &Caller, req: NewAgent) -> Result<Agent> {
    require(caller, &[RoleKind::Admin, RoleKind::Platform])?;
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
pub fn end_agent(tx: &mut Tx<'_>, caller: &Caller, id: AgentId, to: AgentStatus, req: WithReason) -> Result<Receipt> {
    require(caller, &[RoleKind::Admin, RoleKind::Platform])?;
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

pub fn resume_agent(tx: &mut Tx<'_>, caller: &Caller, id: AgentId, req: WithReason) -> Result<Agent> {
    require(caller, &[RoleKind::Admin, RoleKind::Platform])?;
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

pub fn create_integration(tx: &mut Tx<'_>, caller: &Caller, req: NewIntegration) -> Result<Integration> {
    require(caller, &[RoleKind::Admin, RoleKind::Platform])?;
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

pub fn disable_integration(tx: &mut Tx<'_>, caller: &Caller, id: IntegrationId, req: WithReason) -> Result<Receipt> {
    require(caller, &[RoleKind::Admin, RoleKind::Platform])?;
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

pub fn create_user(tx: &mut Tx<'_>, caller: &Caller, req: NewUser) -> Result<User> {
    require(caller, &[RoleKind::Admin])?;
    if req.permissions.len() > ScopeSet::MAX_LEN {
        return Err(Error::invalid(format!("`permissions` lists more than {} scopes", ScopeSet::MAX_LEN)));
    }
    let user = User {
        id: UserId::generate(),
        external_id: req.external_id.into_string(),
        display_name: req.display_name.map(DisplayName::into_string),
        permissions: req.permissions,
        status: UserStatus::Active,
        created_at: tx.now(),
    };
    users::insert_user(tx, &user)?;
    tx.audit(NewEvent::new(caller.actor(), "user.created", Subject::new("user", user.id)).details(json!({
        "external_id": user.external_id, "permissions": user.permissions,
    })))?;
    Ok(user)
}

pub fn disable_user(tx: &mut Tx<'_>, caller: &Caller, id: UserId, req: WithReason) -> Result<Receipt> {
    require(caller, &[RoleKind::Admin])?;
    let reason = req.reason.map(Reason::into_string);
    let user = users::get_user(tx.conn(), caller.visibility(), id)?;
    let subject = Subject::new("user", id);
    if user.status == UserStatus::Disabled {
        let earlier = audit::last_event_for(tx.conn(), &id.to_string(), &["user.disabled"])?;
        return Ok(noop_receipt(tx, earlier, subject));
    }
    platforms::set_status(tx, StatusTable::Users, &id.to_string(), UserStatus::Disabled.as_str())?;
    let mut cascade = Cascade::start(tx, NewEvent::new(caller.actor(), "user.disabled", subject).reason(reason))?;
    let sessions = sessions::active_sessions(tx.conn(), tx.now(), SessionsOf::User(id))?;
    cascade.revoke_sessions(tx, sessions, "user_disabled")?;
    cascade.receipt(tx)
}

pub fn enable_user(tx: &mut Tx<'_>, caller: &Caller, id: UserId, req: WithReason) -> Result<User> {
    require(caller, &[RoleKind::Admin])?;
    let reason = req.reason.map(Reason::into_string);
    let user = users::get_user(tx.conn(), caller.visibility(), id)?;
    if user.status == UserStatus::Active {
        return Ok(user);
    }
    platforms::set_status(tx, StatusTable::Users, &id.to_string(), UserStatus::Active.as_str())?;
    tx.audit(NewEvent::new(caller.actor(), "user.enabled", Subject::new("user", id)).reason(reason))?;
    users::get_user(tx.conn(), caller.visibility(), id)
}

/// A lifecycle event from the identity provider: every session of the user ends; the user stays
/// active. Always recorded (two password resets are two events).
pub fn user_lifecycle_event(tx: &mut Tx<'_>, caller: &Caller, id: UserId, req: LifecycleEvent) -> Result<Receipt> {
    require(caller, &[RoleKind::Admin])?;
    let reason = req.reason.map(Reason::into_string);
    users::get_user(tx.conn(), caller.visibility(), id)?;
    let mut cascade =
        Cascade::start(tx, NewEvent::new(caller.actor(), req.kind.action(), Subject::new("user", id)).reason(reason))?;
    let sessions = sessions::active_sessions(tx.conn(), tx.now(), SessionsOf::User(id))?;
    cascade.revoke_sessions(tx, sessions, req.kind.as_str())?;
    cascade.receipt(tx)
}

/// "Sign all my agents out": every session of the user ends; delegations stay.
pub fn sign_out_all(tx: &mut Tx<'_>, caller: &Caller, id: UserId, req: WithReason) -> Result<Receipt> {
    require(caller, &[RoleKind::Admin, RoleKind::User])?;
    let reason = req.reason.map(Reason::into_string);
    users::get_user(tx.conn(), caller.visibility(), id)?;
    let mut cascade = Cascade::start(
        tx,
        NewEvent::new(caller.actor(), "user.signed_out_all", Subject::new("user", id)).reason(reason),
    )?;
    let sessions = sessions::active_sessions(tx.conn(), tx.now(), SessionsOf::User(id))?;
    cascade.revoke_sessions(tx, sessions, "sign_out_all")?;
    cascade.receipt(tx)
}

/// Replaces a user's permissions. Narrowing revokes only the sessions holding a removed scope and
/// narrows the user's delegations; widening changes nothing else (consent is not widened).
pub fn set_permissions(tx: &mut Tx<'_>, caller: &Caller, id: UserId, req: SetPermissions) -> Result<(User, Receipt)> {
    require(caller, &[RoleKind::Admin])?;
    let reason = req.reason.map(Reason::into_string);
    if req.permissions.len() > ScopeSet::MAX_LEN {
        return Err(Error::invalid(format!("`permissions` lists more than {} scopes", ScopeSet::MAX_LEN)));
    }
    let user = users::get_user(tx.conn(), caller.visibility(), id)?;
    let subject = Subject::new("user", id);
    if user.permissions == req.permissions {
        let earlier = audit::last_event_for(tx.conn(), &id.to_string(), &["user.permissions_changed", "user.created"])?;
        return Ok((user, noop_receipt(tx, earlier, subject)));
    }
    let removed = user.permissions.difference(&req.permissions);
    let added = req.permissions.difference(&user.permissions);
    users::set_user_permissions(tx, id, &req.permissions)?;
    let trigger = NewEvent::new(caller.actor(), "user.permissions_changed", subject).reason(reason).details(json!({
        "removed": removed, "added": added, "permissions": req.permissions,
    }));
    let mut cascade = Cascade::start(tx, trigger)?;
    if !removed.is_empty() {
        for session in sessions::active_sessions(tx.conn(), tx.now(), SessionsOf::User(id))? {
            if let Some(scope) = session.scopes()?.iter().find(|s| removed.contains(s)) {
                let why = format!("permission_removed:{scope}");
                cascade.revoke_sessions(tx, vec![session.clone()], &why)?;
            }
        }
        for delegation in delegations::active_delegations(tx.conn(), DelegationsOf::User(id))? {
            let narrowed = delegation.scopes.intersection(&req.permissions);
            if narrowed != delegation.scopes {
                delegations::set_delegation_scopes(tx, delegation.id, &narrowed)?;
                cascade.note(
                    tx,
                    "delegation.narrowed",
                    Subject::new("delegation", delegation.id),
                    "permissions_narrowed",
                    json!({
                        "removed": delegation.scopes.difference(&narrowed), "scopes": narrowed,
                        "user_id": delegation.user_id, "agent_id": delegation.agent_id,
                        "integration_id": delegation.integration_id, "platform_id": delegation.platform_id,
                    }),
                )?;
            }
        }
    }
    let user = users::get_user(tx.conn(), caller.visibility(), id)?;
    Ok((user, cascade.receipt(tx)?))
}

/// The user disconnects an agent or an integration: their delegations to it end, with sessions.
pub fn disconnect(
    tx: &mut Tx<'_>,
    caller: &Caller,
    user: UserId,
    what: Disconnect,
    req: WithReason,
) -> Result<Receipt> {
    require(caller, &[RoleKind::Admin, RoleKind::User])?;
    let reason = req.reason.map(Reason::into_string);
    users::get_user(tx.conn(), caller.visibility(), user)?;
    let (action, of, cascade_reason, detail, what_kind) = match what {
        Disconnect::Agent(a) => (
            "user.agent_disconnected",
            DelegationsOf::UserAgent(user, a),
            "agent_disconnected",
            json!({"agent_id": a}),
            "agent",
        ),
        Disconnect::Integration(i) => (
            "user.integration_disconnected",
            DelegationsOf::UserIntegration(user, i),
            "integration_disconnected",
            json!({"integration_id": i}),
            "integration",
        ),
    };
    // Only what the user ever delegated to is theirs to disconnect: any other id is "not found",
    // so a user cannot learn which agents or integrations exist in other tenants.
    if !delegations::ever_delegated(tx.conn(), of)? {
        return Err(Error::NotFound(what_kind));
    }
    let subject = Subject::new("user", user);
    if delegations::active_delegations(tx.conn(), of)?.is_empty() {
        let earlier = audit::last_disconnect_event(tx.conn(), of)?;
        return Ok(noop_receipt(tx, earlier, subject));
    }
    let mut cascade =
        Cascade::start(tx, NewEvent::new(caller.actor(), action, subject).reason(reason).details(detail))?;
    cascade.revoke_delegations(tx, of, cascade_reason)?;
    cascade.receipt(tx)
}

#[derive(Debug, Clone, Copy)]
pub enum Disconnect {
    Agent(AgentId),
    Integration(IntegrationId),
}
