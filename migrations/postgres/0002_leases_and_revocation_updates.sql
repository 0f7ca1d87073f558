-- Every lease a node holds that has not run out: the head its renewal read and when it ends,
-- pairwise. A revoker need not wait for a node to apply a revocation that each of its live
-- leases was granted after (docs/architecture.md, "A revoking call waits for the nodes"); kept
-- in the node's own row so that the revoker's FOR SHARE read sees them as a renewal left them.
ALTER TABLE tether_nodes ADD COLUMN lease_heads BIGINT[] NOT NULL DEFAULT '{}';
ALTER TABLE tether_nodes ADD COLUMN lease_untils TIMESTAMPTZ[] NOT NULL DEFAULT '{}';

-- A revocation changes a session's status, which this index's predicate reads: PostgreSQL
-- could then never update the row in place (a HOT update) and wrote an entry into every index
-- of the table for each revoked session. sessions_by_delegation (delegation_id, id) serves the
-- cascade's lookup by delegation; status is filtered on the rows it finds.
DROP INDEX sessions_active_by_delegation;
-- Room on each page for the revoked version of every row on it, so each revocation stays on
-- its page (a session is revoked once; the table takes about twice the space).
ALTER TABLE sessions SET (fillfactor = 50);
