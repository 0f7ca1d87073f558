//! Shared Signals streams (SSF §8): a receiver's stream management, and the SETs queued for
//! streams with the change they tell of (a cascade, an account enabled, a verification).
//!
//! A cascade reaches each stream as the fewest SETs whose subjects cover exactly the sessions it
//! revoked: the trigger names the scope (a user, a user's integration, an integration, a
//! platform), and every revoked session inside it is covered by one SET per user (with the
//! `application` member where the scope is an integration); only sessions outside it (a
//! permission narrowed, an agent suspended, a session revoked) get a SET each.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::audit::AuditEvent;
use crate::domain::access::{Capability, Receiver};
use crate::domain::*;
use crate::ssf;
use crate::store::streams::{self, NewSet, StoredStream, Target};
use crate::store::Tx;

/// Streams one receiver may hold: more is a 409.
pub const MAX_STREAMS_PER_RECEIVER: usize = 10;
/// Seconds between two verification requests of a stream (SSF `min_verification_interval`).
pub const MIN_VERIFICATION_INTERVAL: i64 = 5;

/// `delivery` as a receiver sends it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryIn {
    pub method: String,
    pub endpoint_url: Option<String>,
    pub authorization_header: Option<String>,
}

/// A stream configuration as a receiver sends it (create, PUT, PATCH). The transmitter-supplied
/// members are accepted so a receiver can send back what it read, and ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamIn {
    pub stream_id: Option<String>,
    pub events_requested: Option<Vec<String>>,
    pub delivery: Option<DeliveryIn>,
    pub description: Option<String>,
    // Transmitter-supplied (SSF §8.1.1): read-only.
    pub iss: Option<Value>,
    pub aud: Option<Value>,
    pub events_supported: Option<Value>,
    pub events_delivered: Option<Value>,
    pub min_verification_interval: Option<Value>,
    pub inactivity_timeout: Option<Value>,
}

/// What the edge checked of a push endpoint (the private-address guard runs in the API, which
/// knows the setting).
pub type EndpointCheck = fn(&str) -> Result<()>;

fn parse_events(requested: Option<Vec<String>>) -> Result<Vec<String>> {
    let requested = requested.unwrap_or_else(|| ssf::EVENTS_SUPPORTED.iter().map(|e| (*e).to_owned()).collect());
    if requested.len() > 32 || requested.iter().any(|e| e.is_empty() || e.len() > 256) {
        return Err(Error::invalid("`events_requested` must be at most 32 event type URIs"));
    }
    Ok(requested)
}

fn apply_delivery(
    stream: &mut StoredStream,
    delivery: Option<DeliveryIn>,
    master: &[u8; 32],
    poll_url: &str,
    check: EndpointCheck,
) -> Result<()> {
    let delivery =
        delivery.unwrap_or(DeliveryIn { method: ssf::POLL.into(), endpoint_url: None, authorization_header: None });
    match delivery.method.as_str() {
        ssf::PUSH => {
            let url = delivery.endpoint_url.ok_or_else(|| Error::invalid("push delivery needs `endpoint_url`"))?;
            check(&url)?;
            stream.endpoint_url = Some(url);
            stream.authorization_sealed = match delivery.authorization_header {
                // Sent as an HTTP header value: printable ASCII only, or every push would fail.
                Some(h) if h.len() > 4096 || !h.bytes().all(|b| (0x20..0x7f).contains(&b)) => {
                    return Err(Error::invalid(
                        "`authorization_header` must be one header value: printable ASCII, at most 4096 bytes",
                    ))
                }
                Some(h) => Some(ssf::seal(master, &stream.id, &h)?),
                None => None,
            };
        }
        ssf::POLL => {
            // The endpoint is tether's to supply; a receiver may send back the one it read.
            if delivery.endpoint_url.as_deref().is_some_and(|u| u != poll_url)
                || delivery.authorization_header.is_some()
            {
                return Err(Error::invalid(
                    "poll delivery takes no `authorization_header`, and no `endpoint_url` but the one tether supplies",
                ));
            }
            stream.endpoint_url = Some(poll_url.to_owned());
            stream.authorization_sealed = None;
        }
        other => {
            return Err(Error::invalid(format!(
                "`delivery.method` must be `{}` or `{}`, not `{}`",
                ssf::PUSH,
                ssf::POLL,
                other.chars().take(100).collect::<String>()
            )))
        }
    }
    stream.delivery_method = delivery.method;
    Ok(())
}

fn check_description(description: &Option<String>) -> Result<()> {
    if description.as_ref().is_some_and(|d| d.len() > 1024) {
        return Err(Error::invalid("`description` must be at most 1024 bytes"));
    }
    Ok(())
}

/// What a stream operation needs besides the transaction: the master key sealing push
/// credentials, the public base URL, and the endpoint check.
pub struct StreamEnv {
    pub master: [u8; 32],
    pub public_url: PublicUrl,
    pub check: EndpointCheck,
}

impl StreamEnv {
    fn poll_url(&self, stream: &str) -> String {
        self.public_url.join(&format!("{}/{stream}", ssf::POLL_PATH))
    }
}

pub fn create_stream(tx: &mut Tx<'_>, env: &StreamEnv, caller: &Receiver, req: StreamIn) -> Result<StoredStream> {
    if req.stream_id.is_some() {
        return Err(Error::invalid("`stream_id` is supplied by the transmitter"));
    }
    if streams::list_streams(tx.conn(), caller.caller().credential)?.len() >= MAX_STREAMS_PER_RECEIVER {
        return Err(Error::conflict(format!("a receiver holds at most {MAX_STREAMS_PER_RECEIVER} streams")));
    }
    check_description(&req.description)?;
    let id = format!("sst_{}", uuid::Uuid::now_v7().simple());
    let mut stream = StoredStream {
        id: id.clone(),
        receiver_id: caller.caller().credential,
        platform_id: caller.platform(),
        // The audience is the receiver's client id: a SET for one receiver is refused by another.
        aud: Value::String(caller.caller().credential.to_string()),
        events_requested: parse_events(req.events_requested)?,
        delivery_method: String::new(),
        endpoint_url: None,
        authorization_sealed: None,
        description: req.description,
        status: "enabled".into(),
        status_reason: None,
        min_verification_interval: MIN_VERIFICATION_INTERVAL,
        last_verification_at: None,
        created_at: tx.now(),
    };
    let poll_url = env.poll_url(&id);
    apply_delivery(&mut stream, req.delivery, &env.master, &poll_url, env.check)?;
    streams::insert_stream(tx, &stream)?;
    Ok(stream)
}

/// PATCH (`replace` false: members absent stay as they are) or PUT (`replace` true: absent
/// members take their defaults).
pub fn update_stream(
    tx: &mut Tx<'_>,
    env: &StreamEnv,
    caller: &Receiver,
    req: StreamIn,
    replace: bool,
) -> Result<StoredStream> {
    let id = req.stream_id.clone().ok_or_else(|| Error::invalid("`stream_id` is required"))?;
    let mut stream = streams::get_stream(tx.conn(), caller.caller().credential, &id)?;
    check_description(&req.description)?;
    if replace || req.events_requested.is_some() {
        stream.events_requested = parse_events(req.events_requested)?;
    }
    if replace || req.description.is_some() {
        stream.description = req.description;
    }
    if replace || req.delivery.is_some() {
        let poll_url = env.poll_url(&id);
        apply_delivery(&mut stream, req.delivery, &env.master, &poll_url, env.check)?;
    }
    streams::update_stream(tx, &stream)?;
    Ok(stream)
}

pub fn delete_stream(tx: &mut Tx<'_>, caller: &Receiver, id: &str) -> Result<()> {
    let stream = streams::get_stream(tx.conn(), caller.caller().credential, id)?;
    streams::delete_stream(tx, &stream.id)
}

/// Sets a stream's status. Each change is announced to the stream with a `stream-updated` SET
/// (held while paused; a disabled stream is sent nothing).
pub fn set_status(
    tx: &mut Tx<'_>,
    caller: &Receiver,
    id: &str,
    status: &str,
    reason: Option<String>,
) -> Result<StoredStream> {
    if !["enabled", "paused", "disabled"].contains(&status) {
        return Err(Error::invalid("`status` must be `enabled`, `paused` or `disabled`"));
    }
    if reason.as_ref().is_some_and(|r| r.len() > 1024) {
        return Err(Error::invalid("`reason` must be at most 1024 bytes"));
    }
    let stream = streams::get_stream(tx.conn(), caller.caller().credential, id)?;
    if stream.status == status {
        return Ok(stream);
    }
    streams::set_status(tx, &stream.id, status, reason.as_deref())?;
    if status != "disabled" {
        let mut event = json!({"status": status});
        if let Some(r) = &reason {
            event["reason"] = json!(r);
        }
        let payload = json!({
            "sub_id": {"format": "opaque", "id": stream.id},
            "events": {ssf::STREAM_UPDATED: event},
        })
        .to_string();
        let txn = format!("stream-updated:{}:{}", stream.id, tx.now().millis());
        streams::insert_set(
            tx,
            &NewSet {
                stream_id: &stream.id,
                txn: &txn,
                trigger_seq: None,
                event_type: ssf::STREAM_UPDATED,
                payload: &payload,
            },
        )?;
    }
    streams::get_stream(tx.conn(), caller.caller().credential, id)
}

/// Why a verification request was not queued.
#[derive(Debug)]
pub enum Verification {
    Queued,
    /// Asked again before `min_verification_interval` passed: seconds to wait.
    TooSoon(i64),
}

pub fn request_verification(
    tx: &mut Tx<'_>,
    caller: &Receiver,
    id: &str,
    state: Option<String>,
) -> Result<Verification> {
    if state.as_ref().is_some_and(|s| s.len() > 1024) {
        return Err(Error::invalid("`state` must be at most 1024 bytes"));
    }
    let stream = streams::get_stream(tx.conn(), caller.caller().credential, id)?;
    if let Some(last) = stream.last_verification_at {
        let next = last.plus_seconds(stream.min_verification_interval);
        if tx.now() < next {
            return Ok(Verification::TooSoon(((next.millis() - tx.now().millis()) + 999) / 1000));
        }
    }
    streams::set_last_verification(tx, &stream.id)?;
    if stream.status == "disabled" {
        return Ok(Verification::Queued);
    }
    let mut event = json!({});
    if let Some(state) = state {
        event["state"] = json!(state);
    }
    let payload =
        json!({"sub_id": {"format": "opaque", "id": stream.id}, "events": {ssf::VERIFICATION: event}}).to_string();
    let txn = format!("verification:{}:{}", stream.id, tx.now().millis());
    streams::insert_set(
        tx,
        &NewSet {
            stream_id: &stream.id,
            txn: &txn,
            trigger_seq: None,
            event_type: ssf::VERIFICATION,
            payload: &payload,
        },
    )?;
    Ok(Verification::Queued)
}

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

/// Brings the `signing_keys` rows of purpose `sets` in line with the SET key files, auditing
/// each key added, retired or reactivated (as `ops::keys::sync` does for the Ed25519 rings).
pub fn sync_set_keys(tx: &mut Tx<'_>, actor: Actor, keys: &[(u32, crate::tokens::KeyStatus, String)]) -> Result<usize> {
    use crate::store::keys;
    use crate::tokens::KeyStatus;
    let mut changes = 0;
    for (kid, status, public_key) in keys {
        let name = super::keys::status_name(*status);
        let action = match (keys::signing_key_status(tx.conn(), "sets", *kid)?.as_deref(), status) {
            (Some(s), _) if s == name => continue,
            (None, KeyStatus::Active) => "key.added",
            (Some(_), KeyStatus::Active) => "key.reactivated",
            (_, KeyStatus::Retired) => "key.retired",
        };
        keys::upsert_signing_key(tx, "sets", *kid, name, public_key)?;
        let subject = Subject::new("key", format!("sets:{kid}"));
        tx.audit(crate::audit::NewEvent::new(actor.clone(), action, subject).details(json!({
            "purpose": "sets", "kid": kid, "jwk_kid": crate::tokens::keys::set_kid(*kid), "n": public_key, "status": name,
        })))?;
        changes += 1;
    }
    Ok(changes)
}

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
        "initiating_entity": super::initiating_entity(&trigger.actor),
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
                "initiating_entity": super::initiating_entity(&trigger.actor),
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
        "initiating_entity": super::initiating_entity(&trigger.actor),
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
