-- The actor and action indexes hold every event again, a cascade's session revocations included:
-- a listing by actor or action is a plain indexed query. Migration 0011 had left those
-- revocations out of both indexes and found them through their triggers' ranges instead; the
-- cascade it sped up was already within its target, and the walk, the writer checks it needed and
-- the two indexes below cost more to keep right than they saved (docs/performance.md).
DROP INDEX audit_by_actor;
CREATE INDEX audit_by_actor ON audit_events (actor_id, seq);
DROP INDEX audit_by_action;
CREATE INDEX audit_by_action ON audit_events (action, seq);

-- Only that walk read them. `audit_causes.actor_id` and `revoked_sessions` stay (the schema is
-- append-only) but are no longer written: rows from here on leave them NULL and 0 (docs/audit.md).
DROP INDEX audit_causes_revoking;
DROP INDEX audit_causes_revoking_by_actor;
