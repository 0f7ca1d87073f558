-- The audit chain's committed head, on the lock row every appending transaction holds. A node's
-- lease renewal and tailer read it instead of `max(seq)` or a scan past their last seq: those
-- walked every index entry a transaction in progress had added at the end of audit_events
-- (100,000 of them during a large cascade), at each renewal and each poll of every node.
--
-- The writer sets it as it commits (store::tx::Batch::commit), once per batch, and says so with
-- `tether.keeps_head`; for any other transaction that appends (a tether from before this
-- migration, still running during a rolling upgrade) the trigger keeps it, so no node's tailer
-- ever stops short of a committed event.
ALTER TABLE audit_chain_lock ADD COLUMN head BIGINT NOT NULL DEFAULT 0;
UPDATE audit_chain_lock SET head = (SELECT coalesce(max(seq), 0) FROM audit_events);

CREATE FUNCTION tether_audit_head() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('tether.keeps_head', true) IS DISTINCT FROM 'on' THEN
        -- Appending transactions hold the lock row, so the newest rows are this one's.
        UPDATE audit_chain_lock SET head = greatest(head, (SELECT max(seq) FROM audit_events)) WHERE id = 1;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER audit_events_head AFTER INSERT ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION tether_audit_head();
