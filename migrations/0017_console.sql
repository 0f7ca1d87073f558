-- The console (issue 19): single-use sign-in links and the browser sessions they start.
-- Only hashes of the link and cookie secrets are stored: a copy of the database opens nothing.

CREATE TABLE console_links (
    id            TEXT PRIMARY KEY,
    -- SHA-256 (hex) of the secret in the link's URL.
    secret_hash   TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL CHECK (role IN ('user', 'auditor', 'admin')),
    -- The person a `user` link signs in (NULL for auditor and admin links).
    user_id       TEXT REFERENCES users(id),
    -- A link minted by a platform shows and acts on that platform's delegations only.
    platform_id   TEXT REFERENCES platforms(id),
    -- Seq of the console.link_created event: the cause of the session it starts.
    created_seq   INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    used_at       INTEGER,
    CHECK ((role = 'user') = (user_id IS NOT NULL))
) STRICT;

CREATE TABLE console_sessions (
    id            TEXT PRIMARY KEY,
    -- SHA-256 (hex) of the cookie's secret.
    secret_hash   TEXT NOT NULL UNIQUE,
    link_id       TEXT NOT NULL REFERENCES console_links(id),
    -- The API credential the session acts as (minted when the link was opened, revoked when
    -- the session ends): every action goes through the same capabilities as the API.
    credential_id TEXT NOT NULL REFERENCES credentials(id),
    role          TEXT NOT NULL CHECK (role IN ('user', 'auditor', 'admin')),
    user_id       TEXT REFERENCES users(id),
    platform_id   TEXT REFERENCES platforms(id),
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER NOT NULL,
    -- The absolute end; the idle end is last_used_at plus the idle timeout.
    expires_at    INTEGER NOT NULL,
    ended_at      INTEGER,
    ended_reason  TEXT
) STRICT;
