//! Who is calling: the role a verified credential grants and what that role may see.

use serde::Serialize;

use super::ids::{CredentialId, PlatformId, UserId};

/// The role carried by an API credential, with the tenant it is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Platform(PlatformId),
    User(UserId),
    Auditor,
    Verifier,
    /// An identity provider's connection (SCIM, Global Token Revocation): manages users.
    Provisioner,
    /// A Shared Signals receiver: manages its own SSF streams; when bound to a platform, its
    /// streams tell of that platform's sessions only.
    Receiver(Option<PlatformId>),
}

/// A role without its binding, for permission tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RoleKind {
    Admin,
    Platform,
    User,
    Auditor,
    Verifier,
    Provisioner,
    Receiver,
}

impl RoleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RoleKind::Admin => "admin",
            RoleKind::Platform => "platform",
            RoleKind::User => "user",
            RoleKind::Auditor => "auditor",
            RoleKind::Verifier => "verifier",
            RoleKind::Provisioner => "provisioner",
            RoleKind::Receiver => "receiver",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "admin" => RoleKind::Admin,
            "platform" => RoleKind::Platform,
            "user" => RoleKind::User,
            "auditor" => RoleKind::Auditor,
            "verifier" => RoleKind::Verifier,
            "provisioner" => RoleKind::Provisioner,
            "receiver" => RoleKind::Receiver,
            _ => return None,
        })
    }
}

impl Role {
    /// A role from its stored form: kind, and the bound platform or user id (ignored for others).
    pub fn from_parts(kind: &str, bound: &str) -> Option<Role> {
        Some(match RoleKind::parse(kind)? {
            RoleKind::Admin => Role::Admin,
            RoleKind::Auditor => Role::Auditor,
            RoleKind::Verifier => Role::Verifier,
            RoleKind::Provisioner => Role::Provisioner,
            RoleKind::Platform => Role::Platform(PlatformId::parse(bound).ok()?),
            RoleKind::User => Role::User(UserId::parse(bound).ok()?),
            RoleKind::Receiver => Role::Receiver(PlatformId::parse(bound).ok()),
        })
    }

    /// The id stored beside the kind: the bound platform or user, else the credential.
    pub fn bound_id(&self, credential: CredentialId) -> String {
        match self {
            Role::Platform(p) => p.to_string(),
            Role::User(u) => u.to_string(),
            _ => credential.to_string(),
        }
    }

    pub fn kind(&self) -> RoleKind {
        match self {
            Role::Admin => RoleKind::Admin,
            Role::Platform(_) => RoleKind::Platform,
            Role::User(_) => RoleKind::User,
            Role::Auditor => RoleKind::Auditor,
            Role::Verifier => RoleKind::Verifier,
            Role::Provisioner => RoleKind::Provisioner,
            Role::Receiver(_) => RoleKind::Receiver,
        }
    }
}

/// A caller whose credential verified and is live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub credential: CredentialId,
    pub role: Role,
}

impl Caller {
    /// How this caller appears as the actor of an audit event.
    pub fn actor(&self) -> super::model::Actor {
        use super::model::{Actor, ActorKind};
        match self.role {
            Role::Admin => Actor::new(ActorKind::Admin, self.credential.to_string()),
            Role::Platform(p) => Actor::new(ActorKind::Platform, p.to_string()),
            Role::User(u) => Actor::new(ActorKind::User, u.to_string()),
            Role::Auditor => Actor::new(ActorKind::Auditor, self.credential.to_string()),
            Role::Verifier => Actor::new(ActorKind::Verifier, self.credential.to_string()),
            // The identity provider acts through its connection's credential.
            Role::Provisioner => Actor::new(ActorKind::Idp, self.credential.to_string()),
            // A receiver manages only its own streams, which the audit log does not record.
            Role::Receiver(_) => Actor::new(ActorKind::Verifier, self.credential.to_string()),
        }
    }
}
