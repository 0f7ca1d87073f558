//! Typed conditions for SCIM filters: the API turns a parsed filter into a [`Match`] over a
//! resource's columns, and this module into a `WHERE` clause of fixed SQL text with every value
//! a bound parameter. No text of a filter ever reaches the SQL.

use rusqlite::types::Value;

use super::conn::Dialect;

/// A comparison (RFC 7644 §3.4.2.2's operators other than `pr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

/// A column a filter may compare: its SQL expression (fixed text) and whether it compares
/// case-exactly (SCIM `caseExact`); otherwise ASCII letters compare case-insensitively.
pub trait Column: Copy {
    fn sql(self) -> &'static str;
    fn case_exact(self) -> bool;
}

/// A condition on a resource's row.
#[derive(Debug, Clone, PartialEq)]
pub enum Match<C> {
    All(Vec<Match<C>>),
    Any(Vec<Match<C>>),
    Not(Box<Match<C>>),
    Cmp(C, Cmp, String),
    Present(C),
    /// Matches every row (no filter).
    Everything,
    /// Matches no row (a comparison with an attribute tether never holds a value for).
    Nothing,
}

impl<C: Column> Match<C> {
    /// Appends this condition's SQL, in `dialect`, to `sql` and its values to `params`, in order.
    pub fn write(&self, dialect: Dialect, sql: &mut String, params: &mut Vec<Value>) {
        // PostgreSQL has no integer truth values.
        let (yes, no) = (dialect.pick("1", "(1 = 1)"), dialect.pick("0", "(1 = 0)"));
        match self {
            Match::Everything => sql.push_str(yes),
            Match::Nothing => sql.push_str(no),
            Match::All(parts) | Match::Any(parts) => {
                let joint = if matches!(self, Match::All(_)) { " AND " } else { " OR " };
                if parts.is_empty() {
                    sql.push_str(if matches!(self, Match::All(_)) { yes } else { no });
                    return;
                }
                sql.push('(');
                for (i, part) in parts.iter().enumerate() {
                    if i > 0 {
                        sql.push_str(joint);
                    }
                    part.write(dialect, sql, params);
                }
                sql.push(')');
            }
            Match::Not(inner) => {
                // A NULL column makes a comparison NULL, and NOT NULL is NULL: `IS NOT 1` makes
                // "not (x eq v)" true for a user without x, as SCIM means it.
                sql.push_str("((");
                inner.write(dialect, sql, params);
                sql.push_str(dialect.pick(") IS NOT 1)", ") IS NOT TRUE)"));
            }
            Match::Present(c) => {
                sql.push('(');
                sql.push_str(c.sql());
                sql.push_str(" IS NOT NULL AND ");
                sql.push_str(c.sql());
                sql.push_str(" <> '')");
            }
            Match::Cmp(c, op, value) => match dialect {
                Dialect::Sqlite => write_cmp(*c, *op, value, sql, params),
                Dialect::Postgres => write_cmp_postgres(*c, *op, value, sql, params),
            },
        }
    }
}

fn write_cmp<C: Column>(c: C, op: Cmp, value: &str, sql: &mut String, params: &mut Vec<Value>) {
    let col = c.sql();
    let exact = c.case_exact();
    let mut push = |text: &str| sql.push_str(text);
    let v = || Value::Text(value.to_owned());
    if value.is_empty() && matches!(op, Cmp::Co | Cmp::Sw | Cmp::Ew) {
        // Every string contains, starts and ends with the empty string.
        push("(");
        push(col);
        push(" IS NOT NULL)");
        return;
    }
    let collate = if exact { "" } else { " COLLATE NOCASE" };
    let (lhs, rhs) = if exact { (col.to_owned(), "?") } else { (format!("lower({col})"), "lower(?)") };
    match op {
        Cmp::Eq | Cmp::Gt | Cmp::Ge | Cmp::Lt | Cmp::Le => {
            let symbol = match op {
                Cmp::Eq => " = ?",
                Cmp::Gt => " > ?",
                Cmp::Ge => " >= ?",
                Cmp::Lt => " < ?",
                _ => " <= ?",
            };
            push("(");
            push(col);
            push(symbol);
            push(collate);
            push(")");
            params.push(v());
        }
        Cmp::Ne => {
            push("(");
            push(col);
            push(" IS NULL OR ");
            push(col);
            push(" <> ?");
            push(collate);
            push(")");
            params.push(v());
        }
        Cmp::Co => {
            push(&format!("(instr({lhs}, {rhs}) > 0)"));
            params.push(v());
        }
        Cmp::Sw => {
            push(&format!("(substr({lhs}, 1, length(?)) = {rhs})"));
            params.push(v());
            params.push(v());
        }
        Cmp::Ew => {
            push(&format!("(length({col}) >= length(?) AND substr({lhs}, -length(?)) = {rhs})"));
            params.push(v());
            params.push(v());
            params.push(v());
        }
    }
}

/// [`write_cmp`] for PostgreSQL, whose columns compare in the "C" collation: a comparison that
/// ignores case compares `lower()` of both sides (ASCII letters only, as SQLite's NOCASE, in
/// that collation; the schema indexes `lower()` of those columns), `strpos` stands for `instr`,
/// and `right` for a `substr` from the end. Values bind in the same order as on SQLite.
fn write_cmp_postgres<C: Column>(c: C, op: Cmp, value: &str, sql: &mut String, params: &mut Vec<Value>) {
    let col = c.sql();
    let v = || Value::Text(value.to_owned());
    if value.is_empty() && matches!(op, Cmp::Co | Cmp::Sw | Cmp::Ew) {
        sql.push_str(&format!("({col} IS NOT NULL)"));
        return;
    }
    let (lhs, rhs) = if c.case_exact() {
        (col.to_owned(), "CAST(? AS TEXT)")
    } else {
        (format!("lower({col})"), "lower(CAST(? AS TEXT) COLLATE \"C\")")
    };
    match op {
        Cmp::Eq | Cmp::Gt | Cmp::Ge | Cmp::Lt | Cmp::Le => {
            let symbol = match op {
                Cmp::Eq => "=",
                Cmp::Gt => ">",
                Cmp::Ge => ">=",
                Cmp::Lt => "<",
                _ => "<=",
            };
            sql.push_str(&format!("({lhs} {symbol} {rhs})"));
            params.push(v());
        }
        Cmp::Ne => {
            sql.push_str(&format!("({col} IS NULL OR {lhs} <> {rhs})"));
            params.push(v());
        }
        Cmp::Co => {
            sql.push_str(&format!("(strpos({lhs}, {rhs}) > 0)"));
            params.push(v());
        }
        Cmp::Sw => {
            sql.push_str(&format!("(substr({lhs}, 1, length(CAST(? AS TEXT))) = {rhs})"));
            params.push(v());
            params.push(v());
        }
        Cmp::Ew => {
            sql.push_str(&format!(
                "(length({col}) >= length(CAST(? AS TEXT)) AND right({lhs}, length(CAST(? AS TEXT))) = {rhs})"
            ));
            params.push(v());
            params.push(v());
            params.push(v());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Col {
        Name,
        Ext,
    }

    impl Column for Col {
        fn sql(self) -> &'static str {
            match self {
                Col::Name => "name",
                Col::Ext => "ext",
            }
        }
        fn case_exact(self) -> bool {
            self == Col::Ext
        }
    }

    fn rows(m: &Match<Col>) -> Vec<String> {
        let conn = rusqlite::Connection::open_in_memory().expect("db");
        conn.execute_batch(
            "CREATE TABLE t (id TEXT, name TEXT, ext TEXT);
             INSERT INTO t VALUES ('1', 'Ada Lovelace', 'A-1'), ('2', 'alan', NULL), ('3', 'Grace', 'a-1');",
        )
        .expect("rows");
        let (mut sql, mut params) = ("SELECT id FROM t WHERE ".to_owned(), Vec::new());
        m.write(Dialect::Sqlite, &mut sql, &mut params);
        sql.push_str(" ORDER BY id");
        let mut st = conn.prepare(&sql).expect("prepare");
        st.query_map(rusqlite::params_from_iter(params), |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    fn cmp(c: Col, op: Cmp, v: &str) -> Match<Col> {
        Match::Cmp(c, op, v.to_owned())
    }

    #[test]
    fn comparisons_follow_case_exactness_and_bind_every_value() {
        assert_eq!(rows(&cmp(Col::Name, Cmp::Eq, "ALAN")), ["2"]);
        assert_eq!(rows(&cmp(Col::Ext, Cmp::Eq, "a-1")), ["3"]);
        assert_eq!(rows(&cmp(Col::Name, Cmp::Sw, "a")), ["1", "2"]);
        assert_eq!(rows(&cmp(Col::Name, Cmp::Ew, "LACE")), ["1"]);
        assert_eq!(rows(&cmp(Col::Name, Cmp::Co, "RAC")), ["3"]);
        assert_eq!(rows(&cmp(Col::Ext, Cmp::Ne, "A-1")), ["2", "3"]);
        assert_eq!(rows(&Match::Present(Col::Ext)), ["1", "3"]);
        assert_eq!(rows(&Match::Not(Box::new(cmp(Col::Ext, Cmp::Eq, "A-1")))), ["2", "3"]);
        let either = Match::Any(vec![cmp(Col::Name, Cmp::Eq, "grace"), cmp(Col::Ext, Cmp::Eq, "A-1")]);
        assert_eq!(rows(&Match::All(vec![either, Match::Everything])), ["1", "3"]);
        assert_eq!(rows(&cmp(Col::Name, Cmp::Eq, "x' OR '1'='1")), Vec::<String>::new());
    }
}
