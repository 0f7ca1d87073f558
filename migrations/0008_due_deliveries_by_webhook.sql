-- The delivery worker takes each webhook's oldest due deliveries, a few per webhook, so one
-- receiver's backlog is never scanned past to find another's: the due index leads with the
-- webhook. It replaces the index on due time alone, which only that scan used.
CREATE INDEX webhook_deliveries_due_by_webhook ON webhook_deliveries (webhook_id, next_attempt_at)
    WHERE status = 'pending';
DROP INDEX webhook_deliveries_due;
