//! Listing the audit log by subject, actor, action, cause and time window, a page at a time.

use super::conn::{Conn, Dialect, OptionalExtension};
use rusqlite::types::Value;

use super::db::db_error;
use super::query::{text, Page, Select};
use super::rows;
use crate::audit::AuditEvent;
use crate::domain::*;

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub subject: Option<String>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub cause_seq: Option<i64>,
    pub after_seq: Option<i64>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
}

pub fn list_audit(conn: &Conn, filter: &AuditFilter, limit: usize) -> Result<Page<AuditEvent>> {
    // One snapshot for the bisect and both subject queries: an event committed between them
    // could otherwise be left off a page, and a client paging by cursor would never see it.
    let _snapshot = conn.snapshot().map_err(db_error)?;
    let (from_seq, before_seq) = time_as_seq(conn, filter.since, filter.until)?;
    let caused_up_to = match filter.cause_seq {
        Some(cause) => match last_caused(conn, cause)? {
            Some(last) => Some(last),
            None => return Ok(Page { items: Vec::new(), next_cursor: None }),
        },
        None => None,
    };
    let (after, before) = seq_range(SeqBounds {
        after_seq: filter.after_seq,
        cause_seq: filter.cause_seq,
        caused_up_to,
        from_seq,
        before_seq,
    });
    let page = AuditPage { filter, after, before, limit, dialect: conn.dialect() };
    let mut items = page.select().rows(conn, rows::audit_event)?;
    items = merged_by_seq(items, page.cascaded_revocations(conn)?);
    if let Some(subject) = &filter.subject {
        // The subject's one event the index leaves out, if it has one (see rows::INDEXED_EVENT).
        let mut revoked = Select::new(rows::AUDIT_COLUMNS, "audit_events");
        revoked.and(SUBJECT_REVOKED_BY_CASCADE, subject.clone());
        revoked.params.push(text(subject));
        page.terms(&mut revoked);
        for event in revoked.rows(conn, rows::audit_event)? {
            let at = items.partition_point(|e| e.seq < event.seq);
            items.insert(at, event);
        }
    }
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|e| e.seq.to_string())
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

/// The query of a page's indexed events, for a test of its plan: (SQL, parameters).
#[cfg(test)]
pub(crate) fn indexed_page_query(filter: &AuditFilter, limit: usize, dialect: Dialect) -> (String, Vec<Value>) {
    let (after, before) = seq_range(SeqBounds { after_seq: filter.after_seq, ..Default::default() });
    let q = AuditPage { filter, after, before, limit, dialect }.select();
    (q.sql, q.params)
}

/// One page of a listing: its filter and the seq bounds worked out for it.
struct AuditPage<'f> {
    filter: &'f AuditFilter,
    after: Option<i64>,
    before: Option<i64>,
    limit: usize,
    dialect: Dialect,
}

impl AuditPage<'_> {
    /// The page's query; by subject, of the events the subject index holds; on PostgreSQL, by
    /// actor or action, of the events those indexes hold ([`AuditPage::cascaded_revocations`]
    /// reads the others).
    fn select(&self) -> Select {
        let mut q = Select::new(rows::AUDIT_COLUMNS, "audit_events");
        if let Some(subject) = &self.filter.subject {
            q.and(SUBJECT_IN_INDEX, subject.clone());
        }
        match self.driver() {
            Some(driver) => {
                q.and_static(rows::INDEXED_EVENT);
                self.indexed_terms(&mut q, driver);
            }
            None => self.terms(&mut q),
        }
        q
    }

    /// On PostgreSQL, the partial index (migration 0006) that drives a page by actor or action:
    /// the actor's if the filter names one. Those indexes leave a cascade's revocations out.
    fn driver(&self) -> Option<Driver> {
        if self.dialect != Dialect::Postgres || self.filter.subject.is_some() {
            return None;
        }
        match (&self.filter.actor, &self.filter.action) {
            (Some(actor), _) => Some(Driver::Actor(actor.clone())),
            (None, Some(action)) => Some(Driver::Action(action.clone())),
            (None, None) => None,
        }
    }

    /// The page's events that [`AuditPage::select`] left out: a cascade's revocations, when the
    /// filter can match them. By action alone they are read through the index of cascaded
    /// revocations; by actor, through the actor's runs ([`AuditPage::actors_cascaded`]).
    fn cascaded_revocations(&self, conn: &Conn) -> Result<Vec<AuditEvent>> {
        let Some(driver) = self.driver() else { return Ok(Vec::new()) };
        if self.filter.action.as_deref().is_some_and(|a| a != "session.revoked") {
            return Ok(Vec::new());
        }
        let mut events = Select::new(rows::AUDIT_COLUMNS, "audit_events");
        events.and_static(CASCADED_REVOCATION);
        match driver {
            Driver::Action(_) => {
                self.terms(&mut events);
                events.rows(conn, rows::audit_event)
            }
            Driver::Actor(actor) => self.actors_cascaded(conn, &actor, events),
        }
    }

    /// An actor's cascaded revocations, read [`RUNS_AT_ONCE`] runs at a time until the page is
    /// full. One actor's runs do not overlap, so reading them in order of `first_seq`, and the
    /// events of each by seq, reads the events in seq order; the sort orders within a run only.
    fn actors_cascaded(&self, conn: &Conn, actor: &str, mut events: Select) -> Result<Vec<AuditEvent>> {
        events.and_static("seq BETWEEN r.first_seq AND r.last_seq");
        self.terms(&mut events);
        let wanted = self.limit + 1;
        let mut found = Vec::new();
        let mut runs_after = i64::MIN;
        loop {
            let mut runs = Select::new("first_seq", "audit_revocation_runs");
            runs.and("actor_id = ?", actor.to_owned()).and("first_seq > ?", runs_after);
            runs.and_if("last_seq > ?", self.after).and_if("first_seq < ?", self.before);
            runs.sql.push_str(" ORDER BY first_seq LIMIT ?");
            runs.params.push(Value::Integer(RUNS_AT_ONCE));
            let firsts = runs.rows(conn, |r| r.get::<_, i64>(0))?;
            let (Some(&first), Some(&last)) = (firsts.first(), firsts.last()) else { break };
            let mut q = Select {
                sql: format!(
                    "SELECT e.* FROM audit_revocation_runs r CROSS JOIN LATERAL ({}) e
                     WHERE r.actor_id = ? AND r.first_seq BETWEEN ? AND ?
                     ORDER BY r.first_seq, e.seq LIMIT ?",
                    events.sql
                ),
                params: events.params.clone(),
            };
            q.params.extend([text(actor), Value::Integer(first), Value::Integer(last)]);
            q.params.push(Value::Integer((wanted - found.len()) as i64));
            found.extend(q.rows(conn, rows::audit_event)?);
            if found.len() >= wanted || firsts.len() < RUNS_AT_ONCE as usize {
                break;
            }
            runs_after = last;
        }
        Ok(found)
    }

    /// The page's filter terms, order and limit, added to `q`.
    fn terms(&self, q: &mut Select) {
        // The subject index, else the actor index, drives a query that could use several; a `+`
        // keeps SQLite (which has no statistics) off the others, which would read every event of
        // an action to find one subject's or one actor's.
        let (actor_term, action_term) = match (&self.filter.subject, &self.filter.actor) {
            (Some(_), _) => ("+actor_id = ?", "+action = ?"),
            (None, Some(_)) => ("actor_id = ?", "+action = ?"),
            (None, None) => ("actor_id = ?", "action = ?"),
        };
        q.and_if("seq > ?", self.after).and_if("seq < ?", self.before);
        q.and_if(actor_term, self.filter.actor.clone()).and_if(action_term, self.filter.action.clone());
        self.other_terms(q);
        q.sql.push_str(" ORDER BY seq LIMIT ?");
        q.params.push(Value::Integer((self.limit + 1) as i64));
    }

    /// [`AuditPage::terms`] for a page `driver`'s index drives. The driving value and the seq
    /// bounds are one row comparison each way, and the order is the index's: PostgreSQL then
    /// has no other index that gives the order, and reads the page from the index. With an
    /// equality and `ORDER BY seq`, it may walk the log by seq instead, expecting the matches
    /// soon (it estimates the actor or action alone, not that most of its events are cascaded
    /// revocations the index leaves out), and read to the end when they are not there.
    fn indexed_terms(&self, q: &mut Select, driver: Driver) {
        let ([after, before], order, value) = match driver {
            Driver::Actor(actor) => {
                (["(actor_id, seq) > (?, ?)", "(actor_id, seq) < (?, ?)"], " ORDER BY actor_id, seq LIMIT ?", actor)
            }
            Driver::Action(action) => {
                (["(action, seq) > (?, ?)", "(action, seq) < (?, ?)"], " ORDER BY action, seq LIMIT ?", action)
            }
        };
        q.and_static(after).params.extend([text(&value), Value::Integer(self.after.unwrap_or(0))]);
        q.and_static(before).params.extend([text(&value), Value::Integer(self.before.unwrap_or(i64::MAX))]);
        if self.filter.actor.is_some() {
            q.and_if("action = ?", self.filter.action.clone());
        }
        self.other_terms(q);
        q.sql.push_str(order);
        q.params.push(Value::Integer((self.limit + 1) as i64));
    }

    /// The terms every query of the page shares: the cause and the time window.
    fn other_terms(&self, q: &mut Select) {
        q.and_if("cause_seq = ?", self.filter.cause_seq)
            .and_if("at >= ?", self.filter.since.map(|t| t.millis()))
            .and_if("at < ?", self.filter.until.map(|t| t.millis()));
    }
}

/// The column, and its value, whose partial index drives a page on PostgreSQL.
enum Driver {
    Actor(String),
    Action(String),
}

/// Runs of an actor's cascaded revocations read per statement.
const RUNS_AT_ONCE: i64 = 64;

/// The seq range that holds the events from `since` (inclusive) to `until` (exclusive), as
/// bounds to add to the same filter on `at`: `at` does not decrease along the chain from
/// `audit_clock.monotone_from_seq` on (migration 0010), so there the first event at or after a
/// time is found by bisecting. An older log that stepped back before that seq is read from its
/// start by `at` alone, unless the window begins after the latest time of that first part.
fn time_as_seq(conn: &Conn, since: Option<Timestamp>, until: Option<Timestamp>) -> Result<(Option<i64>, Option<i64>)> {
    if since.is_none() && until.is_none() {
        return Ok((None, None));
    }
    let (monotone_from, latest_before, last): (i64, Option<i64>, i64) = conn
        .query_row(
            "SELECT monotone_from_seq, latest_at_before, (SELECT coalesce(max(seq), 0) FROM audit_events)
             FROM audit_clock",
            rusqlite::params![],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .map_err(db_error)?;
    let mut at_of =
        conn.prepare_cached("SELECT at FROM audit_events WHERE seq >= ?1 ORDER BY seq LIMIT 1").map_err(db_error)?;
    let mut first_at_or_after = |time: Timestamp| -> Result<i64> {
        let (mut low, mut high) = (monotone_from.max(1), last + 1);
        while low < high {
            let mid = low + (high - low) / 2;
            let at: Option<i64> = at_of.query_row([mid], |r| r.get(0)).optional().map_err(db_error)?;
            if at.is_none_or(|at| at >= time.millis()) {
                high = mid;
            } else {
                low = mid + 1;
            }
        }
        Ok(low)
    };
    // Before `monotone_from`, no event is later than `latest_before`: a window that starts after
    // it starts in the ordered part.
    let from = match since {
        Some(time) if latest_before.is_none_or(|latest| latest < time.millis()) => Some(first_at_or_after(time)?),
        _ => None,
    };
    // Past the end means no upper bound: events written after this read are not cut off by it.
    let before = match until {
        Some(time) => Some(first_at_or_after(time)?).filter(|&seq| seq <= last),
        None => None,
    };
    Ok((from, before))
}

/// The last event a cause led to (rows written by [`super::Tx::record_causes`]): after the cause
/// and up to it lie the events it caused. No row, no events.
fn last_caused(conn: &Conn, cause: i64) -> Result<Option<i64>> {
    conn.prepare_cached("SELECT last_seq FROM audit_causes WHERE cause_seq = ?1")
        .and_then(|mut st| st.query_row([cause], |r| r.get(0)).optional())
        .map_err(db_error)
}

/// Every bound on seq a listing has: the cursor, the range of a cause, the range of a window.
#[derive(Debug, Clone, Copy, Default)]
struct SeqBounds {
    after_seq: Option<i64>,
    cause_seq: Option<i64>,
    caused_up_to: Option<i64>,
    from_seq: Option<i64>,
    before_seq: Option<i64>,
}

/// The tightest of the bounds, as one exclusive lower and one exclusive upper bound. Given several
/// `seq >` terms, SQLite starts its range at whichever it meets first in the SQL: paging by cursor
/// through a cause's 100k events then read each page from the trigger on.
fn seq_range(b: SeqBounds) -> (Option<i64>, Option<i64>) {
    let after = [b.after_seq, b.cause_seq, b.from_seq.map(|from| from - 1)].into_iter().flatten().max();
    let before = [b.before_seq, b.caused_up_to.map(|last| last + 1)].into_iter().flatten().min();
    (after, before)
}

/// Two lists of events in seq order as one (no event is in both).
fn merged_by_seq(a: Vec<AuditEvent>, b: Vec<AuditEvent>) -> Vec<AuditEvent> {
    if b.is_empty() {
        return a;
    }
    let mut merged = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    while let (Some(x), Some(y)) = (a.peek(), b.peek()) {
        let next = if x.seq < y.seq { a.next() } else { b.next() };
        merged.extend(next);
    }
    merged.extend(a);
    merged.extend(b);
    merged
}

/// A revocation a cascade wrote: the events the subject index leaves out, and on PostgreSQL
/// the indexes by actor and by action too.
const CASCADED_REVOCATION: &str = "cause_seq IS NOT NULL AND action = 'session.revoked'";

/// A subject's events as `audit_by_subject` holds them ([`rows::INDEXED_EVENT`]).
const SUBJECT_IN_INDEX: &str = concat!("subject_id = ? AND ", rows::indexed_event!());

/// The event that revoked a session as part of a cascade: that session's `revoked_by_seq`.
/// Takes the subject twice.
const SUBJECT_REVOKED_BY_CASCADE: &str = "seq = (SELECT revoked_by_seq FROM sessions WHERE id = ?) \
     AND subject_id = ? AND cause_seq IS NOT NULL AND action = 'session.revoked'";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::query_plan::{migrated, plan, seeks};

    /// An audit row written straight to the table: only `seq`, `at` and `cause_seq` matter here.
    fn insert_event(conn: &Conn, seq: i64, at: i64, cause: Option<i64>) {
        conn.execute(
            "INSERT INTO audit_events (seq, id, at, actor_kind, actor_id, action, subject_kind, subject_id,
                                       cause_seq, details, prev_hash, hash)
             VALUES (?1, ?2, ?3, 'system', 'tether', 'test.event', 'test', 'x', ?4, '{}', '', '')",
            rusqlite::params![seq, format!("e{seq}"), at, cause],
        )
        .expect("insert an audit row");
    }

    #[test]
    fn audit_queries_by_subject_search_the_partial_subject_index_and_the_revoking_session() {
        let migration = include_str!("../../migrations/0010_cascade_writes_fewer_index_entries.sql");
        let index_where = rows::INDEXED_EVENT.trim_start_matches('(').trim_end_matches(')');
        assert!(migration.contains(&format!("WHERE {index_where};")), "the index is the one the term names");

        let params = |n: usize| vec![Value::Text("s".into()); n];
        let conn = migrated();
        let indexed =
            format!("SELECT seq FROM audit_events WHERE {SUBJECT_IN_INDEX} AND seq > 5 ORDER BY seq LIMIT 10");
        let steps = plan(&conn, &indexed, &params(1));
        assert!(seeks(&steps, "audit_by_subject"), "{steps:?}");
        assert!(!steps.iter().any(|step| step.contains("TEMP B-TREE")), "no sort: {steps:?}");

        let revoked = format!("SELECT seq FROM audit_events WHERE {SUBJECT_REVOKED_BY_CASCADE} ORDER BY seq LIMIT 10");
        let steps = plan(&conn, &revoked, &params(2));
        assert!(seeks(&steps, "INTEGER PRIMARY KEY"), "one event by seq: {steps:?}");
        assert!(seeks(&steps, "sqlite_autoindex_sessions_1"), "the session by id: {steps:?}");
        assert!(!steps.iter().any(|step| step.starts_with("SCAN")), "{steps:?}");
    }

    #[test]
    fn audit_queries_by_actor_or_action_search_full_indexes_and_by_subject_the_subject_index() {
        let conn = migrated();
        // Since migration 0012 the actor and action indexes hold every event: a plain query by
        // either, with no term restricting it to the subject index's events, seeks them.
        for (sql, index) in [
            ("SELECT seq FROM audit_events WHERE actor_id = ?1 AND seq > ?2 ORDER BY seq LIMIT 10", "audit_by_actor"),
            ("SELECT seq FROM audit_events WHERE action = ?1 AND seq > ?2 ORDER BY seq LIMIT 10", "audit_by_action"),
        ] {
            let steps = plan(&conn, sql, &[Value::Text("x".into()), Value::Integer(5)]);
            assert!(seeks(&steps, index), "{steps:?}");
        }

        // The listing's own query, for each shape: with a subject the subject index drives,
        // then the actor index, then the action index.
        let text = |t: &str| Some(t.to_owned());
        for (filter, index) in [
            (AuditFilter { subject: text("s"), action: text("a"), ..Default::default() }, "audit_by_subject"),
            (AuditFilter { subject: text("s"), actor: text("x"), ..Default::default() }, "audit_by_subject"),
            (
                AuditFilter { subject: text("s"), actor: text("x"), action: text("a"), ..Default::default() },
                "audit_by_subject",
            ),
            (AuditFilter { actor: text("x"), action: text("a"), ..Default::default() }, "audit_by_actor"),
            (AuditFilter { actor: text("x"), ..Default::default() }, "audit_by_actor"),
            (AuditFilter { action: text("a"), ..Default::default() }, "audit_by_action"),
        ] {
            let q = AuditPage { filter: &filter, after: Some(5), before: None, limit: 10, dialect: Dialect::Sqlite }
                .select();
            let steps = plan(&conn, &q.sql, &q.params);
            assert!(seeks(&steps, index), "{filter:?}: {steps:?}");
            assert!(!steps.iter().any(|step| step.contains("TEMP B-TREE")), "no sort: {steps:?}");
        }
        // And the writer's lookups of a subject's latest event of an action.
        let params = [Value::Text("s".into()), Value::Text("a".into())];
        let steps = plan(&conn, &crate::store::audit::LAST_EVENT_FOR, &params);
        assert!(seeks(&steps, "audit_by_subject"), "{steps:?}");
        let params = [params[0].clone(), params[1].clone(), Value::Text("$.k".into()), Value::Text("v".into())];
        let steps = plan(&conn, &crate::store::audit::LAST_DISCONNECT, &params);
        assert!(seeks(&steps, "audit_by_subject"), "{steps:?}");
    }

    /// A log written before migration 0010 whose clock stepped back (at 3 and again at 7):
    /// every time window selects exactly the events whose `at` is in it, as a scan would.
    #[test]
    fn a_time_window_selects_the_events_in_it_even_where_an_older_log_stepped_back() {
        use crate::store::migrate::{apply, MIGRATIONS};
        let ats = [10, 20, 15, 30, 30, 40, 35, 50, 60, 60, 70];
        let mut conn = Conn::Sqlite(rusqlite::Connection::open_in_memory().unwrap());
        apply(conn.sqlite_mut().unwrap(), &MIGRATIONS[..9]).unwrap();
        for (i, at) in ats.iter().enumerate() {
            insert_event(&conn, i as i64 + 1, *at, None);
        }
        apply(conn.sqlite_mut().unwrap(), MIGRATIONS).unwrap();
        let monotone_from: i64 =
            conn.query_row("SELECT monotone_from_seq FROM audit_clock", rusqlite::params![], |r| r.get(0)).unwrap();
        assert_eq!(monotone_from, 7, "the last step back");
        let latest_before: i64 =
            conn.query_row("SELECT latest_at_before FROM audit_clock", rusqlite::params![], |r| r.get(0)).unwrap();
        assert_eq!(latest_before, 40);
        assert_eq!(time_as_seq(&conn, Some(Timestamp(40)), None).unwrap().0, None, "may match the first part");
        assert_eq!(time_as_seq(&conn, Some(Timestamp(41)), None).unwrap().0, Some(8), "starts in the ordered part");
        // Written after the migration, by a writer that never steps back.
        insert_event(&conn, 12, 70, None);
        insert_event(&conn, 13, 80, None);
        let ats: Vec<i64> = ats.iter().copied().chain([70, 80]).collect();

        let bounds =
            [None, Some(0), Some(10), Some(15), Some(30), Some(33), Some(35), Some(60), Some(70), Some(80), Some(99)];
        for since in bounds {
            for until in bounds {
                let filter =
                    AuditFilter { since: since.map(Timestamp), until: until.map(Timestamp), ..Default::default() };
                let got: Vec<i64> = list_audit(&conn, &filter, 100).unwrap().items.iter().map(|e| e.seq).collect();
                let want: Vec<i64> = (1..=ats.len() as i64)
                    .filter(|&seq| {
                        let at = ats[seq as usize - 1];
                        since.is_none_or(|s| at >= s) && until.is_none_or(|u| at < u)
                    })
                    .collect();
                assert_eq!(got, want, "since {since:?} until {until:?}");
            }
        }
    }

    #[test]
    fn a_time_window_on_a_log_that_never_stepped_back_is_a_seq_range() {
        let conn = migrated();
        for seq in 1..=5 {
            insert_event(&conn, seq, seq * 10, None);
        }
        assert_eq!(time_as_seq(&conn, Some(Timestamp(20)), Some(Timestamp(40))).unwrap(), (Some(2), Some(4)));
        assert_eq!(time_as_seq(&conn, Some(Timestamp(25)), None).unwrap(), (Some(3), None));
        assert_eq!(time_as_seq(&conn, Some(Timestamp(99)), Some(Timestamp(99))).unwrap(), (Some(6), None));
        let steps = plan(
            &conn,
            "SELECT seq FROM audit_events WHERE seq >= ?1 AND seq < ?2 ORDER BY seq LIMIT 10",
            &[Value::Integer(2), Value::Integer(4)],
        );
        assert!(seeks(&steps, "INTEGER PRIMARY KEY (rowid>? AND rowid<?)"), "{steps:?}");
    }

    #[test]
    fn a_step_back_across_a_gap_in_seq_is_still_found_by_the_migration() {
        use crate::store::migrate::{apply, MIGRATIONS};
        let mut conn = Conn::Sqlite(rusqlite::Connection::open_in_memory().unwrap());
        apply(conn.sqlite_mut().unwrap(), &MIGRATIONS[..9]).unwrap();
        for (seq, at) in [(1, 10), (2, 20), (4, 15), (5, 16)] {
            insert_event(&conn, seq, at, None);
        }
        apply(conn.sqlite_mut().unwrap(), MIGRATIONS).unwrap();
        let clock: (i64, i64) = conn
            .query_row("SELECT monotone_from_seq, latest_at_before FROM audit_clock", rusqlite::params![], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(clock, (4, 20));
    }

    /// A log written before 0010, migrated through 0012: each trigger's range is recorded and
    /// listings by actor and action find every event, a cascade's revocations included.
    #[test]
    fn a_log_from_before_0010_lists_by_actor_and_action_every_event_after_the_migrations() {
        a_log_lists_by_actor_and_action_every_event_after_migrating_from(9);
    }

    /// The same log, written under 0011 (which left a cascade's revocations out of the actor and
    /// action indexes): 0012 puts them back in, and plain indexed listings find them.
    #[test]
    fn migration_0012_puts_a_cascades_revocations_back_in_the_actor_and_action_indexes() {
        let conn = a_log_lists_by_actor_and_action_every_event_after_migrating_from(11);
        for (index, column) in [("audit_by_actor", "actor_id"), ("audit_by_action", "action")] {
            // A partial index cannot answer this (SQLite refuses the INDEXED BY): only a full one.
            let sql = format!("SELECT count(*) FROM audit_events INDEXED BY {index} WHERE {column} > ''");
            let held: i64 = conn.query_row(&sql, rusqlite::params![], |r| r.get(0)).unwrap();
            assert_eq!(held, 9, "{index} holds every event");
        }
        let walk_indexes: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name LIKE 'audit_causes_revoking%'",
                rusqlite::params![],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(walk_indexes, 0, "the walk's indexes are gone");
    }

    /// Writes a small log with two cascades under the first `before` migrations, applies the rest
    /// and checks every listing by actor and action at several page sizes.
    fn a_log_lists_by_actor_and_action_every_event_after_migrating_from(before: usize) -> Conn {
        use crate::store::migrate::{apply, MIGRATIONS};
        let mut conn = Conn::Sqlite(rusqlite::Connection::open_in_memory().unwrap());
        apply(conn.sqlite_mut().unwrap(), &MIGRATIONS[..before]).unwrap();
        for (seq, actor, action, cause) in [
            (1, "cred_a", "user.disabled", None),
            (2, "cred_a", "session.revoked", Some(1)),
            (3, "cred_a", "session.revoked", Some(1)),
            (4, "cred_a", "delegation.revoked", Some(1)),
            (5, "cred_b", "credential.revoked", None),
            (6, "cred_b", "webhook.deleted", Some(5)),
            (7, "cred_b", "session.revoked", None),
            (8, "cred_a", "user.disabled", None),
            (9, "cred_a", "session.revoked", Some(8)),
        ] {
            conn.execute(
                "INSERT INTO audit_events (seq, id, at, actor_kind, actor_id, action, subject_kind, subject_id,
                                           cause_seq, details, prev_hash, hash)
                 VALUES (?1, ?2, 0, 'admin', ?3, ?4, 'test', ?2, ?5, '{}', '', '')",
                rusqlite::params![seq, format!("e{seq}"), actor, action, cause],
            )
            .unwrap();
        }
        if before >= 10 {
            // Written by a writer since 0010, which records each trigger's range itself.
            conn.execute_batch("INSERT INTO audit_causes (cause_seq, last_seq) VALUES (1, 4), (5, 6), (8, 9)").unwrap();
        }
        apply(conn.sqlite_mut().unwrap(), MIGRATIONS).unwrap();
        assert_eq!(crate::store::query_plan::audit_causes(&conn), [(1, 4), (5, 6), (8, 9)]);
        let listed = |actor: Option<&str>, action: Option<&str>, limit: usize| -> Vec<i64> {
            let mut filter = AuditFilter {
                actor: actor.map(str::to_owned),
                action: action.map(str::to_owned),
                ..Default::default()
            };
            let mut seqs = Vec::new();
            loop {
                let page = list_audit(&conn, &filter, limit).unwrap();
                seqs.extend(page.items.iter().map(|e| e.seq));
                match page.next_cursor {
                    Some(cursor) => filter.after_seq = Some(cursor.parse().unwrap()),
                    None => return seqs,
                }
            }
        };
        for limit in [1, 2, 100] {
            assert_eq!(listed(None, Some("session.revoked"), limit), [2, 3, 7, 9]);
            assert_eq!(listed(Some("cred_a"), None, limit), [1, 2, 3, 4, 8, 9]);
            assert_eq!(listed(Some("cred_a"), Some("session.revoked"), limit), [2, 3, 9]);
            assert_eq!(listed(Some("cred_b"), Some("session.revoked"), limit), [7]);
            assert_eq!(listed(Some("cred_b"), None, limit), [5, 6, 7]);
        }
        conn
    }

    /// Events 2 and 3 follow from 1, event 6 from 5, written before migration 0010: the migration
    /// records each cause's last event, and a query by cause reads that seq range alone.
    #[test]
    fn a_query_by_cause_reads_the_range_its_trigger_led_to() {
        use crate::store::migrate::{apply, MIGRATIONS};
        let mut conn = Conn::Sqlite(rusqlite::Connection::open_in_memory().unwrap());
        apply(conn.sqlite_mut().unwrap(), &MIGRATIONS[..9]).unwrap();
        for (seq, cause) in [(1, None), (2, Some(1)), (3, Some(1)), (4, None), (5, None), (6, Some(5)), (7, None)] {
            insert_event(&conn, seq, 0, cause);
        }
        apply(conn.sqlite_mut().unwrap(), MIGRATIONS).unwrap();
        let causes: Vec<(i64, i64)> = conn
            .prepare("SELECT cause_seq, last_seq FROM audit_causes ORDER BY cause_seq")
            .unwrap()
            .query_map(rusqlite::params![], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<crate::store::conn::DbResult<_>>()
            .unwrap();
        assert_eq!(causes, [(1, 3), (5, 6)]);
        let caused = |cause: i64| -> Vec<i64> {
            let filter = AuditFilter { cause_seq: Some(cause), ..Default::default() };
            list_audit(&conn, &filter, 100).unwrap().items.iter().map(|e| e.seq).collect()
        };
        assert_eq!((caused(1), caused(5), caused(4), caused(99)), (vec![2, 3], vec![6], vec![], vec![]));

        let steps = plan(
            &conn,
            "SELECT seq FROM audit_events WHERE seq > ?1 AND seq < ?2 AND cause_seq = ?1 ORDER BY seq",
            &[Value::Integer(1), Value::Integer(4)],
        );
        assert!(seeks(&steps, "INTEGER PRIMARY KEY (rowid>? AND rowid<?)"), "{steps:?}");
        assert!(!steps.iter().any(|step| step.starts_with("SCAN")), "{steps:?}");
        let paged = AuditFilter { cause_seq: Some(1), after_seq: Some(2), ..Default::default() };
        assert_eq!(list_audit(&conn, &paged, 100).unwrap().items.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3]);
    }

    #[test]
    fn a_listing_bounds_its_seq_range_by_the_tightest_of_cursor_cause_and_time() {
        let bounds = |after_seq, cause_seq, caused_up_to, from_seq, before_seq| {
            seq_range(SeqBounds { after_seq, cause_seq, caused_up_to, from_seq, before_seq })
        };
        assert_eq!(bounds(None, None, None, None, None), (None, None));
        // Deep in a cause's range, the cursor is the lower bound, the cause's last event the upper.
        assert_eq!(bounds(Some(90_000), Some(10), Some(100_010), None, None), (Some(90_000), Some(100_011)));
        assert_eq!(bounds(Some(5), Some(10), Some(100_010), None, None), (Some(10), Some(100_011)));
        // A window inside the cause's range narrows it; `from_seq` is inclusive.
        assert_eq!(bounds(None, Some(10), Some(100_010), Some(500), Some(600)), (Some(499), Some(600)));
        assert_eq!(bounds(Some(550), None, None, Some(500), Some(600)), (Some(550), Some(600)));
        assert_eq!(bounds(None, Some(10), Some(20), Some(500), None), (Some(499), Some(21)), "empty, not wrong");
    }
}
