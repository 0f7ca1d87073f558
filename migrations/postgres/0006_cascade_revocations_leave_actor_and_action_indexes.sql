-- A cascade's session revocations (an event with a cause whose action is session.revoked) leave
-- the indexes by actor and by action, as they already leave the index by subject. Every entry
-- went into the middle of those indexes, where the ones by seq and by id append at their end:
-- a 100,000-session cascade's audit rows took 0.64 s with them, 0.53-0.56 s without.
-- Listings still find every event (store/audit_listing.rs):
-- - by action session.revoked: the indexed ones merged with audit_cascade_revocations below,
--   an index by seq alone (entries appended at its end);
-- - by actor: the indexed ones merged with the actor's cascaded revocations, read run by run
--   through audit_revocation_runs below.
-- The two indexes are built again, and the migration's transaction holds the log's table while
-- they are: on a large log, nodes starting with this version wait for it (minutes for tens of
-- millions of events), so start one node first.
DROP INDEX audit_by_actor;
DROP INDEX audit_by_action;
CREATE INDEX audit_by_actor ON audit_events (actor_id, seq)
    WHERE cause_seq IS NULL OR action <> 'session.revoked';
CREATE INDEX audit_by_action ON audit_events (action, seq)
    WHERE cause_seq IS NULL OR action <> 'session.revoked';
CREATE INDEX audit_cascade_revocations ON audit_events (seq)
    WHERE cause_seq IS NOT NULL AND action = 'session.revoked';

-- Where an actor's cascaded revocations lie: each of them is in a run of its actor's, and the
-- runs of one actor do not overlap, so reading them in order of first_seq reads the events in
-- seq order. A run may also hold other events, which a listing's filter leaves out. The writer
-- adds one per actor for each write of held audit rows (store/deferred.rs): those writes hold
-- disjoint ranges of seq.
CREATE TABLE audit_revocation_runs (
    actor_id  TEXT COLLATE "C" NOT NULL,
    first_seq BIGINT NOT NULL,
    last_seq  BIGINT NOT NULL CHECK (last_seq >= first_seq),
    PRIMARY KEY (actor_id, first_seq)
);
CREATE TRIGGER audit_revocation_runs_no_update BEFORE UPDATE ON audit_revocation_runs
    FOR EACH ROW EXECUTE FUNCTION tether_refuse('audit_revocation_runs is append-only');
CREATE TRIGGER audit_revocation_runs_no_delete BEFORE DELETE ON audit_revocation_runs
    FOR EACH ROW EXECUTE FUNCTION tether_refuse('audit_revocation_runs is append-only');

-- The runs of a log written before this migration: each actor's longest stretches of cascaded
-- revocations that no other actor's interrupts (so one actor's runs do not overlap).
INSERT INTO audit_revocation_runs (actor_id, first_seq, last_seq)
SELECT actor_id, min(seq), max(seq)
FROM (
    SELECT seq, actor_id,
           row_number() OVER (ORDER BY seq) - row_number() OVER (PARTITION BY actor_id ORDER BY seq) AS stretch
    FROM audit_events
    WHERE cause_seq IS NOT NULL AND action = 'session.revoked'
) cascaded
GROUP BY actor_id, stretch;
