-- A 100k-session cascade writes one audit event and one session row per session, and every index
-- entry they add or change costs it time (docs/performance.md measured each: 0.03–0.12 s per
-- index). Five indexes change no longer, with the same answers from the reads that used them:
--
-- The events a cascade revoked sessions with are found by their seq range (each `session.revoked`
-- event revokes its own subject, in the same transaction), so sub-agent sessions and the
-- revocation feed need no index on `revoked_by_seq`.
DROP INDEX sessions_by_revoked_seq;

-- Start-up reads each unexpired session's status from its row instead of from this index, so a
-- revocation leaves the index alone (src/lib.rs `load_views`).
DROP INDEX sessions_by_expiry;
CREATE INDEX sessions_by_expiry ON sessions (expires_at, id);

-- A session revoked by a cascade (`session.revoked` with a cause) is the one event of a session
-- the subject index leaves out: it is that session's `revoked_by_seq`, which audit queries by
-- subject read instead (src/store/reads.rs). Every query on `subject_id` carries the same term as
-- this WHERE clause (rows::SUBJECT_INDEXED), which is what lets SQLite use the index.
DROP INDEX audit_by_subject;
CREATE INDEX audit_by_subject ON audit_events (subject_id, seq)
    WHERE cause_seq IS NULL OR action <> 'session.revoked';

-- Time queries on the log (`since`, `until`) become seq ranges: the writer never stamps a batch
-- earlier than the last event, so `at` does not decrease along the chain, and the first event at
-- or after a time is found by bisecting on seq. A log written before this migration may step back
-- where the system clock did; `monotone_from_seq` is the last event that is earlier than the one
-- before it (0 if none), and only events from there on are bisected. Earlier ones are read by
-- their `at`, unless a window begins after `latest_at_before`, the latest time among them
-- (src/store/reads.rs `time_as_seq`). Consecutive events are compared by position, not by seq
-- + 1, so a gap in seq (a row deleted behind tether's back) hides no step back.
DROP INDEX audit_by_at;
CREATE TABLE audit_clock (monotone_from_seq INTEGER NOT NULL, latest_at_before INTEGER) STRICT;
INSERT INTO audit_clock (monotone_from_seq)
    SELECT coalesce(max(seq), 0) FROM (
        SELECT seq, at, lag(at) OVER (ORDER BY seq) AS previous_at FROM audit_events
    ) WHERE at < previous_at;
UPDATE audit_clock SET latest_at_before = (
    SELECT max(at) FROM audit_events WHERE seq < audit_clock.monotone_from_seq
);

-- Details many events share are stored once. A cascade gives every session it revokes on one chain
-- (user, agent, integration, delegation, platform) the same details, about 330 bytes: the events
-- point to them with `details_id` and store an empty `details`. What an event reads and hashes is
-- the same text (rows::AUDIT_COLUMNS); the shared rows are append-only like the log.
CREATE TABLE audit_details (
    id   INTEGER PRIMARY KEY,
    text TEXT NOT NULL
) STRICT;
CREATE TRIGGER audit_details_no_update BEFORE UPDATE ON audit_details
BEGIN
    SELECT RAISE(ABORT, 'audit_details is append-only');
END;
CREATE TRIGGER audit_details_no_delete BEFORE DELETE ON audit_details
BEGIN
    SELECT RAISE(ABORT, 'audit_details is append-only');
END;
ALTER TABLE audit_events ADD COLUMN details_id INTEGER;

-- The events a trigger caused are written by the command that wrote the trigger, after it: they
-- lie between the trigger and the last event it led to, which `audit_causes` records once per
-- trigger (src/store/tx.rs `record_causes`) instead of an index entry per caused event. A query
-- by cause reads that seq range. Filled here from the index it replaces.
CREATE TABLE audit_causes (
    cause_seq INTEGER PRIMARY KEY,
    last_seq  INTEGER NOT NULL
) STRICT;
INSERT INTO audit_causes (cause_seq, last_seq)
    SELECT cause_seq, max(seq) FROM audit_events WHERE cause_seq IS NOT NULL GROUP BY cause_seq;
DROP INDEX audit_by_cause;
-- A range only grows: a row deleted or shortened would hide caused events from queries by cause.
CREATE TRIGGER audit_causes_no_delete BEFORE DELETE ON audit_causes
BEGIN
    SELECT RAISE(ABORT, 'audit_causes only grows');
END;
CREATE TRIGGER audit_causes_only_grow BEFORE UPDATE ON audit_causes
    WHEN NEW.cause_seq <> OLD.cause_seq OR NEW.last_seq < OLD.last_seq
BEGIN
    SELECT RAISE(ABORT, 'audit_causes only grows');
END;
