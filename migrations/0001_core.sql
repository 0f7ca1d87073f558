-- tether core schema: the governed objects, sessions, credentials and the audit log.
-- Times are integer milliseconds since the Unix epoch (UTC). Scope sets are canonical JSON arrays.

CREATE TABLE platforms (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE agents (
    id          TEXT PRIMARY KEY,
    platform_id TEXT NOT NULL REFERENCES platforms(id),
    name        TEXT NOT NULL,
    scopes      TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'deregistered')),
    created_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX agents_by_platform ON agents (platform_id, id);

CREATE TABLE integrations (
    id          TEXT PRIMARY KEY,
    platform_id TEXT NOT NULL REFERENCES platforms(id),
    name        TEXT NOT NULL,
    scopes      TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    created_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX integrations_by_platform ON integrations (platform_id, id);

CREATE TABLE users (
    id           TEXT PRIMARY KEY,
    external_id  TEXT NOT NULL UNIQUE,
    display_name TEXT,
    permissions  TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    created_at   INTEGER NOT NULL
) STRICT;

CREATE TABLE delegations (
    id             TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL REFERENCES users(id),
    agent_id       TEXT NOT NULL REFERENCES agents(id),
    integration_id TEXT NOT NULL REFERENCES integrations(id),
    platform_id    TEXT NOT NULL REFERENCES platforms(id),
    scopes         TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    created_at     INTEGER NOT NULL,
    revoked_at     INTEGER,
    revoked_reason TEXT
) STRICT;
-- Cascade paths: every trigger finds the active delegations it ends through one of these.
CREATE INDEX delegations_active_by_user ON delegations (user_id) WHERE status = 'active';
CREATE INDEX delegations_active_by_agent ON delegations (agent_id) WHERE status = 'active';
CREATE INDEX delegations_active_by_integration ON delegations (integration_id) WHERE status = 'active';
CREATE INDEX delegations_by_platform ON delegations (platform_id, id);
CREATE INDEX delegations_by_user ON delegations (user_id, id);

CREATE TABLE sessions (
    id               TEXT PRIMARY KEY,
    delegation_id    TEXT NOT NULL REFERENCES delegations(id),
    user_id          TEXT NOT NULL REFERENCES users(id),
    agent_id         TEXT NOT NULL REFERENCES agents(id),
    integration_id   TEXT NOT NULL REFERENCES integrations(id),
    platform_id      TEXT NOT NULL REFERENCES platforms(id),
    parent_id        TEXT REFERENCES sessions(id),
    depth            INTEGER NOT NULL DEFAULT 0,
    -- Seq of the session.created event: coverage reports ask "was it live before event E?".
    created_seq      INTEGER NOT NULL,
    scopes           TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    created_at       INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL,
    last_seen_at     INTEGER,
    ip               TEXT,
    user_agent       TEXT,
    device           TEXT,
    last_ip          TEXT,
    last_user_agent  TEXT,
    revoked_at       INTEGER,
    revoked_reason   TEXT,
    revoked_by_seq   INTEGER,
    -- Hex revocation id of the token minted with the session (for the offline feed).
    revocation_id    TEXT NOT NULL
) STRICT;
-- Cascade paths: a trigger costs O(sessions it revokes).
CREATE INDEX sessions_active_by_user ON sessions (user_id) WHERE status = 'active';
CREATE INDEX sessions_active_by_agent ON sessions (agent_id) WHERE status = 'active';
CREATE INDEX sessions_active_by_integration ON sessions (integration_id) WHERE status = 'active';
CREATE INDEX sessions_active_by_delegation ON sessions (delegation_id) WHERE status = 'active';
CREATE INDEX sessions_by_parent ON sessions (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX sessions_by_platform ON sessions (platform_id, id);
CREATE INDEX sessions_by_user ON sessions (user_id, id);
CREATE INDEX sessions_by_revoked_seq ON sessions (revoked_by_seq) WHERE revoked_by_seq IS NOT NULL;

CREATE TABLE credentials (
    id          TEXT PRIMARY KEY,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'platform', 'user', 'auditor', 'verifier')),
    platform_id TEXT REFERENCES platforms(id),
    user_id     TEXT REFERENCES users(id),
    label       TEXT,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    revoked_at  INTEGER
) STRICT;

-- The append-only, hash-chained audit log (see src/audit/mod.rs for the hash).
CREATE TABLE audit_events (
    seq          INTEGER PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    at           INTEGER NOT NULL,
    actor_kind   TEXT NOT NULL,
    actor_id     TEXT NOT NULL,
    action       TEXT NOT NULL,
    subject_kind TEXT NOT NULL,
    subject_id   TEXT NOT NULL,
    cause_seq    INTEGER,
    reason       TEXT,
    details      TEXT NOT NULL,
    prev_hash    TEXT NOT NULL,
    hash         TEXT NOT NULL
) STRICT;
CREATE INDEX audit_by_subject ON audit_events (subject_id, seq);
CREATE INDEX audit_by_cause ON audit_events (cause_seq) WHERE cause_seq IS NOT NULL;
CREATE INDEX audit_by_action ON audit_events (action, seq);
CREATE INDEX audit_by_actor ON audit_events (actor_id, seq);
CREATE INDEX audit_by_at ON audit_events (at);

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;

CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
