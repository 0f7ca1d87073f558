//! Users: creation, permissions, and the triggers that end their sessions (disable, sign-out-all, …).

use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use super::cascade::{noop_receipt, Cascade};
use super::WithReason;
use crate::audit::NewEvent;
use crate::domain::access::{Capability, ManagesUsers, UserScope};
use crate::domain::*;
use crate::store::delegations::{self, DelegationsOf};
use crate::store::platforms::{self, StatusTable};
use crate::store::sessions::{self, SessionsOf};
use crate::store::Tx;
use crate::store::{audit, users};

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub external_id: ExternalId,
    /// Optional: the login name identity providers' signals may name the user by.
    pub user_name: Option<UserName>,
    /// Optional: the primary email identity providers' signals may name the user by.
    pub email: Option<Email>,
    pub display_name: Option<DisplayName>,
    pub permissions: ScopeSet,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPermissions {
    pub permissions: ScopeSet,
    pub reason: Option<Reason>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LifecycleKind {
    PasswordReset,
    CredentialCompromised,
    MfaReset,
}

impl LifecycleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleKind::PasswordReset => "password_reset",
            LifecycleKind::CredentialCompromised => "credential_compromised",
            LifecycleKind::MfaReset => "mfa_reset",
        }
    }

    pub fn action(self) -> &'static str {
        match self {
            LifecycleKind::PasswordReset => "user.password_reset",
            LifecycleKind::CredentialCompromised => "user.credential_compromised",
            LifecycleKind::MfaReset => "user.mfa_reset",
        }
    }
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LifecycleEvent {
    #[serde(rename = "type")]
    pub kind: LifecycleKind,
    pub reason: Option<Reason>,
}

pub fn create_user(tx: &mut Tx<'_>, caller: &impl ManagesUsers, req: NewUser) -> Result<User> {
    let profile = users::UserProfile {
        external_id: Some(req.external_id.into_string()),
        user_name: req.user_name.map(UserName::into_string),
        email: req.email.map(Email::into_string),
        display_name: req.display_name.map(DisplayName::into_string),
    };
    create_user_with(tx, caller, profile, req.permissions)
}

/// Creates an active user from what an identity provider says of it (tether's API, SCIM).
pub fn create_user_with(
    tx: &mut Tx<'_>,
    caller: &impl ManagesUsers,
    profile: users::UserProfile,
    permissions: ScopeSet,
) -> Result<User> {
    if permissions.len() > ScopeSet::MAX_LEN {
        return Err(Error::invalid(format!("`permissions` lists more than {} scopes", ScopeSet::MAX_LEN)));
    }
    let user = User {
        id: UserId::generate(),
        external_id: profile.external_id,
        user_name: profile.user_name,
        email: profile.email,
        display_name: profile.display_name,
        permissions: permissions.clone(),
        status: UserStatus::Active,
        created_at: tx.now(),
        ended_at: None,
        groups: Vec::new(),
        effective_permissions: permissions.clone(),
    };
    users::insert_user(tx, &user)?;
    tx.audit(NewEvent::new(caller.acting_actor(), "user.created", Subject::new("user", user.id)).details(json!({
        "external_id": user.external_id, "user_name": user.user_name, "email": user.email,
        "permissions": user.permissions,
    })))?;
    Ok(user)
}

/// Changes a user's identifiers and display name (SCIM PUT and PATCH); audited when it changes.
pub fn update_user_profile(
    tx: &mut Tx<'_>,
    caller: &impl ManagesUsers,
    id: UserId,
    profile: users::UserProfile,
) -> Result<User> {
    let user = users::get_user(tx.conn(), caller.visibility(), id)?;
    let before = users::UserProfile {
        external_id: user.external_id.clone(),
        user_name: user.user_name.clone(),
        email: user.email.clone(),
        display_name: user.display_name.clone(),
    };
    if before == profile {
        return Ok(user);
    }
    users::set_user_profile(tx, id, &profile)?;
    tx.audit(NewEvent::new(caller.acting_actor(), "user.profile_changed", Subject::new("user", id)).details(json!({
        "external_id": profile.external_id, "user_name": profile.user_name, "email": profile.email,
        "display_name": profile.display_name,
    })))?;
    users::get_user(tx.conn(), caller.visibility(), id)
}

pub fn disable_user(tx: &mut Tx<'_>, caller: &impl ManagesUsers, id: UserId, req: WithReason) -> Result<Receipt> {
    disable_user_caused_by(tx, caller, id, req.reason.map(Reason::into_string), None)
}

/// Disables a user; `cause` is the seq of the event that asked for it when an identity provider
/// did (a `scim.*` or `signal.*` event), so the `user.disabled` event and through it every
/// revocation trace back to what the provider sent. An already disabled user is not refused (a
/// deactivation must never fail on tether-side state): the answer is a receipt of nothing that
/// points at the earlier disable.
pub fn disable_user_caused_by(
    tx: &mut Tx<'_>,
    caller: &impl ManagesUsers,
    id: UserId,
    reason: Option<String>,
    cause: Option<i64>,
) -> Result<Receipt> {
    let user = users::get_user(tx.conn(), caller.visibility(), id)?;
    let subject = Subject::new("user", id);
    if user.status == UserStatus::Disabled {
        let earlier = audit::last_event_for(tx.conn(), &id.to_string(), &["user.disabled"])?;
        return Ok(noop_receipt(tx, earlier, subject));
    }
    platforms::set_status(tx, StatusTable::Users, &id.to_string(), UserStatus::Disabled.as_str())?;
    let mut trigger = NewEvent::new(caller.acting_actor(), "user.disabled", subject).reason(reason);
    if let Some(seq) = cause {
        trigger = trigger.cause(seq);
    }
    let mut cascade = Cascade::start(tx, trigger)?;
    let sessions = sessions::active_sessions(tx.conn(), tx.now(), SessionsOf::User(id))?;
    cascade.revoke_sessions(tx, sessions, "user_disabled")?;
    cascade.receipt(tx)
}

/// Ends a user for good (SCIM DELETE, RISC account-purged): disabled with its cascade, then
/// marked ended (`user.ended`); kept for the audit trail. Ending an ended user changes nothing.
pub fn end_user(
    tx: &mut Tx<'_>,
    caller: &impl ManagesUsers,
    id: UserId,
    reason: Option<String>,
    cause: Option<i64>,
) -> Result<Receipt> {
    let user = users::get_user(tx.conn(), caller.visibility(), id)?;
    if user.ended_at.is_some() {
        let earlier = audit::last_event_for(tx.conn(), &id.to_string(), &["user.ended"])?;
        return Ok(noop_receipt(tx, earlier, Subject::new("user", id)));
    }
    let receipt = disable_user_caused_by(tx, caller, id, reason, cause)?;
    users::set_user_ended(tx, id, tx.now())?;
    let mut ended = NewEvent::new(caller.acting_actor(), "user.ended", Subject::new("user", id));
    if let Some(seq) = cause {
        ended = ended.cause(seq);
    }
    tx.audit(ended)?;
    Ok(receipt)
}

pub fn enable_user(tx: &mut Tx<'_>, caller: &impl ManagesUsers, id: UserId, req: WithReason) -> Result<User> {
    enable_user_caused_by(tx, caller, id, req.reason.map(Reason::into_string), None)
}

/// Enables a user; `cause` as in [`disable_user_caused_by`] (a `scim.user_activated` event).
pub fn enable_user_caused_by(
    tx: &mut Tx<'_>,
    caller: &impl ManagesUsers,
    id: UserId,
    reason: Option<String>,
    cause: Option<i64>,
) -> Result<User> {
    let user = users::get_user(tx.conn(), caller.visibility(), id)?;
    if user.ended_at.is_some() {
        return Err(Error::conflict("the user was deleted by its identity provider and cannot be enabled"));
    }
    if user.status == UserStatus::Active {
        return Ok(user);
    }
    platforms::set_status(tx, StatusTable::Users, &id.to_string(), UserStatus::Active.as_str())?;
    let mut event = NewEvent::new(caller.acting_actor(), "user.enabled", Subject::new("user", id)).reason(reason);
    if let Some(seq) = cause {
        event = event.cause(seq);
    }
    let enabled = tx.audit(event)?;
    super::streams::enqueue_account_enabled(tx, &enabled, id)?;
    users::get_user(tx.conn(), caller.visibility(), id)
}

/// A lifecycle event from the identity provider: every session of the user ends; the user stays
/// active. Always recorded (two password resets are two events).
pub fn user_lifecycle_event(
    tx: &mut Tx<'_>,
    caller: &impl ManagesUsers,
    id: UserId,
    req: LifecycleEvent,
) -> Result<Receipt> {
    user_lifecycle_event_caused_by(tx, caller, id, req.kind, req.reason.map(Reason::into_string), None)
}

/// [`user_lifecycle_event`], `cause` the event that recorded an identity provider's signal.
pub fn user_lifecycle_event_caused_by(
    tx: &mut Tx<'_>,
    caller: &impl ManagesUsers,
    id: UserId,
    kind: LifecycleKind,
    reason: Option<String>,
    cause: Option<i64>,
) -> Result<Receipt> {
    users::get_user(tx.conn(), caller.visibility(), id)?;
    let mut trigger = NewEvent::new(caller.acting_actor(), kind.action(), Subject::new("user", id)).reason(reason);
    if let Some(seq) = cause {
        trigger = trigger.cause(seq);
    }
    end_all_sessions(tx, id, trigger, kind.as_str())
}

/// "Sign all my agents out": every session of the user ends; delegations stay.
pub fn sign_out_all(tx: &mut Tx<'_>, caller: &UserScope, id: UserId, req: WithReason) -> Result<Receipt> {
    let reason = req.reason.map(Reason::into_string);
    users::get_user(tx.conn(), caller.visibility(), id)?;
    let trigger = NewEvent::new(caller.actor(), "user.signed_out_all", Subject::new("user", id)).reason(reason);
    end_all_sessions(tx, id, trigger, "sign_out_all")
}

/// Signs all of a user's agents out for an identity provider (a received `session-revoked`,
/// Global Token Revocation), caused by the event that recorded its request.
pub fn sign_out_all_caused_by(
    tx: &mut Tx<'_>,
    caller: &impl ManagesUsers,
    id: UserId,
    reason: Option<String>,
    cause: i64,
) -> Result<Receipt> {
    users::get_user(tx.conn(), caller.visibility(), id)?;
    let trigger = NewEvent::new(caller.acting_actor(), "user.signed_out_all", Subject::new("user", id))
        .reason(reason)
        .cause(cause);
    end_all_sessions(tx, id, trigger, "sign_out_all")
}

/// Every active session of the user ends, caused by `trigger`; the user and its delegations stay.
fn end_all_sessions(tx: &mut Tx<'_>, id: UserId, trigger: NewEvent, why: &str) -> Result<Receipt> {
    let mut cascade = Cascade::start(tx, trigger)?;
    let sessions = sessions::active_sessions(tx.conn(), tx.now(), SessionsOf::User(id))?;
    cascade.revoke_sessions(tx, sessions, why)?;
    cascade.receipt(tx)
}

/// Replaces a user's permissions. Narrowing revokes only the sessions holding a removed scope and
/// narrows the user's delegations; widening changes nothing else (consent is not widened).
pub fn set_permissions(
    tx: &mut Tx<'_>,
    caller: &impl ManagesUsers,
    id: UserId,
    req: SetPermissions,
) -> Result<(User, Receipt)> {
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
    let trigger =
        NewEvent::new(caller.acting_actor(), "user.permissions_changed", subject).reason(reason).details(json!({
            "removed": removed, "added": added, "permissions": req.permissions,
        }));
    let mut cascade = Cascade::start(tx, trigger)?;
    // Sessions are checked against the effective permissions: a scope the user's groups still
    // grant is not lost, so its sessions stay.
    narrow_to_effective(tx, caller, &mut cascade, &user)?;
    let user = users::get_user(tx.conn(), caller.visibility(), id)?;
    Ok((user, cascade.receipt(tx)?))
}

/// After a change that may have narrowed `before`'s effective permissions (their own, a group's,
/// a membership): revokes, under `cascade`, only the user's sessions holding a scope the user no
/// longer has, and narrows their delegations to what they still have.
pub(crate) fn narrow_to_effective(
    tx: &mut Tx<'_>,
    caller: &impl ManagesUsers,
    cascade: &mut Cascade,
    before: &User,
) -> Result<()> {
    let after = users::get_user(tx.conn(), caller.visibility(), before.id)?;
    let removed = before.effective_permissions.difference(&after.effective_permissions);
    if removed.is_empty() {
        return Ok(());
    }
    for session in sessions::active_sessions(tx.conn(), tx.now(), SessionsOf::User(before.id))? {
        if let Some(scope) = session.scopes()?.iter().find(|s| removed.contains(s)) {
            let why = format!("permission_removed:{scope}");
            cascade.revoke_sessions(tx, vec![session.clone()], &why)?;
        }
    }
    for delegation in delegations::active_delegations(tx.conn(), DelegationsOf::User(before.id))? {
        let narrowed = delegation.scopes.intersection(&after.effective_permissions);
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
    Ok(())
}

/// The user disconnects an agent or an integration: their delegations to it end, with sessions.
pub fn disconnect(
    tx: &mut Tx<'_>,
    caller: &UserScope,
    user: UserId,
    what: Disconnect,
    req: WithReason,
) -> Result<Receipt> {
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
