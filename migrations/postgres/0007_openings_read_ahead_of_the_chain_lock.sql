-- What a write batch's openings read (the calling credential, each delegation with the user,
-- agent, integration, platform and groups it stands on, the live webhooks) is read before the
-- batch takes the chain lock, and used under it only if nothing it was read from has changed
-- since (store/memo.rs, `ReadAhead`). `changes` is how that is known: every statement that
-- writes one of those tables adds one to it, in its own transaction, whatever sent it (a node,
-- a tether of an older version during a rolling upgrade, a `tether` command, an operator's
-- psql), so it commits exactly when the change does. The batch reads it before its reads and
-- again as it takes the lock; equal, its reads are still true.
--
-- A transaction that writes one of these tables without the chain lock now also waits for it
-- (the trigger updates the lock row): every write the writer makes holds it already.
ALTER TABLE audit_chain_lock ADD COLUMN changes BIGINT NOT NULL DEFAULT 0;

CREATE FUNCTION tether_count_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE audit_chain_lock SET changes = changes + 1 WHERE id = 1;
    RETURN NULL;
END
$$;

DO $$
DECLARE
    watched TEXT;
BEGIN
    FOREACH watched IN ARRAY ARRAY['platforms', 'users', 'agents', 'integrations', 'delegations', 'groups',
                                   'group_members', 'credentials', 'signing_keys', 'webhooks'] LOOP
        EXECUTE format('CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %I
                        FOR EACH STATEMENT EXECUTE FUNCTION tether_count_change()',
                       watched || '_changes', watched);
    END LOOP;
END
$$;
