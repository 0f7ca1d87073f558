-- A revocation should touch as few indexes as it can: each partial "active" index loses an entry
-- when a session is revoked. A session's user, agent and integration are always its delegation's,
-- so a user's cascade reaches its sessions through the user's delegations and the one active index
-- left, by delegation. Listing a delegation's, agent's or integration's sessions (any status, in id
-- order) and coverage reports use the plain indexes below, which a revocation does not change.
DROP INDEX sessions_active_by_user;
DROP INDEX sessions_active_by_agent;
DROP INDEX sessions_active_by_integration;
CREATE INDEX sessions_by_agent ON sessions (agent_id, id);
CREATE INDEX sessions_by_integration ON sessions (integration_id, id);
CREATE INDEX sessions_by_delegation ON sessions (delegation_id, id);
