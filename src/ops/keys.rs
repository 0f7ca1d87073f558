//! Signing keys as the audit log sees them: every key added or retired is recorded once, by the
//! process that notices it (at start, on reload, or when the admin API changes it).

use rusqlite::{params, OptionalExtension};
use serde_json::json;

use crate::audit::NewEvent;
use crate::domain::*;
use crate::store::{db_error, Tx};
use crate::tokens::keys::PublicKeyInfo;
use crate::tokens::{KeyPurpose, KeyStatus};

fn purpose_name(purpose: KeyPurpose) -> &'static str {
    match purpose {
        KeyPurpose::Agent => "agent",
        KeyPurpose::Api => "api",
    }
}

fn status_name(status: KeyStatus) -> &'static str {
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
        let known: Option<String> = tx
            .conn()
            .prepare_cached("SELECT status FROM signing_keys WHERE purpose = ?1 AND kid = ?2")
            .and_then(|mut st| st.query_row(params![name, key.kid], |r| r.get(0)).optional())
            .map_err(db_error)?;
        let status = status_name(key.status);
        let action = match known.as_deref() {
            Some(s) if s == status => continue,
            None if key.status == KeyStatus::Active => "key.added",
            _ => "key.retired",
        };
        tx.conn()
            .prepare_cached(
                "INSERT INTO signing_keys (purpose, kid, status, public_key) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (purpose, kid) DO UPDATE SET status = excluded.status",
            )
            .and_then(|mut st| st.execute(params![name, key.kid, status, key.public_key]))
            .map_err(db_error)?;
        tx.audit(NewEvent::new(actor.clone(), action, Subject::new("key", format!("{name}:{}", key.kid))).details(
            json!({
                "purpose": name, "kid": key.kid, "public_key": key.public_key, "status": status,
            }),
        ))?;
        changes += 1;
    }
    Ok(changes)
}
