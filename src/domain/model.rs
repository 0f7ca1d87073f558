//! The objects tether governs and the records it answers with.

use serde::Serialize;
use utoipa::ToSchema;

use super::ids::*;
use super::scope::ScopeSet;
use super::time::Timestamp;

macro_rules! status_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }
    };
}

status_enum!(PlatformStatus { Active => "active", Disabled => "disabled" });
status_enum!(AgentStatus { Active => "active", Suspended => "suspended", Deregistered => "deregistered" });
status_enum!(IntegrationStatus { Active => "active", Disabled => "disabled" });
status_enum!(UserStatus { Active => "active", Disabled => "disabled" });
status_enum!(DelegationStatus { Active => "active", Revoked => "revoked" });
status_enum!(
    /// `expired` is derived from `expires_at` at read time: an expired session is never active,
    /// whether or not anything has marked it.
    SessionStatus { Active => "active", Revoked => "revoked", Expired => "expired" }
);

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Platform {
    pub id: PlatformId,
    pub name: String,
    pub status: PlatformStatus,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Agent {
    pub id: AgentId,
    pub platform_id: PlatformId,
    pub name: String,
    pub scopes: ScopeSet,
    pub status: AgentStatus,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Integration {
    pub id: IntegrationId,
    pub platform_id: PlatformId,
    pub name: String,
    pub scopes: ScopeSet,
    pub status: IntegrationStatus,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct User {
    pub id: UserId,
    /// The identity provider's id of the user; absent for a user provisioned by SCIM without one.
    pub external_id: Option<String>,
    /// The identity provider's unique login name (SCIM `userName`), compared case-insensitively.
    pub user_name: Option<String>,
    /// The primary email, by which received signals may name the user.
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub permissions: ScopeSet,
    pub status: UserStatus,
    pub created_at: Timestamp,
    /// When the identity provider deleted the user (SCIM DELETE, RISC account-purged): disabled
    /// for good, kept for the audit trail.
    pub ended_at: Option<Timestamp>,
    /// The groups the user is in (SCIM-provisioned; read-only here).
    pub groups: Vec<GroupRef>,
    /// `permissions` and every permission of the user's groups: what sessions and delegations
    /// are checked against.
    pub effective_permissions: ScopeSet,
}

/// A group: its members hold its permissions (set by an admin) besides their own.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Group {
    pub id: GroupId,
    pub display_name: String,
    /// The identity provider's id of the group (SCIM `externalId`).
    pub external_id: Option<String>,
    pub permissions: ScopeSet,
    /// Member users, by id.
    pub members: Vec<UserId>,
    pub created_at: Timestamp,
    pub modified_at: Timestamp,
}

/// A group as a user's answer names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct GroupRef {
    pub id: GroupId,
    pub display_name: String,
}

/// What a delegation or session stands on: its user, agent, integration and the agent's platform.
#[derive(Debug, Clone)]
pub struct ChainLinks {
    pub user: User,
    pub agent: Agent,
    pub integration: Integration,
    pub platform: Platform,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Delegation {
    pub id: DelegationId,
    pub user_id: UserId,
    pub agent_id: AgentId,
    pub integration_id: IntegrationId,
    pub platform_id: PlatformId,
    pub scopes: ScopeSet,
    pub status: DelegationStatus,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    pub revoked_reason: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct SessionMetadata {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub device: Option<String>,
    pub last_ip: Option<String>,
    pub last_user_agent: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Session {
    pub id: SessionId,
    pub user_id: UserId,
    pub agent_id: AgentId,
    pub integration_id: IntegrationId,
    pub delegation_id: DelegationId,
    pub platform_id: PlatformId,
    pub parent_session_id: Option<SessionId>,
    pub scopes: ScopeSet,
    pub status: SessionStatus,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub last_seen_at: Option<Timestamp>,
    pub metadata: SessionMetadata,
    pub revoked_at: Option<Timestamp>,
    pub revoked_reason: Option<String>,
    pub revoked_by_seq: Option<i64>,
}

/// An API credential's record; the credential itself is shown once, at creation.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Credential {
    pub id: CredentialId,
    pub role: super::RoleKind,
    pub label: Option<String>,
    pub platform_id: Option<PlatformId>,
    pub user_id: Option<UserId>,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
}

status_enum!(
    /// Who did it, in the vocabulary of the audit log (and CAEP's initiating entity).
    ActorKind {
        Admin => "admin", Platform => "platform", User => "user", Auditor => "auditor",
        Verifier => "verifier", System => "system", Idp => "idp", Policy => "policy"
    }
);

/// The actor of an audit event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Actor {
    pub kind: ActorKind,
    pub id: String,
}

impl Actor {
    pub fn new(kind: ActorKind, id: impl Into<String>) -> Self {
        Actor { kind, id: id.into() }
    }

    pub fn system() -> Self {
        Actor::new(ActorKind::System, "tether")
    }
}

/// What an audit event is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Subject {
    pub kind: String,
    pub id: String,
}

impl Subject {
    pub fn new(kind: &str, id: impl ToString) -> Self {
        Subject { kind: kind.to_owned(), id: id.to_string() }
    }
}

/// One session a trigger revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct RevokedSession {
    pub session_id: SessionId,
    pub user_id: UserId,
    pub agent_id: AgentId,
    pub integration_id: IntegrationId,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReceiptCause {
    pub seq: i64,
    pub action: String,
    pub subject: Subject,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditRange {
    pub from_seq: i64,
    pub to_seq: i64,
    pub head_hash: String,
}

/// What a revoking call did: its cause event, every session it revoked, the audit range written.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Receipt {
    pub cause: ReceiptCause,
    pub revoked: Vec<RevokedSession>,
    pub audit: AuditRange,
}
