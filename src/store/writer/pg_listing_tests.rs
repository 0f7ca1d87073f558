//! Listings by actor and by action on PostgreSQL, whose indexes leave a cascade's revocations out
//! (migration 0006): every page, at every size, holds what a scan of the whole log finds, for
//! runs the writer recorded and for runs the migration worked out from an older log. They run
//! where `TETHER_TEST_DATABASE_URL` is set, as `pg_tests` does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::pg_tests::fresh_database;
use super::test_batches::{try_batch, Boxed};
use super::*;
use crate::audit::NewEvent;
use crate::domain::{Actor, ActorKind, Subject};
use crate::store::audit_listing::{list_audit, AuditFilter};
use crate::store::db::db_error;
use crate::store::deferred::CHUNK;
use crate::store::postgres::PgTarget;

fn boxed(command: impl FnOnce(&mut Tx<'_>) -> Result<i64> + Send + 'static) -> Boxed {
    Box::new(command)
}

fn actor(id: &str) -> Actor {
    Actor::new(ActorKind::Admin, id)
}

/// Audits `action` on `subject` by `by`, caused by `cause`; its seq.
fn event(tx: &mut Tx<'_>, by: &str, action: &'static str, subject: &str, cause: Option<i64>) -> Result<i64> {
    let mut event = NewEvent::new(actor(by), action, Subject::new("session", subject));
    if let Some(cause) = cause {
        event = event.cause(cause);
    }
    tx.audit(event).map(|e| e.seq)
}

/// A trigger by `by` and `count` revocations it caused; the trigger's seq.
fn cascade(tx: &mut Tx<'_>, by: &str, count: usize) -> Result<i64> {
    let trigger = event(tx, by, "user.disabled", by, None)?;
    tx.holding_subscribers(|tx| {
        for i in 0..count {
            event(tx, by, "session.revoked", &format!("{by} {i}"), Some(trigger))?;
        }
        Ok(trigger)
    })
}

/// (seq, actor, action, cause) of every event, by seq.
fn whole_log(conn: &Conn) -> Vec<(i64, String, String, Option<i64>)> {
    let mut st = conn.prepare("SELECT seq, actor_id, action, cause_seq FROM audit_events ORDER BY seq").unwrap();
    st.query_map(rusqlite::params![], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<std::result::Result<_, _>>()
        .unwrap()
}

/// Lists `filter` page by page at several sizes and asserts that each listing is what a scan of
/// the whole log finds.
fn every_listing_matches_a_scan(conn: &Conn, filter: &AuditFilter) {
    let expected: Vec<i64> = whole_log(conn)
        .into_iter()
        .filter(|(seq, by, action, cause)| {
            filter.after_seq.is_none_or(|after| *seq > after)
                && filter.actor.as_ref().is_none_or(|a| a == by)
                && filter.action.as_ref().is_none_or(|a| a == action)
                && filter.cause_seq.is_none_or(|c| Some(c) == *cause)
        })
        .map(|e| e.0)
        .collect();
    assert!(!expected.is_empty(), "the filter {filter:?} matches some event");
    let sizes: &[usize] = if expected.len() < 1000 { &[1, 2, 3, 100] } else { &[997, 6000] };
    for &limit in sizes {
        let mut listed = Vec::new();
        let mut page_filter = filter.clone();
        loop {
            let page = list_audit(conn, &page_filter, limit).unwrap();
            assert!(page.items.len() <= limit);
            listed.extend(page.items.iter().map(|e| e.seq));
            match page.next_cursor {
                Some(cursor) => page_filter.after_seq = Some(cursor.parse().unwrap()),
                None => break,
            }
        }
        assert_eq!(listed, expected, "{filter:?} in pages of {limit}");
    }
}

fn filters(cause: i64) -> Vec<AuditFilter> {
    let text = |s: &str| Some(s.to_owned());
    let by = |a: &str| AuditFilter { actor: text(a), ..Default::default() };
    vec![
        by("adm_a"),
        by("adm_b"),
        by("adm_c"),
        by("adm_d"),
        AuditFilter { action: text("session.revoked"), ..Default::default() },
        AuditFilter { action: text("user.disabled"), ..Default::default() },
        AuditFilter { actor: text("adm_a"), action: text("session.revoked"), ..Default::default() },
        AuditFilter { actor: text("adm_a"), action: text("user.disabled"), ..Default::default() },
        AuditFilter { actor: text("adm_a"), cause_seq: Some(cause), ..Default::default() },
        AuditFilter {
            actor: text("adm_b"),
            action: text("session.revoked"),
            after_seq: Some(cause),
            ..Default::default()
        },
    ]
}

/// One actor's runs, in order, never overlap (what a listing by actor reads them for).
fn runs_do_not_overlap(conn: &Conn) {
    let mut st = conn
        .prepare("SELECT actor_id, first_seq, last_seq FROM audit_revocation_runs ORDER BY actor_id, first_seq")
        .unwrap();
    let runs: Vec<(String, i64, i64)> = st
        .query_map(rusqlite::params![], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<std::result::Result<_, _>>()
        .unwrap();
    assert!(!runs.is_empty());
    for pair in runs.windows(2) {
        if pair[0].0 == pair[1].0 {
            assert!(pair[0].2 < pair[1].1, "{pair:?} overlap");
        }
    }
}

#[test]
fn listings_by_actor_and_action_find_every_cascaded_revocation_the_writer_recorded() {
    let Some(conn) = fresh_database("listings_by_actor_and_action_find_every_cascaded_revocation") else { return };
    let first = try_batch(
        &conn,
        vec![
            (false, boxed(|tx| cascade(tx, "adm_a", 4))),
            // adm_b's revocations interleave with more of adm_a's trigger, and adm_c revokes
            // under adm_a's trigger: runs of different actors overlap, one actor's do not.
            (
                false,
                boxed(|tx| {
                    let trigger = event(tx, "adm_b", "user.disabled", "b", None)?;
                    for i in 0..3 {
                        event(tx, "adm_b", "session.revoked", &format!("b {i}"), Some(trigger))?;
                        event(tx, "adm_a", "session.revoked", &format!("a late {i}"), Some(1))?;
                    }
                    event(tx, "adm_c", "session.revoked", "c", Some(1))?;
                    Ok(trigger)
                }),
            ),
            // Undone after its rows were written: neither they nor their run remain.
            (
                false,
                boxed(|tx| {
                    cascade(tx, "adm_a", 2)?;
                    tx.conn().execute_batch("SELECT 1").map_err(db_error)?;
                    Err(Error::conflict("changed its mind"))
                }),
            ),
            (false, boxed(|tx| event(tx, "adm_a", "session.revoked", "direct", None))),
        ],
    )
    .unwrap()
    .0;
    assert!(first[2].is_err() && [0, 1, 3].iter().all(|&i| first[i].is_ok()), "{first:?}");
    // More than a chunk: sent ahead in two writes, two runs of adm_a's.
    let (second, _) = try_batch(&conn, vec![(false, boxed(|tx| cascade(tx, "adm_a", CHUNK + 5)))]).unwrap();
    let big = *second[0].as_ref().unwrap();
    try_batch(&conn, vec![(false, boxed(|tx| cascade(tx, "adm_b", 2)))]).unwrap();
    // More runs of one actor than a listing reads at once.
    for _ in 0..70 {
        try_batch(&conn, vec![(false, boxed(|tx| cascade(tx, "adm_d", 1)))]).unwrap();
    }

    runs_do_not_overlap(&conn);
    for filter in filters(big) {
        every_listing_matches_a_scan(&conn, &filter);
    }
    assert!(crate::store::audit::verify_audit(&conn).unwrap().ok);
}

#[test]
fn migration_0006_finds_the_runs_of_a_log_written_before_it() {
    let Ok(admin_url) = std::env::var("TETHER_TEST_DATABASE_URL") else {
        eprintln!("migration_0006_finds_the_runs: TETHER_TEST_DATABASE_URL is not set; not run here");
        return;
    };
    let name = format!("listing_{}", uuid::Uuid::now_v7().simple());
    let admin = PgTarget::new(&admin_url, None).unwrap().connect().unwrap();
    admin.execute_batch(&format!("CREATE DATABASE {name}")).unwrap();
    let (server, _) = admin_url.rsplit_once('/').unwrap();
    let conn = Database::Postgres(PgTarget::new(&format!("{server}/{name}"), None).unwrap()).writer().unwrap();
    crate::store::postgres::migrate_through(&conn, 5).unwrap();
    // As tether wrote them before 0006 (no runs): adm_a's cascade, interrupted once by adm_b's
    // revocations, then adm_a's again, then adm_c's. Only what listings read matters here.
    let log: [(&str, &str, Option<i64>); 11] = [
        ("adm_a", "user.disabled", None),
        ("adm_a", "session.revoked", Some(1)),
        ("adm_a", "session.revoked", Some(1)),
        ("adm_a", "session.revoked", Some(1)),
        ("adm_b", "user.disabled", None),
        ("adm_b", "session.revoked", Some(5)),
        ("adm_a", "session.revoked", Some(1)),
        ("adm_b", "session.revoked", Some(5)),
        ("adm_c", "user.disabled", None),
        ("adm_c", "session.revoked", Some(9)),
        ("adm_c", "session.revoked", Some(9)),
    ];
    for (seq, (by, action, cause)) in (1i64..).zip(log) {
        conn.execute(
            "INSERT INTO audit_events (seq, id, at, actor_kind, actor_id, action, subject_kind, subject_id,
                                       cause_seq, details, prev_hash, hash)
             VALUES (?1, ?2, 0, 'admin', ?3, ?4, 'session', ?2, ?5, '{}', '', '')",
            rusqlite::params![seq, format!("e{seq}"), by, action, cause],
        )
        .unwrap();
    }
    conn.execute_batch("INSERT INTO audit_causes (cause_seq, last_seq) VALUES (1, 7), (5, 8), (9, 11)").unwrap();
    assert_eq!(crate::store::postgres::migrate_through(&conn, 6).unwrap(), [6]);
    let mut st =
        conn.prepare("SELECT actor_id, first_seq, last_seq FROM audit_revocation_runs ORDER BY first_seq").unwrap();
    let runs: Vec<(String, i64, i64)> = st
        .query_map(rusqlite::params![], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<std::result::Result<_, _>>()
        .unwrap();
    let run = |a: &str, f, l| (a.to_owned(), f, l);
    assert_eq!(
        runs,
        [run("adm_a", 2, 4), run("adm_b", 6, 6), run("adm_a", 7, 7), run("adm_b", 8, 8), run("adm_c", 10, 11)]
    );
    for filter in filters(1).into_iter().filter(|f| f.actor.as_deref() != Some("adm_d")) {
        every_listing_matches_a_scan(&conn, &filter);
    }
}

/// PostgreSQL's plan for the indexed part of a page of `filter`.
fn plan(conn: &Conn, filter: &AuditFilter) -> String {
    let (sql, params) =
        crate::store::audit_listing::indexed_page_query(filter, 50, crate::store::conn::Dialect::Postgres);
    let mut st = conn.prepare(&format!("EXPLAIN {sql}")).unwrap();
    let lines: Vec<String> =
        st.query_map(&params, |r| r.get(0)).unwrap().collect::<std::result::Result<_, _>>().unwrap();
    lines.join("\n")
}

#[test]
fn a_page_by_actor_or_action_is_read_from_its_index_where_cascaded_revocations_dominate() {
    let Some(conn) = fresh_database("a_page_by_actor_or_action_is_read_from_its_index") else { return };
    // 4,000 indexed events (adm_a's every hundredth, a direct revocation every five hundredth),
    // then 6,000 of adm_a's cascaded revocations, then 4,000 indexed events again. A page after
    // the first 4,000 finds nothing indexed until the last 4,000: walked by seq, it would read
    // every cascaded revocation to get there.
    conn.execute_batch(
        "ALTER TABLE audit_events DISABLE TRIGGER USER;
         INSERT INTO audit_events (seq, id, at, actor_kind, actor_id, action, subject_kind, subject_id,
                                   cause_seq, details, prev_hash, hash)
         SELECT g, 'e' || g, 0, 'admin',
                CASE WHEN g % 100 = 0 THEN 'adm_a' ELSE 'plt_' || (g % 50) END,
                CASE WHEN g % 500 = 0 THEN 'session.revoked' ELSE 'session.created' END,
                'session', 's' || g, NULL, '{}', '', ''
         FROM generate_series(1, 4000) g;
         INSERT INTO audit_events (seq, id, at, actor_kind, actor_id, action, subject_kind, subject_id,
                                   cause_seq, details, prev_hash, hash)
         SELECT g, 'e' || g, 0, 'admin', 'adm_a', 'session.revoked', 'session', 's' || g, 100, '{}', '', ''
         FROM generate_series(4001, 10000) g;
         INSERT INTO audit_events (seq, id, at, actor_kind, actor_id, action, subject_kind, subject_id,
                                   cause_seq, details, prev_hash, hash)
         SELECT g, 'e' || g, 0, 'admin', 'plt_' || (g % 50),
                CASE WHEN g % 500 = 0 THEN 'session.revoked' ELSE 'session.created' END,
                'session', 's' || g, NULL, '{}', '', ''
         FROM generate_series(10001, 14000) g;
         ALTER TABLE audit_events ENABLE TRIGGER USER;
         ANALYZE audit_events",
    )
    .unwrap();
    let text = |s: &str| Some(s.to_owned());
    for (filter, index) in [
        (AuditFilter { actor: text("adm_a"), after_seq: Some(3950), ..Default::default() }, "audit_by_actor"),
        (
            AuditFilter { action: text("session.revoked"), after_seq: Some(3950), ..Default::default() },
            "audit_by_action",
        ),
        (
            AuditFilter {
                actor: text("adm_a"),
                action: text("session.revoked"),
                after_seq: Some(3950),
                ..Default::default()
            },
            "audit_by_actor",
        ),
    ] {
        let plan = plan(&conn, &filter);
        assert!(plan.contains(index), "{filter:?} reads {index}:\n{plan}");
        assert!(!plan.contains("Sort"), "{filter:?} in the index's order:\n{plan}");
    }
}
