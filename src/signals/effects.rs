//! What each received event does in tether: the documented defaults (docs/api.md, "Effects of
//! received signals") and a source's overrides.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

const RISC: &str = "https://schemas.openid.net/secevent/risc/event-type/";
const CAEP: &str = "https://schemas.openid.net/secevent/caep/event-type/";
const SSF: &str = "https://schemas.openid.net/secevent/ssf/event-type/";

/// What tether does for a received event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Disable the user: every session ends (as `POST /v1/users/{id}/disable`).
    Disable,
    /// Enable the user again (as `POST /v1/users/{id}/enable`).
    Enable,
    /// The account is gone at the provider: disable the user for good (as SCIM DELETE).
    Purge,
    /// The `credential_compromised` lifecycle event: every session ends, the user stays active.
    CredentialCompromised,
    /// The `password_reset` lifecycle event: every session ends, the user stays active.
    PasswordReset,
    /// Sign all the user's agents out (as `POST /v1/users/{id}/sign-out-all`).
    SignOut,
    /// Record the signal in the audit log and do nothing else.
    Record,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Disable => "disable",
            Effect::Enable => "enable",
            Effect::Purge => "purge",
            Effect::CredentialCompromised => "credential_compromised",
            Effect::PasswordReset => "password_reset",
            Effect::SignOut => "sign_out",
            Effect::Record => "record",
        }
    }
}

/// The events whose effect is configurable, by the name a source's `effects` uses for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    AccountDisabled,
    AccountEnabled,
    AccountPurged,
    CredentialCompromise,
    AccountCredentialChangeRequired,
    CredentialChange,
    /// CAEP session-revoked initiated by an admin, a policy or the system (or not saying).
    SessionRevoked,
    /// CAEP session-revoked initiated by the user themself (an ordinary logout).
    SessionRevokedByUser,
}

impl Signal {
    pub const ALL: [Signal; 8] = [
        Signal::AccountDisabled,
        Signal::AccountEnabled,
        Signal::AccountPurged,
        Signal::CredentialCompromise,
        Signal::AccountCredentialChangeRequired,
        Signal::CredentialChange,
        Signal::SessionRevoked,
        Signal::SessionRevokedByUser,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Signal::AccountDisabled => "account-disabled",
            Signal::AccountEnabled => "account-enabled",
            Signal::AccountPurged => "account-purged",
            Signal::CredentialCompromise => "credential-compromise",
            Signal::AccountCredentialChangeRequired => "account-credential-change-required",
            Signal::CredentialChange => "credential-change",
            Signal::SessionRevoked => "session-revoked",
            Signal::SessionRevokedByUser => "session-revoked-by-user",
        }
    }

    pub fn parse(name: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The effect when the source does not override it.
    pub fn default_effect(self) -> Effect {
        match self {
            Signal::AccountDisabled => Effect::Disable,
            Signal::AccountEnabled => Effect::Enable,
            Signal::AccountPurged => Effect::Purge,
            Signal::CredentialCompromise => Effect::CredentialCompromised,
            Signal::AccountCredentialChangeRequired | Signal::CredentialChange => Effect::PasswordReset,
            Signal::SessionRevoked => Effect::SignOut,
            // A person logging out of the provider should not end delegated agent work unless the
            // operator says so.
            Signal::SessionRevokedByUser => Effect::Record,
        }
    }
}

/// What a received event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// An event with a configurable effect.
    Signal(Signal),
    /// SSF's verification event: recorded, so the transmitter's verification succeeds.
    Verification,
    /// Any other event (stream-updated, risk-level-change, …): accepted and recorded.
    Other,
}

/// Classifies an event by its type URI and, for session-revoked, its `initiating_entity`.
pub fn classify(event_type: &str, event: &Map<String, Value>) -> Received {
    let signal = if let Some(risc) = event_type.strip_prefix(RISC) {
        match risc {
            "account-disabled" => Signal::AccountDisabled,
            "account-enabled" => Signal::AccountEnabled,
            "account-purged" => Signal::AccountPurged,
            "credential-compromise" => Signal::CredentialCompromise,
            "account-credential-change-required" => Signal::AccountCredentialChangeRequired,
            // Deprecated in RISC in favour of CAEP session-revoked; read the same way.
            "sessions-revoked" => Signal::SessionRevoked,
            _ => return Received::Other,
        }
    } else if let Some(caep) = event_type.strip_prefix(CAEP) {
        match caep {
            "credential-change" => Signal::CredentialChange,
            "session-revoked" => match event.get("initiating_entity").and_then(Value::as_str) {
                Some("user") => Signal::SessionRevokedByUser,
                _ => Signal::SessionRevoked,
            },
            _ => return Received::Other,
        }
    } else if event_type == format!("{SSF}verification") {
        return Received::Verification;
    } else {
        return Received::Other;
    };
    Received::Signal(signal)
}

/// A source's effects: the defaults with its overrides applied, by signal name.
pub type EffectTable = BTreeMap<String, Effect>;

/// The full table for a source whose overrides are `overrides` (names already checked).
pub fn table(overrides: &BTreeMap<String, Effect>) -> EffectTable {
    Signal::ALL
        .into_iter()
        .map(|s| (s.name().to_owned(), overrides.get(s.name()).copied().unwrap_or_else(|| s.default_effect())))
        .collect()
}

/// Checks a source's requested overrides: known signal names only.
pub fn check_overrides(overrides: &BTreeMap<String, Effect>) -> Result<(), String> {
    for name in overrides.keys() {
        if Signal::parse(name).is_none() {
            let known: Vec<&str> = Signal::ALL.iter().map(|s| s.name()).collect();
            return Err(format!(
                "`effects`: {:?} is not a signal name ({})",
                name.chars().take(64).collect::<String>(),
                known.join(", ")
            ));
        }
    }
    Ok(())
}

/// The effect of a received event under a source's table.
pub fn effect_of(received: Received, table: &EffectTable) -> Effect {
    match received {
        Received::Signal(s) => table.get(s.name()).copied().unwrap_or_else(|| s.default_effect()),
        Received::Verification | Received::Other => Effect::Record,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn session_revoked_by_the_user_is_recorded_and_by_an_admin_signs_out_unless_overridden() {
        let caep = format!("{CAEP}session-revoked");
        let by_user = classify(&caep, &event(json!({"initiating_entity": "user"})));
        let by_admin = classify(&caep, &event(json!({"initiating_entity": "admin"})));
        let defaults = table(&BTreeMap::new());
        assert_eq!(effect_of(by_user, &defaults), Effect::Record);
        assert_eq!(effect_of(by_admin, &defaults), Effect::SignOut);
        let changed = table(&BTreeMap::from([("session-revoked-by-user".to_owned(), Effect::SignOut)]));
        assert_eq!(effect_of(by_user, &changed), Effect::SignOut);
    }

    #[test]
    fn risc_and_caep_events_have_the_documented_defaults() {
        let defaults = table(&BTreeMap::new());
        let of = |uri: String| effect_of(classify(&uri, &Map::new()), &defaults);
        assert_eq!(of(format!("{RISC}account-disabled")), Effect::Disable);
        assert_eq!(of(format!("{RISC}account-enabled")), Effect::Enable);
        assert_eq!(of(format!("{RISC}account-purged")), Effect::Purge);
        assert_eq!(of(format!("{RISC}credential-compromise")), Effect::CredentialCompromised);
        assert_eq!(of(format!("{RISC}account-credential-change-required")), Effect::PasswordReset);
        assert_eq!(of(format!("{CAEP}credential-change")), Effect::PasswordReset);
        assert_eq!(of(format!("{SSF}verification")), Effect::Record);
        assert_eq!(of("urn:example:unknown".into()), Effect::Record);
        assert!(check_overrides(&BTreeMap::from([("nope".to_owned(), Effect::Record)])).is_err());
    }
}
