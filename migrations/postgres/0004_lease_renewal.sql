-- A node's lease renewal as one call (cluster/lease.rs): the same statements, in the same order,
-- as the transaction a node sent one by one, in seven round trips. On a host whose CPUs are
-- saturated, each round trip could wait seconds for a packet to be processed, and a renewal
-- that took longer than the lease (1.9 s) stopped a healthy node's allows. In PL/pgSQL each
-- statement takes a snapshot of its own (the function is VOLATILE), so the head is still read
-- after the node's row is locked: it sees every commit made before the lock was granted
-- (docs/architecture.md, "A revoking call waits for the nodes").
CREATE FUNCTION tether_renew_lease(node TEXT, node_address TEXT, lease_seconds FLOAT8, applied BIGINT,
                                   forget_after_seconds FLOAT8)
RETURNS BIGINT LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    committed BIGINT;
BEGIN
    INSERT INTO tether_nodes (id, address, lease_until) VALUES (node, node_address, clock_timestamp())
        ON CONFLICT (id) DO NOTHING;
    PERFORM 1 FROM tether_nodes WHERE id = node FOR UPDATE;
    SELECT head INTO committed FROM audit_chain_lock WHERE id = 1;
    -- The new lease joins the node's live ones (those not yet run out), all by the database's clock.
    WITH lease AS (SELECT clock_timestamp() + lease_seconds * interval '1 second' AS until),
         live AS (SELECT coalesce(array_agg(x.h ORDER BY x.u), '{}') AS heads,
                         coalesce(array_agg(x.u ORDER BY x.u), '{}') AS untils
                  FROM tether_nodes n, unnest(n.lease_heads, n.lease_untils) AS x(h, u)
                  WHERE n.id = node AND x.u > clock_timestamp())
    UPDATE tether_nodes
    SET lease_until = lease.until, renewed_head = committed, applied_seq = greatest(applied_seq, applied),
        lease_heads = live.heads || committed, lease_untils = live.untils || lease.until
    FROM lease, live
    WHERE id = node;
    DELETE FROM tether_nodes WHERE lease_until < clock_timestamp() - forget_after_seconds * interval '1 second';
    RETURN committed;
END
$$;
