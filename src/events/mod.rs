//! Propagation: the body every relying service receives for an audit event (SSE and webhooks),
//! with OpenID SSF/CAEP `session-revoked` semantics where they fit, and webhook delivery.

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
        });
        body["events"] = json!({ CAEP_SESSION_REVOKED: caep });
    }
    body
}
