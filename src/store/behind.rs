//! Writes sent ahead: a PostgreSQL transaction's held rows ([`super::deferred`]) written on a
//! thread of their own while the writer goes on building the command's next rows. A cascade of
//! 100,000 sessions spends as long building and hashing its events as PostgreSQL spends writing
//! them; sent ahead, a chunk is written while the next is built.
//!
//! At most one write is ahead at a time, and it holds the connection's client: every use of the
//! client ([`PgConn::settle`], called by each statement) waits for it first, so the statements of
//! the transaction still run one after another, in the order they were issued. A failed write is
//! the error of the next statement, which is not run: the COMMIT included, so a batch whose write
//! failed can never commit.

use std::sync::mpsc;
use std::thread::JoinHandle;

use super::conn::{DbError, DbResult, PgConn};
use super::deferred::Deferred;
use crate::domain::{Error, Result};

/// The write ahead: its thread gives the client back with the outcome (`None` if it was never
/// handed the client). Boxed: a connection holds one only while a cascade writes.
pub struct Behind(Box<JoinHandle<Option<Written>>>);

/// The client, given back, and how the write went.
type Written = (postgres::Client, Result<()>);

impl PgConn {
    /// Writes `rows` on a thread of their own; the next use of the client waits for it. If no
    /// thread can be started, they are written now.
    pub(super) fn send_ahead(&self, rows: Deferred) -> Result<()> {
        self.settle().map_err(super::db::db_error)?;
        let Some(client) = self.client.borrow_mut().0.take() else {
            return Err(Error::internal("the connection has no client"));
        };
        // The thread starts before it is handed the client: if it cannot start, nothing is lost.
        let (hand_over, receive) = mpsc::channel::<(postgres::Client, Deferred)>();
        let started = std::thread::Builder::new().name("pg-write-ahead".into()).spawn(move || {
            let (mut client, rows) = receive.recv().map_err(|_| ()).ok()?;
            let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                rows.write_to(&mut client, |client, sql| client.prepare(sql).map_err(DbError::from))
            }))
            .unwrap_or_else(|_| Err(Error::internal("a write sent ahead panicked")));
            Some((client, written))
        });
        match started {
            Ok(thread) => match hand_over.send((client, rows)) {
                Ok(()) => {
                    *self.behind.borrow_mut() = Some(Behind(Box::new(thread)));
                    Ok(())
                }
                Err(mpsc::SendError((client, rows))) => self.write_here(client, rows),
            },
            Err(_) => self.write_here(client, rows),
        }
    }

    fn write_here(&self, mut client: postgres::Client, rows: Deferred) -> Result<()> {
        let written = rows.write_to(&mut client, |client, sql| self.prepare_on(client, sql));
        self.client.borrow_mut().0 = Some(client);
        written
    }

    /// Waits for the write sent ahead, if any, and puts the client back; its failure is the error.
    pub(super) fn settle(&self) -> DbResult<()> {
        let Some(Behind(thread)) = self.behind.borrow_mut().take() else { return Ok(()) };
        match thread.join() {
            Ok(Some((client, written))) => {
                self.client.borrow_mut().0 = Some(client);
                written.map_err(|e| DbError::WrittenAhead(Box::new(e)))
            }
            // The thread catches its write's panic and is always handed the client: neither
            // happens, and a connection without its client reports itself closed.
            _ => Err(DbError::WrittenAhead(Box::new(Error::internal("a write sent ahead lost its connection")))),
        }
    }
}
