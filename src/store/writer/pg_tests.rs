//! The writer's batches on PostgreSQL, where commands hold their rows back and open their
//! savepoints at their first statement: a failed command takes back only its own rows, and a
//! command holding many sends them ahead. What session openings read is tested in
//! `pg_opening_tests.rs`. They run against the server at `TETHER_TEST_DATABASE_URL`
//! (tests/pg/start.sh; `.ci/run` always starts one), each on a database of its own, and say so
//! and pass where none is configured.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::test_batches::{audited, try_batch, Boxed};
use super::*;
use crate::domain::{CredentialId, WebhookId};
use crate::store::db::db_error;
use crate::store::postgres::PgTarget;

/// A fresh migrated database on the test server, or `None` (and a note) without one.
pub(super) fn fresh_database(test: &str) -> Option<Conn> {
    let target = fresh_target(test)?;
    let conn = Database::Postgres(target).writer().unwrap();
    crate::store::postgres::migrate(&conn).unwrap();
    Some(conn)
}

/// A fresh empty database on the test server, or `None` (and a note) without one.
pub(super) fn fresh_target(test: &str) -> Option<PgTarget> {
    let Ok(admin_url) = std::env::var("TETHER_TEST_DATABASE_URL") else {
        eprintln!("{test}: TETHER_TEST_DATABASE_URL is not set; not run here (.ci/run sets it)");
        return None;
    };
    let name = format!("writer_{}", uuid::Uuid::now_v7().simple());
    let admin = PgTarget::new(&admin_url, None).unwrap().connect().unwrap();
    admin.execute_batch(&format!("CREATE DATABASE {name}")).unwrap();
    let url = match admin_url.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => panic!("no database name in {admin_url}"),
    };
    Some(PgTarget::new(&url, None).unwrap())
}

/// Runs `commands` (each with whether it only appends) as one batch ([`try_batch`]), which
/// must commit: each command's answer.
pub(super) fn one_batch(conn: &Conn, commands: Vec<(bool, Boxed)>) -> Vec<Result<i64>> {
    try_batch(conn, commands).unwrap().0
}

fn subjects(conn: &Conn) -> Vec<String> {
    let mut st = conn.prepare("SELECT subject_id FROM audit_events ORDER BY seq").unwrap();
    st.query_map(rusqlite::params![], |r| r.get(0)).unwrap().collect::<std::result::Result<_, _>>().unwrap()
}

/// Runs `failing` between two commands that each audit one event, in one batch; asserts that it
/// failed with a conflict and that only its own rows were taken back.
fn only_the_failed_command_is_undone(conn: &Conn, failing: Boxed) {
    let answers = one_batch(
        conn,
        vec![
            (false, Box::new(|tx| audited(tx, "kept before"))),
            (false, failing),
            (false, Box::new(|tx| audited(tx, "kept after"))),
        ],
    );
    assert!(matches!(answers[1], Err(Error::Conflict(_))), "{answers:?}");
    assert_eq!((answers[0].as_ref().ok(), answers[2].as_ref().ok()), (Some(&1), Some(&2)), "no gap in the chain");
    assert_eq!(subjects(conn), ["kept before", "kept after"]);
    assert!(crate::store::audit::verify_audit(conn).unwrap().ok);
}

#[test]
fn a_command_that_fails_after_its_first_statement_takes_back_only_its_own_rows() {
    let Some(conn) = fresh_database("a_command_that_fails_after_its_first_statement") else { return };
    only_the_failed_command_is_undone(
        &conn,
        Box::new(|tx| {
            audited(tx, "held, then undone")?;
            // Its first statement: the rows the command before it held are written outside this
            // command's savepoint, its own inside.
            tx.conn().execute_batch("SELECT 1").map_err(db_error)?;
            audited(tx, "held after the statement, undone")?;
            Err(Error::conflict("changed its mind"))
        }),
    );
}

#[test]
fn a_command_that_fails_before_any_statement_drops_only_its_own_held_rows() {
    let Some(conn) = fresh_database("a_command_that_fails_before_any_statement") else { return };
    let answers = one_batch(
        &conn,
        vec![
            (true, Box::new(|tx| audited(tx, "one"))),
            (
                true,
                Box::new(|tx| {
                    audited(tx, "dropped")?;
                    Err(Error::conflict("no"))
                }),
            ),
            (true, Box::new(|tx| audited(tx, "two"))),
        ],
    );
    assert_eq!((answers[0].as_ref().ok(), answers[2].as_ref().ok()), (Some(&1), Some(&2)), "{answers:?}");
    assert_eq!(subjects(&conn), ["one", "two"]);
    assert!(crate::store::audit::verify_audit(&conn).unwrap().ok);
}

use crate::store::deferred::CHUNK;

/// Audits `count` events named `what N`, as a cascade does (the live webhooks read once);
/// asserts, once more than a chunk is held, that a write was sent ahead.
fn audited_many(tx: &mut Tx<'_>, what: &str, count: usize) -> Result<i64> {
    tx.holding_subscribers(|tx| {
        let mut last = 0;
        for i in 0..count {
            last = audited(tx, &format!("{what} {i}"))?;
            if i == CHUNK + 1 {
                let pg = tx.conn.postgres().unwrap();
                assert!(pg.behind.borrow().is_some(), "the first chunk was sent ahead");
            }
        }
        Ok(last)
    })
}

/// Creates (or deletes) a webhook for every event, owned by an admin credential.
fn webhook_changes(tx: &mut Tx<'_>, id: WebhookId, create: bool) -> Result<i64> {
    if !create {
        return crate::store::webhooks::delete_webhook(tx, id).map(|()| 0);
    }
    let webhook = crate::store::webhooks::Webhook {
        id,
        url: "https://receiver.example/hook".into(),
        events: Vec::new(),
        created_at: tx.now(),
    };
    crate::store::webhooks::insert_webhook(tx, &webhook, "admin", &CredentialId::generate().to_string()).map(|()| 0)
}

/// The subjects of the events a delivery was queued for, in seq order.
fn delivered(conn: &Conn) -> Vec<String> {
    let mut st = conn
        .prepare(
            "SELECT e.subject_id FROM webhook_deliveries d JOIN audit_events e ON e.seq = d.event_seq ORDER BY e.seq",
        )
        .unwrap();
    st.query_map(rusqlite::params![], |r| r.get(0)).unwrap().collect::<std::result::Result<_, _>>().unwrap()
}

/// The live webhooks are kept twice over: by the batch's memo while every command appends, and
/// by a cascade while it writes. Neither outlives a command that changes a webhook.
#[test]
fn a_webhook_created_or_deleted_in_a_batch_is_matched_from_the_next_command_on() {
    let Some(conn) = fresh_database("a_webhook_created_or_deleted_in_a_batch") else { return };
    let hook = WebhookId::generate();
    let created = one_batch(
        &conn,
        vec![
            (true, Box::new(|tx| audited(tx, "before creation"))),
            (false, Box::new(move |tx| webhook_changes(tx, hook, true))),
            (true, Box::new(|tx| audited(tx, "after creation"))),
        ],
    );
    let deleted = one_batch(
        &conn,
        vec![
            (true, Box::new(|tx| audited(tx, "remembered"))),
            (false, Box::new(|tx| audited_many(tx, "held", 2))),
            (false, Box::new(move |tx| webhook_changes(tx, hook, false))),
            (true, Box::new(|tx| audited(tx, "after deletion"))),
            (false, Box::new(|tx| audited_many(tx, "held after deletion", 2))),
        ],
    );
    assert!(created.iter().chain(&deleted).all(Result::is_ok), "{created:?} {deleted:?}");
    assert_eq!(delivered(&conn), ["after creation", "remembered", "held 0", "held 1"]);
}

#[test]
fn a_command_holding_more_than_a_chunk_sends_it_ahead_and_commits_every_row_in_order() {
    let Some(conn) = fresh_database("a_command_holding_more_than_a_chunk") else { return };
    let many = 2 * CHUNK + 5;
    let answers = one_batch(
        &conn,
        vec![
            (false, Box::new(|tx| audited(tx, "before"))),
            (false, Box::new(move |tx| audited_many(tx, "many", many))),
            (false, Box::new(|tx| audited(tx, "after"))),
        ],
    );
    let last = i64::try_from(many).unwrap() + 2;
    assert_eq!(answers.iter().map(|a| *a.as_ref().unwrap()).collect::<Vec<_>>(), [1, last - 1, last]);
    let subjects = subjects(&conn);
    assert_eq!(subjects.len(), many + 2);
    assert_eq!((subjects[0].as_str(), subjects[many + 1].as_str()), ("before", "after"));
    assert!(subjects[1..=many].iter().enumerate().all(|(i, s)| *s == format!("many {i}")), "in seq order");
    assert!(crate::store::audit::verify_audit(&conn).unwrap().ok);
}

#[test]
fn a_command_that_fails_after_sending_rows_ahead_takes_them_back() {
    let Some(conn) = fresh_database("a_command_that_fails_after_sending_rows_ahead") else { return };
    only_the_failed_command_is_undone(
        &conn,
        Box::new(|tx| {
            audited_many(tx, "undone", 2 * CHUNK + 1)?;
            Err(Error::conflict("changed its mind"))
        }),
    );
}

#[test]
fn a_write_sent_ahead_that_fails_fails_the_batch_and_leaves_the_connection_usable() {
    let Some(conn) = fresh_database("a_write_sent_ahead_that_fails") else { return };
    let failed = try_batch(
        &conn,
        vec![
            (false, Box::new(|tx| audited(tx, "before"))),
            (
                false,
                Box::new(|tx| {
                    // A revocation of a session that does not exist fails the write it goes in:
                    // the one sent ahead once a chunk of events is held. Held rows were checked
                    // by their commands, so such a failure is the database's and, as a failed
                    // COMMIT, fails the whole batch.
                    let now = tx.now().millis();
                    tx.deferred.borrow_mut().session_revoked(now, "no such session".into(), "test", 1);
                    audited_many(tx, "many", CHUNK + 2)
                }),
            ),
            (false, Box::new(|tx| audited(tx, "after"))),
        ],
    );
    match failed {
        Err(Error::Internal(e)) => assert!(e.to_string().contains("were not found"), "{e}"),
        other => panic!("the failed write is the batch's error: {other:?}"),
    }
    assert!(subjects(&conn).is_empty(), "nothing of the batch was committed");
    // The client came back from the write's thread and the transaction was rolled back.
    assert_eq!(one_batch(&conn, vec![(false, Box::new(|tx| audited(tx, "next")))])[0].as_ref().ok(), Some(&1));
    assert_eq!(subjects(&conn), ["next"]);
    assert!(crate::store::audit::verify_audit(&conn).unwrap().ok);
}

/// From [`COPY_AUDIT_FROM`] rows on, a write's audit rows go by `COPY`: every column, the
/// optional ones set and unset, a shared details row included, reads back as the event audited,
/// and the chain verifies.
#[test]
fn audit_rows_written_by_copy_read_back_as_the_events_audited() {
    use crate::audit::{Actor, Details, NewEvent, Subject};
    use crate::store::deferred::COPY_AUDIT_FROM;
    let Some(conn) = fresh_database("audit_rows_written_by_copy") else { return };
    let written = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = written.clone();
    let answers = one_batch(
        &conn,
        vec![(
            false,
            Box::new(move |tx| {
                let trigger = audited(tx, "trigger")?;
                let details = Details::shared(serde_json::json!({ "user_id": "usr_1" }));
                tx.holding_subscribers(|tx| {
                    for i in 0..COPY_AUDIT_FROM {
                        let event = NewEvent::new(Actor::system(), "session.revoked", Subject::new("session", i));
                        let event = match i % 2 {
                            0 => event
                                .cause(trigger)
                                .reason(Some("user_disabled".into()))
                                .shared_details(details.clone()),
                            _ => event.details(serde_json::json!({ "n": i })),
                        };
                        let event = tx.audit(event)?;
                        kept.lock().unwrap().push(serde_json::to_value(&*event).unwrap());
                    }
                    Ok(trigger)
                })
            }),
        )],
    );
    assert_eq!(answers[0].as_ref().ok(), Some(&1), "{answers:?}");
    let sql = format!("SELECT {} FROM audit_events WHERE seq > 1 ORDER BY seq", crate::store::rows::AUDIT_COLUMNS);
    let mut st = conn.prepare(&sql).unwrap();
    let read: Vec<serde_json::Value> = st
        .query_map(rusqlite::params![], crate::store::rows::audit_event)
        .unwrap()
        .map(|e| serde_json::to_value(e.unwrap()).unwrap())
        .collect();
    assert_eq!(read, *written.lock().unwrap());
    assert!(crate::store::audit::verify_audit(&conn).unwrap().ok);
}

/// Has PostgreSQL refuse any audit row about `poison` (the trigger `refuse_poison`).
fn refuse_poison(conn: &Conn) {
    conn.execute_batch(
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.subject_id = 'poison' THEN RAISE EXCEPTION 'a poisoned row'; END IF; RETURN NEW; END $$;
         CREATE TRIGGER refuse_poison BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
    )
    .unwrap();
}

/// A `COPY` that PostgreSQL refuses partway fails the batch like any failed write: nothing of
/// it is committed, and the connection takes the next batch.
#[test]
fn a_copy_refused_partway_fails_the_batch_and_leaves_the_connection_usable() {
    use crate::store::deferred::COPY_AUDIT_FROM;
    let Some(conn) = fresh_database("a_copy_refused_partway") else { return };
    refuse_poison(&conn);
    let failed = try_batch(
        &conn,
        vec![(
            false,
            Box::new(|tx| {
                tx.holding_subscribers(|tx| {
                    for i in 0..COPY_AUDIT_FROM {
                        audited(tx, &i.to_string())?;
                    }
                    audited(tx, "poison")
                })
            }),
        )],
    );
    assert!(failed.is_err(), "the refused write fails the batch: {failed:?}");
    assert!(subjects(&conn).is_empty(), "nothing of the batch was committed");
    conn.execute_batch("DROP TRIGGER refuse_poison ON audit_events").unwrap();
    assert_eq!(one_batch(&conn, vec![(false, Box::new(|tx| audited(tx, "next")))])[0].as_ref().ok(), Some(&1));
    assert_eq!(subjects(&conn), ["next"]);
    assert!(crate::store::audit::verify_audit(&conn).unwrap().ok);
}

/// A batch of few rows sends them with its COMMIT, in one round trip: when PostgreSQL refuses
/// the rows, the COMMIT behind them runs in the failed transaction and commits nothing, not even
/// the chain head's move, and the connection takes the next batch.
#[test]
fn rows_refused_with_the_commit_behind_them_commit_nothing() {
    let Some(conn) = fresh_database("rows_refused_with_the_commit_behind_them") else { return };
    refuse_poison(&conn);
    let head = |conn: &Conn| -> i64 {
        conn.query_row("SELECT head FROM audit_chain_lock WHERE id = 1", rusqlite::params![], |r| r.get(0)).unwrap()
    };
    let failed = try_batch(
        &conn,
        vec![(true, Box::new(|tx| audited(tx, "opening"))), (true, Box::new(|tx| audited(tx, "poison")))],
    );
    assert!(failed.is_err(), "the refused rows fail the batch: {failed:?}");
    assert!(subjects(&conn).is_empty(), "nothing of the batch was committed");
    assert_eq!(head(&conn), 0, "nor the chain head's move");
    assert_eq!(one_batch(&conn, vec![(true, Box::new(|tx| audited(tx, "next")))])[0].as_ref().ok(), Some(&1));
    assert_eq!((subjects(&conn), head(&conn)), (vec!["next".to_owned()], 1));
    assert!(crate::store::audit::verify_audit(&conn).unwrap().ok);
}

/// The store's client (`store/conn/client.rs`, which the tailer waits on): a waiter wakes for
/// a notification, gives up at its timeout without one, and is not held to its timeout by a
/// connection that ended, which then reports itself closed. The bounds only tell a wakeup from
/// a wait of the whole minute asked for.
#[test]
fn a_notification_or_the_connections_end_wakes_a_waiter_before_its_timeout() {
    let Some(target) = fresh_target("a_notification_or_the_connections_end_wakes_a_waiter") else { return };
    let Conn::Postgres(listener) = target.connect().unwrap() else { panic!("a PostgreSQL connection") };
    let mut other = target.client().unwrap();
    listener.client().batch_execute("LISTEN tether_client_test").unwrap();
    let pid: i32 = listener.client().query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);

    assert!(!listener.client().wait_for_notification(std::time::Duration::from_millis(50)).unwrap(), "nothing came");
    other.batch_execute("NOTIFY tether_client_test").unwrap();
    let started = std::time::Instant::now();
    assert!(
        listener.client().wait_for_notification(std::time::Duration::from_secs(60)).unwrap(),
        "the notification came"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));

    other.execute("SELECT pg_terminate_backend($1)", &[&pid]).unwrap();
    let started = std::time::Instant::now();
    let _ = listener.client().wait_for_notification(std::time::Duration::from_secs(60));
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "the connection's end woke the waiter");
    assert!(listener.client().query_one("SELECT 1", &[]).is_err());
    assert!(listener.is_closed());
}
