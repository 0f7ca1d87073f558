-- Token lifecycle: short-lived access tokens, single-use refresh tokens, the revocation feed,
-- and the signing keys' statuses (the private keys stay in files, never here).

-- Every access token minted, so a session's revocation can feed all its live tokens' ids.
CREATE TABLE access_tokens (
    revocation_id TEXT PRIMARY KEY,
    session_id    TEXT NOT NULL REFERENCES sessions(id),
    kid           INTEGER NOT NULL,
    issued_at     INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL
) STRICT;
CREATE INDEX access_tokens_by_session ON access_tokens (session_id, expires_at);
CREATE INDEX access_tokens_by_expiry ON access_tokens (expires_at);

-- Refresh tokens are stored only as SHA-256 hashes; `used_at` makes them single-use.
CREATE TABLE refresh_tokens (
    hash       TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id),
    created_at INTEGER NOT NULL,
    used_at    INTEGER
) STRICT;
CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

-- Revoked tokens' revocation ids for offline verifiers; an entry may go once its token expired.
CREATE TABLE revocation_feed (
    cursor        INTEGER PRIMARY KEY AUTOINCREMENT,
    revocation_id TEXT NOT NULL,
    session_id    TEXT NOT NULL,
    expires_at    INTEGER NOT NULL
) STRICT;
CREATE INDEX revocation_feed_by_expiry ON revocation_feed (expires_at);

-- Last known status of each signing key, so a change made by `tether keys …` is audited once.
CREATE TABLE signing_keys (
    purpose    TEXT NOT NULL CHECK (purpose IN ('agent', 'api')),
    kid        INTEGER NOT NULL,
    status     TEXT NOT NULL CHECK (status IN ('active', 'retired')),
    public_key TEXT NOT NULL,
    PRIMARY KEY (purpose, kid)
) STRICT;
