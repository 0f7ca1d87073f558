//! The revocation engine: a trigger event, then every session that depended on it, each audited
//! with the trigger as its cause, then the receipt.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::json;

use crate::audit::{AuditEvent, Details, NewEvent};
use crate::domain::*;
use crate::store::delegations::{self, DelegationsOf};
use crate::store::feed;
use crate::store::sessions::{self, ActiveSession, SessionsOf};
use crate::store::{Effect, Tx};

/// One trigger in progress: what it revoked so far.
pub struct Cascade {
    pub trigger: Arc<AuditEvent>,
    revoked: Vec<RevokedSession>,
    /// The platform of each revoked session, index by index, for the SETs of platform-bound
    /// Shared Signals streams.
    platforms: Vec<PlatformId>,
    seen: HashSet<SessionId>,
    /// A revocation's details name its session's chain and this trigger, so every session on one
    /// chain gets the same details: encoded once per chain, not once per session.
    details: HashMap<Chain, Details>,
}

/// The objects a session hangs from, as its revocation's details name them.
type Chain = (UserId, AgentId, IntegrationId, DelegationId, PlatformId);

impl Cascade {
    /// Writes the trigger's own event and starts the cascade under it.
    pub fn start(tx: &mut Tx<'_>, trigger: NewEvent) -> Result<Cascade> {
        let trigger = tx.audit(trigger)?;
        Ok(Cascade::from_event(trigger))
    }

    /// Continues from a trigger already written (a session revoked directly is its own trigger).
    pub fn from_event(trigger: Arc<AuditEvent>) -> Cascade {
        Cascade { trigger, revoked: Vec::new(), platforms: Vec::new(), seen: HashSet::new(), details: HashMap::new() }
    }

    fn caused(&self, action: &'static str, subject: Subject, reason: &str) -> NewEvent {
        NewEvent::new(self.trigger.actor.clone(), action, subject)
            .cause(self.trigger.seq)
            .reason(Some(reason.to_owned()))
    }

    /// Revokes sessions (each audited, caused by the trigger). Their sub-agent sessions follow
    /// when the cascade finishes ([`Cascade::receipt`]), level by level.
    pub fn revoke_sessions(&mut self, tx: &mut Tx<'_>, sessions: Vec<ActiveSession>, reason: &str) -> Result<()> {
        self.revoked.reserve(sessions.len());
        self.platforms.reserve(sessions.len());
        tx.holding_subscribers(|tx| {
            for session in sessions {
                if self.seen.contains(&session.id) {
                    continue;
                }
                let event = self
                    .caused("session.revoked", Subject::new("session", session.id), reason)
                    .shared_details(self.revocation_details(&session));
                let event = tx.audit(event)?;
                self.mark(tx, &session, reason, event.seq)?;
            }
            Ok(())
        })
    }

    /// The details of a session's revocation, encoded once per chain.
    fn revocation_details(&mut self, session: &ActiveSession) -> Details {
        let chain =
            (session.user_id, session.agent_id, session.integration_id, session.delegation_id, session.platform_id);
        let trigger = &self.trigger;
        self.details
            .entry(chain)
            .or_insert_with(|| {
                Details::shared(json!({
                    "user_id": session.user_id,
                    "agent_id": session.agent_id,
                    "integration_id": session.integration_id,
                    "delegation_id": session.delegation_id,
                    "platform_id": session.platform_id,
                    "initiating_entity": super::initiating_entity(&trigger.actor),
                    "trigger": trigger.action,
                }))
            })
            .clone()
    }

    /// Marks a session revoked by `seq` and records it for the receipt and the live view.
    pub fn mark(&mut self, tx: &mut Tx<'_>, session: &ActiveSession, reason: &str, seq: i64) -> Result<()> {
        self.seen.insert(session.id);
        sessions::mark_session_revoked(tx, session, reason, seq)?;
        tx.effect(Effect::SessionRevoked { id: session.id, expires_at: session.expires_at });
        self.revoked.push(RevokedSession {
            session_id: session.id,
            user_id: session.user_id,
            agent_id: session.agent_id,
            integration_id: session.integration_id,
            reason: reason.to_owned(),
        });
        self.platforms.push(session.platform_id);
        Ok(())
    }

    /// Revokes, level by level, the active sub-agent sessions of every session this cascade
    /// revoked, then feeds the revocation ids of all their live tokens, each as one statement
    /// over the cascade's audit range rather than one per session.
    fn finish(&mut self, tx: &mut Tx<'_>) -> Result<()> {
        loop {
            let children = sessions::active_children_of_revoked(tx.conn(), tx.now(), self.trigger.seq, tx.head().seq)?;
            let fresh: Vec<ActiveSession> = children.into_iter().filter(|c| !self.seen.contains(&c.id)).collect();
            if fresh.is_empty() {
                break;
            }
            self.revoke_sessions(tx, fresh, "parent_session_revoked")?;
        }
        feed::feed_revoked_between(tx, self.trigger.seq, tx.head().seq)
    }

    /// Revokes delegations (each audited) and every session on them.
    pub fn revoke_delegations(&mut self, tx: &mut Tx<'_>, of: DelegationsOf, reason: &str) -> Result<usize> {
        let delegations = delegations::active_delegations(tx.conn(), of)?;
        for d in &delegations {
            let event = self.caused("delegation.revoked", Subject::new("delegation", d.id), reason).details(json!({
                "user_id": d.user_id, "agent_id": d.agent_id, "integration_id": d.integration_id,
                "platform_id": d.platform_id,
            }));
            tx.audit(event)?;
            delegations::mark_delegation_revoked(tx, d.id, reason)?;
            let sessions = sessions::active_sessions(tx.conn(), tx.now(), SessionsOf::Delegation(d.id))?;
            self.revoke_sessions(tx, sessions, reason)?;
        }
        Ok(delegations.len())
    }

    /// Writes an event caused by the trigger that is not a revocation (e.g. a narrowed delegation).
    pub fn note(
        &mut self,
        tx: &mut Tx<'_>,
        action: &'static str,
        subject: Subject,
        reason: &str,
        details: serde_json::Value,
    ) -> Result<()> {
        tx.audit(self.caused(action, subject, reason).details(details)).map(drop)
    }

    /// Finishes the cascade (sub-agent sessions, the revocation feed) and answers its receipt.
    pub fn receipt(mut self, tx: &mut Tx<'_>) -> Result<Receipt> {
        self.finish(tx)?;
        // The Shared Signals outbox, in this transaction: the fewest SETs per stream that cover
        // what was revoked (ops::streams).
        let revoked: Vec<super::streams::Revoked<'_>> = self
            .revoked
            .iter()
            .zip(&self.platforms)
            .map(|(session, platform)| super::streams::Revoked { session, platform: *platform })
            .collect();
        super::streams::enqueue_cascade(tx, &self.trigger, &revoked)?;
        Ok(Receipt {
            cause: ReceiptCause {
                seq: self.trigger.seq,
                action: self.trigger.action.clone(),
                subject: self.trigger.subject.clone(),
            },
            revoked: self.revoked,
            audit: AuditRange { from_seq: self.trigger.seq, to_seq: tx.head().seq, head_hash: tx.head().hash.clone() },
        })
    }
}

/// The receipt of a trigger that found nothing to do: no event written, nothing revoked. `cause`
/// points at the earlier event that already did it; the audit range is empty (`from_seq` is one
/// past `to_seq`).
pub fn noop_receipt(tx: &Tx<'_>, earlier: Option<AuditEvent>, subject: Subject) -> Receipt {
    let head = tx.head();
    let cause = match earlier {
        Some(e) => ReceiptCause { seq: e.seq, action: e.action, subject: e.subject },
        None => ReceiptCause { seq: 0, action: "none".into(), subject },
    };
    Receipt {
        cause,
        revoked: Vec::new(),
        audit: AuditRange { from_seq: head.seq + 1, to_seq: head.seq, head_hash: head.hash.clone() },
    }
}
