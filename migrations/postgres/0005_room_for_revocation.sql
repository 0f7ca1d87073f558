-- Room on each page for the revoked version of every session on it (migration 0002 set 50).
-- A revoked version is wider than the active one (revoked_at, revoked_reason, revoked_by_seq):
-- at 50, about one revocation in seven found its page full and was written elsewhere, with an
-- entry in each of the table's eight indexes, and the 100k cascade's revocations took twice as
-- long as when every one stayed on its page. The table takes about two and a half times its
-- packed size. Pages written before this migration keep their old room until the table is
-- rewritten (VACUUM FULL sessions, which locks it while it runs).
ALTER TABLE sessions SET (fillfactor = 40);
