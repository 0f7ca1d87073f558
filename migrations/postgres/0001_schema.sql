-- The PostgreSQL schema: the final state of migrations/0001..0017 (SQLite), translated, plus the
-- tables multi-node operation needs (audit_chain_lock, tether_nodes).
--
-- Translation rules (tests/pg/compare_schema.py checks the tables and columns match):
-- - INTEGER is BIGINT (the Rust side binds i64); booleans stay BIGINT 0/1.
-- - TEXT is TEXT COLLATE "C": byte order, as SQLite's BINARY, so pagination cursors compare and
--   sort ids the same way.
-- - Rowid aliases tether inserts without a value are identity columns; audit_events.seq and
--   audit_causes.cause_seq are always given and stay plain BIGINT PRIMARY KEY.
-- - COLLATE NOCASE becomes an index on lower(col); the code compares lower(col) = lower($1).
--   lower() under "C" folds ASCII only, as NOCASE does. The parameter takes the database's
--   default collation: unless the database is created with LOCALE 'C', write
--   lower($1 COLLATE "C"), or 'Émile' does not find 'Émile' (lower() folds É there, not here).
-- - The append-only triggers raise the same messages as SQLite's RAISE(ABORT, ...).
-- The schema_migrations table is created by the Rust migration runner, not here.

CREATE TABLE platforms (
    id          TEXT COLLATE "C" PRIMARY KEY,
    name        TEXT COLLATE "C" NOT NULL,
    status      TEXT COLLATE "C" NOT NULL CHECK (status IN ('active', 'disabled')),
    created_at  BIGINT NOT NULL
);

CREATE TABLE users (
    id           TEXT COLLATE "C" PRIMARY KEY,
    external_id  TEXT COLLATE "C" CONSTRAINT users_external_id_key UNIQUE,
    -- Unique regardless of ASCII case: users_user_name_key below (SQLite: COLLATE NOCASE UNIQUE).
    user_name    TEXT COLLATE "C",
    -- Compared regardless of ASCII case (SQLite: COLLATE NOCASE): users_by_email below.
    email        TEXT COLLATE "C",
    display_name TEXT COLLATE "C",
    permissions  TEXT COLLATE "C" NOT NULL,
    status       TEXT COLLATE "C" NOT NULL CHECK (status IN ('active', 'disabled')),
    created_at   BIGINT NOT NULL,
    ended_at     BIGINT
);
CREATE UNIQUE INDEX users_user_name_key ON users (lower(user_name));
CREATE INDEX users_by_email ON users (lower(email)) WHERE email IS NOT NULL;

CREATE TABLE agents (
    id          TEXT COLLATE "C" PRIMARY KEY,
    platform_id TEXT COLLATE "C" NOT NULL REFERENCES platforms(id),
    name        TEXT COLLATE "C" NOT NULL,
    scopes      TEXT COLLATE "C" NOT NULL,
    status      TEXT COLLATE "C" NOT NULL CHECK (status IN ('active', 'suspended', 'deregistered')),
    created_at  BIGINT NOT NULL
);
CREATE INDEX agents_by_platform ON agents (platform_id, id);

CREATE TABLE integrations (
    id          TEXT COLLATE "C" PRIMARY KEY,
    platform_id TEXT COLLATE "C" NOT NULL REFERENCES platforms(id),
    name        TEXT COLLATE "C" NOT NULL,
    scopes      TEXT COLLATE "C" NOT NULL,
    status      TEXT COLLATE "C" NOT NULL CHECK (status IN ('active', 'disabled')),
    created_at  BIGINT NOT NULL
);
CREATE INDEX integrations_by_platform ON integrations (platform_id, id);

CREATE TABLE delegations (
    id             TEXT COLLATE "C" PRIMARY KEY,
    user_id        TEXT COLLATE "C" NOT NULL REFERENCES users(id),
    agent_id       TEXT COLLATE "C" NOT NULL REFERENCES agents(id),
    integration_id TEXT COLLATE "C" NOT NULL REFERENCES integrations(id),
    platform_id    TEXT COLLATE "C" NOT NULL REFERENCES platforms(id),
    scopes         TEXT COLLATE "C" NOT NULL,
    status         TEXT COLLATE "C" NOT NULL CHECK (status IN ('active', 'revoked')),
    created_at     BIGINT NOT NULL,
    revoked_at     BIGINT,
    revoked_reason TEXT COLLATE "C"
);
CREATE INDEX delegations_active_by_user ON delegations (user_id) WHERE status = 'active';
CREATE INDEX delegations_active_by_agent ON delegations (agent_id) WHERE status = 'active';
CREATE INDEX delegations_active_by_integration ON delegations (integration_id) WHERE status = 'active';
CREATE INDEX delegations_by_platform ON delegations (platform_id, id);
CREATE INDEX delegations_by_user ON delegations (user_id, id);

CREATE TABLE sessions (
    id               TEXT COLLATE "C" PRIMARY KEY,
    delegation_id    TEXT COLLATE "C" NOT NULL REFERENCES delegations(id),
    user_id          TEXT COLLATE "C" NOT NULL REFERENCES users(id),
    agent_id         TEXT COLLATE "C" NOT NULL REFERENCES agents(id),
    integration_id   TEXT COLLATE "C" NOT NULL REFERENCES integrations(id),
    platform_id      TEXT COLLATE "C" NOT NULL REFERENCES platforms(id),
    parent_id        TEXT COLLATE "C" REFERENCES sessions(id),
    depth            BIGINT NOT NULL DEFAULT 0,
    -- Seq of the session.created event: coverage reports ask "was it live before event E?".
    created_seq      BIGINT NOT NULL,
    scopes           TEXT COLLATE "C" NOT NULL,
    status           TEXT COLLATE "C" NOT NULL CHECK (status IN ('active', 'revoked')),
    created_at       BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL,
    last_seen_at     BIGINT,
    ip               TEXT COLLATE "C",
    user_agent       TEXT COLLATE "C",
    device           TEXT COLLATE "C",
    last_ip          TEXT COLLATE "C",
    last_user_agent  TEXT COLLATE "C",
    revoked_at       BIGINT,
    revoked_reason   TEXT COLLATE "C",
    revoked_by_seq   BIGINT
);
CREATE INDEX sessions_active_by_delegation ON sessions (delegation_id) WHERE status = 'active';
CREATE INDEX sessions_by_parent ON sessions (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX sessions_by_platform ON sessions (platform_id, id);
CREATE INDEX sessions_by_user ON sessions (user_id, id);
CREATE INDEX sessions_by_agent ON sessions (agent_id, id);
CREATE INDEX sessions_by_integration ON sessions (integration_id, id);
CREATE INDEX sessions_by_delegation ON sessions (delegation_id, id);
CREATE INDEX sessions_by_expiry ON sessions (expires_at, id);

-- Raises the message given as the trigger's argument: the append-only guards below.
CREATE FUNCTION tether_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%', TG_ARGV[0];
END;
$$;

-- seq is always given by the writer (the hash chain's position), never generated.
CREATE TABLE audit_events (
    seq          BIGINT PRIMARY KEY,
    id           TEXT COLLATE "C" NOT NULL UNIQUE,
    at           BIGINT NOT NULL,
    actor_kind   TEXT COLLATE "C" NOT NULL,
    actor_id     TEXT COLLATE "C" NOT NULL,
    action       TEXT COLLATE "C" NOT NULL,
    subject_kind TEXT COLLATE "C" NOT NULL,
    subject_id   TEXT COLLATE "C" NOT NULL,
    cause_seq    BIGINT,
    reason       TEXT COLLATE "C",
    details      TEXT COLLATE "C" NOT NULL,
    prev_hash    TEXT COLLATE "C" NOT NULL,
    hash         TEXT COLLATE "C" NOT NULL,
    details_id   BIGINT
);
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION tether_refuse('audit_events is append-only');
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION tether_refuse('audit_events is append-only');
CREATE INDEX audit_by_subject ON audit_events (subject_id, seq)
    WHERE cause_seq IS NULL OR action <> 'session.revoked';
CREATE INDEX audit_by_actor ON audit_events (actor_id, seq);
CREATE INDEX audit_by_action ON audit_events (action, seq);

CREATE TABLE access_tokens (
    revocation_id TEXT COLLATE "C" PRIMARY KEY,
    session_id    TEXT COLLATE "C" NOT NULL REFERENCES sessions(id),
    kid           BIGINT NOT NULL,
    issued_at     BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL
);
CREATE INDEX access_tokens_by_session ON access_tokens (session_id, expires_at);
CREATE INDEX access_tokens_by_expiry ON access_tokens (expires_at);

CREATE TABLE refresh_tokens (
    hash       TEXT COLLATE "C" PRIMARY KEY,
    session_id TEXT COLLATE "C" NOT NULL REFERENCES sessions(id),
    created_at BIGINT NOT NULL,
    used_at    BIGINT
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

-- SQLite: INTEGER PRIMARY KEY AUTOINCREMENT (a cursor is never reused; neither is an identity).
CREATE TABLE revocation_feed (
    cursor        BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    revocation_id TEXT COLLATE "C" NOT NULL,
    session_id    TEXT COLLATE "C" NOT NULL,
    expires_at    BIGINT NOT NULL
);
CREATE INDEX revocation_feed_by_expiry ON revocation_feed (expires_at);

CREATE TABLE webhooks (
    id          TEXT COLLATE "C" PRIMARY KEY,
    url         TEXT COLLATE "C" NOT NULL,
    -- JSON array of audit actions to deliver; empty means every event the owner may see.
    events      TEXT COLLATE "C" NOT NULL,
    owner_role  TEXT COLLATE "C" NOT NULL,
    -- The platform or user the owner is bound to, or the credential id for other roles.
    owner_id    TEXT COLLATE "C" NOT NULL,
    created_at  BIGINT NOT NULL,
    deleted_at  BIGINT
);

CREATE TABLE webhook_deliveries (
    id              BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    webhook_id      TEXT COLLATE "C" NOT NULL REFERENCES webhooks(id),
    event_seq       BIGINT NOT NULL,
    event_id        TEXT COLLATE "C" NOT NULL,
    status          TEXT COLLATE "C" NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_attempt_at BIGINT,
    acknowledged_at BIGINT,
    last_status     BIGINT,
    last_error      TEXT COLLATE "C",
    UNIQUE (webhook_id, event_seq)
);
CREATE INDEX webhook_deliveries_due_by_webhook ON webhook_deliveries (webhook_id, next_attempt_at)
    WHERE status = 'pending';

-- One row (migration 0010): from monotone_from_seq on, `at` does not decrease along the chain.
-- A new database has no earlier events: (0, NULL), as migration 0010 leaves an empty log.
CREATE TABLE audit_clock (
    monotone_from_seq BIGINT NOT NULL,
    latest_at_before  BIGINT
);
INSERT INTO audit_clock (monotone_from_seq, latest_at_before) VALUES (0, NULL);

-- Details many events share, stored once; append-only like the log.
CREATE TABLE audit_details (
    id   BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    text TEXT COLLATE "C" NOT NULL
);
CREATE TRIGGER audit_details_no_update BEFORE UPDATE ON audit_details
    FOR EACH ROW EXECUTE FUNCTION tether_refuse('audit_details is append-only');
CREATE TRIGGER audit_details_no_delete BEFORE DELETE ON audit_details
    FOR EACH ROW EXECUTE FUNCTION tether_refuse('audit_details is append-only');

-- For each trigger, the last event it caused. A range only grows: a row deleted or shortened
-- would hide caused events from queries by cause.
CREATE TABLE audit_causes (
    cause_seq        BIGINT PRIMARY KEY,
    last_seq         BIGINT NOT NULL,
    actor_id         TEXT COLLATE "C",
    revoked_sessions BIGINT NOT NULL DEFAULT 0
);
CREATE TRIGGER audit_causes_no_delete BEFORE DELETE ON audit_causes
    FOR EACH ROW EXECUTE FUNCTION tether_refuse('audit_causes only grows');
CREATE TRIGGER audit_causes_only_grow BEFORE UPDATE ON audit_causes
    FOR EACH ROW
    WHEN (NEW.cause_seq <> OLD.cause_seq OR NEW.last_seq < OLD.last_seq
          OR NEW.actor_id IS DISTINCT FROM OLD.actor_id OR NEW.revoked_sessions < OLD.revoked_sessions)
    EXECUTE FUNCTION tether_refuse('audit_causes only grows');

CREATE TABLE credentials (
    id          TEXT COLLATE "C" PRIMARY KEY,
    role        TEXT COLLATE "C" NOT NULL CHECK (role IN ('admin', 'platform', 'user', 'auditor', 'verifier', 'provisioner', 'receiver')),
    platform_id TEXT COLLATE "C" REFERENCES platforms(id),
    user_id     TEXT COLLATE "C" REFERENCES users(id),
    label       TEXT COLLATE "C",
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT,
    revoked_at  BIGINT,
    kid         BIGINT
);

CREATE TABLE signal_sources (
    id           TEXT COLLATE "C" PRIMARY KEY,
    -- The transmitter's issuer: a SET's `iss` must equal it.
    issuer       TEXT COLLATE "C" NOT NULL,
    -- When set, a SET's `aud` must contain it.
    audience     TEXT COLLATE "C",
    label        TEXT COLLATE "C",
    -- Exactly one of the two: where the keys are fetched from, or the keys themselves (a JWKS).
    jwks_uri     TEXT COLLATE "C",
    jwks         TEXT COLLATE "C",
    -- SHA-256 (hex) of the push authorization token; the token itself is shown once and never
    -- stored, so the database cannot be read for a credential that pushes signals.
    push_auth_hash TEXT COLLATE "C" NOT NULL,
    -- JSON object: per-event overrides of the default effects (docs/api.md, "Signal sources").
    effects      TEXT COLLATE "C" NOT NULL,
    status       TEXT COLLATE "C" NOT NULL CHECK (status IN ('active', 'disabled')),
    created_at   BIGINT NOT NULL,
    disabled_at  BIGINT,
    CHECK ((jwks_uri IS NULL) <> (jwks IS NULL))
);

CREATE TABLE signals_received (
    source_id    TEXT COLLATE "C" NOT NULL REFERENCES signal_sources(id),
    jti          TEXT COLLATE "C" NOT NULL,
    -- The `signal.received` audit event that recorded it.
    event_seq    BIGINT NOT NULL,
    received_at  BIGINT NOT NULL,
    PRIMARY KEY (source_id, jti)
);

CREATE TABLE groups (
    id           TEXT COLLATE "C" PRIMARY KEY,
    display_name TEXT COLLATE "C" NOT NULL,
    -- The identity provider's id of the group, compared exactly (SCIM caseExact).
    external_id  TEXT COLLATE "C" UNIQUE,
    -- Canonical JSON array of scopes, set by an admin through PUT /v1/groups/{id}/permissions.
    permissions  TEXT COLLATE "C" NOT NULL DEFAULT '[]',
    created_at   BIGINT NOT NULL,
    modified_at  BIGINT NOT NULL
);
-- SQLite: ON groups (display_name COLLATE NOCASE).
CREATE INDEX groups_by_display_name ON groups (lower(display_name));

CREATE TABLE group_members (
    group_id TEXT COLLATE "C" NOT NULL REFERENCES groups(id),
    user_id  TEXT COLLATE "C" NOT NULL REFERENCES users(id),
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_by_user ON group_members (user_id, group_id);

CREATE TABLE user_scim_attributes (
    user_id     TEXT COLLATE "C" PRIMARY KEY REFERENCES users(id),
    attributes  TEXT COLLATE "C" NOT NULL,
    modified_at BIGINT NOT NULL
);

CREATE TABLE ssf_streams (
    id                        TEXT COLLATE "C" PRIMARY KEY,
    -- The receiver credential that created it: only it sees and manages the stream.
    receiver_id               TEXT COLLATE "C" NOT NULL,
    -- The receiver's platform binding: its SETs tell of that platform's sessions only.
    platform_id               TEXT COLLATE "C",
    -- JSON: a string or an array of strings (SSF `aud`).
    aud                       TEXT COLLATE "C" NOT NULL,
    -- JSON array of event type URIs the receiver asked for.
    events_requested          TEXT COLLATE "C" NOT NULL,
    delivery_method           TEXT COLLATE "C" NOT NULL CHECK (delivery_method IN ('urn:ietf:rfc:8935', 'urn:ietf:rfc:8936')),
    endpoint_url              TEXT COLLATE "C",
    -- The push `authorization_header` tether must send, sealed (ChaCha20-Poly1305 under a key
    -- derived from the data directory's master key, the stream id as associated data).
    authorization_sealed      TEXT COLLATE "C",
    description               TEXT COLLATE "C",
    status                    TEXT COLLATE "C" NOT NULL CHECK (status IN ('enabled', 'paused', 'disabled')),
    status_reason             TEXT COLLATE "C",
    min_verification_interval BIGINT NOT NULL,
    last_verification_at      BIGINT,
    created_at                BIGINT NOT NULL,
    deleted_at                BIGINT
);
CREATE INDEX ssf_streams_by_receiver ON ssf_streams (receiver_id) WHERE deleted_at IS NULL;

CREATE TABLE ssf_stream_subjects (
    stream_id   TEXT COLLATE "C" NOT NULL REFERENCES ssf_streams(id),
    subject_key TEXT COLLATE "C" NOT NULL,
    -- 0 or 1.
    excluded    BIGINT NOT NULL,
    PRIMARY KEY (stream_id, subject_key)
);

CREATE TABLE ssf_outbox (
    id              BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    stream_id       TEXT COLLATE "C" NOT NULL REFERENCES ssf_streams(id),
    jti             TEXT COLLATE "C" NOT NULL UNIQUE,
    -- One value per trigger, so a receiver can group a cascade's SETs.
    txn             TEXT COLLATE "C" NOT NULL,
    -- The audit event that caused it (absent for verification and stream-updated SETs).
    trigger_seq     BIGINT,
    event_type      TEXT COLLATE "C" NOT NULL,
    -- {"sub_id": …, "events": …}; the issuer is filled in when the SET is signed.
    payload         TEXT COLLATE "C" NOT NULL,
    iat             BIGINT NOT NULL,
    status          TEXT COLLATE "C" NOT NULL CHECK (status IN ('pending', 'acknowledged', 'failed', 'dropped')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_attempt_at BIGINT,
    acknowledged_at BIGINT,
    last_status     BIGINT,
    last_error      TEXT COLLATE "C"
);
CREATE INDEX ssf_outbox_pending ON ssf_outbox (stream_id, id) WHERE status = 'pending';
CREATE INDEX ssf_outbox_by_trigger ON ssf_outbox (trigger_seq) WHERE trigger_seq IS NOT NULL;

CREATE TABLE signing_keys (
    purpose    TEXT COLLATE "C" NOT NULL CHECK (purpose IN ('agent', 'api', 'sets')),
    kid        BIGINT NOT NULL,
    status     TEXT COLLATE "C" NOT NULL CHECK (status IN ('active', 'retired')),
    public_key TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (purpose, kid)
);

CREATE TABLE console_links (
    id            TEXT COLLATE "C" PRIMARY KEY,
    -- SHA-256 (hex) of the secret in the link's URL.
    secret_hash   TEXT COLLATE "C" NOT NULL UNIQUE,
    role          TEXT COLLATE "C" NOT NULL CHECK (role IN ('user', 'auditor', 'admin')),
    -- The person a `user` link signs in (NULL for auditor and admin links).
    user_id       TEXT COLLATE "C" REFERENCES users(id),
    -- A link minted by a platform shows and acts on that platform's delegations only.
    platform_id   TEXT COLLATE "C" REFERENCES platforms(id),
    -- Seq of the console.link_created event: the cause of the session it starts.
    created_seq   BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    used_at       BIGINT,
    CHECK ((role = 'user') = (user_id IS NOT NULL))
);

CREATE TABLE console_sessions (
    id            TEXT COLLATE "C" PRIMARY KEY,
    -- SHA-256 (hex) of the cookie's secret.
    secret_hash   TEXT COLLATE "C" NOT NULL UNIQUE,
    link_id       TEXT COLLATE "C" NOT NULL REFERENCES console_links(id),
    -- The API credential the session acts as (minted when the link was opened, revoked when
    -- the session ends): every action goes through the same capabilities as the API.
    credential_id TEXT COLLATE "C" NOT NULL REFERENCES credentials(id),
    role          TEXT COLLATE "C" NOT NULL CHECK (role IN ('user', 'auditor', 'admin')),
    user_id       TEXT COLLATE "C" REFERENCES users(id),
    platform_id   TEXT COLLATE "C" REFERENCES platforms(id),
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT NOT NULL,
    -- The absolute end; the idle end is last_used_at plus the idle timeout.
    expires_at    BIGINT NOT NULL,
    ended_at      BIGINT,
    ended_reason  TEXT COLLATE "C"
);

-- Multi-node operation.

-- One row, locked FOR UPDATE by every write transaction that appends to the audit log, so
-- appends from every node commit one at a time, in seq order.
CREATE TABLE audit_chain_lock (id BIGINT PRIMARY KEY CHECK (id = 1));
INSERT INTO audit_chain_lock VALUES (1);

-- The nodes serving this database: each renews its lease and reports the last audit seq it applied.
CREATE TABLE tether_nodes (
    id            TEXT COLLATE "C" PRIMARY KEY,
    address       TEXT,
    started_at    TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    lease_until   TIMESTAMPTZ NOT NULL,
    renewed_head  BIGINT NOT NULL DEFAULT 0,
    applied_seq   BIGINT NOT NULL DEFAULT 0,
    draining      BOOLEAN NOT NULL DEFAULT false
);
