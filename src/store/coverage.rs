//! Coverage reports: for a trigger event, every session that depended on its subject and was
//! active at that moment, and what revoked each. A complete report lists no survivors.

use super::conn::Conn;
use serde::Serialize;
use utoipa::ToSchema;

use super::audit;
use super::db::db_error;
use crate::audit::AuditEvent;
use crate::domain::*;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CoveredSession {
    pub session_id: SessionId,
    /// The event that revoked the session (absent for a survivor that is still active).
    pub revoked_by_seq: Option<i64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Coverage {
    pub event: AuditEvent,
    pub sessions: Vec<CoveredSession>,
    /// Sessions that were active for the subject at the event and were not revoked by it.
    pub survivors: Vec<SessionId>,
    /// Every receiver told of this revocation (SSF streams, webhooks) and whether and when it
    /// acknowledged it.
    pub receivers: Vec<super::streams::ReceiverAck>,
}

/// Which sessions a trigger's subject reaches (before following sub-agent sessions).
fn base_clause(event: &AuditEvent) -> Result<(&'static str, Vec<String>)> {
    let id = event.subject.id.clone();
    let detail = |key: &str| event.details.get(key).and_then(|v| v.as_str()).map(str::to_owned);
    Ok(match event.action.as_str() {
        "user.disabled"
        | "user.password_reset"
        | "user.credential_compromised"
        | "user.mfa_reset"
        | "user.signed_out_all"
        | "user.permissions_changed" => ("s.user_id = ?", vec![id]),
        "user.agent_disconnected" => (
            // `+`: reach them through the user's sessions, not through every user's of that agent.
            "s.user_id = ? AND +s.agent_id = ?",
            vec![id, detail("agent_id").ok_or_else(|| Error::internal("disconnect event without agent_id"))?],
        ),
        "user.integration_disconnected" => (
            "s.user_id = ? AND +s.integration_id = ?",
            vec![
                id,
                detail("integration_id").ok_or_else(|| Error::internal("disconnect event without integration_id"))?,
            ],
        ),
        "delegation.revoked" if event.cause_seq.is_none() => ("s.delegation_id = ?", vec![id]),
        "session.revoked" if event.cause_seq.is_none() => ("s.id = ?", vec![id]),
        // A replayed refresh token: the session it belonged to (and, below, its sub-agents).
        "token.revoked_reuse" => ("s.id = ?", vec![id]),
        "integration.disabled" => ("s.integration_id = ?", vec![id]),
        "agent.suspended" | "agent.deregistered" => ("s.agent_id = ?", vec![id]),
        "platform.disabled" => ("s.platform_id = ?", vec![id]),
        other => return Err(Error::invalid(format!("event {} ({other}) is not a revocation trigger", event.seq))),
    })
}

struct Candidate {
    id: SessionId,
    scopes: ScopeSet,
    revoked_by: Option<i64>,
    revoking_cause: Option<i64>,
}

pub(super) const CANDIDATE_COLUMNS: &str = "s.id, s.scopes, s.revoked_by_seq, a.cause_seq FROM sessions s \
     LEFT JOIN audit_events a ON a.seq = s.revoked_by_seq \
     WHERE s.created_seq < ?1 AND s.expires_at > ?2 AND (s.revoked_by_seq IS NULL OR s.revoked_by_seq >= ?1)";

fn candidates(conn: &Conn, sql: &str, event: &AuditEvent, keys: &[String]) -> Result<Vec<Candidate>> {
    let mut st = conn.prepare_cached(sql).map_err(db_error)?;
    let mut values: Vec<rusqlite::types::Value> = vec![event.seq.into(), event.at.millis().into()];
    values.extend(keys.iter().cloned().map(rusqlite::types::Value::Text));
    let rows = st
        .query_map(&values, |r| {
            Ok(Candidate { id: r.get(0)?, scopes: r.get(1)?, revoked_by: r.get(2)?, revoking_cause: r.get(3)? })
        })
        .map_err(db_error)?;
    rows.collect::<super::conn::DbResult<Vec<_>>>().map_err(db_error)
}

pub fn report(conn: &Conn, seq: i64) -> Result<Coverage> {
    let event = audit::get_audit_event(conn, seq)?;
    let (clause, keys) = base_clause(&event)?;
    let sql = format!("SELECT {CANDIDATE_COLUMNS} AND {clause} ORDER BY s.id");
    let mut found = candidates(conn, &sql, &event, &keys)?;
    if event.action == "user.permissions_changed" {
        // Only sessions holding a removed scope depended on the permission.
        let removed: ScopeSet =
            event.details.get("removed").cloned().and_then(|v| serde_json::from_value(v).ok()).unwrap_or_default();
        found.retain(|c| c.scopes.iter().any(|s| removed.contains(s)));
    }
    // Sub-agent sessions depend on their parents, whatever their own chain: one query per level
    // of the tree (at most the session depth limit), each seeking the parent index for every
    // parent of the level, rather than one query per session.
    // The parents of a level, bound as one JSON array of ids.
    let parents_in = conn.dialect().pick(
        "s.parent_id IN (SELECT value FROM json_each(?3))",
        "s.parent_id IN (SELECT jsonb_array_elements_text(CAST(?3 AS jsonb)))",
    );
    let child_sql = format!("SELECT {CANDIDATE_COLUMNS} AND {parents_in} ORDER BY s.id");
    let mut seen: std::collections::HashSet<SessionId> = found.iter().map(|c| c.id).collect();
    let mut level: Vec<String> = found.iter().map(|c| c.id.to_string()).collect();
    while !level.is_empty() {
        let parents = serde_json::to_string(&level).map_err(Error::internal)?;
        level.clear();
        for child in candidates(conn, &child_sql, &event, &[parents])? {
            if seen.insert(child.id) {
                level.push(child.id.to_string());
                found.push(child);
            }
        }
    }
    let mut sessions = Vec::with_capacity(found.len());
    let mut survivors = Vec::new();
    for c in found {
        let covered = c.revoked_by == Some(seq) || (c.revoked_by.is_some() && c.revoking_cause == Some(seq));
        if !covered {
            survivors.push(c.id);
        }
        sessions.push(CoveredSession { session_id: c.id, revoked_by_seq: c.revoked_by });
    }
    let receivers = super::streams::receivers_of(conn, seq)?;
    Ok(Coverage { event, sessions, survivors, receivers })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::query_plan::{migrated, plan, seeks};

    #[test]
    fn every_coverage_report_searches_an_index_for_its_trigger_s_sessions() {
        let conn = migrated();
        for (action, index) in [
            ("user.disabled", "sessions_by_user"),
            ("user.permissions_changed", "sessions_by_user"),
            ("user.agent_disconnected", "sessions_by_user"),
            ("user.integration_disconnected", "sessions_by_user"),
            ("delegation.revoked", "sessions_by_delegation"),
            ("session.revoked", "sqlite_autoindex_sessions_1"),
            ("token.revoked_reuse", "sqlite_autoindex_sessions_1"),
            ("integration.disabled", "sessions_by_integration"),
            ("agent.deregistered", "sessions_by_agent"),
            ("platform.disabled", "sessions_by_platform"),
        ] {
            let event = crate::audit::AuditEvent {
                seq: 1,
                id: "e".into(),
                at: crate::domain::Timestamp(0),
                actor: crate::domain::Actor::system(),
                action: action.into(),
                subject: crate::domain::Subject::new("x", "subject"),
                cause_seq: None,
                reason: None,
                details: std::sync::Arc::new(serde_json::json!({"agent_id": "a", "integration_id": "i"})),
                prev_hash: String::new(),
                hash: String::new(),
            };
            let (clause, keys) = base_clause(&event).expect("a trigger");
            let mut params: Vec<rusqlite::types::Value> = vec![1.into(), 0.into()];
            params.extend(keys.into_iter().map(rusqlite::types::Value::Text));
            let plan = plan(&conn, &format!("SELECT {CANDIDATE_COLUMNS} AND {clause}"), &params);
            assert!(seeks(&plan, index), "{action} ({clause}): {plan:?}");
        }
    }

    #[test]
    fn a_reports_sub_agent_sessions_are_found_through_the_parent_index_a_level_at_a_time() {
        let conn = migrated();
        let params: Vec<rusqlite::types::Value> = vec![1.into(), 0.into(), "[\"ses_a\",\"ses_b\"]".to_owned().into()];
        let sql = format!("SELECT {CANDIDATE_COLUMNS} AND s.parent_id IN (SELECT value FROM json_each(?3))");
        let plan = plan(&conn, &sql, &params);
        assert!(seeks(&plan, "sessions_by_parent"), "{plan:?}");
        assert!(!plan.iter().any(|step| step.starts_with("SCAN s")), "no scan of the sessions: {plan:?}");
    }
}
