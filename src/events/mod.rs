//! Propagation: the body every relying service receives for an audit event (SSE and webhooks),
//! with OpenID SSF/CAEP `session-revoked` semantics where they fit, and webhook delivery.

pub mod destinations;
pub mod outbound;
pub mod webhooks;

use serde_json::{json, Value};

use crate::audit::AuditEvent;

/// CAEP's event type URI for a revoked session.
pub const CAEP_SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";

/// The notification for an audit event: tether's record, plus for a revoked session the CAEP
/// `session-revoked` event (subject, event_timestamp, initiating_entity, reason_admin).
pub fn notification(event: &AuditEvent) -> Value {
    let mut body = json!({
        "id": event.id,
        "seq": event.seq,
        "type": event.action,
        "at": event.at,
        "event": event,
    });
    if event.action == "session.revoked" {
        let detail = |key: &str| event.details.get(key).cloned().unwrap_or(Value::Null);
        let opaque = |id: Value| json!({"format": "opaque", "id": id});
        let caep = json!({
            "subject": {
                "format": "complex",
                "session": opaque(Value::String(event.subject.id.clone())),
                "user": opaque(detail("user_id")),
                "agent": opaque(detail("agent_id")),
                "integration": opaque(detail("integration_id")),
            },
            "event_timestamp": event.at.seconds(),
            "initiating_entity": event.details.get("initiating_entity").cloned().unwrap_or(json!("system")),
            "reason_admin": {"en": event.reason.clone().unwrap_or_default()},
            "reason_user": {"en": reason_for_user(event.reason.as_deref().unwrap_or_default())},
        });
        body["events"] = json!({ CAEP_SESSION_REVOKED: caep });
    }
    body
}

/// CAEP's `reason_user`: what to tell the person whose agent lost access, from tether's reason
/// code (`reason_admin` carries the code itself).
pub fn reason_for_user(reason: &str) -> String {
    let text = match reason.split(':').next().unwrap_or_default() {
        "user_disabled" => "Your account was disabled, so every agent acting for you was signed out.",
        "password_reset" => "Your password was reset, so every agent acting for you was signed out.",
        "credential_compromised" => {
            "Your credentials may have been compromised, so every agent acting for you was signed out."
        }
        "mfa_reset" => "Your multi-factor authentication was reset, so every agent acting for you was signed out.",
        "sign_out_all" => "All agents acting for you were signed out.",
        "permission_removed" => "A permission this agent used was removed from your account.",
        "agent_disconnected" => "You disconnected this agent.",
        "integration_disconnected" => "You disconnected this integration.",
        "delegation_revoked" => "Your consent for this agent was withdrawn.",
        "integration_disabled" => "The integration this agent used was disabled.",
        "agent_suspended" => "This agent was suspended.",
        "agent_deregistered" => "This agent was removed.",
        "platform_disabled" => "The platform running this agent was disabled.",
        "parent_session_revoked" => "The agent that delegated to this one was signed out.",
        "refresh_token_reused" => "This agent's session showed signs of theft and was ended.",
        _ => "This agent's session was ended.",
    };
    text.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cascade_reason_has_words_for_the_user() {
        for code in ["user_disabled", "permission_removed:mail:send", "agent_disconnected", "refresh_token_reused"] {
            assert_ne!(reason_for_user(code), reason_for_user("something else"), "{code}");
        }
    }
}
