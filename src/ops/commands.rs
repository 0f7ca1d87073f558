//! Request bodies: typed, with unknown fields refused, so a parsed command is a valid one.

use serde::Deserialize;
use utoipa::ToSchema;

use crate::domain::*;

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCredential {
    pub role: RoleKind,
    pub platform_id: Option<PlatformId>,
    pub user_id: Option<UserId>,
    pub label: Option<Label>,
    pub ttl_seconds: Option<CredentialTtl>,
}

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

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub external_id: ExternalId,
    pub display_name: Option<DisplayName>,
    pub permissions: ScopeSet,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPermissions {
    pub permissions: ScopeSet,
    pub reason: Option<Reason>,
}

/// `{reason}` for state changes; required where API.md says so, optional elsewhere.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WithReason {
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

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDelegation {
    pub user_id: UserId,
    pub agent_id: AgentId,
    pub integration_id: IntegrationId,
    pub scopes: ScopeSet,
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSessionMetadata {
    #[schema(max_length = 512, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    pub ip: Option<String>,
    #[schema(max_length = 512, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    pub user_agent: Option<String>,
    #[schema(max_length = 512, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    pub device: Option<String>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSession {
    pub delegation_id: DelegationId,
    pub scopes: ScopeSet,
    pub ttl_seconds: Option<SessionTtl>,
    pub parent_session_id: Option<SessionId>,
    #[serde(default, deserialize_with = "crate::domain::text::object_only")]
    pub metadata: Option<NewSessionMetadata>,
}
