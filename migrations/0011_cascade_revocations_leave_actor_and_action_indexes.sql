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

-- Each trigger's row also names its actor and counts the sessions it revoked, so that walk reads
-- only triggers that revoked sessions, and for a listing by actor only that actor's: a page costs
-- what it returns, not the rest of the log. Filled here from the events; the rows stay
-- append-only in what they say (the trigger below replaces 0010's).
ALTER TABLE audit_causes ADD COLUMN actor_id TEXT;
ALTER TABLE audit_causes ADD COLUMN revoked_sessions INTEGER NOT NULL DEFAULT 0;
UPDATE audit_causes SET
    actor_id = (SELECT actor_id FROM audit_events WHERE seq = audit_causes.cause_seq),
    revoked_sessions = (
        SELECT count(*) FROM audit_events e
        WHERE e.seq > audit_causes.cause_seq AND e.seq <= audit_causes.last_seq
          AND e.cause_seq = audit_causes.cause_seq AND e.action = 'session.revoked'
    );
CREATE INDEX audit_causes_revoking ON audit_causes (cause_seq) WHERE revoked_sessions > 0;
CREATE INDEX audit_causes_revoking_by_actor ON audit_causes (actor_id, cause_seq) WHERE revoked_sessions > 0;
DROP TRIGGER audit_causes_only_grow;
CREATE TRIGGER audit_causes_only_grow BEFORE UPDATE ON audit_causes
    WHEN NEW.cause_seq <> OLD.cause_seq OR NEW.last_seq < OLD.last_seq
      OR NEW.actor_id IS NOT OLD.actor_id OR NEW.revoked_sessions < OLD.revoked_sessions
BEGIN
    SELECT RAISE(ABORT, 'audit_causes only grows');
END;
