//! Applies the SQL files of `migrations/` in order, once each, recording what ran.

use rusqlite::Connection;

use super::db::db_error;
use crate::domain::Result;

/// The migrations, compiled into the binary so a deployed tether needs no source tree.
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "0001_core", include_str!("../../migrations/0001_core.sql")),
    (2, "0002_token_lifecycle", include_str!("../../migrations/0002_token_lifecycle.sql")),
    (3, "0003_webhooks", include_str!("../../migrations/0003_webhooks.sql")),
    (4, "0004_live_view_index", include_str!("../../migrations/0004_live_view_index.sql")),
    (
        5,
        "0005_session_row_without_revocation_id",
        include_str!("../../migrations/0005_session_row_without_revocation_id.sql"),
    ),
    (6, "0006_drop_duplicate_delivery_index", include_str!("../../migrations/0006_drop_duplicate_delivery_index.sql")),
    (7, "0007_credential_signing_key", include_str!("../../migrations/0007_credential_signing_key.sql")),
    (8, "0008_due_deliveries_by_webhook", include_str!("../../migrations/0008_due_deliveries_by_webhook.sql")),
    (
        9,
        "0009_session_indexes_unchanged_by_revocation",
        include_str!("../../migrations/0009_session_indexes_unchanged_by_revocation.sql"),
    ),
    (
        10,
        "0010_cascade_writes_fewer_index_entries",
        include_str!("../../migrations/0010_cascade_writes_fewer_index_entries.sql"),
    ),
    (
        11,
        "0011_cascade_revocations_leave_actor_and_action_indexes",
        include_str!("../../migrations/0011_cascade_revocations_leave_actor_and_action_indexes.sql"),
    ),
    (
        12,
        "0012_actor_and_action_indexes_hold_every_event",
        include_str!("../../migrations/0012_actor_and_action_indexes_hold_every_event.sql"),
    ),
    (13, "0013_users_from_identity_providers", include_str!("../../migrations/0013_users_from_identity_providers.sql")),
    (14, "0014_signal_sources", include_str!("../../migrations/0014_signal_sources.sql")),
    (15, "0015_groups", include_str!("../../migrations/0015_groups.sql")),
    (16, "0016_ssf_streams", include_str!("../../migrations/0016_ssf_streams.sql")),
    (17, "0017_console", include_str!("../../migrations/0017_console.sql")),
];

/// Applies every migration not yet recorded, each in its own transaction.
pub fn run(conn: &mut Connection) -> Result<Vec<i64>> {
    refuse_newer(conn)?;
    apply(conn, MIGRATIONS)
}

/// Refuses a database that a newer tether migrated further than this binary knows: it would write
/// what it knows and skip what the newer schema relies on (since 0010, for instance, queries by
/// cause read `audit_causes`, which an older binary does not fill).
fn refuse_newer(conn: &Connection) -> Result<()> {
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    let has_table: bool = conn
        .query_row(
            "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations')",
            rusqlite::params![],
            |r| r.get(0),
        )
        .map_err(db_error)?;
    if !has_table {
        return Ok(());
    }
    let newest: Option<i64> = conn
        .query_row("SELECT max(version) FROM schema_migrations", rusqlite::params![], |r| r.get(0))
        .map_err(db_error)?;
    match newest {
        Some(newest) if newest > known => Err(crate::domain::Error::Unavailable(format!(
            "the database was migrated by a newer tether (schema {newest}; this binary knows up to {known}): \
             run that version or a later one"
        ))),
        _ => Ok(()),
    }
}

pub(super) fn apply(conn: &mut Connection, migrations: &[(i64, &str, &str)]) -> Result<Vec<i64>> {
    // A migration that rebuilds a table (SQLite cannot drop NOT NULL or widen a CHECK in place)
    // drops a table others reference: SQLite's procedure turns foreign keys off around it, which
    // only works outside a transaction, and checks them all once it is done.
    let enforced: bool = conn.query_row("PRAGMA foreign_keys", rusqlite::params![], |r| r.get(0)).map_err(db_error)?;
    conn.execute_batch("PRAGMA foreign_keys = OFF").map_err(db_error)?;
    let applied = apply_each(conn, migrations);
    if enforced {
        conn.execute_batch("PRAGMA foreign_keys = ON").map_err(db_error)?;
    }
    let applied = applied?;
    let dangling: i64 = conn
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", rusqlite::params![], |r| r.get(0))
        .map_err(db_error)?;
    if dangling > 0 {
        return Err(crate::domain::Error::Unavailable(format!(
            "after the migrations, {dangling} rows reference rows that do not exist"
        )));
    }
    Ok(applied)
}

fn apply_each(conn: &mut Connection, migrations: &[(i64, &str, &str)]) -> Result<Vec<i64>> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL
         ) STRICT;",
    )
    .map_err(db_error)?;
    let mut applied = Vec::new();
    for (version, name, sql) in migrations {
        // Asked under the write lock: another process starting at the same moment (`serve` and
        // `tether credential mint`) may have applied it while we waited for the lock.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(db_error)?;
        let done: bool = tx
            .query_row("SELECT EXISTS(SELECT 1 FROM schema_migrations WHERE version = ?1)", [version], |r| r.get(0))
            .map_err(db_error)?;
        if done {
            continue;
        }
        tx.execute_batch(sql).map_err(db_error)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, unixepoch() * 1000)",
            rusqlite::params![version, name],
        )
        .map_err(db_error)?;
        tx.commit().map_err(db_error)?;
        applied.push(*version);
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_to_an_empty_database_and_only_once() {
        let mut conn = Connection::open_in_memory().expect("in-memory db");
        assert_eq!(run(&mut conn).expect("first run"), vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]);
        assert!(run(&mut conn).expect("second run").is_empty());
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'sessions'",
                rusqlite::params![],
                |r| r.get(0),
            )
            .expect("query");
        assert_eq!(tables, 1);
    }

    #[test]
    fn dropping_the_session_copy_of_the_revocation_id_keeps_every_session() {
        let mut conn = Connection::open_in_memory().expect("in-memory db");
        apply(&mut conn, &MIGRATIONS[..4]).expect("migrations before 0005");
        conn.execute_batch(
            "INSERT INTO platforms VALUES ('p', 'P', 'active', 0);
             INSERT INTO agents VALUES ('a', 'p', 'A', '[]', 'active', 0);
             INSERT INTO integrations VALUES ('i', 'p', 'I', '[]', 'active', 0);
             INSERT INTO users VALUES ('u', 'ext', NULL, '[]', 'active', 0);
             INSERT INTO delegations (id, user_id, agent_id, integration_id, platform_id, scopes, status, created_at)
                 VALUES ('d', 'u', 'a', 'i', 'p', '[]', 'active', 0);
             INSERT INTO sessions (id, delegation_id, user_id, agent_id, integration_id, platform_id, created_seq,
                                   scopes, status, created_at, expires_at, revocation_id)
                 VALUES ('s', 'd', 'u', 'a', 'i', 'p', 1, '[\"mail:read\"]', 'active', 5, 9, 'abcd');",
        )
        .expect("a session written under the old schema");
        assert_eq!(run(&mut conn).expect("0005 and later"), vec![5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]);
        let (status, scopes, expires_at): (String, String, i64) = conn
            .query_row("SELECT status, scopes, expires_at FROM sessions WHERE id = 's'", rusqlite::params![], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .expect("the session survives");
        assert_eq!((status.as_str(), scopes.as_str(), expires_at), ("active", "[\"mail:read\"]", 9));
        let still_active: i64 = conn
            .query_row(
                "SELECT count(*) FROM sessions WHERE user_id = 'u' AND status = 'active'",
                rusqlite::params![],
                |r| r.get(0),
            )
            .expect("the cascade index still answers");
        assert_eq!(still_active, 1);
        assert!(conn.prepare("SELECT revocation_id FROM sessions").is_err(), "the column is gone");
    }

    #[test]
    fn rebuilding_users_and_credentials_keeps_every_row_and_every_reference() {
        let mut conn = Connection::open_in_memory().expect("in-memory db");
        conn.execute_batch("PRAGMA foreign_keys = ON").expect("enforced, as tether opens it");
        apply(&mut conn, &MIGRATIONS[..12]).expect("migrations before 0013");
        conn.execute_batch(
            "INSERT INTO platforms VALUES ('p', 'P', 'active', 0);
             INSERT INTO agents VALUES ('a', 'p', 'A', '[]', 'active', 0);
             INSERT INTO integrations VALUES ('i', 'p', 'I', '[]', 'active', 0);
             INSERT INTO users VALUES ('u', 'ext', 'Ada', '[\"mail:read\"]', 'disabled', 7);
             INSERT INTO delegations (id, user_id, agent_id, integration_id, platform_id, scopes, status, created_at)
                 VALUES ('d', 'u', 'a', 'i', 'p', '[]', 'active', 0);
             INSERT INTO credentials (id, role, user_id, label, created_at, kid) VALUES ('c', 'user', 'u', 'L', 3, 2);",
        )
        .expect("rows written under the old schema");
        assert_eq!(run(&mut conn).expect("0013 and later"), vec![13, 14, 15, 16, 17]);
        let user: (String, Option<String>, String, String, i64) = conn
            .query_row(
                "SELECT external_id, user_name, display_name, status, created_at FROM users WHERE id = 'u'",
                rusqlite::params![],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .expect("the user survives");
        assert_eq!(user, ("ext".into(), None, "Ada".into(), "disabled".into(), 7));
        let kid: i64 = conn
            .query_row("SELECT kid FROM credentials WHERE id = 'c'", rusqlite::params![], |r| r.get(0))
            .expect("kept");
        assert_eq!(kid, 2);
        let enforced: bool = conn.query_row("PRAGMA foreign_keys", rusqlite::params![], |r| r.get(0)).expect("pragma");
        assert!(enforced, "foreign keys are enforced again after the migrations");
        let dangling = conn.execute(
            "INSERT INTO delegations (id, user_id, agent_id, integration_id, platform_id, scopes, status, created_at)
             VALUES ('d2', 'nobody', 'a', 'i', 'p', '[]', 'active', 0)",
            [],
        );
        assert!(dangling.is_err(), "delegations still reference users");
        conn.execute("INSERT INTO credentials (id, role, created_at) VALUES ('c2', 'provisioner', 0)", [])
            .expect("the provisioner role is allowed");
        conn.execute("INSERT INTO users (id, permissions, status, created_at) VALUES ('u2', '[]', 'active', 0)", [])
            .expect("a user without external_id");
        conn.execute("INSERT INTO users (id, user_name, permissions, status, created_at) VALUES ('u3', 'Bob', '[]', 'active', 0)", [])
            .expect("a user name");
        let taken = conn
            .execute("INSERT INTO users (id, user_name, permissions, status, created_at) VALUES ('u4', 'bOB', '[]', 'active', 0)", []);
        assert!(taken.is_err(), "user names are unique case-insensitively");
    }

    /// SQLite's query plan for `sql` (two text parameters) on a fully migrated database.
    fn plan(sql: &str) -> Vec<String> {
        let params = ["w", "0"].map(|p| rusqlite::types::Value::Text(p.into()));
        crate::store::query_plan::plan(&crate::store::query_plan::migrated(), sql, &params)
    }

    use crate::store::query_plan::seeks;

    #[test]
    fn a_webhooks_deliveries_are_found_through_an_index_after_its_duplicate_is_dropped() {
        let plan = plan(
            "SELECT id FROM webhook_deliveries WHERE webhook_id = ?1 AND event_seq > ?2 ORDER BY event_seq LIMIT 10",
        );
        assert!(seeks(&plan, "sqlite_autoindex_webhook_deliveries"), "{plan:?}");
        assert!(!plan.iter().any(|step| step.contains("TEMP B-TREE")), "no sort: {plan:?}");
    }

    #[test]
    fn a_webhooks_oldest_due_deliveries_are_an_index_seek_not_a_scan_of_everyones() {
        let plan = plan(
            "SELECT id FROM webhook_deliveries WHERE webhook_id = ?1 AND status = 'pending' AND next_attempt_at <= ?2
             ORDER BY next_attempt_at, id LIMIT 4",
        );
        assert!(seeks(&plan, "webhook_deliveries_due_by_webhook"), "{plan:?}");
    }

    #[test]
    fn a_cascade_reads_a_delegations_or_parents_active_sessions_by_index_in_creation_order() {
        use crate::store::sessions::active_sessions_query;
        for (column, index) in [("delegation_id", "sessions_active_by_delegation"), ("parent_id", "sessions_by_parent")]
        {
            let plan = plan(&active_sessions_query(crate::store::conn::Dialect::Sqlite, column));
            assert!(seeks(&plan, index), "{column}: {plan:?}");
            assert!(!plan.iter().any(|step| step.contains("TEMP B-TREE")), "no sort: {plan:?}");
        }
        let plan = plan("SELECT id FROM delegations WHERE user_id = ?1 AND ?2 ORDER BY id");
        assert!(seeks(&plan, "delegations_by_user"), "a user's delegations: {plan:?}");
        assert!(!plan.iter().any(|step| step.contains("TEMP B-TREE")), "no sort: {plan:?}");
    }

    #[test]
    fn a_cascade_finds_what_its_events_revoked_by_their_seq_range_not_by_scanning() {
        use crate::store::feed::FEED_REVOKED_BETWEEN;
        use crate::store::sessions::CHILDREN_OF_REVOKED;
        let params = [1, 2, 3].map(rusqlite::types::Value::Integer);
        let conn = crate::store::query_plan::migrated();
        // The cascade's `session.revoked` events, by seq range: through the table or by action.
        let by_seq_range = |plan: &[String]| {
            plan.iter().any(|step| {
                step.starts_with("SEARCH")
                    && (step.contains("INTEGER PRIMARY KEY (rowid>? AND rowid<?)")
                        || step.contains("audit_by_action (action=? AND seq>? AND seq<?)"))
            })
        };
        let children = crate::store::query_plan::plan(&conn, &CHILDREN_OF_REVOKED, &params);
        assert!(by_seq_range(&children), "the events by seq: {children:?}");
        assert!(seeks(&children, "sessions_by_parent"), "{children:?}");
        assert!(!children.iter().any(|step| step.starts_with("SCAN")), "{children:?}");
        let feed = crate::store::query_plan::plan(&conn, FEED_REVOKED_BETWEEN, &params);
        assert!(by_seq_range(&feed), "the events by seq: {feed:?}");
        assert!(seeks(&feed, "access_tokens_by_session"), "{feed:?}");
        assert!(!feed.iter().any(|step| step.starts_with("SCAN")), "{feed:?}");
        assert!(!feed.iter().any(|step| step.contains("TEMP B-TREE")), "in index order, no sort: {feed:?}");
    }

    #[test]
    fn listing_an_agents_or_integrations_sessions_seeks_an_index_in_id_order() {
        for column in ["agent_id", "integration_id"] {
            let plan = plan(&format!("SELECT id FROM sessions WHERE {column} = ?1 AND id > ?2 ORDER BY id LIMIT 50"));
            let index = format!("sessions_by_{}", column.trim_end_matches("_id"));
            assert!(seeks(&plan, &index), "{column}: {plan:?}");
            assert!(!plan.iter().any(|step| step.contains("TEMP B-TREE")), "no sort: {plan:?}");
        }
    }

    #[test]
    fn two_processes_migrating_the_same_new_file_at_once_both_succeed() {
        for _ in 0..10 {
            let dir = tempfile::tempdir().expect("temp dir");
            let path = dir.path().join("tether.db");
            let racers: Vec<_> = (0..2)
                .map(|_| {
                    let path = path.clone();
                    std::thread::spawn(move || {
                        let mut conn = Connection::open(&path).expect("open");
                        conn.busy_timeout(std::time::Duration::from_secs(10)).expect("busy timeout");
                        run(&mut conn).map(|applied| applied.len())
                    })
                })
                .collect();
            let applied: Vec<usize> = racers.into_iter().map(|r| r.join().expect("thread").expect("migrate")).collect();
            assert_eq!(applied.iter().sum::<usize>(), MIGRATIONS.len(), "each migration ran exactly once: {applied:?}");
        }
    }

    #[test]
    fn a_database_migrated_by_a_newer_tether_is_refused_and_left_as_it_is() {
        let mut conn = Connection::open_in_memory().expect("in-memory db");
        run(&mut conn).expect("migrate");
        let newer = MIGRATIONS.last().map_or(0, |m| m.0) + 1;
        conn.execute("INSERT INTO schema_migrations VALUES (?1, 'from_the_future', 0)", [newer]).expect("record");
        let refused = run(&mut conn).expect_err("refused");
        assert!(refused.to_string().contains("newer tether"), "{refused}");
        let recorded: i64 =
            conn.query_row("SELECT count(*) FROM schema_migrations", rusqlite::params![], |r| r.get(0)).expect("count");
        assert_eq!(recorded, MIGRATIONS.len() as i64 + 1);
    }

    #[test]
    fn the_audit_table_refuses_update_and_delete() {
        let mut conn = Connection::open_in_memory().expect("in-memory db");
        run(&mut conn).expect("migrate");
        conn.execute(
            "INSERT INTO audit_events (seq, id, at, actor_kind, actor_id, action, subject_kind, subject_id, details, prev_hash, hash)
             VALUES (1, 'e', 0, 'system', 's', 'a', 'k', 'i', '{}', 'p', 'h')",
            [],
        )
        .expect("insert");
        assert!(conn.execute("UPDATE audit_events SET reason = 'x'", []).is_err());
        assert!(conn.execute("DELETE FROM audit_events", []).is_err());
    }
}
