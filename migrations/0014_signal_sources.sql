-- Shared Signals in: the transmitters an admin registered, and the SETs received from them.

CREATE TABLE signal_sources (
    id           TEXT PRIMARY KEY,
    -- The transmitter's issuer: a SET's `iss` must equal it.
    issuer       TEXT NOT NULL,
    -- When set, a SET's `aud` must contain it.
    audience     TEXT,
    label        TEXT,
    -- Exactly one of the two: where the keys are fetched from, or the keys themselves (a JWKS).
    jwks_uri     TEXT,
    jwks         TEXT,
    -- SHA-256 (hex) of the push authorization token; the token itself is shown once and never
    -- stored, so the database cannot be read for a credential that pushes signals.
    push_auth_hash TEXT NOT NULL,
    -- JSON object: per-event overrides of the default effects (docs/api.md, "Signal sources").
    effects      TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    created_at   INTEGER NOT NULL,
    disabled_at  INTEGER,
    CHECK ((jwks_uri IS NULL) <> (jwks IS NULL))
) STRICT;

-- One row per SET accepted from a source: a replayed `jti` finds its row and has no second effect.
CREATE TABLE signals_received (
    source_id    TEXT NOT NULL REFERENCES signal_sources(id),
    jti          TEXT NOT NULL,
    -- The `signal.received` audit event that recorded it.
    event_seq    INTEGER NOT NULL,
    received_at  INTEGER NOT NULL,
    PRIMARY KEY (source_id, jti)
) STRICT, WITHOUT ROWID;
