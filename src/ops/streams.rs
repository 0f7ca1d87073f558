//! Shared Signals streams (SSF §8): a receiver's stream management, and the SETs queued for
//! streams with the change they tell of (a cascade, an account enabled, a verification).

mod sets;
mod subjects;

pub use sets::{enqueue_account_enabled, enqueue_cascade, Revoked};
pub use subjects::change_subject;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::domain::access::{Capability, Receiver};
use crate::domain::*;
use crate::ssf;
use crate::store::streams::{self, NewSet, StoredStream};
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
