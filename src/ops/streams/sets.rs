//! The SETs a change queues for every stream that takes them: a cascade's, in the revoking
//! transaction, and an account enabled again.
//!
//! A cascade reaches each stream as the fewest SETs whose subjects cover exactly the sessions it
//! revoked: the trigger names the scope (a user, a user's integration, an integration, a
//! platform), and every revoked session inside it is covered by one SET per user (with the
//! `application` member where the scope is an integration); only sessions outside it (a
//! permission narrowed, an agent suspended, a session revoked) get a SET each.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::audit::AuditEvent;
use crate::domain::*;
use crate::ssf;
use crate::store::streams::{self, NewSet, Target};
use crate::store::Tx;

/// A revoked session as the SET planner reads it.
pub struct Revoked<'a> {
    pub session: &'a RevokedSession,
    pub platform: PlatformId,
}

/// What a trigger's cascade revoked all of.
enum Scope {
    User(UserId),
    UserIntegration(UserId, IntegrationId),
    Integration(IntegrationId),
    Platform(PlatformId),
    Sessions,
}

fn scope_of(trigger: &AuditEvent) -> Scope {
    let id = trigger.subject.id.as_str();
    let detail = |key: &str| trigger.details.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
    let parsed = match trigger.action.as_str() {
        "user.disabled"
        | "user.password_reset"
        | "user.credential_compromised"
        | "user.mfa_reset"
        | "user.signed_out_all" => UserId::parse(id).ok().map(Scope::User),
        "user.integration_disconnected" => UserId::parse(id)
            .ok()
            .zip(IntegrationId::parse(&detail("integration_id")).ok())
            .map(|(u, i)| Scope::UserIntegration(u, i)),
        "integration.disabled" => IntegrationId::parse(id).ok().map(Scope::Integration),
        "platform.disabled" => PlatformId::parse(id).ok().map(Scope::Platform),
        _ => None,
    };
    parsed.unwrap_or(Scope::Sessions)
}

/// One SET to queue, before it is matched against streams.
struct Candidate {
    event_type: &'static str,
    payload: String,
    /// Subject keys it names (for removed subjects).
    keys: Vec<String>,
    /// Platforms of the sessions it tells of (a platform-bound stream gets it if its platform is
    /// among them); `None`: not about sessions (an account event), every stream.
    platforms: Option<BTreeSet<PlatformId>>,
}

/// The user as a subject: `iss_sub` (the issuer is filled in at signing), or, where the email is
/// known, `aliases` of both (RFC 9493 §3.2.2).
fn user_subject(tx: &Tx<'_>, user: UserId) -> Result<Value> {
    let iss_sub = json!({"format": "iss_sub", "sub": user});
    Ok(match streams::email_of(tx.conn(), user)? {
        Some(email) => json!({"format": "aliases", "identifiers": [iss_sub, {"format": "email", "email": email}]}),
        None => iss_sub,
    })
}

fn session_revoked_body(trigger: &AuditEvent, reason: &str) -> Value {
    json!({
        "event_timestamp": trigger.at.seconds(),
        "initiating_entity": crate::ops::initiating_entity(&trigger.actor),
        "reason_admin": {"en": reason},
        "reason_user": {"en": crate::events::reason_for_user(reason)},
    })
}

/// A SET covering a user's revoked sessions (through one integration when the scope is one).
type GroupKey = (UserId, Option<IntegrationId>);
/// The group's first revocation (for the order of SETs), its reason, its sessions' platforms.
type Group = (usize, String, BTreeSet<PlatformId>);

/// Queues a cascade's SETs for every stream that takes them, in the cascade's transaction. Costs
/// one query when no stream exists, and otherwise one row per SET per stream: the work per
/// revoked session is an in-memory grouping.
pub fn enqueue_cascade(tx: &mut Tx<'_>, trigger: &AuditEvent, revoked: &[Revoked<'_>]) -> Result<()> {
    let targets = streams::live_targets(tx.conn())?;
    if targets.is_empty() {
        return Ok(());
    }
    let scope = scope_of(trigger);
    let mut candidates = Vec::new();
    if trigger.action == "user.disabled" {
        if let Ok(user) = UserId::parse(&trigger.subject.id) {
            let body = json!({
                "event_timestamp": trigger.at.seconds(),
                "initiating_entity": crate::ops::initiating_entity(&trigger.actor),
                "reason_admin": {"en": trigger.reason.clone().unwrap_or_else(|| "user_disabled".into())},
            });
            candidates.push(Candidate {
                event_type: ssf::ACCOUNT_DISABLED,
                payload: json!({"sub_id": user_subject(tx, user)?, "events": {ssf::ACCOUNT_DISABLED: body}})
                    .to_string(),
                keys: vec![format!("user:{user}")],
                // Platform-bound streams hear of it with the user's sessions on their platform.
                platforms: Some(revoked.iter().filter(|r| r.session.user_id == user).map(|r| r.platform).collect()),
            });
        }
    }
    let mut groups: BTreeMap<GroupKey, Group> = BTreeMap::new();
    let mut singles = Vec::new();
    for (i, r) in revoked.iter().enumerate() {
        let s = r.session;
        let group = match scope {
            Scope::User(u) if s.user_id == u => Some((u, None)),
            Scope::UserIntegration(u, int) if s.user_id == u && s.integration_id == int => Some((u, Some(int))),
            Scope::Integration(int) if s.integration_id == int => Some((s.user_id, Some(int))),
            Scope::Platform(p) if r.platform == p => Some((s.user_id, Some(s.integration_id))),
            _ => None,
        };
        match group {
            Some(key) => {
                groups.entry(key).or_insert_with(|| (i, s.reason.clone(), BTreeSet::new())).2.insert(r.platform);
            }
            None => singles.push(r),
        }
    }
    let mut ordered: Vec<_> = groups.into_iter().collect();
    ordered.sort_by_key(|(_, (first, _, _))| *first);
    for ((user, integration), (_, reason, platforms)) in ordered {
        let mut sub_id = json!({"format": "complex", "user": user_subject(tx, user)?});
        let mut keys = vec![format!("user:{user}")];
        if let Some(int) = integration {
            sub_id["application"] = json!({"format": "opaque", "id": int});
            keys.push(format!("application:{int}"));
        }
        candidates.push(Candidate {
            event_type: ssf::SESSION_REVOKED,
            payload:
                json!({"sub_id": sub_id, "events": {ssf::SESSION_REVOKED: session_revoked_body(trigger, &reason)}})
                    .to_string(),
            keys,
            platforms: Some(platforms),
        });
    }
    for r in singles {
        let s = r.session;
        let sub_id = json!({
            "format": "complex",
            "user": user_subject(tx, s.user_id)?,
            "session": {"format": "opaque", "id": s.session_id},
        });
        candidates.push(Candidate {
            event_type: ssf::SESSION_REVOKED,
            payload:
                json!({"sub_id": sub_id, "events": {ssf::SESSION_REVOKED: session_revoked_body(trigger, &s.reason)}})
                    .to_string(),
            keys: vec![
                format!("user:{}", s.user_id),
                format!("session:{}", s.session_id),
                format!("application:{}", s.integration_id),
            ],
            platforms: Some(BTreeSet::from([r.platform])),
        });
    }
    queue(tx, &targets, &candidates, trigger)
}

/// Queues the RISC `account-enabled` SET of a user enabled again.
pub fn enqueue_account_enabled(tx: &mut Tx<'_>, trigger: &AuditEvent, user: UserId) -> Result<()> {
    let targets = streams::live_targets(tx.conn())?;
    if targets.is_empty() {
        return Ok(());
    }
    let body = json!({
        "event_timestamp": trigger.at.seconds(),
        "initiating_entity": crate::ops::initiating_entity(&trigger.actor),
    });
    let candidate = Candidate {
        event_type: ssf::ACCOUNT_ENABLED,
        payload: json!({"sub_id": user_subject(tx, user)?, "events": {ssf::ACCOUNT_ENABLED: body}}).to_string(),
        keys: vec![format!("user:{user}")],
        platforms: None,
    };
    // A platform-bound stream hears of it if the user is one of its platform's users.
    let mut for_targets = Vec::new();
    for t in targets {
        let keep = match t.platform_id {
            Some(p) => streams::user_on_platform(tx.conn(), user, p)?,
            None => true,
        };
        if keep {
            for_targets.push(t);
        }
    }
    queue(tx, &for_targets, &[candidate], trigger)
}

fn queue(tx: &mut Tx<'_>, targets: &[Target], candidates: &[Candidate], trigger: &AuditEvent) -> Result<()> {
    for target in targets {
        for c in candidates {
            if !target.events_requested.iter().any(|e| e == c.event_type) {
                continue;
            }
            if let (Some(bound), Some(platforms)) = (target.platform_id, &c.platforms) {
                if !platforms.contains(&bound) {
                    continue;
                }
            }
            if c.keys.iter().any(|k| target.excluded.contains(k)) {
                continue;
            }
            streams::insert_set(
                tx,
                &NewSet {
                    stream_id: &target.id,
                    txn: &trigger.id,
                    trigger_seq: Some(trigger.seq),
                    event_type: c.event_type,
                    payload: &c.payload,
                },
            )?;
        }
    }
    Ok(())
}
