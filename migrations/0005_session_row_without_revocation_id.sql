-- A session row kept the revocation id (128 hex characters) of the token minted with it, from
-- before `access_tokens` recorded every token's id, that one included. Nothing reads the copy,
-- and every revocation rewrites the whole row: without it a row is about 30% smaller, so a
-- cascade writes that much less of the sessions table (docs/performance.md).
ALTER TABLE sessions DROP COLUMN revocation_id;
