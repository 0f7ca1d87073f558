//! API credentials: minting (by an admin, at bootstrap, by the CLI) and revoking them.

use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use super::Env;
use crate::audit::NewEvent;
use crate::domain::access::{Admin, Capability, Unscoped};
use crate::domain::*;
use crate::store::{credentials, platforms, users, webhooks};
use crate::store::{Effect, Tx};
use crate::tokens::{self, CredentialClaims};

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCredential {
    pub role: RoleKind,
    pub platform_id: Option<PlatformId>,
    pub user_id: Option<UserId>,
    pub label: Option<Label>,
    pub ttl_seconds: Option<CredentialTtl>,
}

/// A credential as created: the record and the secret, shown once.
pub struct CreatedCredential {
    pub record: Credential,
    pub secret: String,
}

pub fn create_credential(tx: &mut Tx<'_>, env: &Env, caller: &Admin, req: NewCredential) -> Result<CreatedCredential> {
    let label = req.label.map(Label::into_string);
    let role = match (req.role, req.platform_id, req.user_id) {
        (RoleKind::Platform, Some(p), None) => Role::Platform(p),
        (RoleKind::Receiver, platform, None) => Role::Receiver(platform),
        (RoleKind::User, None, Some(u)) => Role::User(u),
        (RoleKind::Platform, _, _) => {
            return Err(Error::invalid("`platform_id` is required for the platform role (and only it)"))
        }
        (RoleKind::User, _, _) => return Err(Error::invalid("`user_id` is required for the user role (and only it)")),
        (_, Some(_), _) => return Err(Error::invalid("`platform_id` is only for the platform and receiver roles")),
        (_, _, Some(_)) => return Err(Error::invalid("`user_id` is only for the user role")),
        (RoleKind::Admin, None, None) => Role::Admin,
        (RoleKind::Auditor, None, None) => Role::Auditor,
        (RoleKind::Verifier, None, None) => Role::Verifier,
        (RoleKind::Provisioner, None, None) => Role::Provisioner,
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
    if let Role::Platform(p) | Role::Receiver(Some(p)) = role {
        let platform = platforms::get_platform(tx.conn(), Unscoped::for_system().visibility(), p)?;
        // Disabling a platform revoked its credentials; a new one would give it back the reads.
        if platform.status != PlatformStatus::Active {
            return Err(Error::conflict(format!("platform {p} is disabled")));
        }
    }
    if let Role::User(u) = role {
        users::get_user(tx.conn(), Unscoped::for_system().visibility(), u)?;
    }
    let id = CredentialId::generate();
    let (platform_id, user_id) = match role {
        Role::Platform(p) | Role::Receiver(Some(p)) => (Some(p), None),
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

pub fn revoke_credential(tx: &mut Tx<'_>, caller: &Admin, id: CredentialId) -> Result<Credential> {
    let credential = credentials::get_credential(tx.conn(), id)?;
    if credential.revoked_at.is_some() {
        return Ok(credential);
    }
    credentials::revoke_credential(tx, id)?;
    let revoked = tx.audit(NewEvent::new(caller.actor(), "credential.revoked", Subject::new("credential", id)))?;
    tx.effect(Effect::Credential { id, revoked: true, expires_at: credential.expires_at });
    // Webhooks of an admin, auditor or verifier belong to the credential itself: nobody else can
    // see or delete them, so they end with it rather than keep receiving events.
    if matches!(credential.role, RoleKind::Admin | RoleKind::Auditor | RoleKind::Verifier | RoleKind::Provisioner) {
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
