-- The API key that signed each credential, so the writer can treat a credential under a retired
-- key as dead (its webhooks stop receiving, its in-flight writes are refused) the way every
-- request with it is refused. NULL for credentials minted before this column: their key is not
-- known to the store, and only the request path (which sees the token) can refuse them.
ALTER TABLE credentials ADD COLUMN kid INTEGER;
