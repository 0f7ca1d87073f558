//! Row → domain mapping: every column read from SQLite is parsed into its domain type here.

use super::conn::Row;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ValueRef};

use crate::audit::{Actor, ActorKind, AuditEvent, Subject};
use crate::domain::*;

fn bad(what: &str) -> FromSqlError {
    FromSqlError::Other(format!("stored {what} is malformed").into())
}

macro_rules! from_sql_id {
    ($($t:ty),*) => {$(
        impl FromSql for $t {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                <$t>::parse(value.as_str()?).map_err(|_| bad(<$t>::KIND))
            }
        }
    )*};
}
from_sql_id!(PlatformId, AgentId, IntegrationId, UserId, DelegationId, SessionId, CredentialId, WebhookId, GroupId);

impl FromSql for ScopeSet {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        ScopeSet::from_json(value.as_str()?).map_err(|_| bad("scope set"))
    }
}

impl FromSql for Timestamp {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        value.as_i64().map(Timestamp)
    }
}

macro_rules! from_sql_status {
    ($($t:ty),*) => {$(
        impl FromSql for $t {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                <$t>::parse(value.as_str()?).ok_or_else(|| bad("status"))
            }
        }
    )*};
}
from_sql_status!(PlatformStatus, AgentStatus, IntegrationStatus, UserStatus, DelegationStatus, ActorKind);

pub const PLATFORM_COLUMNS: &str = "id, name, status, created_at";
pub fn platform(r: &Row<'_>) -> rusqlite::Result<Platform> {
    Ok(Platform { id: r.get(0)?, name: r.get(1)?, status: r.get(2)?, created_at: r.get(3)? })
}

pub const AGENT_COLUMNS: &str = "id, platform_id, name, scopes, status, created_at";
pub fn agent(r: &Row<'_>) -> rusqlite::Result<Agent> {
    Ok(Agent {
        id: r.get(0)?,
        platform_id: r.get(1)?,
        name: r.get(2)?,
        scopes: r.get(3)?,
        status: r.get(4)?,
        created_at: r.get(5)?,
    })
}

pub const INTEGRATION_COLUMNS: &str = "id, platform_id, name, scopes, status, created_at";
pub fn integration(r: &Row<'_>) -> rusqlite::Result<Integration> {
    Ok(Integration {
        id: r.get(0)?,
        platform_id: r.get(1)?,
        name: r.get(2)?,
        scopes: r.get(3)?,
        status: r.get(4)?,
        created_at: r.get(5)?,
    })
}

pub const USER_COLUMNS: &str =
    "id, external_id, user_name, email, display_name, permissions, status, created_at, ended_at";
pub fn user(r: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: r.get(0)?,
        external_id: r.get(1)?,
        user_name: r.get(2)?,
        email: r.get(3)?,
        display_name: r.get(4)?,
        permissions: r.get(5)?,
        status: r.get(6)?,
        created_at: r.get(7)?,
        ended_at: r.get(8)?,
        // Filled by `store::users` from the user's groups; until then, the user's own.
        groups: Vec::new(),
        effective_permissions: r.get(5)?,
    })
}

pub const DELEGATION_COLUMNS: &str =
    "id, user_id, agent_id, integration_id, platform_id, scopes, status, created_at, revoked_at, revoked_reason";
pub fn delegation(r: &Row<'_>) -> rusqlite::Result<Delegation> {
    Ok(Delegation {
        id: r.get(0)?,
        user_id: r.get(1)?,
        agent_id: r.get(2)?,
        integration_id: r.get(3)?,
        platform_id: r.get(4)?,
        scopes: r.get(5)?,
        status: r.get(6)?,
        created_at: r.get(7)?,
        revoked_at: r.get(8)?,
        revoked_reason: r.get(9)?,
    })
}

pub const SESSION_COLUMNS: &str =
    "id, user_id, agent_id, integration_id, delegation_id, platform_id, parent_id, scopes, \
     status, created_at, expires_at, last_seen_at, ip, user_agent, device, last_ip, last_user_agent, \
     revoked_at, revoked_reason, revoked_by_seq";

/// A session row; `now` decides whether an unrevoked session reads as active or expired.
pub fn session(r: &Row<'_>, now: Timestamp) -> rusqlite::Result<Session> {
    let stored: String = r.get(8)?;
    let expires_at: Timestamp = r.get(10)?;
    let status = match stored.as_str() {
        "revoked" => SessionStatus::Revoked,
        _ if expires_at <= now => SessionStatus::Expired,
        _ => SessionStatus::Active,
    };
    Ok(Session {
        id: r.get(0)?,
        user_id: r.get(1)?,
        agent_id: r.get(2)?,
        integration_id: r.get(3)?,
        delegation_id: r.get(4)?,
        platform_id: r.get(5)?,
        parent_session_id: r.get(6)?,
        scopes: r.get(7)?,
        status,
        created_at: r.get(9)?,
        expires_at,
        last_seen_at: r.get(11)?,
        metadata: SessionMetadata {
            ip: r.get(12)?,
            user_agent: r.get(13)?,
            device: r.get(14)?,
            last_ip: r.get(15)?,
            last_user_agent: r.get(16)?,
        },
        revoked_at: r.get(17)?,
        revoked_reason: r.get(18)?,
        revoked_by_seq: r.get(19)?,
    })
}

pub const CREDENTIAL_COLUMNS: &str = "id, role, label, platform_id, user_id, created_at, expires_at, revoked_at";
pub fn credential(r: &Row<'_>) -> rusqlite::Result<Credential> {
    let role: String = r.get(1)?;
    Ok(Credential {
        id: r.get(0)?,
        role: RoleKind::parse(&role)
            .ok_or_else(|| rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, "role".into()))?,
        label: r.get(2)?,
        platform_id: r.get(3)?,
        user_id: r.get(4)?,
        created_at: r.get(5)?,
        expires_at: r.get(6)?,
        revoked_at: r.get(7)?,
    })
}

/// The events the audit log's subject index holds: all but the sessions a cascade revoked
/// (`session.revoked` with a cause), which are found through their session's `revoked_by_seq`
/// instead (migration 0010). It is the WHERE clause of the partial index `audit_by_subject`,
/// written the same way, and a query carries it to let SQLite use that index.
macro_rules! indexed_event {
    () => {
        "(cause_seq IS NULL OR action <> 'session.revoked')"
    };
}
pub(crate) use indexed_event;

pub const INDEXED_EVENT: &str = indexed_event!();

/// The newest event's seq, hash and time: the chain's head.
pub const CHAIN_HEAD: &str = "SELECT seq, hash, at FROM audit_events ORDER BY seq DESC LIMIT 1";

/// The columns of an audit row, of the `audit_events` named by the prefix (`""` or `"e."`). The
/// details are the event's own `details`, or the shared text its `details_id` points to
/// (migration 0010).
macro_rules! audit_columns {
    ($t:literal) => {
        concat!(
            $t,
            "seq, ",
            $t,
            "id, ",
            $t,
            "at, ",
            $t,
            "actor_kind, ",
            $t,
            "actor_id, ",
            $t,
            "action, ",
            $t,
            "subject_kind, ",
            $t,
            "subject_id, ",
            $t,
            "cause_seq, ",
            $t,
            "reason, ",
            audit_details!($t),
            ", ",
            $t,
            "prev_hash, ",
            $t,
            "hash"
        )
    };
}

macro_rules! audit_details {
    ($t:literal) => {
        concat!(
            "coalesce((SELECT text FROM audit_details WHERE audit_details.id = ",
            $t,
            "details_id), ",
            $t,
            "details)"
        )
    };
}

/// [`AUDIT_COLUMNS`]' details, for a WHERE clause (e.g. `json_extract`).
pub const AUDIT_DETAILS: &str = audit_details!("");

pub const AUDIT_COLUMNS: &str = audit_columns!("");

/// [`AUDIT_COLUMNS`] of an `audit_events` aliased `e` in a join.
pub const AUDIT_COLUMNS_OF_E: &str = audit_columns!("e.");
/// Maps [`AUDIT_COLUMNS`] without interpreting anything (see [`crate::audit::StoredRecord`]).
pub fn stored_record(r: &Row<'_>) -> rusqlite::Result<crate::audit::StoredRecord> {
    let mut utf8 = true;
    let mut text = |i: usize| -> rusqlite::Result<String> {
        let bytes = r.get_ref(i)?.as_bytes()?;
        Ok(match std::str::from_utf8(bytes) {
            Ok(s) => s.to_owned(),
            Err(_) => {
                utf8 = false;
                String::from_utf8_lossy(bytes).into_owned()
            }
        })
    };
    let (id, actor_kind, actor_id, action) = (text(1)?, text(3)?, text(4)?, text(5)?);
    let (subject_kind, subject_id, details, prev_hash, hash) = (text(6)?, text(7)?, text(10)?, text(11)?, text(12)?);
    let reason = match r.get_ref(9)? {
        rusqlite::types::ValueRef::Null => None,
        _ => Some(text(9)?),
    };
    Ok(crate::audit::StoredRecord {
        seq: r.get(0)?,
        id,
        at: r.get(2)?,
        actor_kind,
        actor_id,
        action,
        subject_kind,
        subject_id,
        cause_seq: r.get(8)?,
        reason,
        details,
        prev_hash,
        hash,
        utf8,
    })
}

pub fn audit_event(r: &Row<'_>) -> rusqlite::Result<AuditEvent> {
    let details: String = r.get(10)?;
    Ok(AuditEvent {
        seq: r.get(0)?,
        id: r.get(1)?,
        at: r.get(2)?,
        actor: Actor { kind: r.get(3)?, id: r.get(4)? },
        action: r.get(5)?,
        subject: Subject { kind: r.get(6)?, id: r.get(7)? },
        cause_seq: r.get(8)?,
        reason: r.get(9)?,
        // A details column that is not JSON (a tampered row) is kept as a string, so listing it
        // still works; verification reads rows as stored ([`stored_record`]).
        details: std::sync::Arc::new(serde_json::from_str(&details).unwrap_or(serde_json::Value::String(details))),
        prev_hash: r.get(11)?,
        hash: r.get(12)?,
    })
}
