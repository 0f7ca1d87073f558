-- `UNIQUE (webhook_id, event_seq)` on webhook_deliveries already keeps an index on exactly those
-- columns; `webhook_deliveries_by_webhook` was a second copy. Every event a webhook receives
-- inserts one delivery row, so each index is paid once per revoked session per subscribed webhook
-- during a cascade. Lookups by webhook use the constraint's index.
DROP INDEX webhook_deliveries_by_webhook;
