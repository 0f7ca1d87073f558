//! A stream's subjects (SSF §8.1.3): the subject identifiers a receiver may add or remove.

use serde_json::Value;

use crate::domain::access::{Capability, Receiver};
use crate::domain::*;
use crate::store::streams;
use crate::store::Tx;

/// Turns a subject a receiver names (RFC 9493 / SSF) into the key streams store, checking that
/// the receiver may name it: it exists and, for a platform-bound receiver, belongs to its
/// platform. Anything else is the same 400, so a receiver cannot learn of other tenants.
fn subject_key(tx: &Tx<'_>, caller: &Receiver, issuer: &str, subject: &Value) -> Result<String> {
    let refused = || Error::invalid("`subject` names no subject this receiver may name");
    let format =
        subject.get("format").and_then(Value::as_str).ok_or_else(|| Error::invalid("`subject.format` is required"))?;
    let text = |key: &str| subject.get(key).and_then(Value::as_str);
    let user_key = |user: UserId| -> Result<String> {
        let allowed = match caller.platform() {
            Some(p) => streams::user_on_platform(tx.conn(), user, p)?,
            None => streams::user_exists(tx.conn(), user)?,
        };
        if allowed {
            Ok(format!("user:{user}"))
        } else {
            Err(refused())
        }
    };
    match format {
        "iss_sub" => {
            if text("iss") != Some(issuer) {
                return Err(refused());
            }
            user_key(UserId::parse(text("sub").unwrap_or_default()).map_err(|_| refused())?)
        }
        "email" => {
            let user = streams::user_by_email(tx.conn(), text("email").unwrap_or_default())?.ok_or_else(refused)?;
            user_key(user)
        }
        "opaque" => {
            let id = text("id").unwrap_or_default();
            if let Ok(user) = UserId::parse(id) {
                return user_key(user);
            }
            if let Ok(session) = SessionId::parse(id) {
                let (_, platform) = streams::session_owner(tx.conn(), session)?.ok_or_else(refused)?;
                return match caller.platform() {
                    Some(p) if p != platform => Err(refused()),
                    _ => Ok(format!("session:{session}")),
                };
            }
            if let Ok(integration) = IntegrationId::parse(id) {
                let platform = streams::integration_platform(tx.conn(), integration)?.ok_or_else(refused)?;
                return match caller.platform() {
                    Some(p) if p != platform => Err(refused()),
                    _ => Ok(format!("application:{integration}")),
                };
            }
            Err(refused())
        }
        "complex" => {
            // The most specific member names what is added or removed.
            for member in ["session", "application", "user"] {
                if let Some(simple) = subject.get(member) {
                    return subject_key(tx, caller, issuer, simple);
                }
            }
            Err(refused())
        }
        _ => Err(Error::invalid("`subject.format` must be `iss_sub`, `email`, `opaque` or `complex`")),
    }
}

/// Adds (`remove` false) or removes a subject. With `default_subjects` ALL, removing a subject
/// stops SETs about it; adding it back restarts them.
pub fn change_subject(
    tx: &mut Tx<'_>,
    caller: &Receiver,
    issuer: &str,
    id: &str,
    subject: &Value,
    remove: bool,
) -> Result<()> {
    let stream = streams::get_stream(tx.conn(), caller.caller().credential, id)?;
    let key = subject_key(tx, caller, issuer, subject)?;
    streams::set_subject(tx, &stream.id, &key, remove)
}
