-- Start-up loads every session whose tokens could still verify (unexpired). This covering index
-- makes that read O(live sessions) instead of a scan of every session ever stored.
CREATE INDEX sessions_by_expiry ON sessions (expires_at, id, status);
