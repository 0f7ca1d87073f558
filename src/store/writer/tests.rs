//! The writer's tests: group commit, rollback of a failed or panicking command, checkpoints.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::test_batches::{audited, commit_from, try_batch, Boxed, NoViews};
use super::*;
use crate::audit::NewEvent;
use crate::domain::{Actor, Subject};
use crate::store::db::db_error;
use crate::store::Conn;

fn count_events(path: &Path) -> i64 {
    let conn = Conn::Sqlite(crate::store::open_connection(path, true).unwrap());
    conn.query_row("SELECT count(*) FROM audit_events", rusqlite::params![], |r| r.get(0)).unwrap()
}

#[tokio::test]
async fn a_clock_set_back_does_not_set_the_audit_log_back() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(Clock::default());
    let writer = Writer::start(&dir.path().join("tether.db"), clock.clone(), Arc::new(NoViews)).unwrap();
    let at = |tx: &mut Tx<'_>| {
        let event = tx.audit(NewEvent::new(Actor::system(), "test.event", Subject::new("test", "x")))?;
        Ok((event.at, tx.now()))
    };
    let (first, _) = writer.execute(at).await.unwrap();
    clock.advance_seconds(-3600);
    let (second, now) = writer.execute(at).await.unwrap();
    assert_eq!(second, first, "the event keeps the last event's time");
    // Everything else (expiry, lifetimes, delivery times) still follows the clock.
    assert!(now.millis() <= first.millis() - 3_500_000, "the batch's own time is the clock's: {now:?}");
    clock.advance_seconds(7200);
    let (third, _) = writer.execute(at).await.unwrap();
    assert!(third.millis() >= first.millis() + 3_600_000, "time moves on once the clock has caught up");
}

#[tokio::test]
async fn a_command_records_the_last_event_each_of_its_causes_led_to_and_a_failed_one_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tether.db");
    let writer = Writer::start(&path, Arc::new(Clock::default()), Arc::new(NoViews)).unwrap();
    let cascade = |fail: bool| {
        move |tx: &mut Tx<'_>| {
            let trigger = audited(tx, "trigger")?;
            for what in ["one", "two"] {
                let caused = NewEvent::new(Actor::system(), "test.caused", Subject::new("test", what)).cause(trigger);
                tx.audit(caused)?;
            }
            audited(tx, "unrelated")?;
            if fail {
                return Err(Error::conflict("changed its mind"));
            }
            Ok(trigger)
        }
    };
    let trigger = writer.execute(cascade(false)).await.unwrap();
    assert!(writer.execute(cascade(true)).await.is_err());
    let conn = Conn::Sqlite(crate::store::open_connection(&path, true).unwrap());
    let rows: Vec<(i64, i64)> = conn
        .prepare("SELECT cause_seq, last_seq FROM audit_causes")
        .unwrap()
        .query_map(rusqlite::params![], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<crate::store::conn::DbResult<_>>()
        .unwrap();
    assert_eq!(rows, [(trigger, trigger + 2)], "the failed command left no row");
    let conn = Conn::Sqlite(crate::store::open_connection(&path, false).unwrap());
    for refused in ["DELETE FROM audit_causes", "UPDATE audit_causes SET last_seq = last_seq - 1"] {
        assert!(conn.execute(refused, rusqlite::params![]).is_err(), "a range only grows: {refused}");
    }
}

/// A query by cause reads the seq range after its cause (migration 0010): a command that
/// names a later event as a cause is a bug, and fails whole.
#[tokio::test]
async fn a_caused_event_must_follow_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tether.db");
    let writer = Writer::start(&path, Arc::new(Clock::default()), Arc::new(NoViews)).unwrap();
    let earlier = writer.execute(|tx| audited(tx, "earlier command")).await.unwrap();
    let before = count_events(&path);
    let refused = writer
        .execute(|tx| {
            let seq = audited(tx, "trigger")?;
            tx.audit(NewEvent::new(Actor::system(), "session.revoked", Subject::new("session", "s")).cause(seq + 1))
        })
        .await;
    assert!(matches!(refused, Err(Error::Internal(_))), "{refused:?}");
    assert_eq!(count_events(&path), before, "nothing written");

    // A cause from an earlier command, or by another actor, is found by its range all the same.
    writer
        .execute(move |tx| {
            let admin = Actor::new(crate::domain::ActorKind::Admin, "cred_admin");
            tx.audit(NewEvent::new(admin, "session.revoked", Subject::new("session", "s")).cause(earlier)).map(drop)
        })
        .await
        .unwrap();
    let conn = Conn::Sqlite(crate::store::open_connection(&path, true).unwrap());
    assert_eq!(crate::store::query_plan::audit_causes(&conn), [(earlier, before + 1)]);
    let filter = crate::store::audit_listing::AuditFilter { cause_seq: Some(earlier), ..Default::default() };
    let caused = crate::store::audit_listing::list_audit(&conn, &filter, 10).unwrap();
    assert_eq!(caused.items.iter().map(|e| e.seq).collect::<Vec<_>>(), [before + 1]);
}

#[tokio::test]
async fn a_failing_command_alone_in_its_batch_leaves_nothing_and_the_chain_continues() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tether.db");
    let writer = Writer::start(&path, Arc::new(Clock::default()), Arc::new(NoViews)).unwrap();
    let first = writer.execute(|tx| audited(tx, "one")).await.unwrap();

    let failed = writer
        .execute(|tx| {
            audited(tx, "half")?;
            Err::<(), _>(Error::conflict("changed its mind after writing"))
        })
        .await;
    assert!(matches!(failed, Err(Error::Conflict(_))), "the command's own error is answered: {failed:?}");
    assert_eq!(count_events(&path), 1, "the failed command's event was rolled back");

    let next = writer.execute(|tx| audited(tx, "two")).await.unwrap();
    assert_eq!(next, first + 1, "the chain continues from the last committed event");
    let report =
        crate::store::audit::verify_audit(&Conn::Sqlite(crate::store::open_connection(&path, true).unwrap())).unwrap();
    assert!(report.ok, "{report:?}");
}

#[tokio::test]
async fn a_commit_that_fails_puts_back_the_revocations_applied_before_it() {
    use crate::domain::{SessionId, Timestamp};
    use crate::views::{LiveSession, Views};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tether.db");
    let views = Arc::new(Views::default());
    let writer = Writer::start(&path, Arc::new(Clock::default()), views.clone()).unwrap();
    // A deferred foreign key is checked only at COMMIT: a dangling row makes COMMIT fail.
    writer
        .execute(|tx| {
            tx.conn()
                .execute_batch(
                    "CREATE TABLE parent (id TEXT PRIMARY KEY);
                     CREATE TABLE child (parent_id TEXT REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);",
                )
                .map_err(db_error)
        })
        .await
        .unwrap();
    let (known, unknown) = (SessionId::generate(), SessionId::generate());
    let live = LiveSession { revoked: false, expires_at: Timestamp(i64::MAX) };
    views.sessions.set(known, live);

    let failed = writer
        .execute(move |tx| {
            for id in [known, unknown] {
                tx.effect(Effect::SessionRevoked { id, expires_at: Timestamp(i64::MAX) });
            }
            tx.conn().execute("INSERT INTO child VALUES ('nobody')", rusqlite::params![]).map_err(db_error)?;
            Ok(())
        })
        .await;
    assert!(failed.is_err(), "COMMIT should have failed on the dangling foreign key");
    assert_eq!(views.sessions.get(known), Some(live), "the uncommitted revocation was put back");
    assert_eq!(views.sessions.get(unknown), None, "a session the view did not hold is gone again");

    writer
        .execute(move |tx| {
            tx.effect(Effect::SessionRevoked { id: known, expires_at: Timestamp(i64::MAX) });
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(views.sessions.get(known).map(|s| s.revoked), Some(true), "a committed revocation holds");
}

#[tokio::test]
async fn the_writer_checkpoints_the_wal_into_the_database_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tether.db");
    let writer = Writer::start(&path, Arc::new(Clock::default()), Arc::new(NoViews)).unwrap();
    let size = || std::fs::metadata(&path).unwrap().len();
    let before = size();
    // Well over the 1000-frame threshold: ~4 MiB of audit rows across many commits.
    for batch in 0..40 {
        writer
            .execute(move |tx| {
                for i in 0..100 {
                    tx.audit(
                        NewEvent::new(Actor::system(), "test.event", Subject::new("test", i))
                            .details(serde_json::json!({"batch": batch, "padding": "x".repeat(1000)})),
                    )?;
                }
                Ok(())
            })
            .await
            .unwrap();
    }
    assert!(
        size() > before + 1024 * 1024,
        "the database file grew from {before} to only {} bytes: the WAL is not being checkpointed",
        size()
    );
}

#[tokio::test]
async fn a_failing_command_in_a_batch_rolls_back_only_itself() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tether.db");
    let writer = Writer::start(&path, Arc::new(Clock::default()), Arc::new(NoViews)).unwrap();
    // Queued together, they usually share one batch (the writer takes everything waiting);
    // alone or together, the outcome must be the same.
    let good = writer.execute(|tx| audited(tx, "good"));
    let bad = writer.execute(|tx| {
        audited(tx, "bad")?;
        Err::<i64, _>(Error::conflict("no"))
    });
    let also_good = writer.execute(|tx| audited(tx, "also good"));
    let (good, bad, also_good) = tokio::join!(good, bad, also_good);
    assert!(bad.is_err());
    assert_eq!(also_good.unwrap(), good.unwrap() + 1, "the failed command left no gap in the chain");
    assert_eq!(count_events(&path), 2);
}

/// Runs `commands` (none marked as only appending) as one batch ([`try_batch`]) on the database
/// at `path`, which must commit: each command's answer and the effects the batch would apply.
fn one_batch(path: &Path, commands: Vec<Boxed>) -> (Vec<Result<i64>>, Vec<Effect>) {
    let mut conn = Conn::Sqlite(crate::store::open_connection(path, false).unwrap());
    migrate::run(conn.sqlite_mut().unwrap()).unwrap();
    try_batch(&conn, commands.into_iter().map(|command| (false, command)).collect()).unwrap()
}

#[test]
fn commands_queued_while_begin_waited_join_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let conn = Conn::Sqlite(crate::store::open_connection(&path, false).unwrap());
    let head = {
        let mut c = Conn::Sqlite(crate::store::open_connection(&path, false).unwrap());
        migrate::run(c.sqlite_mut().unwrap()).unwrap();
        load_chain_head(&c).unwrap()
    };
    let job = |n: i64| {
        let (answer, answered) = oneshot::channel();
        let command = move |_: &mut Tx<'_>| -> Result<i64> { Ok(n) };
        (Box::new(Pending { command: Some(command), shape: Shape::default(), result: None, answer }) as Job, answered)
    };
    let (first, mut first_answer) = job(1);
    let mut batch = vec![first];
    let (queue, mut jobs) = mpsc::channel::<Job>(8);
    let mut queued_answers = Vec::new();
    for n in 2..=3 {
        let (queued, answered) = job(n);
        queue.try_send(queued).unwrap_or_else(|_| panic!("queue a command"));
        queued_answers.push(answered);
    }

    commit_from(&conn, head, &mut batch, &mut jobs).unwrap();

    assert_eq!(batch.len(), 3, "the two queued commands ran in the batch that was open");
    for job in batch {
        job.complete(Ok(()), None);
    }
    assert_eq!(first_answer.try_recv().unwrap().0.unwrap(), 1);
    let queued: Vec<i64> = queued_answers.into_iter().map(|mut a| a.try_recv().unwrap().0.unwrap()).collect();
    assert_eq!(queued, vec![2, 3]);
}

/// The seqs of the events a batch's effects would publish, and the sessions it would revoke.
fn published(effects: &[Effect]) -> (Vec<i64>, usize) {
    let seqs = effects.iter().filter_map(|e| if let Effect::Audited(a) = e { Some(a.seq) } else { None });
    let revoked = effects.iter().filter(|e| matches!(e, Effect::SessionRevoked { .. })).count();
    (seqs.collect(), revoked)
}

fn revokes_and_audits(tx: &mut Tx<'_>, what: &str) -> Result<i64> {
    let id = crate::domain::SessionId::generate();
    tx.effect(Effect::SessionRevoked { id, expires_at: crate::domain::Timestamp(i64::MAX) });
    audited(tx, what)
}

#[test]
fn a_failing_command_in_a_shared_batch_rolls_back_its_rows_effects_and_chain_head_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tether.db");
    let (answers, effects) = one_batch(
        &path,
        vec![
            Box::new(|tx| revokes_and_audits(tx, "good")),
            Box::new(|tx| {
                revokes_and_audits(tx, "bad")?;
                revokes_and_audits(tx, "bad again")?;
                Err(Error::conflict("changed its mind"))
            }),
            Box::new(|tx| revokes_and_audits(tx, "also good")),
        ],
    );
    assert!(matches!(answers[1], Err(Error::Conflict(_))), "{answers:?}");
    assert_eq!((answers[0].as_ref().ok(), answers[2].as_ref().ok()), (Some(&1), Some(&2)), "no gap in the chain");
    assert_eq!(published(&effects), (vec![1, 2], 2), "the failed command's effects are gone");
    assert_eq!(count_events(&path), 2);
    let report =
        crate::store::audit::verify_audit(&Conn::Sqlite(crate::store::open_connection(&path, true).unwrap())).unwrap();
    assert!(report.ok, "{report:?}");
}

#[test]
fn a_panicking_command_in_a_shared_batch_rolls_back_only_itself() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tether.db");
    let (answers, effects) = one_batch(
        &path,
        vec![
            Box::new(|tx| revokes_and_audits(tx, "good")),
            Box::new(|tx| {
                // Inside a held subscriber list, which the failed command must not leave held.
                tx.holding_subscribers(|tx| {
                    let trigger = revokes_and_audits(tx, "trigger")?;
                    tx.audit(NewEvent::new(Actor::system(), "t.caused", Subject::new("t", "c")).cause(trigger))?;
                    panic!("a bug in a command")
                })
            }),
            Box::new(|tx| revokes_and_audits(tx, "also good")),
        ],
    );
    assert!(matches!(answers[1], Err(Error::Internal(_))), "{answers:?}");
    assert_eq!((answers[0].as_ref().ok(), answers[2].as_ref().ok()), (Some(&1), Some(&2)));
    assert_eq!(published(&effects), (vec![1, 2], 2));
    assert_eq!(count_events(&path), 2);
    let conn = Conn::Sqlite(crate::store::open_connection(&path, true).unwrap());
    assert!(crate::store::query_plan::audit_causes(&conn).is_empty(), "the panicked command's cause is not recorded");
}

#[test]
fn a_failing_command_alone_in_its_batch_rolls_back_the_batch_and_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tether.db");
    let (answers, effects) = one_batch(
        &path,
        vec![Box::new(|tx| {
            revokes_and_audits(tx, "half")?;
            Err(Error::conflict("no"))
        })],
    );
    assert!(matches!(answers[0], Err(Error::Conflict(_))));
    assert!(effects.is_empty());
    assert_eq!(count_events(&path), 0);
    // The connection is usable again: no transaction was left open.
    let (answers, _) = one_batch(&path, vec![Box::new(|tx| audited(tx, "next"))]);
    assert_eq!(answers[0].as_ref().ok(), Some(&1));
}
