-- The sessions a cascade revokes leave the actor and action indexes too, as they left the subject
-- index in 0010: two index entries fewer per revoked session, 11% of a 100k-session cascade
-- (docs/performance.md). A query by actor or action (src/store/reads.rs `list_audit`) reads the
-- indexed events from these indexes and the cascade's revocations from the ranges of their
-- triggers in `audit_causes`: a caused event has its trigger's actor and lies after it, up to the
-- seq recorded there, and the ranges of two triggers never overlap (src/store/tx.rs enforces
-- both). The WHERE clause is rows::INDEXED_EVENT, written the same way.
DROP INDEX audit_by_actor;
CREATE INDEX audit_by_actor ON audit_events (actor_id, seq)
    WHERE cause_seq IS NULL OR action <> 'session.revoked';
DROP INDEX audit_by_action;
CREATE INDEX audit_by_action ON audit_events (action, seq)
    WHERE cause_seq IS NULL OR action <> 'session.revoked';
