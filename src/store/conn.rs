//! One database connection, SQLite or PostgreSQL, behind the part of rusqlite's API the store
//! uses: statements with `?N` parameters bound from rusqlite's `ToSql`, rows read through
//! rusqlite's `FromSql`, so every store module's SQL and row mapping serve both databases.
//!
//! PostgreSQL statements are the same text with `?N` rewritten to `$N` (and SQLite's unary `+`,
//! which only steers its planner, dropped); a statement whose dialect differs picks its text
//! with [`Conn::dialect`]. Values cross as SQLite's five kinds: integers bind to whatever
//! integer, boolean or text type PostgreSQL infers for the parameter, and a column read back
//! becomes the `ValueRef` SQLite would have produced, so the domain's `FromSql` impls
//! (`store/rows.rs`) are the only row parsers.

use std::cell::RefCell;
use std::collections::HashMap;

use bytes::BytesMut;
use postgres::types::{IsNull, ToSql as PgToSql, Type};
use rusqlite::types::{FromSql, FromSqlError, ToSqlOutput, Value, ValueRef};
use rusqlite::ToSql;

mod ahead;
mod client;
pub use ahead::WriteAhead;
pub use client::PgClient;

/// Which SQL a statement must be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The statement for this dialect.
    pub fn pick<'a>(self, sqlite: &'a str, postgres: &'a str) -> &'a str {
        match self {
            Dialect::Sqlite => sqlite,
            Dialect::Postgres => postgres,
        }
    }
}

/// A connection to the database tether runs on.
pub enum Conn {
    Sqlite(rusqlite::Connection),
    Postgres(PgConn),
}

/// A failed statement, from either database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Postgres(#[from] postgres::Error),
    /// A write sent ahead on its own thread failed ([`PgConn::send_ahead`]): the statement after it
    /// reports it and is not run.
    #[error("a write sent ahead failed: {0}")]
    WrittenAhead(Box<crate::domain::Error>),
}

impl From<FromSqlError> for DbError {
    fn from(e: FromSqlError) -> Self {
        DbError::Sqlite(e.into())
    }
}

pub type DbResult<T> = std::result::Result<T, DbError>;

/// A statement's parameters: `params![…]`, an array of one type, or a built list of values.
pub trait Params {
    fn bind(&self) -> Vec<&dyn ToSql>;
}

impl Params for &[&dyn ToSql] {
    fn bind(&self) -> Vec<&dyn ToSql> {
        self.to_vec()
    }
}

impl<T: ToSql, const N: usize> Params for [T; N] {
    fn bind(&self) -> Vec<&dyn ToSql> {
        self.iter().map(|v| v as &dyn ToSql).collect()
    }
}

impl Params for &[Value] {
    fn bind(&self) -> Vec<&dyn ToSql> {
        self.iter().map(|v| v as &dyn ToSql).collect()
    }
}

impl Params for &Vec<Value> {
    fn bind(&self) -> Vec<&dyn ToSql> {
        self.iter().map(|v| v as &dyn ToSql).collect()
    }
}

/// `Option` for a query that may find no row (rusqlite's `OptionalExtension`, for [`DbError`]).
pub trait OptionalExtension<T> {
    fn optional(self) -> DbResult<Option<T>>;
}

impl<T> OptionalExtension<T> for DbResult<T> {
    fn optional(self) -> DbResult<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(DbError::Sqlite(rusqlite::Error::QueryReturnedNoRows)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl From<rusqlite::Connection> for Conn {
    fn from(c: rusqlite::Connection) -> Self {
        Conn::Sqlite(c)
    }
}

impl Conn {
    pub fn dialect(&self) -> Dialect {
        match self {
            Conn::Sqlite(_) => Dialect::Sqlite,
            Conn::Postgres(_) => Dialect::Postgres,
        }
    }

    /// The SQLite connection, for what only SQLite has (pragmas, the WAL hook, query plans).
    pub fn sqlite(&self) -> Option<&rusqlite::Connection> {
        match self {
            Conn::Sqlite(c) => Some(c),
            Conn::Postgres(_) => None,
        }
    }

    pub fn sqlite_mut(&mut self) -> Option<&mut rusqlite::Connection> {
        match self {
            Conn::Sqlite(c) => Some(c),
            Conn::Postgres(_) => None,
        }
    }

    pub fn postgres(&self) -> Option<&PgConn> {
        match self {
            Conn::Postgres(c) => Some(c),
            Conn::Sqlite(_) => None,
        }
    }

    /// A statement from the connection's cache (prepared on first use).
    pub fn prepare_cached(&self, sql: &str) -> DbResult<Statement<'_>> {
        match self {
            Conn::Sqlite(c) => Ok(Statement::Sqlite(c.prepare_cached(sql)?)),
            Conn::Postgres(c) => Ok(Statement::Postgres { conn: c, statement: c.prepare(sql)? }),
        }
    }

    /// A statement prepared for one use (a query seldom run, or whose text varies).
    pub fn prepare(&self, sql: &str) -> DbResult<Statement<'_>> {
        match self {
            Conn::Sqlite(c) => Ok(Statement::SqliteOnce(c.prepare(sql)?)),
            Conn::Postgres(c) => Ok(Statement::Postgres { conn: c, statement: c.prepare(sql)? }),
        }
    }

    pub fn execute(&self, sql: &str, params: impl Params) -> DbResult<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    pub fn query_row<T>(
        &self,
        sql: &str,
        params: impl Params,
        f: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    ) -> DbResult<T> {
        self.prepare_cached(sql)?.query_row(params, f)
    }

    /// Runs statements without parameters (transaction control, DDL).
    pub fn execute_batch(&self, sql: &str) -> DbResult<()> {
        match self {
            Conn::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Conn::Postgres(c) => {
                c.settle()?;
                Ok(c.client.borrow_mut().batch_execute(sql)?)
            }
        }
    }

    /// Opens a read transaction that holds one snapshot until the guard drops: several reads
    /// that must agree (a page and its bounds) see the same commits.
    pub fn snapshot(&self) -> DbResult<Snapshot<'_>> {
        match self {
            Conn::Sqlite(c) => c.execute_batch("BEGIN DEFERRED")?,
            Conn::Postgres(c) => {
                c.settle()?;
                c.client.borrow_mut().batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?
            }
        }
        Ok(Snapshot { conn: self })
    }
}

/// An open read transaction ([`Conn::snapshot`]); ends (rolls back) when dropped.
pub struct Snapshot<'c> {
    conn: &'c Conn,
}

impl Drop for Snapshot<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.conn.execute_batch("ROLLBACK") {
            tracing::debug!(error = %e, "ending a read snapshot");
        }
    }
}

/// A prepared statement.
pub enum Statement<'c> {
    Sqlite(rusqlite::CachedStatement<'c>),
    SqliteOnce(rusqlite::Statement<'c>),
    Postgres { conn: &'c PgConn, statement: postgres::Statement },
}

impl<'c> Statement<'c> {
    fn sqlite(&mut self) -> Option<&mut rusqlite::Statement<'c>> {
        match self {
            Statement::Sqlite(s) => Some(s),
            Statement::SqliteOnce(s) => Some(s),
            Statement::Postgres { .. } => None,
        }
    }

    fn postgres_rows(&self, params: &[&dyn ToSql]) -> DbResult<Vec<postgres::Row>> {
        let Statement::Postgres { conn, statement } = self else { unreachable_dialect() };
        let args = pg_args(params)?;
        let refs: Vec<&(dyn PgToSql + Sync)> = args.iter().map(|a| a as &(dyn PgToSql + Sync)).collect();
        conn.settle()?;
        Ok(conn.client.borrow_mut().query(statement, &refs)?)
    }

    pub fn execute(&mut self, params: impl Params) -> DbResult<usize> {
        let params = params.bind();
        if let Some(s) = self.sqlite() {
            return Ok(s.execute(params.as_slice())?);
        }
        let Statement::Postgres { conn, statement } = self else { unreachable_dialect() };
        let args = pg_args(&params)?;
        let refs: Vec<&(dyn PgToSql + Sync)> = args.iter().map(|a| a as &(dyn PgToSql + Sync)).collect();
        conn.settle()?;
        let changed = conn.client.borrow_mut().execute(statement, &refs)?;
        Ok(usize::try_from(changed).unwrap_or(usize::MAX))
    }

    /// The first row, mapped; `QueryReturnedNoRows` when there is none.
    pub fn query_row<T>(
        &mut self,
        params: impl Params,
        f: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    ) -> DbResult<T> {
        let params = params.bind();
        if let Some(s) = self.sqlite() {
            return Ok(s.query_row(params.as_slice(), |r| f(&Row::sqlite(r)))?);
        }
        let rows = self.postgres_rows(&params)?;
        let first = rows.first().ok_or(rusqlite::Error::QueryReturnedNoRows)?;
        Ok(f(&Row::postgres(first))?)
    }

    /// Every row, mapped (read whole: the store's lists are bounded pages).
    pub fn query_map<T>(
        &mut self,
        params: impl Params,
        mut f: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> DbResult<std::vec::IntoIter<DbResult<T>>> {
        let params = params.bind();
        if let Some(s) = self.sqlite() {
            let mapped = s
                .query_map(params.as_slice(), |r| f(&Row::sqlite(r)))?
                .map(|r| r.map_err(DbError::from))
                .collect::<Vec<_>>();
            return Ok(mapped.into_iter());
        }
        let rows = self.postgres_rows(&params)?;
        Ok(rows.iter().map(|r| f(&Row::postgres(r)).map_err(DbError::from)).collect::<Vec<_>>().into_iter())
    }

    /// Rows one at a time: SQLite steps through them as they are read (a whole-log walk never
    /// holds the log in memory); PostgreSQL's arrive whole, so callers that walk a table page it.
    pub fn query(&mut self, params: impl Params) -> DbResult<Rows<'_>> {
        let params = params.bind();
        if matches!(self, Statement::Postgres { .. }) {
            return Ok(Rows::Postgres { rows: self.postgres_rows(&params)?.into_iter(), current: None });
        }
        let Some(s) = self.sqlite() else { unreachable_dialect() };
        Ok(Rows::Sqlite(s.query(params.as_slice())?))
    }
}

/// Rows of [`Statement::query`].
pub enum Rows<'s> {
    Sqlite(rusqlite::Rows<'s>),
    Postgres { rows: std::vec::IntoIter<postgres::Row>, current: Option<postgres::Row> },
}

impl Rows<'_> {
    /// The next row (a lending iterator: the row borrows the result).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> DbResult<Option<Row<'_>>> {
        match self {
            Rows::Sqlite(rows) => Ok(rows.next()?.map(Row::sqlite)),
            Rows::Postgres { rows, current } => {
                *current = rows.next();
                Ok(current.as_ref().map(Row::postgres))
            }
        }
    }
}

/// One row of a result.
#[derive(Clone, Copy)]
pub struct Row<'r> {
    source: Source<'r>,
    /// The source's column that is this row's column 0 ([`Row::from_column`]).
    first: usize,
}

#[derive(Clone, Copy)]
enum Source<'r> {
    Sqlite(&'r rusqlite::Row<'r>),
    Postgres(&'r postgres::Row),
}

/// A column position (rusqlite's `RowIndex`, by position only).
pub trait RowIndex {
    fn index(self) -> usize;
}

impl RowIndex for usize {
    fn index(self) -> usize {
        self
    }
}

impl<'r> Row<'r> {
    fn sqlite(row: &'r rusqlite::Row<'r>) -> Self {
        Row { source: Source::Sqlite(row), first: 0 }
    }

    fn postgres(row: &'r postgres::Row) -> Self {
        Row { source: Source::Postgres(row), first: 0 }
    }

    /// The columns from `first` on, numbered from 0: one table's part of a row that joins
    /// several, read by that table's row function.
    pub fn from_column(&self, first: usize) -> Row<'r> {
        Row { source: self.source, first: self.first + first }
    }

    /// A column as SQLite's value kinds.
    pub fn get_ref(&self, idx: usize) -> rusqlite::Result<ValueRef<'_>> {
        let idx = self.first + idx;
        match self.source {
            Source::Sqlite(r) => r.get_ref(idx),
            Source::Postgres(r) => pg_value(r, idx),
        }
    }

    pub fn get<I: RowIndex, T: FromSql>(&self, idx: I) -> rusqlite::Result<T> {
        let idx = self.first + idx.index();
        match self.source {
            Source::Sqlite(r) => r.get(idx),
            Source::Postgres(r) => {
                let value = pg_value(r, idx)?;
                T::column_result(value).map_err(|e| match e {
                    FromSqlError::InvalidType => rusqlite::Error::InvalidColumnType(
                        idx,
                        r.columns().get(idx).map(|c| c.name().to_owned()).unwrap_or_default(),
                        value.data_type(),
                    ),
                    FromSqlError::OutOfRange(i) => rusqlite::Error::IntegralValueOutOfRange(idx, i),
                    other => rusqlite::Error::FromSqlConversionFailure(idx, value.data_type(), Box::new(other)),
                })
            }
        }
    }
}

/// A PostgreSQL column as the value SQLite would hold: integers and booleans as integers, text
/// and bytes as they are. Any other type is a statement that forgot to cast (`::bigint`, `::text`).
fn pg_value(row: &postgres::Row, idx: usize) -> rusqlite::Result<ValueRef<'_>> {
    let column = row.columns().get(idx).ok_or(rusqlite::Error::InvalidColumnIndex(idx))?;
    let failed =
        |e: postgres::Error| rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Null, Box::new(e));
    let ty = column.type_();
    let value = if *ty == Type::INT8 {
        row.try_get::<_, Option<i64>>(idx).map_err(failed)?.map(ValueRef::Integer)
    } else if *ty == Type::INT4 {
        row.try_get::<_, Option<i32>>(idx).map_err(failed)?.map(|v| ValueRef::Integer(v.into()))
    } else if *ty == Type::INT2 {
        row.try_get::<_, Option<i16>>(idx).map_err(failed)?.map(|v| ValueRef::Integer(v.into()))
    } else if *ty == Type::BOOL {
        row.try_get::<_, Option<bool>>(idx).map_err(failed)?.map(|v| ValueRef::Integer(v.into()))
    } else if *ty == Type::FLOAT8 {
        row.try_get::<_, Option<f64>>(idx).map_err(failed)?.map(ValueRef::Real)
    } else if *ty == Type::BYTEA {
        row.try_get::<_, Option<&[u8]>>(idx).map_err(failed)?.map(ValueRef::Blob)
    } else if [Type::TEXT, Type::VARCHAR, Type::BPCHAR, Type::NAME, Type::UNKNOWN].contains(ty) {
        row.try_get::<_, Option<&str>>(idx).map_err(failed)?.map(|s| ValueRef::Text(s.as_bytes()))
    } else {
        return Err(rusqlite::Error::FromSqlConversionFailure(
            idx,
            rusqlite::types::Type::Null,
            format!("column {} has PostgreSQL type {ty}, which the store does not read", column.name()).into(),
        ));
    };
    Ok(value.unwrap_or(ValueRef::Null))
}

/// A parameter bound for PostgreSQL: one of SQLite's five kinds, encoded as the type PostgreSQL
/// inferred for its place.
#[derive(Debug)]
struct PgArg(Value);

fn pg_args(params: &[&dyn ToSql]) -> DbResult<Vec<PgArg>> {
    params
        .iter()
        .map(|p| match p.to_sql()? {
            ToSqlOutput::Borrowed(v) => Ok(PgArg(v.into())),
            ToSqlOutput::Owned(v) => Ok(PgArg(v)),
            _ => Err(DbError::Sqlite(rusqlite::Error::ToSqlConversionFailure("an unsupported parameter kind".into()))),
        })
        .collect()
}

type BoxError = Box<dyn std::error::Error + Sync + Send>;

impl PgToSql for PgArg {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        let is_text = [Type::TEXT, Type::VARCHAR, Type::BPCHAR, Type::NAME, Type::UNKNOWN].contains(ty);
        match &self.0 {
            Value::Null => Ok(IsNull::Yes),
            Value::Integer(i) if *ty == Type::INT8 => PgToSql::to_sql(&i, ty, out),
            Value::Integer(i) if *ty == Type::INT4 => PgToSql::to_sql(&i32::try_from(*i)?, ty, out),
            Value::Integer(i) if *ty == Type::INT2 => PgToSql::to_sql(&i16::try_from(*i)?, ty, out),
            Value::Integer(i) if *ty == Type::BOOL => PgToSql::to_sql(&(*i != 0), ty, out),
            Value::Integer(i) if *ty == Type::FLOAT8 => PgToSql::to_sql(&(*i as f64), ty, out),
            Value::Integer(i) if is_text => PgToSql::to_sql(&i.to_string().as_str(), ty, out),
            Value::Real(f) if *ty == Type::FLOAT8 => PgToSql::to_sql(&f, ty, out),
            Value::Text(s) if is_text => PgToSql::to_sql(&s.as_str(), ty, out),
            Value::Text(s) if *ty == Type::INT8 => PgToSql::to_sql(&s.parse::<i64>()?, ty, out),
            Value::Text(s) if *ty == Type::JSONB => {
                out.extend_from_slice(&[1]);
                out.extend_from_slice(s.as_bytes());
                Ok(IsNull::No)
            }
            Value::Text(s) if *ty == Type::JSON => {
                out.extend_from_slice(s.as_bytes());
                Ok(IsNull::No)
            }
            Value::Blob(b) if *ty == Type::BYTEA => PgToSql::to_sql(&b.as_slice(), ty, out),
            other => Err(format!("cannot bind a {} as PostgreSQL {ty}", other.data_type()).into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

#[track_caller]
fn unreachable_dialect() -> ! {
    // A Statement's variant is fixed by the connection that prepared it.
    panic!("a SQLite statement reached the PostgreSQL path")
}

/// A PostgreSQL connection: the client and its prepared statements, by their SQLite text.
pub struct PgConn {
    /// Empty only while a write sent ahead holds the client ([`PgConn::send_ahead`]).
    pub(super) client: RefCell<OwnedClient>,
    statements: RefCell<HashMap<String, postgres::Statement>>,
    pub(super) behind: RefCell<Option<ahead::Behind>>,
}

/// The blocking client, closed on a thread of its own when dropped where a tokio runtime is
/// current: closing blocks on the client's runtime, which panics on an async worker (an `App`
/// dropped at the end of an async test or handler holds its read pool's connections).
pub(super) struct OwnedClient(pub(super) Option<PgClient>);

// The client is taken out by `drop`, and by a write sent ahead until it is settled
// ([`PgConn::settle`] runs before every use).
impl std::ops::Deref for OwnedClient {
    type Target = PgClient;
    #[allow(clippy::expect_used)]
    fn deref(&self) -> &PgClient {
        self.0.as_ref().expect("a client until dropped")
    }
}

impl std::ops::DerefMut for OwnedClient {
    #[allow(clippy::expect_used)]
    fn deref_mut(&mut self) -> &mut PgClient {
        self.0.as_mut().expect("a client until dropped")
    }
}

impl Drop for OwnedClient {
    fn drop(&mut self) {
        let Some(client) = self.0.take() else { return };
        if tokio::runtime::Handle::try_current().is_ok() {
            // A failed spawn drops the client here, as without the thread.
            let _ = std::thread::Builder::new().name("pg-close".into()).spawn(move || drop(client));
        }
    }
}

/// Most statements kept prepared per connection; the `Select` builder's combinations are few,
/// but a bound keeps an unforeseen one from growing the cache without end.
const MAX_STATEMENTS: usize = 512;

impl PgConn {
    pub fn new(client: PgClient) -> Self {
        PgConn {
            client: RefCell::new(OwnedClient(Some(client))),
            statements: RefCell::new(HashMap::new()),
            behind: RefCell::new(None),
        }
    }

    /// The client itself, for what only the PostgreSQL side does (LISTEN, leases). A write sent
    /// ahead is waited for first; only the writer's connection sends any, and it takes the
    /// client through [`PgConn::settled_client`].
    pub fn client(&self) -> std::cell::RefMut<'_, PgClient> {
        if let Err(e) = self.settle() {
            tracing::error!(error = %e, "a write sent ahead failed where nothing could report it");
        }
        std::cell::RefMut::map(self.client.borrow_mut(), |c| &mut **c)
    }

    /// The client once any write sent ahead is done, or that write's failure.
    pub(super) fn settled_client(&self) -> DbResult<std::cell::RefMut<'_, PgClient>> {
        self.settle()?;
        Ok(std::cell::RefMut::map(self.client.borrow_mut(), |c| &mut **c))
    }

    pub(super) fn prepare(&self, sql: &str) -> DbResult<postgres::Statement> {
        if let Some(statement) = self.statements.borrow().get(sql) {
            return Ok(statement.clone());
        }
        self.prepare_on(&mut *self.settled_client()?, sql)
    }

    /// [`PgConn::prepare`] for a caller already holding the client.
    pub(super) fn prepare_on(&self, client: &mut PgClient, sql: &str) -> DbResult<postgres::Statement> {
        if let Some(statement) = self.statements.borrow().get(sql) {
            return Ok(statement.clone());
        }
        let statement = client.prepare(&to_postgres(sql))?;
        let mut cache = self.statements.borrow_mut();
        if cache.len() >= MAX_STATEMENTS {
            cache.clear();
        }
        cache.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    /// Whether the connection has failed for good (the server went away): the pool replaces it.
    pub fn is_closed(&self) -> bool {
        if self.settle().is_err() {
            return true;
        }
        self.client.borrow().0.as_ref().is_none_or(PgClient::is_closed)
    }
}

/// Rewrites a statement written for SQLite into PostgreSQL's: `?N` becomes `$N` (a bare `?`, as
/// SQLite numbers it, one more than the largest number so far), and a unary `+` before a column (SQLite's way of keeping an index out of a
/// plan) is dropped. Quoted text and identifiers are copied as they are.
pub fn to_postgres(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut largest = 0u32;
    let mut previous = ' ';
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                out.push(c);
                for q in chars.by_ref() {
                    out.push(q);
                    if q == c {
                        break;
                    }
                }
            }
            '?' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                match digits.parse::<u32>() {
                    Ok(n) => largest = largest.max(n),
                    Err(_) => {
                        largest += 1;
                        digits = largest.to_string();
                    }
                }
                out.push('$');
                out.push_str(&digits);
            }
            '+' if (previous.is_whitespace() || previous == '(')
                && chars.peek().is_some_and(|n| n.is_ascii_alphabetic() || *n == '_') => {}
            _ => out.push(c),
        }
        previous = c;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::to_postgres;

    #[test]
    fn parameters_are_numbered_for_postgres_and_quoted_text_is_left_alone() {
        assert_eq!(to_postgres("SELECT a FROM t WHERE a = ?1 AND b = ?12"), "SELECT a FROM t WHERE a = $1 AND b = $12");
        assert_eq!(to_postgres("WHERE a = ? AND b > ? LIMIT ?"), "WHERE a = $1 AND b > $2 LIMIT $3");
        assert_eq!(to_postgres("WHERE a = '?1' AND \"x?\" = ?1"), "WHERE a = '?1' AND \"x?\" = $1");
        // As SQLite numbers them: a bare `?` after `?2` is the third.
        assert_eq!(
            to_postgres("WHERE a < ?1 AND b > ?2 AND c = ? AND d = ?"),
            "WHERE a < $1 AND b > $2 AND c = $3 AND d = $4"
        );
    }

    #[test]
    fn sqlite_planner_hints_are_dropped_and_arithmetic_is_kept() {
        assert_eq!(to_postgres("WHERE x = 1 AND +action = ?2"), "WHERE x = 1 AND action = $2");
        assert_eq!(to_postgres("WHERE (+user_id = ?)"), "WHERE (user_id = $1)");
        assert_eq!(to_postgres("SET n = n + 1, m = m +1"), "SET n = n + 1, m = m +1");
    }
}
