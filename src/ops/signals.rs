//! Signals in: registering and disabling signal sources, applying a received SET, and Global Token
//! Revocation. Each received signal is audited first (`signal.received`, or
//! `global_token_revocation`) and its effect's trigger names that event as its cause, in the same
//! transaction, so an auditor can follow "the provider said account-disabled → these sessions
//! ended", and nothing is half-applied.
//!
//! The effects are the same changes as the user commands of `ops::users` (same actions, same
//! cascade reasons), written here because their trigger must carry the signal as its cause.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::users::{self as users_ops, LifecycleKind};
use crate::audit::NewEvent;
use crate::domain::access::{Admin, Capability, ManagesUsers, SignalAuthority};
use crate::domain::*;
use crate::signals::effects::{self, Effect, EffectTable, Received};
use crate::signals::set::VerifiedSet;
use crate::signals::subject::{self, UserField};
use crate::store::signals::{self as store, SourceRow};
use crate::store::{users, Tx};

/// `POST /v1/signal-sources`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSignalSource {
    /// The transmitter's issuer, exactly as its SETs' `iss` carries it.
    #[schema(min_length = 1, max_length = 512)]
    pub issuer: String,
    /// Where the transmitter publishes its keys (an `https://` or `http://` URL).
    /// Exactly one of `jwks_uri` and `jwks`.
    #[schema(max_length = 2048)]
    pub jwks_uri: Option<String>,
    /// The transmitter's keys, inline: a JWKS (`{"keys": [...]}`) of RSA (≥ 2048 bits), EC P-256
    /// or P-384, or Ed25519 public keys.
    #[schema(value_type = Option<Object>)]
    pub jwks: Option<Value>,
    /// When set, a SET's `aud` must contain it.
    #[schema(min_length = 1, max_length = 512)]
    pub audience: Option<String>,
    #[schema(value_type = Option<String>, max_length = 200)]
    pub label: Option<Label>,
    /// Overrides of the default effects, by signal name (docs/api.md, "Effects of received signals").
    #[schema(value_type = Option<BTreeMap<String, Effect>>)]
    pub effects: Option<BTreeMap<String, Effect>>,
}

fn check_text(name: &str, value: &str, max: usize) -> Result<String> {
    clean_text(name, value, max).and_then(|v| {
        if v.is_empty() {
            Err(Error::invalid(format!("`{name}` must not be empty")))
        } else {
            Ok(v)
        }
    })
}

/// Registers a source. `push_auth_hash` is the hash of the push authorization the caller shows
/// once; the authorization itself never reaches the database or the audit log.
pub fn create_source(
    tx: &mut Tx<'_>,
    caller: &Admin,
    req: NewSignalSource,
    allow_private: bool,
    push_auth_hash: &str,
) -> Result<SourceRow> {
    let issuer = check_text("issuer", &req.issuer, 512)?;
    let audience = req.audience.as_deref().map(|a| check_text("audience", a, 512)).transpose()?;
    let (jwks_uri, jwks) = match (req.jwks_uri, req.jwks) {
        (Some(uri), None) => {
            let uri = check_text("jwks_uri", &uri, 2048)?;
            if let Some(why) = crate::signals::jwks::refused_uri(&uri, allow_private) {
                return Err(Error::invalid(why));
            }
            (Some(uri), None)
        }
        (None, Some(jwks)) => {
            let text = jwks.to_string();
            if text.len() > crate::signals::jwks::MAX_JWKS_BYTES {
                return Err(Error::invalid("`jwks` is larger than 64 KiB"));
            }
            crate::signals::jwks::parse_jwks(&jwks, true).map_err(|why| Error::invalid(format!("`jwks`: {why}")))?;
            (None, Some(text))
        }
        _ => return Err(Error::invalid("give exactly one of `jwks_uri` and `jwks`")),
    };
    let overrides = req.effects.unwrap_or_default();
    effects::check_overrides(&overrides).map_err(Error::invalid)?;
    let source = SourceRow {
        id: SignalSourceId::generate(),
        issuer,
        audience,
        label: req.label.map(Label::into_string),
        jwks_uri,
        jwks,
        effects: serde_json::to_string(&overrides).map_err(Error::internal)?,
        status: "active".into(),
        created_at: tx.now(),
        disabled_at: None,
    };
    store::insert_source(tx, &source, push_auth_hash)?;
    tx.audit(
        NewEvent::new(caller.actor(), "signal_source.created", Subject::new("signal_source", source.id)).details(
            json!({
                "issuer": source.issuer, "audience": source.audience, "label": source.label,
                "jwks_uri": source.jwks_uri, "keys": if source.jwks.is_some() { "inline" } else { "jwks_uri" },
                "effects": overrides,
            }),
        ),
    )?;
    Ok(source)
}

/// Disables a source: its pushes are refused from now on. Disabling a disabled source changes
/// nothing and answers it as it is.
pub fn disable_source(
    tx: &mut Tx<'_>,
    caller: &Admin,
    id: SignalSourceId,
    reason: Option<Reason>,
) -> Result<SourceRow> {
    let source = store::get_source(tx.conn(), id)?;
    if source.status == "disabled" {
        return Ok(source);
    }
    store::disable_source(tx, id)?;
    tx.audit(
        NewEvent::new(caller.actor(), "signal_source.disabled", Subject::new("signal_source", id))
            .reason(reason.map(Reason::into_string)),
    )?;
    store::get_source(tx.conn(), id)
}

/// The effect table of a stored source (its overrides over the defaults).
pub fn effect_table(source: &SourceRow) -> EffectTable {
    let overrides: BTreeMap<String, Effect> = serde_json::from_str(&source.effects).unwrap_or_default();
    effects::table(&overrides)
}

/// How a subject was matched, for the audit record.
#[derive(Debug, Clone)]
pub enum Match {
    User(User),
    /// Named nobody here (the reason is recorded).
    Unmatched(String),
}

fn find(conn: &crate::store::Conn, field: UserField, value: &str) -> Result<Option<User>> {
    let key = match field {
        UserField::ExternalId => users::UserKey::ExternalId(value),
        UserField::UserName => users::UserKey::UserName(value),
        UserField::Email => users::UserKey::Email(value),
    };
    users::find_user(conn, key)
}

/// Resolves a subject identifier to one user. `issuer`: the source's, for `iss_sub`.
pub fn resolve(conn: &crate::store::Conn, subject: &Value, issuer: Option<&str>) -> Result<Match> {
    let wanted = match subject::wanted(subject, issuer) {
        Ok(w) => w,
        Err(subject::Unsupported(why)) => return Ok(Match::Unmatched(why)),
    };
    let mut found: Option<User> = None;
    for lookups in &wanted.identifiers {
        for lookup in lookups {
            if let Some(user) = find(conn, lookup.field, &lookup.value)? {
                match &found {
                    Some(earlier) if earlier.id != user.id => {
                        return Ok(Match::Unmatched("the subject's identifiers name different users".into()))
                    }
                    _ => found = Some(user),
                }
                break;
            }
        }
    }
    Ok(match found {
        Some(user) => Match::User(user),
        None => Match::Unmatched("no user has these identifiers".into()),
    })
}

/// What receiving a SET came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Recorded (and its effect applied) at this audit seq.
    Accepted { seq: i64, effect: Effect, user: Option<UserId> },
    /// This source sent this `jti` before: nothing done again.
    Replayed { seq: i64 },
    /// The source was disabled after the push was authenticated.
    SourceDisabled,
}

/// Records a verified SET and applies its effect, in one transaction.
pub fn receive(tx: &mut Tx<'_>, authority: &SignalAuthority, set: &VerifiedSet) -> Result<Outcome> {
    let source = store::get_source(tx.conn(), authority.source())?;
    if source.status != "active" {
        return Ok(Outcome::SourceDisabled);
    }
    if let Some(seq) = store::received_before(tx.conn(), source.id, &set.jti)? {
        return Ok(Outcome::Replayed { seq });
    }
    let received = effects::classify(&set.event_type, &set.event);
    let effect = effects::effect_of(received, &effect_table(&source));
    let matched = match &set.subject {
        Some(s) => resolve(tx.conn(), s, Some(&source.issuer))?,
        None => Match::Unmatched("the SET names no subject".into()),
    };
    let (subject, user, unmatched) = match &matched {
        Match::User(u) => (Subject::new("user", u.id), Some(u.clone()), None),
        Match::Unmatched(why) => (Subject::new("signal_source", source.id), None, Some(why.clone())),
    };
    let signal_name = match received {
        Received::Signal(s) => s.name(),
        Received::Verification => "verification",
        Received::Other => "other",
    };
    // The effect is applied only to a matched user; a verification or unknown event only records.
    let applied = if user.is_some() { effect } else { Effect::Record };
    let record = NewEvent::new(authority.actor(), "signal.received", subject).details(json!({
        "source_id": source.id,
        "jti": set.jti,
        "iat": set.iat,
        "txn": set.txn,
        "event_type": set.event_type,
        "signal": signal_name,
        "subject": set.subject,
        "user_id": user.as_ref().map(|u| u.id),
        "unmatched": unmatched,
        "effect": applied.as_str(),
        "initiating_entity": set.event.get("initiating_entity"),
        "reason_admin": set.event.get("reason_admin"),
    }));
    let record = tx.audit(record)?;
    store::insert_received(tx, source.id, &set.jti, record.seq)?;
    if let Some(user) = &user {
        let why = format!("{signal_name} signal from {}", source.id);
        apply(tx, authority, record.seq, user, applied, why)?;
    }
    Ok(Outcome::Accepted { seq: record.seq, effect: applied, user: user.map(|u| u.id) })
}

/// Applies an effect to a user through the user commands of `ops::users`, each trigger caused by
/// `cause` (the `signal.received` event), so a received signal changes a user exactly as the API
/// does: the same cascade, receipt and outgoing Shared Signals. An effect that finds nothing to
/// change (disabling a disabled user, enabling an ended one) writes nothing more.
fn apply(
    tx: &mut Tx<'_>,
    authority: &SignalAuthority,
    cause: i64,
    user: &User,
    effect: Effect,
    reason: String,
) -> Result<()> {
    let reason = Some(reason);
    let cause_seq = Some(cause);
    match effect {
        Effect::Disable => users_ops::disable_user_caused_by(tx, authority, user.id, reason, cause_seq).map(drop),
        // As SCIM DELETE: disabled with its cascade, then ended for good.
        Effect::Purge => users_ops::end_user(tx, authority, user.id, reason, cause_seq).map(drop),
        // An ended user stays ended: the provider deleted it.
        Effect::Enable if user.ended_at.is_some() => Ok(()),
        Effect::Enable => users_ops::enable_user_caused_by(tx, authority, user.id, reason, cause_seq).map(drop),
        Effect::CredentialCompromised => {
            let kind = LifecycleKind::CredentialCompromised;
            users_ops::user_lifecycle_event_caused_by(tx, authority, user.id, kind, reason, cause_seq).map(drop)
        }
        Effect::PasswordReset => {
            let kind = LifecycleKind::PasswordReset;
            users_ops::user_lifecycle_event_caused_by(tx, authority, user.id, kind, reason, cause_seq).map(drop)
        }
        Effect::SignOut => users_ops::sign_out_all_caused_by(tx, authority, user.id, reason, cause).map(drop),
        Effect::Record => Ok(()),
    }
}

/// Global Token Revocation: records the request (`global_token_revocation`, subject the user),
/// then signs all the user's agents out, caused by it. `404` for a subject that names nobody.
pub fn global_revocation(
    tx: &mut Tx<'_>,
    caller: &impl ManagesUsers,
    subject: &Value,
    issuer: Option<&str>,
) -> Result<Receipt> {
    let user = match resolve(tx.conn(), subject, issuer)? {
        Match::User(u) => u,
        Match::Unmatched(_) => return Err(Error::NotFound("user")),
    };
    let record = tx.audit(
        NewEvent::new(caller.acting_actor(), "global_token_revocation", Subject::new("user", user.id))
            .details(json!({"sub_id": subject})),
    )?;
    let reason = Some("global token revocation".to_owned());
    users_ops::sign_out_all_caused_by(tx, caller, user.id, reason, record.seq)
}
