//! Signing keys as the audit log sees them: every key added or retired is recorded once, by the
//! process that notices it (at start, on reload, or when the admin API changes it).

use serde_json::json;

use crate::audit::NewEvent;
use crate::domain::*;
use crate::store::{keys, Tx};
use crate::tokens::keys::PublicKeyInfo;
use crate::tokens::{KeyPurpose, KeyStatus};

pub fn purpose_name(purpose: KeyPurpose) -> &'static str {
    match purpose {
        KeyPurpose::Agent => "agent",
        KeyPurpose::Api => "api",
    }
}

pub fn status_name(status: KeyStatus) -> &'static str {
    match status {
        KeyStatus::Active => "active",
        KeyStatus::Retired => "retired",
    }
}

/// Brings the `signing_keys` table in line with the key files, auditing each difference.
/// Returns how many changes were recorded.
pub fn sync(tx: &mut Tx<'_>, actor: Actor, purpose: KeyPurpose, keys: &[PublicKeyInfo]) -> Result<usize> {
    let name = purpose_name(purpose);
    let mut changes = 0;
    for key in keys {
        let status = status_name(key.status);
        let known = keys::signing_key_status(tx.conn(), name, key.kid)?;
        let action = match (known.as_deref(), key.status) {
            (Some(s), _) if s == status => continue,
            (None, KeyStatus::Active) => "key.added",
            // Its `.retired` marker was removed by hand: the key verifies again.
            (Some(_), KeyStatus::Active) => "key.reactivated",
            (_, KeyStatus::Retired) => "key.retired",
        };
        keys::upsert_signing_key(tx, name, key.kid, status, &key.public_key)?;
        tx.audit(NewEvent::new(actor.clone(), action, Subject::new("key", format!("{name}:{}", key.kid))).details(
            json!({
                "purpose": name, "kid": key.kid, "public_key": key.public_key, "status": status,
            }),
        ))?;
        changes += 1;
    }
    Ok(changes)
}
