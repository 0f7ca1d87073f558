-- Webhooks and their transactional outbox. A delivery row is written in the same transaction as
-- the audit event it carries, so a committed event is never lost to a crash.

CREATE TABLE webhooks (
    id          TEXT PRIMARY KEY,
    url         TEXT NOT NULL,
    -- JSON array of audit actions to deliver; empty means every event the owner may see.
    events      TEXT NOT NULL,
    owner_role  TEXT NOT NULL,
    -- The platform or user the owner is bound to, or the credential id for other roles.
    owner_id    TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    deleted_at  INTEGER
) STRICT;

CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY,
    webhook_id      TEXT NOT NULL REFERENCES webhooks(id),
    event_seq       INTEGER NOT NULL,
    event_id        TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_attempt_at INTEGER,
    acknowledged_at INTEGER,
    last_status     INTEGER,
    last_error      TEXT,
    UNIQUE (webhook_id, event_seq)
) STRICT;
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, event_seq);
