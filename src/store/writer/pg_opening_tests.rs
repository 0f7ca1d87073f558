//! Session openings on PostgreSQL: the reads they share (the writer's memo), read ahead of the
//! chain lock and kept across batches only while the lock row's count of changes holds
//! (`store/memo.rs`, migration 0007), and the key a session row stands on (migration 0008).
//! Run as `pg_tests.rs` runs, against the server at `TETHER_TEST_DATABASE_URL`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::pg_tests::{fresh_database, fresh_target, one_batch};
use super::test_batches::{audited, try_batch_reading, Boxed};
use super::*;
use crate::domain::{AgentId, CredentialId, DelegationId, IntegrationId, PlatformId, UserId, Visibility};
use crate::store::db::db_error;

/// Records a live credential with `id`, as a command of some other kind would (a mint).
fn credential_appears(tx: &mut Tx<'_>, id: CredentialId) -> Result<i64> {
    let credential = crate::domain::Credential {
        id,
        role: crate::domain::RoleKind::Admin,
        label: None,
        platform_id: None,
        user_id: None,
        created_at: tx.now(),
        expires_at: None,
        revoked_at: None,
    };
    crate::store::credentials::insert_credential(tx, &credential, 1)?;
    audited(tx, "credential")
}

fn live(tx: &mut Tx<'_>, id: CredentialId) -> Result<i64> {
    tx.credential_is_live(id).map(i64::from)
}

#[test]
fn appending_commands_share_reads_until_a_command_of_another_kind_runs() {
    let Some(conn) = fresh_database("appending_commands_share_reads") else { return };
    let id = CredentialId::generate();
    // Between two appending commands, a change made behind the batch's back (only possible in a
    // test: the batch holds the chain lock) is not seen: the second read is the memo's.
    let answers = one_batch(
        &conn,
        vec![
            (true, Box::new(move |tx| live(tx, id))),
            (
                true,
                Box::new(move |tx| {
                    let answer = credential_appears(tx, id);
                    answer.and_then(|_| live(tx, id))
                }),
            ),
        ],
    );
    assert_eq!(answers.iter().map(|a| *a.as_ref().unwrap()).collect::<Vec<_>>(), [0, 0], "the memo answered");
    // A command of another kind ends the memo: the appending command after it reads again.
    let other = CredentialId::generate();
    let answers = one_batch(
        &conn,
        vec![
            (true, Box::new(move |tx| live(tx, other))),
            (false, Box::new(move |tx| credential_appears(tx, other))),
            (true, Box::new(move |tx| live(tx, other))),
        ],
    );
    assert_eq!(answers[0].as_ref().ok(), Some(&0), "{answers:?}");
    assert_eq!(answers[2].as_ref().ok(), Some(&1), "read again after a command of another kind: {answers:?}");
}

/// Two delegations on platform `a` and one on platform `b`: (a, [delegations]).
fn three_delegations(conn: &Conn) -> (PlatformId, [DelegationId; 3]) {
    let (a, b) = (PlatformId::generate(), PlatformId::generate());
    let ids = [DelegationId::generate(), DelegationId::generate(), DelegationId::generate()];
    for platform in [a, b] {
        conn.execute(
            "INSERT INTO platforms (id, name, status, created_at) VALUES (?1, 'p', 'active', 0)",
            rusqlite::params![platform.to_string()],
        )
        .unwrap();
    }
    let (user, agent, integration) =
        (UserId::generate().to_string(), AgentId::generate().to_string(), IntegrationId::generate().to_string());
    conn.execute(
        "INSERT INTO users (id, permissions, status, created_at) VALUES (?1, '[]', 'active', 0)",
        rusqlite::params![user],
    )
    .unwrap();
    for (table, id) in [("agents", &agent), ("integrations", &integration)] {
        let sql = format!("INSERT INTO {table} (id, platform_id, name, scopes, status, created_at) VALUES (?1, ?2, 'x', '[]', 'active', 0)");
        conn.execute(&sql, rusqlite::params![id, a.to_string()]).unwrap();
    }
    for (id, platform) in ids.iter().zip([a, a, b]) {
        conn.execute(
            "INSERT INTO delegations (id, user_id, agent_id, integration_id, platform_id, scopes, status, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, '[]', 'active', 0)",
            rusqlite::params![id.to_string(), user, agent, integration, platform.to_string()],
        )
        .unwrap();
    }
    (a, ids)
}

#[test]
fn a_batch_reads_its_appending_commands_delegations_and_chains_ahead_each_through_its_visibility() {
    let Some(conn) = fresh_database("a_batch_reads_its_appending_commands_delegations_ahead") else { return };
    let (a, [first, second, elsewhere]) = three_delegations(&conn);
    let plt_a = Visibility::for_test(crate::domain::Reach::Platform(a));
    // A delegation and the chain it stands on, as opening a session reads them.
    let read = move |id: DelegationId| -> Boxed {
        Box::new(move |tx| {
            let d = tx.delegation(plt_a, id)?;
            let unscoped = Visibility::for_test(crate::domain::Reach::All);
            let chain = tx.chain_rows(unscoped, d.user_id, d.agent_id, d.integration_id)?;
            Ok(i64::from(d.id == id && chain.user.id == d.user_id))
        })
    };
    let renamed = |suffix_from: &'static str, suffix_to: &'static str| -> Boxed {
        Box::new(move |tx| {
            for table in ["delegations", "users"] {
                let sql = format!("ALTER TABLE {table}{suffix_from} RENAME TO {table}{suffix_to}");
                tx.conn().execute_batch(&sql).map_err(db_error)?;
            }
            Ok(1)
        })
    };
    // The tables are taken away before the commands reading them run, and put back after: they
    // find what the batch read before any command ran.
    let answers = try_batch_reading(
        &conn,
        vec![
            (true, None, renamed("", "_gone")),
            (true, Some((plt_a, first)), read(first)),
            (true, Some((plt_a, second)), read(second)),
            (true, None, renamed("_gone", "")),
        ],
    )
    .unwrap()
    .0;
    assert!(answers.iter().all(|a| a.as_ref().ok() == Some(&1)), "read ahead: {answers:?}");
    // Another platform's delegation named through plt_a's visibility is not read ahead: its
    // command reads it itself and does not find it.
    let answers = try_batch_reading(
        &conn,
        vec![(true, Some((plt_a, elsewhere)), read(elsewhere)), (true, Some((plt_a, first)), read(first))],
    )
    .unwrap()
    .0;
    assert!(matches!(answers[0], Err(Error::NotFound("delegation"))), "{answers:?}");
    assert_eq!(answers[1].as_ref().ok(), Some(&1), "{answers:?}");
}

/// The lock row's count of changes to what openings read ahead of the lock (migration 0007).
fn changes(conn: &Conn) -> i64 {
    conn.query_row("SELECT changes FROM audit_chain_lock WHERE id = 1", rusqlite::params![], |r| r.get(0)).unwrap()
}

#[test]
fn every_write_to_a_table_openings_read_ahead_counts_a_change_and_an_openings_own_writes_do_not() {
    let Some(conn) = fresh_database("every_write_to_a_table_openings_read_ahead_counts_a_change") else { return };
    // Every table `Memo::read_ahead` reads from: the credential (and its API key), the delegation,
    // its chain (user, agent, integration, platform, groups), the webhooks.
    let read_ahead = [
        "credentials",
        "signing_keys",
        "delegations",
        "users",
        "agents",
        "integrations",
        "platforms",
        "groups",
        "group_members",
        "webhooks",
    ];
    for table in read_ahead {
        let column = match table {
            "group_members" => "user_id",
            "signing_keys" => "kid",
            _ => "id",
        };
        for statement in
            [format!("DELETE FROM {table} WHERE false"), format!("UPDATE {table} SET {column} = {column} WHERE false")]
        {
            let before = changes(&conn);
            conn.execute_batch(&statement).unwrap();
            assert_eq!(changes(&conn), before + 1, "{statement}: even one that changes no row counts");
        }
    }
    // What opening a session writes.
    for table in ["sessions", "access_tokens", "refresh_tokens", "audit_events", "webhook_deliveries", "ssf_outbox"] {
        let before = changes(&conn);
        conn.execute_batch(&format!("DELETE FROM {table} WHERE false")).unwrap();
        assert_eq!(changes(&conn), before, "{table} is not read ahead");
    }
}

/// Starts a batch's transaction and its memo from `remembered`, as `commit_batch` does: the
/// memo, whether `remembered` was kept, and the transaction to end.
fn under_lock<'c>(conn: &'c Conn, remembered: Option<Memo>, now: i64) -> (Tx<'c>, bool, Batch<'c>) {
    let (batch, locked) = Batch::begin(conn).unwrap();
    let locked = locked.unwrap();
    let mut tx = Tx::new(conn, crate::domain::Timestamp(now), locked.head);
    let (memo, kept) = Memo::under_lock(remembered, locked.changes, tx.now());
    tx.start_memo(memo);
    (tx, kept, batch)
}

#[test]
fn what_openings_read_is_remembered_across_batches_only_while_nothing_it_was_read_from_changes() {
    let Some(target) = fresh_target("what_openings_read_is_remembered") else { return };
    let conn = Database::Postgres(target.clone()).writer().unwrap();
    crate::store::postgres::migrate(&conn).unwrap();
    let other_node = Database::Postgres(target.clone()).writer().unwrap();
    let waiting_node = Database::Postgres(target).writer().unwrap();
    let (a, [first, second, _]) = three_delegations(&conn);
    let plt_a = Visibility::for_test(crate::domain::Reach::Platform(a));
    let now = crate::domain::Timestamp(1);
    let status = |tx: &Tx<'_>, id| tx.delegation(plt_a, id).map(|d| d.status);
    use crate::domain::DelegationStatus::{Active, Revoked};
    let revoke = |id: DelegationId| {
        other_node
            .execute("UPDATE delegations SET status = 'revoked' WHERE id = ?1", rusqlite::params![id.to_string()])
            .unwrap()
    };

    // Read ahead of the lock, then kept under it: the memo answers, even with the table gone
    // (no read is made).
    let mut memo = None;
    Memo::read_ahead(&mut memo, &conn, now, &[], &[(plt_a, first)]).unwrap();
    let (mut tx, kept, batch) = under_lock(&conn, memo, 1);
    assert!(kept);
    conn.execute_batch("ALTER TABLE delegations RENAME TO delegations_gone").unwrap();
    assert_eq!(status(&tx, first).unwrap(), Active);
    let memo = tx.take_memo();
    drop(tx);
    batch.rollback().unwrap();

    // The next batch: nothing is lacking, so nothing is read ahead (the table is gone again),
    // and nothing changed, so the memo is kept under the lock.
    let mut memo = memo;
    conn.execute_batch("BEGIN; ALTER TABLE delegations RENAME TO delegations_gone").unwrap();
    Memo::read_ahead(&mut memo, &conn, now, &[], &[(plt_a, first)]).unwrap();
    conn.execute_batch("ROLLBACK").unwrap();
    let (mut tx, kept, batch) = under_lock(&conn, memo, 1);
    assert!(kept);
    assert_eq!(status(&tx, first).unwrap(), Active);
    let memo = tx.take_memo();
    drop(tx);
    batch.rollback().unwrap();

    // Another node revokes a delegation before the next batch reads ahead: the memo starts
    // again from the new count, and the read ahead finds the revocation.
    revoke(first);
    let mut memo = memo;
    Memo::read_ahead(&mut memo, &conn, now, &[], &[(plt_a, first), (plt_a, second)]).unwrap();
    let (tx, kept, batch) = under_lock(&conn, memo, 1);
    assert!(kept);
    assert_eq!((status(&tx, first).unwrap(), status(&tx, second).unwrap()), (Revoked, Active));
    drop(tx);
    batch.rollback().unwrap();

    // Another node revokes after the reads ahead and before the lock is granted: the memo is
    // dropped under the lock, and the delegation is read again there.
    let mut memo = None;
    Memo::read_ahead(&mut memo, &conn, now, &[], &[(plt_a, second)]).unwrap();
    revoke(second);
    let (tx, kept, batch) = under_lock(&conn, memo, 1);
    assert!(!kept);
    assert_eq!(status(&tx, second).unwrap(), Revoked);
    drop(tx);
    batch.rollback().unwrap();

    // A credential found live that expires by the batch's time: the memo is dropped too.
    let credential = CredentialId::generate();
    conn.execute(
        "INSERT INTO credentials (id, role, created_at, expires_at) VALUES (?1, 'admin', 0, 10)",
        rusqlite::params![credential.to_string()],
    )
    .unwrap();
    for (batch_time, kept) in [(9, true), (10, false)] {
        let mut memo = None;
        Memo::read_ahead(&mut memo, &conn, crate::domain::Timestamp(5), &[credential], &[]).unwrap();
        let (tx, was_kept, batch) = under_lock(&conn, memo, batch_time);
        assert_eq!(was_kept, kept, "at {batch_time}");
        assert_eq!(tx.credential_is_live(credential).unwrap(), kept, "at {batch_time}");
        drop(tx);
        batch.rollback().unwrap();
    }

    // Once the lock is held, a change waits for the batch to end (the count is on the lock's
    // row), so what the batch reads under it stays true for it.
    let (mut tx, _, batch) = under_lock(&conn, None, 1);
    let revoking = std::thread::spawn(move || {
        waiting_node.execute("UPDATE platforms SET status = 'disabled' WHERE id = ?1", rusqlite::params![a.to_string()])
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(!revoking.is_finished(), "the change waits for the lock");
    assert!(tx.take_memo().is_some());
    batch.commit(&tx, 0).unwrap();
    assert_eq!(revoking.join().unwrap().unwrap(), 1);
}

#[test]
fn a_session_row_must_name_the_user_agent_integration_and_platform_of_its_delegation() {
    let Some(conn) = fresh_database("a_session_row_must_name_its_delegations_chain") else { return };
    let (a, [first, _, elsewhere]) = three_delegations(&conn);
    let chain: (String, String, String) = conn
        .query_row(
            "SELECT user_id, agent_id, integration_id FROM delegations WHERE id = ?1",
            rusqlite::params![first.to_string()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    let open = |delegation: DelegationId, user: &str, platform: PlatformId| {
        conn.execute(
            "INSERT INTO sessions (id, delegation_id, user_id, agent_id, integration_id, platform_id, created_seq,
                                   scopes, status, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, '[]', 'active', 0, 1)",
            rusqlite::params![
                crate::domain::SessionId::generate().to_string(),
                delegation.to_string(),
                user,
                chain.1,
                chain.2,
                platform.to_string()
            ],
        )
    };
    assert_eq!(open(first, &chain.0, a).unwrap(), 1, "its delegation's chain");
    // `elsewhere` stands on the same user, agent and integration, for another platform.
    let refused = format!("{:?}", open(elsewhere, &chain.0, a).unwrap_err());
    assert!(refused.contains("sessions_delegation_chain_fkey"), "another delegation's platform: {refused}");
    let refused = format!("{:?}", open(first, &UserId::generate().to_string(), a).unwrap_err());
    assert!(refused.contains("sessions_delegation_chain_fkey"), "a user the delegation is not for: {refused}");
}
