-- The audit chain's committed head, kept on the lock row by a trigger in the transaction that
-- appends (whichever tether version wrote it). A node's lease renewal and tailer read it instead
-- of `max(seq)` or a scan past their last seq: those walked every index entry a transaction
-- still in progress had added at the end of audit_events (100,000 of them during a large
-- cascade), at each renewal and each poll of every node.
ALTER TABLE audit_chain_lock ADD COLUMN head BIGINT NOT NULL DEFAULT 0;
UPDATE audit_chain_lock SET head = (SELECT coalesce(max(seq), 0) FROM audit_events);

CREATE FUNCTION tether_audit_head() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE audit_chain_lock SET head = greatest(head, (SELECT max(seq) FROM appended)) WHERE id = 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER audit_events_head AFTER INSERT ON audit_events
    REFERENCING NEW TABLE AS appended FOR EACH STATEMENT EXECUTE FUNCTION tether_audit_head();
