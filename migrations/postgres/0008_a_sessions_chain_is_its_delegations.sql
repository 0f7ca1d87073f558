-- A session's user, agent, integration and platform are its delegation's (store/sessions.rs
-- copies them from the delegation it opens on), and one foreign key now says so: the five
-- columns together name a delegation's row. Five keys checked each against its own table, as
-- before, let a row name a user its delegation is not for; this one does not. It is also one
-- lookup for each session opened instead of five: about half of what PostgreSQL spent inserting
-- a batch's sessions. The delegation's own keys still check that its user, agent, integration
-- and platform exist.
--
-- VALIDATE reads every session once, while writes go on (it takes SHARE UPDATE EXCLUSIVE).
CREATE UNIQUE INDEX delegations_chain ON delegations (id, user_id, agent_id, integration_id, platform_id);
ALTER TABLE sessions ADD CONSTRAINT sessions_delegation_chain_fkey
    FOREIGN KEY (delegation_id, user_id, agent_id, integration_id, platform_id)
    REFERENCES delegations (id, user_id, agent_id, integration_id, platform_id) NOT VALID;
ALTER TABLE sessions VALIDATE CONSTRAINT sessions_delegation_chain_fkey;
ALTER TABLE sessions
    DROP CONSTRAINT sessions_delegation_id_fkey,
    DROP CONSTRAINT sessions_user_id_fkey,
    DROP CONSTRAINT sessions_agent_id_fkey,
    DROP CONSTRAINT sessions_integration_id_fkey,
    DROP CONSTRAINT sessions_platform_id_fkey;
