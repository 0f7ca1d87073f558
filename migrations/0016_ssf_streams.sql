-- Shared Signals (SSF 1.0) streams of the transmitter, their subjects, and the SET outbox.
-- A SET row is written in the same transaction as the revocation it tells of (the transactional
-- outbox webhooks use), one row per SET per stream, so nothing committed is lost to a crash.

CREATE TABLE ssf_streams (
    id                        TEXT PRIMARY KEY,
    -- The receiver credential that created it: only it sees and manages the stream.
    receiver_id               TEXT NOT NULL,
    -- The receiver's platform binding: its SETs tell of that platform's sessions only.
    platform_id               TEXT,
    -- JSON: a string or an array of strings (SSF `aud`).
    aud                       TEXT NOT NULL,
    -- JSON array of event type URIs the receiver asked for.
    events_requested          TEXT NOT NULL,
    delivery_method           TEXT NOT NULL CHECK (delivery_method IN ('urn:ietf:rfc:8935', 'urn:ietf:rfc:8936')),
    endpoint_url              TEXT,
    -- The push `authorization_header` tether must send, sealed (ChaCha20-Poly1305 under a key
    -- derived from the data directory's master key, the stream id as associated data).
    authorization_sealed      TEXT,
    description               TEXT,
    status                    TEXT NOT NULL CHECK (status IN ('enabled', 'paused', 'disabled')),
    status_reason             TEXT,
    min_verification_interval INTEGER NOT NULL,
    last_verification_at      INTEGER,
    created_at                INTEGER NOT NULL,
    deleted_at                INTEGER
) STRICT;
CREATE INDEX ssf_streams_by_receiver ON ssf_streams (receiver_id) WHERE deleted_at IS NULL;

-- Subjects removed from (excluded = 1) or added to (excluded = 0) a stream, by a normalized key
-- (`user:usr_…`, `session:ses_…`, `application:int_…`).
CREATE TABLE ssf_stream_subjects (
    stream_id   TEXT NOT NULL REFERENCES ssf_streams(id),
    subject_key TEXT NOT NULL,
    excluded    INTEGER NOT NULL,
    PRIMARY KEY (stream_id, subject_key)
) STRICT;

CREATE TABLE ssf_outbox (
    id              INTEGER PRIMARY KEY,
    stream_id       TEXT NOT NULL REFERENCES ssf_streams(id),
    jti             TEXT NOT NULL UNIQUE,
    -- One value per trigger, so a receiver can group a cascade's SETs.
    txn             TEXT NOT NULL,
    -- The audit event that caused it (absent for verification and stream-updated SETs).
    trigger_seq     INTEGER,
    event_type      TEXT NOT NULL,
    -- {"sub_id": …, "events": …}; the issuer is filled in when the SET is signed.
    payload         TEXT NOT NULL,
    iat             INTEGER NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'acknowledged', 'failed', 'dropped')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_attempt_at INTEGER,
    acknowledged_at INTEGER,
    last_status     INTEGER,
    last_error      TEXT
) STRICT;
CREATE INDEX ssf_outbox_pending ON ssf_outbox (stream_id, id) WHERE status = 'pending';
CREATE INDEX ssf_outbox_by_trigger ON ssf_outbox (trigger_seq) WHERE trigger_seq IS NOT NULL;

-- SET signing keys (purpose `sets`, RSA) are audited like the others when they are added or
-- retired: the purpose check admits them (SQLite cannot widen a CHECK in place: rebuilt).
CREATE TABLE signing_keys_new (
    purpose    TEXT NOT NULL CHECK (purpose IN ('agent', 'api', 'sets')),
    kid        INTEGER NOT NULL,
    status     TEXT NOT NULL CHECK (status IN ('active', 'retired')),
    public_key TEXT NOT NULL,
    PRIMARY KEY (purpose, kid)
) STRICT;
INSERT INTO signing_keys_new (purpose, kid, status, public_key)
    SELECT purpose, kid, status, public_key FROM signing_keys;
DROP TABLE signing_keys;
ALTER TABLE signing_keys_new RENAME TO signing_keys;
