-- Identity providers (SCIM, Shared Signals) find users by the identifiers they know: the user
-- name and the email, besides the external id. A user provisioned by SCIM may have no external
-- id, and SCIM's DELETE ends a user for good (kept for the audit trail). Credentials gain the
-- provisioner role (an identity provider's connection) and the receiver role (a Shared Signals
-- receiver, issue 18), so the table is rebuilt once for both.
--
-- SQLite cannot drop NOT NULL or widen a CHECK in place: both tables are rebuilt (the runner
-- turns foreign keys off around migrations and checks them after, as SQLite's procedure says).

CREATE TABLE users_rebuilt (
    id           TEXT PRIMARY KEY,
    external_id  TEXT UNIQUE,
    user_name    TEXT COLLATE NOCASE UNIQUE,
    email        TEXT COLLATE NOCASE,
    display_name TEXT,
    permissions  TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    created_at   INTEGER NOT NULL,
    ended_at     INTEGER
) STRICT;
INSERT INTO users_rebuilt (id, external_id, display_name, permissions, status, created_at)
    SELECT id, external_id, display_name, permissions, status, created_at FROM users;
DROP TABLE users;
ALTER TABLE users_rebuilt RENAME TO users;
CREATE INDEX users_by_email ON users (email) WHERE email IS NOT NULL;

CREATE TABLE credentials_rebuilt (
    id          TEXT PRIMARY KEY,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'platform', 'user', 'auditor', 'verifier', 'provisioner', 'receiver')),
    platform_id TEXT REFERENCES platforms(id),
    user_id     TEXT REFERENCES users(id),
    label       TEXT,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    revoked_at  INTEGER,
    kid         INTEGER
) STRICT;
INSERT INTO credentials_rebuilt (id, role, platform_id, user_id, label, created_at, expires_at, revoked_at, kid)
    SELECT id, role, platform_id, user_id, label, created_at, expires_at, revoked_at, kid FROM credentials;
DROP TABLE credentials;
ALTER TABLE credentials_rebuilt RENAME TO credentials;
